"""Make the media of the second held-out split (``heldout2.jsonl``) offline, then check it.

    .venv/bin/python benchmarks/agent_cases/make_media_heldout2.py            # write media/h2-*, then check
    .venv/bin/python benchmarks/agent_cases/make_media_heldout2.py --check    # only check what is there
    .venv/bin/python benchmarks/agent_cases/make_media_heldout2.py --speech h2-plumber-voicemail.wav

Same recipe as ``make_media.py`` (whose helpers it reuses): receipts drawn with PIL, sentences spoken
by the packaged Piper voice, spreadsheet-like CSV series. Every file is named ``h2-*`` and written into
``media/`` next to the others; nothing else there is touched. ``make_media.py`` (without ``--check``)
empties ``media/`` and rewrites its README, so run this script after it.

The check runs PP-OCR on every receipt and Whisper on every recording (a fact may list spellings, any
one of which will do: Whisper writes "half past nine" or "9.30"), and checks that each series has the
trend, spikes or peak its cases rely on. It exits 1 if anything is missed: keep only media the real
tools handle.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_media as base  # noqa: E402  (also puts the repository on sys.path)
from make_media import MEDIA, Receipt, _normal, _write_csv  # noqa: E402

# ---------------------------------------------------------------------------------------------- receipts

RECEIPTS = (
    Receipt("h2-receipt-corner-bakery.png", "CORNER BAKERY",
            ("Date: 03/03/2024  08:15", "", ("Sourdough loaf", "4.50"), ("Croissant x2", "5.20"),
             ("Cinnamon roll", "3.40"), ("Latte", "3.95"), "", ("TOTAL", "17.05"), "Card"),
            ("CORNER BAKERY", "03/03/2024", "Sourdough", "Croissant", "Cinnamon roll", "Latte", "17.05")),
    Receipt("h2-receipt-oak-tree-grill.png", "OAK TREE GRILL",
            ("Mar 22, 2024  20:37", "Server: Jess", "", ("Ribeye steak", "24.00"), ("Caesar salad", "9.50"),
             ("Fries", "4.50"), ("Lemonade", "3.50"), "", ("SUBTOTAL", "41.50"), ("TAX", "3.32"),
             ("TIP", "7.50"), ("TOTAL", "52.32"), "Thanks for dining!"),
            ("OAK TREE", "Mar 22", "Ribeye", "Caesar salad", "Fries", "Lemonade", "41.50", "3.32", "7.50",
             "52.32")),
    Receipt("h2-receipt-bright-spark.png", "BRIGHT SPARK ELECTRONICS",
            ("2024.10.05  13:02", "", ("USB-C cable", "9.99"), ("Phone case", "15.00"), ("AA batteries", "6.49"),
             ("Earbuds", "29.99"), "", ("SUBTOTAL", "61.47"), ("TAX", "4.92"), ("TOTAL", "66.39"),
             "Paid by card"),
            ("BRIGHT SPARK", "2024.10.05", "Phone case", "AA batteries", "6.49", "Earbuds", "61.47", "66.39")),
    Receipt("h2-receipt-petals-flowers.png", "PETALS FLOWER SHOP",
            ("11 February 2024", "", ("Red roses x12", "36.00"), ("Greeting card", "3.95"), ("Glass vase", "12.50"),
             "", ("TOTAL", "52.45"), "Cash"),
            ("PETALS", "11 February 2024", "roses", "Greeting card", "Glass vase", "52.45")),
    Receipt("h2-receipt-golden-dragon.png", "GOLDEN DRAGON",
            ("2023-12-31  21:05", "Table 12", "", ("Spring rolls", "5.80"), ("Kung pao chicken", "12.40"),
             ("Fried rice", "6.90"), ("Jasmine tea", "2.50"), "", ("SUBTOTAL", "27.60"), ("SERVICE 10%", "2.76"),
             ("TOTAL", "30.36"), "Thank you"),
            ("GOLDEN DRAGON", "2023-12-31", "Spring rolls", "chicken", "Fried rice", "Jasmine tea", "27.60", "2.76",
             "30.36")),
    Receipt("h2-receipt-hilltop-grocery.png", "HILLTOP GROCERY",
            ("Date: 7-Jun-2024", "", ("Whole milk 2L", "2.35"), ("Eggs x12", "4.10"), ("Cheddar", "5.60"),
             ("Pasta", "1.85"), ("Olive oil", "7.99"), "", ("TOTAL", "21.89"), "Paid by card"),
            ("HILLTOP", "7-Jun-2024", "Whole milk", "Eggs", "Cheddar", "Pasta", "Olive oil", "21.89")),
    Receipt("h2-receipt-spin-city-cycles.png", "SPIN CITY CYCLES",
            ("18/08/2023  15:10", "", ("Inner tube", "7.50"), ("Bike lock", "24.95"), ("Chain oil", "8.25"),
             ("Repair labour", "30.00"), "", ("TOTAL", "70.70"), "Paid by card"),
            ("SPIN CITY", "18/08/2023", "Inner tube", "Bike lock", "Chain oil", "Repair labour", "70.70")),
)


def _sums_add_up() -> None:
    """The prices on each receipt add up (items to the subtotal or total, extras to the total)."""
    for receipt in RECEIPTS:
        rows = [line for line in receipt.lines if isinstance(line, tuple)]
        amount = {label: round(float(price) * 100) for label, price in rows}
        items = sum(round(float(p) * 100) for label, p in rows if label not in {"SUBTOTAL", "TAX", "TIP", "TOTAL"}
                    and not label.startswith("SERVICE"))
        extras = sum(v for label, v in amount.items() if label in {"TAX", "TIP"} or label.startswith("SERVICE"))
        if "SUBTOTAL" in amount:
            assert items == amount["SUBTOTAL"], receipt.name
        assert items + extras == amount["TOTAL"], receipt.name


def make_receipts() -> None:
    _sums_add_up()
    base.make_receipts(RECEIPTS)


# ---------------------------------------------------------------------------------------------- speech


@dataclass(frozen=True)
class Recording:
    name: str
    text: str
    facts: tuple[str | tuple[str, ...], ...]  # words Whisper must return; a tuple: any one spelling of them


RECORDINGS = (
    Recording("h2-plumber-voicemail.wav", "Hello, this is Mike from Rapid Plumbing. I can come and fix your boiler "
              "on Wednesday at half past nine in the morning. Call me back if that doesn't suit you.",
              ("Mike", "Wednesday", "boiler", ("half past nine", "9.30", "9:30", "nine thirty"))),
    Recording("h2-dinner-invite.wav", "Hey, it's Daniel. Dinner at my place is on Friday at half past seven. Could you "
              "bring a dessert? See you then.",
              ("Daniel", "Friday", "dessert", ("seven thirty", "7.30", "7:30", "half past seven"))),
    Recording("h2-flight-change.wav", "This is a message from Skyline Airways. Your flight to Madrid on Sunday will now "
              "leave at six fifteen in the evening.",
              ("flight", "Madrid", "Sunday", ("six fifteen", "6.15", "6:15", "18:15"))),
    Recording("h2-vet-reminder.wav", "Hello, this is Riverside Vets. Just a reminder that Bella's check-up is on "
              "Tuesday at ten o'clock. Please bring her vaccination card.",
              ("Bella", "Tuesday", "vaccination", ("check-up", "checkup", "check up"))),
    Recording("h2-todo-memo.wav", "Note to self. Call the bank, pick up the dry cleaning, and water the plants "
              "before Saturday.",
              ("bank", ("dry cleaning", "dry-cleaning"), "plants", "Saturday")),
    Recording("h2-restaurant-question.wav", "Can you recommend a good Italian restaurant near the train station for "
              "tomorrow night?",
              ("Italian", "restaurant", "station")),
)


def make_recordings(only: set[str] | None = None) -> None:
    base.make_recordings(only, RECORDINGS)


# ---------------------------------------------------------------------------------------------- time series


def _days(start: str, count: int, step: int = 1) -> list[str]:
    first = datetime.date.fromisoformat(start)
    return [(first + datetime.timedelta(days=step * i)).isoformat() for i in range(count)]


def make_series() -> None:
    import numpy as np

    rng = np.random.default_rng(4242)
    # Body weight each morning, from about 84.5 kg down to about 79 kg over ten weeks; one morning skipped.
    days = _days("2024-01-08", 70)
    weight = 84.5 - 0.08 * np.arange(70) + rng.normal(0, 0.35, 70)
    rows = [[d, f"{v:.1f}"] for d, v in zip(days, weight, strict=True)]
    rows[17][1] = ""
    _write_csv("h2-body-weight.csv", ["date", "weight_kg"], rows)
    # Newsletter subscribers counted every Monday for 40 weeks, growing from about 1200 to about 3100.
    weeks = _days("2023-09-04", 40, step=7)
    subscribers = 1200 + 48 * np.arange(40) + rng.normal(0, 40, 40)
    _write_csv("h2-newsletter-subscribers.csv", ["week_starting", "subscribers"],
               [[w, f"{v:.0f}"] for w, v in zip(weeks, subscribers, strict=True)])
    # Household water use per day, around 150 litres, two leak days (640 and 585 litres); one day not read.
    days = _days("2024-04-01", 45)
    litres = 150 + rng.normal(0, 9, 45)
    litres[12] = 640   # 2024-04-13
    litres[33] = 585   # 2024-05-04
    rows = [[d, f"{v:.0f}"] for d, v in zip(days, litres, strict=True)]
    rows[25][1] = ""
    _write_csv("h2-water-usage.csv", ["Date", "Litres"], rows)
    # A server's CPU use every five minutes from 08:00 to 19:55, around 22 %, one peak of 97.3 % at 14:35.
    times = [f"2024-07-15 {8 + i // 12:02d}:{5 * (i % 12):02d}" for i in range(144)]
    cpu = np.clip(22 + rng.normal(0, 3, 144), 5, 40)
    peak = times.index("2024-07-15 14:35")
    cpu[peak] = 97.3
    _write_csv("h2-server-cpu.csv", ["timestamp", "cpu_percent"], [[t, f"{v:.1f}"] for t, v in zip(times, cpu, strict=True)])
    # Monthly ice cream sales over three years, highest every July, lowest in winter.
    months = [f"{2021 + i // 12}-{1 + i % 12:02d}" for i in range(36)]
    sales = 520 + 380 * np.cos(2 * np.pi * (np.arange(36) % 12 - 6) / 12) + rng.normal(0, 25, 36)
    _write_csv("h2-ice-cream-sales.csv", ["month", "units_sold"], [[m, f"{v:.0f}"] for m, v in zip(months, sales, strict=True)])
    # Minutes of commute on each working day for eight weeks, around 35 with rainy-day bumps; weekends absent.
    days = [d for d in _days("2024-02-05", 56) if datetime.date.fromisoformat(d).weekday() < 5]
    minutes = 35 + rng.normal(0, 4, len(days))
    minutes[[7, 19, 31]] += 14
    _write_csv("h2-commute-minutes.csv", ["date", "commute_min"], [[d, f"{v:.0f}"] for d, v in zip(days, minutes, strict=True)])


def check_series() -> list[str]:
    """The facts the cases rely on, read back from the CSV files."""
    import csv

    def read(name: str) -> tuple[list[str], list[float | None]]:
        with open(MEDIA / name, encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        return [r[0] for r in rows], [float(r[1]) if r[1] else None for r in rows]

    def halves(values: list[float | None]) -> tuple[float, float]:
        kept = [v for v in values if v is not None]
        half = len(kept) // 2
        return sum(kept[:half]) / half, sum(kept[half:]) / (len(kept) - half)

    problems = []
    _, weight = read("h2-body-weight.csv")
    first, second = halves(weight)
    if not second < first - 2:
        problems.append(f"h2-body-weight.csv: not clearly falling ({first:.1f} -> {second:.1f})")
    _, subs = read("h2-newsletter-subscribers.csv")
    first, second = halves(subs)
    if not second > first + 500:
        problems.append(f"h2-newsletter-subscribers.csv: not clearly rising ({first:.0f} -> {second:.0f})")
    days, water = read("h2-water-usage.csv")
    high = sorted((v, d) for d, v in zip(days, water, strict=True) if v is not None and v > 300)
    if high != [(585.0, "2024-05-04"), (640.0, "2024-04-13")]:
        problems.append(f"h2-water-usage.csv: spikes are {high}")
    times, cpu = read("h2-server-cpu.csv")
    top = max(zip(cpu, times, strict=True))
    if top != (97.3, "2024-07-15 14:35") or sorted(cpu)[-2] > 50:
        problems.append(f"h2-server-cpu.csv: peak is {top}")
    months, sales = read("h2-ice-cream-sales.csv")
    for year in ("2021", "2022", "2023"):
        best = max((v, m) for m, v in zip(months, sales, strict=True) if m.startswith(year))[1]
        if not best.endswith("-07"):
            problems.append(f"h2-ice-cream-sales.csv: {year} peaks in {best}")
    for name, (what, values) in {"h2-body-weight.csv": ("weight", weight), "h2-water-usage.csv": ("water", water),
                                 "h2-commute-minutes.csv": ("commute", read("h2-commute-minutes.csv")[1])}.items():
        print(f"{name:34} csv {what}: {len(values)} rows, {sum(v is None for v in values)} empty")
    print(f"{'h2-*.csv':34} csv {'ok' if not problems else 'MISSED'}")
    return problems


# ---------------------------------------------------------------------------------------------- check


def _found(fact: str | tuple[str, ...], text: str) -> bool:
    spellings = (fact,) if isinstance(fact, str) else fact
    return any(_normal(spelling) in _normal(text) for spelling in spellings)


def check(receipts: bool = True, recordings: bool = True) -> list[str]:
    return check_series() + check_readable(RECEIPTS if receipts else (), RECORDINGS if recordings else ())


def check_readable(receipts: Sequence[Receipt], recordings: Sequence[Recording]) -> list[str]:
    """PP-OCR reads every fact of each receipt and Whisper hears every fact of each recording (each printed)."""
    import soundfile
    from PIL import Image

    from orchestrator.storage.media import AudioClip

    problems = []
    if receipts:
        from tools.ocr import OpticalCharacterRecognition as OCR

        reader = OCR()
        for receipt in receipts:
            with Image.open(MEDIA / receipt.name) as image:
                text = reader(image=image.convert("RGB"))["text"]
            missed = [fact for fact in receipt.facts if not _found(fact, text)]
            print(f"{receipt.name:34} ocr {f'MISSED {missed}' if missed else 'ok'}: {' | '.join(text.splitlines())}")
            if missed:
                problems.append(f"{receipt.name}: OCR missed {missed}")
    if recordings:
        from tools.speech import SpeechRecognition

        listener = SpeechRecognition()
        for recording in recordings:
            samples, rate = soundfile.read(str(MEDIA / recording.name), dtype="float32")
            text = listener(audio=AudioClip(samples, rate))["text"]
            missed = [fact for fact in recording.facts if not _found(fact, text)]
            print(f"{recording.name:34} asr {f'MISSED {missed}' if missed else 'ok'}: {text.strip()}")
            if missed:
                problems.append(f"{recording.name}: Whisper missed {missed}")
    return problems


README_NOTE = (
    "\n## Second held-out split (`h2-*`)\n\n"
    "`h2-*` files are the media of `../heldout2.jsonl`, made by `../make_media_heldout2.py` the same way (run it\n"
    "after `../make_media.py`, which empties this folder; it checks them the same way): seven more receipts (three\n"
    "with tax, tip or service lines), six more recordings (times, days and names in them) and six more series.\n"
    "heldout2 reuses the photos above.\n"
)


def note_in_readme() -> None:
    readme = MEDIA / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else "# Media of the agent benchmark\n"
    if "## Second held-out split" not in text:
        readme.write_text(text.rstrip("\n") + "\n" + README_NOTE, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the media that is there")
    parser.add_argument("--speech", nargs="*", metavar="NAME", help="only re-speak these recordings (and check them)")
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    MEDIA.mkdir(parents=True, exist_ok=True)
    if args.speech is not None:
        make_recordings(set(args.speech) or None)
    elif not args.check:
        make_receipts()
        make_recordings()
        make_series()
        note_in_readme()
    problems = check(receipts=args.speech is None)
    for problem in problems:
        print("problem:", problem)
    made = sorted(MEDIA.glob("h2-*"))
    print(f"{len(made)} h2- files, {sum(f.stat().st_size for f in made) / 1024:.0f} KiB in {MEDIA}")
    return 1 if problems else 0


assert base.MEDIA == MEDIA

if __name__ == "__main__":
    sys.exit(main())
