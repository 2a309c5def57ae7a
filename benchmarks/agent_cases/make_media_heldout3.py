"""Make the media of the third held-out split (``heldout3.jsonl``) offline, then check it.

    .venv/bin/python benchmarks/agent_cases/make_media_heldout3.py            # write media/h3-*, then check
    .venv/bin/python benchmarks/agent_cases/make_media_heldout3.py --check    # only check what is there
    .venv/bin/python benchmarks/agent_cases/make_media_heldout3.py --speech h3-landlord-voicemail.wav

The drawing and speaking helpers come from ``make_media.py`` and ``make_media_heldout2.py`` (imported,
not copied): receipts, an invoice and a note drawn with PIL, sentences spoken by the packaged Piper voice,
spreadsheet-like CSV series, and three crops of the photos already in ``media/``. Every file is named
``h3-*`` and written into ``media/``; nothing else there is touched (``make_media.py`` without ``--check``
empties the folder, so run this script after it and after ``make_media_heldout2.py``).

The check runs PP-OCR on every receipt, Whisper on every recording and the packaged image classifier on
every photo the cases use, reads the facts the cases rely on back from each CSV, and checks that every
file named in ``heldout3.jsonl`` exists and is small. It exits 1 if anything is missed: when a check
fails, change the media, not the expectation.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_media_heldout2 as h2  # noqa: E402
from make_media_heldout2 import Recording  # noqa: E402

import make_media as base  # noqa: E402  (also puts the repository on sys.path)
from make_media import MEDIA, Receipt, _write_csv  # noqa: E402

CASES = Path(__file__).resolve().parent / "heldout3.jsonl"

# ---------------------------------------------------------------------------------------------- receipts

RECEIPTS = (
    Receipt("h3-receipt-maple-leaf-diner.png", "MAPLE LEAF DINER",
            ("14/02/2025  13:10", "Server: Rosa", "", ("Pancake stack", "8.75"), ("Bacon side", "3.50"),
             ("Hash browns", "3.25"), ("Coffee refill", "2.40"), "", ("SUBTOTAL", "17.90"), ("TAX", "1.43"),
             ("TIP", "3.50"), ("TOTAL", "22.83"), "Paid by Visa"),
            ("MAPLE LEAF", "14/02/2025", "Pancake", "Bacon", "Hash browns", "Coffee", "17.90", "1.43", "3.50",
             "22.83")),
    Receipt("h3-receipt-harbour-fish-bar.png", "HARBOUR FISH BAR",
            ("2024-11-02  18:47", "", ("Cod and chips", "10.95"), ("Mushy peas", "2.20"),
             ("Pickled onion", "0.80"), ("Can of cola", "1.60"), "", ("TOTAL", "15.55"), ("CASH", "20.00"),
             ("CHANGE", "4.45")),
            ("HARBOUR FISH", "2024-11-02", "Cod", "chips", "10.95", "Mushy peas", "15.55", "CASH", "20.00",
             "CHANGE")),
    Receipt("h3-receipt-quickprint.png", "QUICKPRINT COPY CENTRE",
            ("Date: 9 Jan 2025", "", ("A4 colour x40", "16.00"), ("Binding", "4.50"), ("Laminating x5", "7.50"),
             "", ("SUBTOTAL", "28.00"), ("VAT 20%", "5.60"), ("TOTAL", "33.60"), "Paid by card"),
            ("QUICKPRINT", "9 Jan 2025", "Binding", "Laminating", "28.00", "VAT", "5.60", "33.60")),
    Receipt("h3-receipt-green-thumb.png", "GREEN THUMB GARDEN CENTRE",
            ("27 Apr 2025  11:05", "", ("Compost 40L", "6.99"), ("Tomato plants", "7.50"), ("Watering can", "12.00"),
             ("Seed packets", "4.20"), ("Garden gloves", "5.49"), "", ("TOTAL", "36.18"), "Paid by card"),
            ("GREEN THUMB", "27 Apr 2025", "Compost", "Tomato plants", "Watering can", "Seed packets", "gloves",
             "36.18")),
    Receipt("h3-receipt-taqueria-el-sol.png", "TAQUERIA EL SOL",
            ("08/19/2024  12:58", "", ("Carnitas tacos", "9.50"), ("Chips and salsa", "3.75"), ("Horchata", "3.25"),
             "", ("SUBTOTAL", "16.50"), ("TAX", "1.36"), ("TIP", "3.30"), ("TOTAL", "21.16"), "Mastercard"),
            ("TAQUERIA", "08/19/2024", "Carnitas", "salsa", "Horchata", "3.25", "16.50", "21.16")),
    Receipt("h3-invoice-peak-fitness.png", "PEAK FITNESS",
            ("INVOICE NO 1043", "Date: 01 Mar 2025", "", ("Monthly membership", "39.00"), ("Locker rental", "5.00"),
             ("Protein bar x2", "4.60"), "", ("AMOUNT DUE", "48.60"), "Direct debit"),
            ("PEAK FITNESS", "INVOICE", "1043", "01 Mar 2025", "membership", "Locker", "Protein bar", "AMOUNT DUE",
             "48.60")),
    Receipt("h3-note-to-self.png", "NOTE TO SELF",
            ("", "Pay rent by 5 June", "Call Gran on Sunday", "Return library books", "WiFi: sunflower42"),
            ("NOTE", "rent", "5 June", "Gran", "library books", "sunflower42")),
)

EXTRA = ("TAX", "TIP")  # lines added to the items to make the total (VAT and service too)
NOT_ITEMS = {"SUBTOTAL", "TOTAL", "AMOUNT DUE", "CASH", "CHANGE"}


def _sums_add_up() -> list[str]:
    """Items add up to the subtotal or total, extras to the total; cash minus total is the change."""
    problems = []
    for receipt in RECEIPTS:
        rows = [line for line in receipt.lines if isinstance(line, tuple)]
        if not rows:
            continue
        cents = {label: round(float(price) * 100) for label, price in rows}

        def extra(label: str) -> bool:
            return label in EXTRA or label.startswith(("VAT", "SERVICE"))

        items = sum(v for label, v in cents.items() if label not in NOT_ITEMS and not extra(label))
        extras = sum(v for label, v in cents.items() if extra(label))
        total = cents.get("TOTAL", cents.get("AMOUNT DUE"))
        if "SUBTOTAL" in cents and items != cents["SUBTOTAL"]:
            problems.append(f"{receipt.name}: items {items} != subtotal {cents['SUBTOTAL']}")
        if items + extras != total:
            problems.append(f"{receipt.name}: items + extras {items + extras} != total {total}")
        if "CASH" in cents and cents["CASH"] - total != cents.get("CHANGE"):
            problems.append(f"{receipt.name}: change does not add up")
    return problems


# ---------------------------------------------------------------------------------------------- speech

RECORDINGS = (
    Recording("h3-landlord-voicemail.wav", "Hi, this is Priya, your landlord. The electrician will come on Thursday "
              "at eleven in the morning to check the smoke alarms. Please leave the key with your neighbour.",
              ("Priya", "landlord", "Thursday", "electrician", "smoke alarm", ("eleven", "11"))),
    Recording("h3-gym-reminder.wav", "Reminder from City Gym. Your personal training session with Steve has moved to "
              "Saturday at eight in the morning.",
              ("Steve", "Saturday", ("eight", "8"), "training")),
    Recording("h3-meeting-notes.wav", "Meeting notes. We agreed to launch the new website on the fifteenth of May. "
              "Tom will write the press release, and Lisa will update the price list.",
              ("website", "May", "Tom", "press release", "Lisa", "price list")),
    Recording("h3-pharmacy-call.wav", "Hello, this is Oakwood Pharmacy. Your prescription is ready to collect. "
              "We close at six thirty tonight.",
              ("pharmacy", "prescription", ("six thirty", "6.30", "6:30", "half past six"))),
    Recording("h3-school-office.wav", "Hi, this is the school office. Your daughter Sophie left her lunch box and "
              "her blue jacket in the classroom. You can pick them up before four o'clock.",
              ("Sophie", ("lunch box", "lunchbox"), "jacket", "school")),
    Recording("h3-shopping-memo.wav", "Shopping list. Two avocados, a bag of rice, oat milk, and some lemons.",
              ("avocado", "rice", "oat milk", "lemons")),
    Recording("h3-surprise-party.wav", "Don't tell Jack, but his surprise party is on the twelfth of October at the "
              "bowling alley.",
              ("Jack", "surprise party", "October", "bowling")),
    Recording("h3-optician-voicemail.wav", "Hello, this is Clearview Opticians. Your eye test is booked for Friday "
              "at half past two in the afternoon. Please bring your current glasses.",
              ("optician", "eye test", "Friday", ("half past two", "half past 2", "2.30", "2:30", "two thirty"), "glasses")),
)


def make_recordings(only: set[str] | None = None) -> None:
    base.make_recordings(only, RECORDINGS)


# ---------------------------------------------------------------------------------------------- time series


def make_series() -> None:
    import numpy as np

    rng = np.random.default_rng(3033)
    # Monthly gas bill, March 2022 to February 2025: dearest every January, and dearer each year.
    months = [f"{2022 + (2 + i) // 12}-{1 + (2 + i) % 12:02d}" for i in range(36)]
    month_of_year = np.array([int(m[5:]) - 1 for m in months])
    bill = 80 + 60 * np.cos(2 * np.pi * month_of_year / 12) + 1.2 * np.arange(36) + rng.normal(0, 1.5, 36)
    _write_csv("h3-gas-bill.csv", ["month", "gas_bill"], [[m, f"{v:.2f}"] for m, v in zip(months, bill, strict=True)])
    # Savings balance each day for two months, slipping from about 5200 to about 3100.
    days = h2._days("2024-09-01", 60)
    balance = 5200 - 35 * np.arange(60) + rng.normal(0, 60, 60)
    _write_csv("h3-savings-balance.csv", ["date", "balance"], [[d, f"{v:.2f}"] for d, v in zip(days, balance, strict=True)])
    # Swimming pool visitors a day, about 250 (more at weekends), one heatwave day of 910 on 2024-07-19.
    days = h2._days("2024-07-01", 45)
    weekend = np.array([datetime.date.fromisoformat(d).weekday() >= 5 for d in days])
    visitors = 250 + 60 * weekend + rng.normal(0, 20, 45)
    visitors[days.index("2024-07-19")] = 910
    _write_csv("h3-pool-visitors.csv", ["date", "visitors"], [[d, f"{v:.0f}"] for d, v in zip(days, visitors, strict=True)])
    # Loaves a bakery sold each day for six weeks, with the weekday written next to the date; Saturdays best.
    days = h2._days("2024-10-07", 42)
    weekday = [datetime.date.fromisoformat(d).strftime("%a") for d in days]
    effect = {"Mon": 0, "Tue": -5, "Wed": 0, "Thu": 5, "Fri": 20, "Sat": 75, "Sun": -30}
    loaves = [120 + effect[w] + rng.normal(0, 6) for w in weekday]
    _write_csv("h3-bakery-loaves.csv", ["date", "day", "loaves"],
               [[d, w, f"{v:.0f}"] for d, w, v in zip(days, weekday, loaves, strict=True)])
    # River level every hour over three days, a flood wave cresting at 2024-03-10 14:00.
    hours = [f"2024-03-{9 + h // 24:02d} {h % 24:02d}:00" for h in range(72)]
    crest = hours.index("2024-03-10 14:00")
    level = 1.2 + 2.3 * np.exp(-((np.arange(72) - crest) ** 2) / (2 * 4.0 ** 2)) + rng.normal(0, 0.01, 72)
    level[crest] += 0.05
    _write_csv("h3-river-level.csv", ["time", "level_m"], [[h, f"{v:.2f}"] for h, v in zip(hours, level, strict=True)])
    # Followers of a small account each day, climbing from about 1200 to about 1900.
    days = h2._days("2024-01-01", 50)
    followers = 1200 + 14 * np.arange(50) + rng.normal(0, 10, 50)
    _write_csv("h3-followers.csv", ["date", "followers"], [[d, f"{v:.0f}"] for d, v in zip(days, followers, strict=True)])


def check_series() -> list[str]:
    """The facts the cases rely on, read back from the CSV files."""

    def read(name: str, column: int = 1) -> tuple[list[list[str]], list[float]]:
        with open(MEDIA / name, encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        return rows, [float(r[column]) for r in rows]

    def halves(values: list[float]) -> tuple[float, float]:
        half = len(values) // 2
        return sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)

    problems = []
    rows, bill = read("h3-gas-bill.csv")
    months = [r[0] for r in rows]
    if max(zip(bill, months, strict=True))[1] != "2025-01":
        problems.append(f"h3-gas-bill.csv: dearest month is {max(zip(bill, months, strict=True))[1]}")
    for winter in ("2022-03", "2023-03", "2024-03"):  # each twelve months from March: dearest in January
        start = months.index(winter)
        best = max(zip(bill[start:start + 12], months[start:start + 12], strict=True))[1]
        if not best.endswith("-01"):
            problems.append(f"h3-gas-bill.csv: the year from {winter} peaks in {best}")
    yearly = [sum(bill[i:i + 12]) / 12 for i in (0, 12, 24)]
    if not yearly[0] + 10 < yearly[1] < yearly[2] - 10:
        problems.append(f"h3-gas-bill.csv: yearly means not rising: {yearly}")
    _, balance = read("h3-savings-balance.csv")
    first, second = halves(balance)
    if not second < first - 500:
        problems.append(f"h3-savings-balance.csv: not clearly falling ({first:.0f} -> {second:.0f})")
    rows, visitors = read("h3-pool-visitors.csv")
    ranked = sorted(zip(visitors, (r[0] for r in rows), strict=True), reverse=True)
    if ranked[0][1] != "2024-07-19" or ranked[1][0] > 450:
        problems.append(f"h3-pool-visitors.csv: busiest days {ranked[:2]}")
    rows, loaves = read("h3-bakery-loaves.csv", column=2)
    by_day: dict[str, list[float]] = {}
    for row, value in zip(rows, loaves, strict=True):
        if datetime.date.fromisoformat(row[0]).strftime("%a") != row[1]:
            problems.append(f"h3-bakery-loaves.csv: {row[0]} is not a {row[1]}")
        by_day.setdefault(row[1], []).append(value)
    best_day = max(by_day, key=lambda d: sum(by_day[d]) / len(by_day[d]))
    weekly_best = {max(zip(loaves[i:i + 7], (r[1] for r in rows[i:i + 7]), strict=True))[1] for i in range(0, 42, 7)}
    if best_day != "Sat" or weekly_best != {"Sat"}:
        problems.append(f"h3-bakery-loaves.csv: best day {best_day}, weekly bests {weekly_best}")
    rows, level = read("h3-river-level.csv")
    crest = max(zip(level, (r[0] for r in rows), strict=True))
    if crest[1] != "2024-03-10 14:00" or sorted(level)[-2] > crest[0] - 0.03:
        problems.append(f"h3-river-level.csv: crest {crest}, next {sorted(level)[-2]}")
    _, followers = read("h3-followers.csv")
    first, second = halves(followers)
    if not second > first + 200:
        problems.append(f"h3-followers.csv: not clearly rising ({first:.0f} -> {second:.0f})")
    for name in ("h3-gas-bill.csv", "h3-savings-balance.csv", "h3-pool-visitors.csv", "h3-bakery-loaves.csv",
                 "h3-river-level.csv", "h3-followers.csv"):
        print(f"{name:34} csv {sum(1 for _ in open(MEDIA / name, encoding='utf-8')) - 1} rows")
    print(f"{'h3-*.csv':34} csv {'ok' if not problems else 'MISSED'}: gas dearest 2025-01 and each January, "
          f"savings falling, pool busiest 2024-07-19, bakery best on Saturdays, river crest 2024-03-10 14:00, "
          f"followers rising")
    return problems


# ---------------------------------------------------------------------------------------------- photos

CROPS = {  # name: (source in media/, box as fractions of the width and height)
    "h3-eagle-close.jpg": ("eagle.jpg", (0.30, 0.0, 0.80, 0.60)),
    "h3-zebra-close.jpg": ("giraffe.jpg", (0.47, 0.40, 0.87, 0.88)),
    "h3-dog-in-field.jpg": ("person.jpg", (0.06, 0.50, 0.40, 0.92)),
}
# What the packaged ImageNet classifier must name in each photo the cases ask about (its top label).
PHOTO_LABELS = {
    "eagle.jpg": ("eagle",),
    "dog.jpg": ("shepherd", "collie", "schnauzer", "malamute", "husky", "elkhound", "borzoi", "dog"),
    "h3-eagle-close.jpg": ("eagle",),
    "h3-zebra-close.jpg": ("zebra",),
    "h3-dog-in-field.jpg": ("malamute", "husky", "Eskimo dog"),
}


def make_photos() -> None:
    from PIL import Image

    for name, (source, (x0, y0, x1, y1)) in CROPS.items():
        with Image.open(MEDIA / source) as image:
            w, h = image.size
            crop = image.convert("RGB").crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
            crop.save(MEDIA / name, quality=90, optimize=True)


def check_photos() -> list[str]:
    """The packaged classifier, run as a single tool (``anymoda tool image-classification``), not the agent."""
    problems = []
    anymoda = Path(sys.executable).parent / "anymoda"
    for name, wanted in PHOTO_LABELS.items():
        out = subprocess.run([str(anymoda), "tool", "image-classification", "--image", str(MEDIA / name), "--json"],
                             capture_output=True, text=True, check=False)
        try:
            meta = json.loads(out.stdout)["outputs"]["label"]["metadata"]
            label, score = meta["preview"], meta.get("score")
        except (ValueError, KeyError):
            label, score = f"(no result: {out.stderr.strip()[-200:]})", None
        ok = any(w.lower() in label.lower() for w in wanted)
        print(f"{name:34} cls {'ok' if ok else 'MISSED ' + str(wanted)}: {label} {score}")
        if not ok:
            problems.append(f"{name}: classifier said {label!r}, not one of {wanted}")
    return problems


# ---------------------------------------------------------------------------------------------- check


def check_cases() -> list[str]:
    """Every file the cases name exists, is an h3- file or an existing photo, and is small."""
    problems = []
    if not CASES.is_file():
        return [f"{CASES.name} is missing"]
    names = set()
    for number, line in enumerate(CASES.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            for path in json.loads(line).get("files", []):
                names.add(path)
                if not (CASES.parent / path).is_file():
                    problems.append(f"{CASES.name}:{number}: {path} does not exist")
    made = {f"media/{p.name}" for p in MEDIA.glob("h3-*")}
    if made - names:
        problems.append(f"made but not used by any case: {sorted(made - names)}")
    for path in sorted(MEDIA.glob("h3-*")):
        limit = 100_000 if path.suffix != ".wav" else 400_000
        if path.stat().st_size > limit:
            problems.append(f"{path.name}: {path.stat().st_size} bytes (over {limit})")
    print(f"{CASES.name:34} files: {len(names)} named, {'all there' if not problems else 'PROBLEMS'}")
    return problems


def check(receipts: bool = True, recordings: bool = True, photos: bool = True) -> list[str]:
    problems = _sums_add_up() + check_series()
    problems += h2.check_readable(RECEIPTS if receipts else (), RECORDINGS if recordings else ())
    if photos:
        problems += check_photos()
    return problems + check_cases()


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
        base.make_receipts(RECEIPTS)
        make_recordings()
        make_series()
        make_photos()
    problems = check(receipts=args.speech is None, photos=args.speech is None)
    for problem in problems:
        print("problem:", problem)
    made = sorted(MEDIA.glob("h3-*"))
    print(f"{len(made)} h3- files, {sum(f.stat().st_size for f in made) / 1024:.0f} KiB in {MEDIA}")
    return 1 if problems else 0


assert base.MEDIA == h2.MEDIA == MEDIA

if __name__ == "__main__":
    sys.exit(main())
