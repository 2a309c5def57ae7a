"""Make the agent benchmark's media offline, then check that the real offline tools can read it.

    .venv/bin/python benchmarks/agent_cases/make_media.py            # write media/, then check it
    .venv/bin/python benchmarks/agent_cases/make_media.py --check    # only check what is there

Everything lands in ``benchmarks/agent_cases/media/`` (committed, so the benchmark runs without this
script):

* receipts drawn with PIL at the size of the demo's receipt (monospace, 26 px), one shop, date,
  items and total each;
* speech recordings of known sentences spoken by the packaged Piper voice (16 kHz, 16-bit, half a
  second of silence around the words, as a phone recording has);
* time series CSVs written the way people export them from a spreadsheet: a header, a date column,
  sometimes an empty cell; each with one clear trend or a few clear spikes;
* the Debian ``darknet`` photos from ``../shared/media`` and the eagle this package ships, at most
  640 px and JPEG quality 85, plus two crops of them (a different picture of the same scene).

The check runs PP-OCR on every receipt and Whisper on every recording and prints, per file, the key
facts the case files rely on that the tool did not return. Piper does not speak bit-exactly the same
twice, so a regenerated recording is checked again, and any file that fails the check is reported
(exit 1): keep only media the real tools handle.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIA = HERE / "media"
REPO = HERE.parents[1]
SHARED_MEDIA = REPO.parent / "shared" / "media"
sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class Receipt:
    name: str
    shop: str
    lines: tuple[str | tuple[str, str], ...]  # under the shop name: text, (item, price) rows, "" a blank line
    facts: tuple[str, ...]      # what OCR must return for the cases to be answerable


def _wide(text: str) -> str:
    # PP-OCR (RapidOCR) runs words one monospace space apart together on some lines ('MILLERHARDWARE',
    # '02Feb2024'), so words are printed two spaces apart, as many receipt printers do.
    return text.replace(" ", "  ")


def _row(label: str, price: str, width: int = 32) -> str:
    label = _wide(label)
    return f"{label}{' ' * max(2, width - len(label) - len(price))}{price}"


RECEIPTS = (
    Receipt("receipt-fresh-fields.png", "FRESH FIELDS MARKET",
            ("14 Mill Lane", "Date: 2024-03-14  10:22", "", ("Apples 1kg", "3.20"), ("Bananas", "2.10"),
             ("Tomatoes", "4.35"), ("Spinach", "2.80"), "", ("TOTAL", "12.45"), "Paid by card"),
            ("FRESH FIELDS", "2024-03-14", "Apples", "Bananas", "Tomatoes", "Spinach", "12.45")),
    Receipt("receipt-blue-door-cafe.png", "BLUE DOOR CAFE",
            ("15/06/2024 09:42", "Table 7", "", ("Flat white", "3.80"), ("Blueberry muffin", "3.25"),
             ("Orange juice", "4.10"), "", ("SUBTOTAL", "11.15"), ("TIP", "1.50"), ("TOTAL", "12.65"),
             "Thank you!"),
            ("BLUE DOOR", "15/06/2024", "Flat white", "muffin", "Orange juice", "11.15", "12.65")),
    Receipt("receipt-miller-hardware.png", "MILLER HARDWARE",
            ("Date: 02 Feb 2024", "", ("Wood screws", "6.99"), ("Paint brush", "12.50"),
             ("Sandpaper", "4.75"), ("Masking tape", "3.49"), ("Wall paint 2.5L", "38.90"), "",
             ("TOTAL", "66.63"), "Cash"),
            ("MILLER", "02 Feb 2024", "Wood screws", "Paint brush", "Sandpaper", "Masking tape", "66.63")),
    Receipt("receipt-green-cross-pharmacy.png", "GREEN CROSS PHARMACY",
            ("8 Nov 2023  16:05", "", ("Vitamin C", "9.95"), ("Plasters", "4.50"), ("Sun cream", "14.25"),
             "", ("TOTAL", "28.70"), "Paid by card"),
            ("GREEN CROSS", "8 Nov 2023", "Vitamin C", "Plasters", "Sun cream", "28.70")),
    Receipt("receipt-luigis-pizzeria.png", "LUIGIS PIZZERIA",
            ("21 July 2024  19:48", "", ("Margherita", "11.00"), ("Pepperoni", "13.50"),
             ("Garlic bread", "5.00"), ("Cola x2", "6.00"), "", ("TOTAL", "35.50"), "Grazie!"),
            ("LUIGIS", "21 July 2024", "Margherita", "Pepperoni", "Garlic bread", "35.50")),
    Receipt("receipt-page-turner-books.png", "PAGE TURNER BOOKS",
            ("30/09/2024", "", ("The Hobbit", "12.99"), ("Road atlas", "18.99"), ("Notebook", "6.00"),
             ("Bookmark", "2.50"), "", ("TOTAL", "40.48"), "Paid by card"),
            ("PAGE TURNER", "30/09/2024", "Hobbit", "Road atlas", "Notebook", "Bookmark", "40.48")),
    # held-out receipts
    Receipt("receipt-sunrise-deli.png", "SUNRISE DELI",
            ("2024-01-09  12:31", "", ("Turkey sandwich", "7.25"), ("Tomato soup", "4.80"),
             ("Iced tea", "2.95"), "", ("TOTAL", "15.00"), "Card"),
            ("SUNRISE", "2024-01-09", "Turkey sandwich", "Tomato soup", "Iced tea", "15.00")),
    Receipt("receipt-city-pets.png", "CITY PETS",
            ("Date: 17 Apr 2024", "", ("Dog food 5kg", "24.99"), ("Cat litter", "8.49"),
             ("Chew toy", "5.99"), ("Bird seed", "3.75"), "", ("TOTAL", "43.22"), "Paid by card"),
            ("CITY PETS", "17 Apr 2024", "Dog food", "Cat litter", "Chew toy", "Bird seed", "43.22")),
    Receipt("receipt-north-star-fuel.png", "NORTH STAR FUEL",
            ("05/12/2023  07:58", "Pump 4", "", ("Unleaded 38.2L", "61.12"), ("Car wash", "8.00"),
             ("Coffee", "2.40"), "", ("TOTAL", "71.52"), "Card"),
            ("NORTH STAR", "05/12/2023", "Unleaded", "Car wash", "Coffee", "71.52")),
    Receipt("receipt-happy-noodle.png", "HAPPY NOODLE",
            ("23 Aug 2024  20:14", "", ("Ramen", "13.90"), ("Gyoza x6", "6.50"), ("Green tea", "2.20"),
             "", ("SUBTOTAL", "22.60"), ("SERVICE", "2.26"), ("TOTAL", "24.86"), "Thank you"),
            ("HAPPY NOODLE", "23 Aug 2024", "Ramen", "Gyoza", "Green tea", "22.60", "24.86")),
)


def make_receipts(receipts: tuple[Receipt, ...] | list[Receipt] | None = None) -> None:
    from orchestrator.storage.sample_inputs import receipt_image

    for receipt in RECEIPTS if receipts is None else receipts:
        lines = [(_wide(receipt.shop), "center")]
        lines += [(_row(*line) if isinstance(line, tuple) else _wide(line), "left" if line else None)
                  for line in receipt.lines]
        receipt_image(lines).save(MEDIA / receipt.name, optimize=True)


# ---------------------------------------------------------------------------------------------- speech


@dataclass(frozen=True)
class Recording:
    name: str
    text: str
    facts: tuple[str, ...]  # words Whisper must return (case-insensitive)


RECORDINGS = (
    Recording("last-train.wav", "What time does the last train to Boston leave tonight?", ("train", "Boston")),
    Recording("shopping-note.wav", "Remember to buy milk, eggs, bread and coffee on the way home.",
              ("milk", "eggs", "bread", "coffee")),
    Recording("voicemail-sarah.wav", "Hi, it's Sarah. The team meeting has moved to Thursday at three in the "
              "afternoon. Please bring the budget report.", ("Sarah", "Thursday", "budget")),
    Recording("weekend-rain.wav", "Is it going to rain in London this weekend?", ("rain", "London", "weekend")),
    Recording("pancakes.wav", "To make pancakes, mix two cups of flour with two eggs and a cup of milk. Whisk until "
              "smooth, then fry spoonfuls in a hot pan for two minutes on each side.", ("pancakes", "flour", "eggs")),
    Recording("dentist.wav", "I would like to book a dentist appointment for next Monday morning, please.",
              ("dentist", "Monday")),
    # held-out recordings
    Recording("library-directions.wav", "Turn left at the post office, walk straight for two blocks, and the "
              "library is on your right.", ("post office", "library")),
    Recording("passport-reminder.wav", "Don't forget that your passport expires in March, so renew it before the "
              "trip to Spain.", ("passport", "March", "Spain")),
    Recording("parcel-complaint.wav", "The parcel I ordered last week arrived damaged, and I would like a refund.",
              ("parcel", "damaged", "refund")),
    Recording("museum-question.wav", "How much is a child's ticket for the science museum on Saturday?",
              ("ticket", "museum", "Saturday")),
)

SPEECH_RATE = 16_000


def make_recordings(only: set[str] | None = None, recordings: tuple | None = None) -> None:
    import numpy as np
    import soundfile

    from tools.speech_synthesis import TextToSpeech

    speaker = TextToSpeech()
    pad = np.zeros(SPEECH_RATE // 2, dtype=np.float32)
    for recording in RECORDINGS if recordings is None else recordings:
        if only is not None and recording.name not in only:
            continue
        samples = speaker(text=recording.text)["audio"].for_model(SPEECH_RATE)
        samples = np.clip(np.concatenate([pad, samples, pad]), -1.0, 1.0)
        soundfile.write(str(MEDIA / recording.name), samples, SPEECH_RATE, subtype="PCM_16", format="WAV")


# ---------------------------------------------------------------------------------------------- time series


def _dates(start: str, count: int) -> list[str]:
    import datetime

    first = datetime.date.fromisoformat(start)
    return [(first + datetime.timedelta(days=i)).isoformat() for i in range(count)]


def _write_csv(name: str, header: list[str], rows: list[list[object]]) -> None:
    with open(MEDIA / name, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def make_series() -> None:
    import numpy as np

    rng = np.random.default_rng(2024)
    # Daily shop sales rising from about 120 to about 240 over two months; one day not filled in.
    days = _dates("2024-03-01", 60)
    sales = 120 + 2.0 * np.arange(60) + rng.normal(0, 6, 60)
    rows = [[d, f"{v:.0f}"] for d, v in zip(days, sales)]
    rows[23][1] = ""
    _write_csv("daily-sales.csv", ["date", "sales"], rows)
    # Hourly temperature of a room, steady around 21 C with a daily swing, two sensor spikes of 35+ C.
    hours = [f"2024-05-0{1 + h // 24} {h % 24:02d}:00" for h in range(72)]
    temperature = 21 + 1.5 * np.sin(2 * np.pi * (np.arange(72) - 8) / 24) + rng.normal(0, 0.3, 72)
    temperature[30] = 36.4
    temperature[55] = 35.8
    _write_csv("room-temperature.csv", ["time", "temperature_c"], [[h, f"{v:.1f}"] for h, v in zip(hours, temperature)])
    # Website visitors per day: flat around 800 with a weekly pattern, and one huge day (a newsletter).
    days = _dates("2024-02-01", 42)
    visitors = 800 + 120 * (np.arange(42) % 7 < 5) + rng.normal(0, 25, 42)
    visitors[20] = 2900
    _write_csv("website-visitors.csv", ["Date", "Visitors"], [[d, f"{v:.0f}"] for d, v in zip(days, visitors)])
    # Household electricity per day falling from about 18 kWh to about 9 kWh (new insulation); one gap.
    days = _dates("2024-01-01", 50)
    kwh = 18 - 0.18 * np.arange(50) + rng.normal(0, 0.6, 50)
    rows = [[d, f"{v:.1f}"] for d, v in zip(days, kwh)]
    rows[11][1] = ""
    _write_csv("electricity-kwh.csv", ["day", "kwh"], rows)
    # Heart rate during a morning, minute by minute: resting around 62, one jump to 150 (running for the bus).
    minutes = [f"07:{m:02d}" for m in range(60)]
    bpm = 62 + rng.normal(0, 2, 60)
    bpm[37:40] = [138, 151, 129]
    _write_csv("heart-rate.csv", ["time", "bpm"], [[t, f"{v:.0f}"] for t, v in zip(minutes, bpm)])
    # held-out series
    # Monthly rainfall over three years: a clear yearly season, no trend.
    months = [f"{2021 + i // 12}-{1 + i % 12:02d}" for i in range(36)]
    rain = 60 + 45 * np.cos(2 * np.pi * (np.arange(36) % 12) / 12) + rng.normal(0, 6, 36)
    _write_csv("monthly-rainfall.csv", ["month", "rainfall_mm"], [[m, f"{max(v, 0):.0f}"] for m, v in zip(months, rain)])
    # A share price sliding from about 54 to about 31 over 45 trading days; one day missing.
    days = _dates("2024-06-03", 45)
    price = 54 - 0.5 * np.arange(45) + rng.normal(0, 0.8, 45)
    rows = [[d, f"{v:.2f}"] for d, v in zip(days, price)]
    rows[30][1] = ""
    _write_csv("share-price.csv", ["date", "close"], rows)
    # App downloads per day, around 300, with two launch-day spikes.
    days = _dates("2024-09-01", 40)
    downloads = 300 + rng.normal(0, 15, 40)
    downloads[9] = 1450
    downloads[31] = 1220
    _write_csv("app-downloads.csv", ["date", "downloads"], [[d, f"{v:.0f}"] for d, v in zip(days, downloads)])
    # Steps per day slowly going up (a new habit), with the values only, no date.
    steps = 4000 + 90 * np.arange(45) + rng.normal(0, 350, 45)
    with open(MEDIA / "daily-steps.csv", "w", encoding="utf-8") as handle:
        handle.write("steps\n" + "".join(f"{v:.0f}\n" for v in steps))
    assert not any(math.isnan(v) for v in steps)


# ---------------------------------------------------------------------------------------------- photos


PHOTOS = ("dog.jpg", "horses.jpg", "giraffe.jpg", "person.jpg")
CROPS = {  # name: (source, box as fractions of the width and height)
    "dog-on-porch.jpg": ("dog.jpg", (0.14, 0.36, 0.42, 0.96)),
    "zebra.jpg": ("giraffe.jpg", (0.0, 0.45, 0.6, 1.0)),
}


def make_photos() -> None:
    from PIL import Image

    from orchestrator.storage.sample_inputs import eagle_photo_path

    sources = {name: SHARED_MEDIA / name for name in PHOTOS}
    sources["eagle.jpg"] = eagle_photo_path()
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing source photos: {', '.join(missing)} (the Debian darknet photos in ../shared/media)")
    for name, path in sources.items():
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((640, 640))
            image.save(MEDIA / name, quality=85, optimize=True)
    for name, (source, (x0, y0, x1, y1)) in CROPS.items():
        with Image.open(SHARED_MEDIA / source) as image:
            w, h = image.size
            crop = image.convert("RGB").crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
            crop.thumbnail((640, 640))
            crop.save(MEDIA / name, quality=85, optimize=True)
    readme = SHARED_MEDIA / "README.md"
    provenance = readme.read_text(encoding="utf-8").split("\n", 1)[1].strip() if readme.is_file() else ""
    (MEDIA / "README.md").write_text(
        "# Media of the agent benchmark\n\n"
        "Made by `../make_media.py` (run it to regenerate; it checks that PP-OCR reads every receipt's key facts\n"
        "and Whisper hears every recording's key words).\n\n"
        "- `receipt-*.png`: drawn with PIL (DejaVu Sans Mono 26 px), shops, dates and prices invented.\n"
        "- `*.wav`: sentences written for the benchmark, spoken by the packaged Piper voice `en_US-joe-medium`,\n"
        "  16 kHz mono 16-bit.\n"
        "- `*.csv`: synthetic series (fixed seed) with a trend, a season or spikes.\n"
        "- `eagle.jpg`: the photo `orchestrator/samples/eagle.jpg` ships with the package.\n"
        "- `dog.jpg`, `horses.jpg`, `giraffe.jpg`, `person.jpg`, and the crops `dog-on-porch.jpg` (of dog.jpg)\n"
        "  and `zebra.jpg` (of giraffe.jpg), resized to at most 640 px, JPEG quality 85. Their source, as its\n"
        "  README says:\n\n"
        + "\n".join(f"> {line}" if line else ">" for line in provenance.splitlines()) + "\n",
        encoding="utf-8")


# ---------------------------------------------------------------------------------------------- check


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower()


def check() -> list[str]:
    """Run PP-OCR and Whisper over the media; a line per file with what they missed (empty: all read)."""
    import soundfile
    from PIL import Image

    from orchestrator.storage.media import AudioClip
    from tools.ocr import OpticalCharacterRecognition as OCR
    from tools.speech import SpeechRecognition

    problems = []
    reader = OCR()
    for receipt in RECEIPTS:
        with Image.open(MEDIA / receipt.name) as image:
            text = reader(image=image.convert("RGB"))["text"]
        missed = [fact for fact in receipt.facts if _normal(fact) not in _normal(text)]
        status = f"MISSED {missed}" if missed else "ok"
        print(f"{receipt.name:34} ocr {status}: {' | '.join(text.splitlines())}")
        if missed:
            problems.append(f"{receipt.name}: OCR missed {missed}")
    listener = SpeechRecognition()
    for recording in RECORDINGS:
        samples, rate = soundfile.read(str(MEDIA / recording.name), dtype="float32")
        text = listener(audio=AudioClip(samples, rate))["text"]
        missed = [fact for fact in recording.facts if _normal(fact) not in _normal(text)]
        status = f"MISSED {missed}" if missed else "ok"
        print(f"{recording.name:34} asr {status}: {text.strip()}")
        if missed:
            problems.append(f"{recording.name}: Whisper missed {missed}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the media that is there")
    parser.add_argument("--speech", nargs="*", metavar="NAME", help="only re-speak these recordings (and check)")
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.speech is not None:
        make_recordings(set(args.speech) or None)
    elif not args.check:
        if MEDIA.exists():
            shutil.rmtree(MEDIA)
        MEDIA.mkdir(parents=True)
        make_receipts()
        make_recordings()
        make_series()
        make_photos()
    problems = check()
    for problem in problems:
        print("problem:", problem)
    total = sum(f.stat().st_size for f in MEDIA.iterdir())
    print(f"{len(list(MEDIA.iterdir()))} files, {total / 1024:.0f} KiB in {MEDIA}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
