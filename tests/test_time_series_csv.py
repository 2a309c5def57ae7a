"""Time series from the CSV files people really have: a header, a date/time column, several value columns,
missing values, ';' or tab delimiters, a BOM. What is accepted becomes a TimeSeries (timestamps in seconds
since 1970-01-01 UTC, gaps filled by interpolation and counted); what is refused is one line naming the line
and column at fault. The rules are in orchestrator/storage/codecs.py, above _CSV_MISSING."""

from __future__ import annotations

import calendar
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import InvalidInputError
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.codecs import MediaLimits, decode, inspect
from orchestrator.storage.media import TIME_UNIT_CLOCK, TIME_UNIT_EPOCH, TimeSeries
from orchestrator.storage.store import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "benchmarks" / "agent_cases" / "media"
DAY = 86400.0


def read(data: str | bytes, **limits) -> tuple[TimeSeries, dict]:
    """(series, metadata) as the store would get them."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    mime, metadata = inspect(ArtifactKind.TIME_SERIES, raw, MediaLimits(**limits))
    assert mime == "text/csv"
    return decode(ArtifactKind.TIME_SERIES, raw, mime, MediaLimits(**limits)), metadata


def refused(data: str | bytes, *words: str, **limits) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with pytest.raises(InvalidInputError) as caught:
        inspect(ArtifactKind.TIME_SERIES, raw, MediaLimits(**limits))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def utc(*parts: int) -> float:
    return float(calendar.timegm((*parts, *[0] * (6 - len(parts)))))


# ------------------------------------------------------------------------------------------ accepted forms


def test_header_and_iso_dates_become_timestamps():
    series, meta = read("date,sales\n2024-03-01,126\n2024-03-02,132\n2024-03-03,131\n")
    assert series.values.tolist() == [126, 132, 131] and series.channel_names == ["sales"]
    assert series.timestamps.tolist() == [utc(2024, 3, 1), utc(2024, 3, 2), utc(2024, 3, 3)]
    assert meta == {"length": 3, "channels": 1, "time_column": "date", "time_unit": "seconds since 1970-01-01 UTC",
                    "start": "2024-03-01", "end": "2024-03-03"}


def test_no_header_single_column_and_no_times():
    series, meta = read("3858\n4832\n4085\n")
    assert series.values.tolist() == [3858, 4832, 4085] and series.timestamps is None and series.channel_names is None
    assert meta == {"length": 3, "channels": 1}
    series, _ = read("steps\n3858\n4832\n")
    assert series.channel_names == ["steps"] and series.timestamps is None


def test_no_header_with_dates():
    series, meta = read("2024-03-01,1.5\n2024-03-02,2.5\n")
    assert series.values.tolist() == [1.5, 2.5] and series.channel_names is None
    assert series.timestamps.tolist() == [utc(2024, 3, 1), utc(2024, 3, 2)]
    assert meta["time_column"] == "column 1"


@pytest.mark.parametrize(
    "cells,expected,start",
    [
        (["2024-05-01 00:00", "2024-05-01 01:00"], [utc(2024, 5, 1), utc(2024, 5, 1, 1)], "2024-05-01 00:00"),
        (["2024-05-01T00:00:00", "2024-05-01T00:00:30.5"], [utc(2024, 5, 1), utc(2024, 5, 1) + 30.5], "2024-05-01 00:00"),
        (["2024-05-01T12:00+02:00", "2024-05-01T11:00Z", "2024-05-01 07:30-0500"],  # 10:00, 11:00, 12:30 UTC
         [utc(2024, 5, 1, 10), utc(2024, 5, 1, 11), utc(2024, 5, 1, 12, 30)], "2024-05-01 10:00"),
        (["2024/5/1", "2024/5/2"], [utc(2024, 5, 1), utc(2024, 5, 2)], "2024-05-01"),
        (["2021-01", "2021-02"], [utc(2021, 1, 1), utc(2021, 2, 1)], "2021-01-01"),
        (["13/03/2024", "14/03/2024"], [utc(2024, 3, 13), utc(2024, 3, 14)], "2024-03-13"),  # day first: 13 > 12
        (["01/03/2024", "28/03/2024"], [utc(2024, 3, 1), utc(2024, 3, 28)], "2024-03-01"),  # line 2 tells, for line 1 too
        (["03/12/2024", "03/13/2024"], [utc(2024, 3, 12), utc(2024, 3, 13)], "2024-03-12"),  # month first: 13 > 12
        (["01.03.2024 08:30", "31.03.2024 08:30"], [utc(2024, 3, 1, 8, 30), utc(2024, 3, 31, 8, 30)], "2024-03-01 08:30"),
        (["07:00", "07:01:30"], [7 * 3600.0, 7 * 3600.0 + 90], "07:00"),
        (["23:59", "00:01"], [23 * 3600.0 + 59 * 60, DAY + 60], "23:59"),  # on over midnight
    ],
    ids=["datetime", "iso-T", "zones", "slashes", "year-month", "day-first", "day-first-late", "month-first", "dotted",
         "clock", "midnight"],
)
def test_date_and_time_forms(cells: list[str], expected: list[float], start: str):
    series, meta = read("when,v\n" + "".join(f"{c},{i}\n" for i, c in enumerate(cells)))
    assert series.timestamps.tolist() == expected and series.values.tolist() == list(range(len(cells)))
    assert meta["start"] == start and "reversed" not in meta


def test_numeric_time_column_by_its_name():
    series, meta = read("time (s),x\n0,1\n0.5,2\n1.5,3\n")
    assert series.timestamps.tolist() == [0, 0.5, 1.5] and series.channel_names == ["x"]
    assert (meta["time_column"], meta["time_unit"], meta["start"], meta["end"]) == ("time (s)", "as written", 0, 1.5)
    series, _ = read("year,population\n2000,5.1\n2001,5.2\n")
    assert series.timestamps.tolist() == [2000, 2001]
    series, _ = read("level,x\n0,1\n5,2\n")  # another name: a channel like the others
    assert series.timestamps is None and series.channel_names == ["level", "x"]


def test_several_value_columns_are_channels():
    series, meta = read("date,temp,humidity,pressure\n2024-01-01,20.5,30,1013\n2024-01-02,21,31,1012.5\n")
    assert series.values.shape == (2, 3) and series.channel_names == ["temp", "humidity", "pressure"]
    assert series.values[:, 2].tolist() == [1013, 1012.5] and meta["channels"] == 3


def test_text_columns_are_left_out_and_named():
    series, meta = read("date,weekday,sales,note\n2024-01-01,Mon,5,\n2024-01-02,Tue,6,promo\n2024-01-03,Wed,7,\n")
    assert series.channel_names == ["sales"] and series.values.tolist() == [5, 6, 7]
    assert meta["ignored_columns"] == ["weekday", "note"]
    series, meta = read("2024-01-01,Mon,5\n2024-01-02,Tue,6\n")  # no header: Mon is no header cell over Tue
    assert series.values.tolist() == [5, 6] and meta["ignored_columns"] == ["column 2"] and meta["length"] == 2


@pytest.mark.parametrize("marker", ["", "NA", "na", "N/A", "#N/A", "nan", "NaN", "null", "None", "-", "--", " "])
def test_every_missing_marker_is_filled(marker: str):
    series, meta = read(f"date,v\n2024-01-01,1\n2024-01-02,{marker}\n2024-01-03,3\n2024-01-04,4\n")
    assert series.values.tolist() == [1, 2, 3, 4] and meta["missing_filled"] == 1


def test_missing_values_interpolate_over_the_times_and_hold_at_the_ends():
    # Uneven times: 1 Jan = 10, (2 Jan missing), 5 Jan = 40: linear in time gives 17.5, not the midpoint 25.
    series, meta = read("date,a,b\n2024-01-01,10,\n2024-01-02,NA,2\n2024-01-05,40,3\n2024-01-06,50,\n")
    assert series.values[:, 0].tolist() == [10, 17.5, 40, 50]
    assert series.values[:, 1].tolist() == [2, 2, 3, 3]  # the nearest value beyond either end
    assert meta["missing_filled"] == 3
    series, meta = read("v\n1\n\n3\n")  # a blank line is no row, not a missing value
    assert series.values.tolist() == [1, 3] and "missing_filled" not in meta
    series, meta = read("v\n1\nNA\nNA\n7\n")  # without times: over the row index
    assert series.values.tolist() == [1, 3, 5, 7] and meta["missing_filled"] == 2


def test_exactly_half_missing_is_filled_more_is_refused():
    series, meta = read("v\n1\nNA\n3\nNA\n")
    assert meta["missing_filled"] == 2 and series.values.tolist() == [1, 2, 3, 3]
    refused("date,a,b\n2024-01-01,1,1\n2024-01-02,2,\n2024-01-03,3,NA\n", "column 3", "'b'", "2 of 3", "more than half", "line 3")


def test_delimiters_bom_crlf_blank_lines_and_trailing_delimiters():
    expected = [[1.5, 2.0], [2.5, 3.0]]
    for text in ("date;a;b\r\n2024-01-01;1.5;2\r\n2024-01-02;2.5;3\r\n",
                 "date\ta\tb\n2024-01-01\t1.5\t2\n2024-01-02\t2.5\t3\n\n\n",
                 "\ufeffdate,a,b\n2024-01-01,1.5,2\n\n2024-01-02,2.5,3\n",
                 "date,a,b,\n2024-01-01,1.5,2,\n2024-01-02,2.5,3,\n,,,\n",
                 '"date","a","b"\n"2024-01-01","1.5","2"\n"2024-01-02","2.5","3"\n'):
        series, meta = read(text)
        assert series.values.tolist() == expected and series.channel_names == ["a", "b"], text
        assert series.timestamps.tolist() == [utc(2024, 1, 1), utc(2024, 1, 2)]
    assert read("date;a\n2024-01-01;1\n2024-01-02;2\n")[1]["delimiter"] == ";"
    assert read("date\ta\n2024-01-01\t1\n2024-01-02\t2\n")[1]["delimiter"] == "\t"


def test_decimal_comma_only_with_semicolons():
    series, _ = read("date;kwh\n2024-01-01;18,5\n2024-01-02;-0,25\n2024-01-03;17\n")
    assert series.values.tolist() == [18.5, -0.25, 17]
    refused('date,kwh\n2024-01-01,"18,5"\n2024-01-02,17\n', "line 2", "column 2", "'18,5'", "decimal comma")
    refused("date\tkwh\n2024-01-01\t1,234\n2024-01-02\t17\n", "line 2", "column 2", "'1,234'")


def test_newest_first_is_read_in_reverse():
    series, meta = read("date,close\n2024-07-03,3\n2024-07-02,NA\n2024-07-01,1\n")
    assert series.values.tolist() == [1, 2, 3] and meta["reversed"] is True
    assert (meta["start"], meta["end"]) == ("2024-07-01", "2024-07-03")


@pytest.mark.parametrize("path", sorted(MEDIA.glob("*.csv")), ids=lambda p: p.name)
def test_benchmark_files_decode(path: Path):
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    series, meta = read(path.read_bytes())
    assert series.length == len(lines) - 1 and series.channels == 1  # every file has a header
    first = lines[0].split(",")[0]
    if len(lines[0].split(",")) > 1:  # a time column first
        assert series.timestamps is not None and meta["time_column"] == first
        assert np.all(np.diff(series.timestamps) > 0)
    assert np.all(np.isfinite(series.values))


def test_benchmark_gaps_are_filled():
    if not (MEDIA / "daily-sales.csv").exists():
        pytest.skip("benchmark media absent")
    series, meta = read((MEDIA / "daily-sales.csv").read_bytes())  # 2024-03-24 is empty: between 161 and 164
    assert meta["missing_filled"] == 1 and series.values[23] == pytest.approx(162.5)
    series, meta = read((MEDIA / "heart-rate.csv").read_bytes())
    assert meta["time_unit"].startswith("seconds since 00:00") and (meta["start"], meta["end"]) == ("07:00", "07:59")


def test_stored_and_loaded_through_the_store(tmp_path: Path):
    store = ArtifactStore(tmp_path / "store")
    path = tmp_path / "visits.csv"
    path.write_bytes(b"Date;Visitors;Signups\r\n2024-02-01;923;5\r\n2024-02-02;NA;6\r\n2024-02-03;900;7\r\n")
    artifact = store.ingest_file(path)
    assert artifact.metadata["missing_filled"] == 1 and artifact.metadata["name"] == "visits.csv"
    series = store.load(artifact.id)
    assert series.values[:, 0].tolist() == [923, 911.5, 900] and series.channel_names == ["Visitors", "Signups"]
    assert series.time_unit == TIME_UNIT_EPOCH
    again = store.load(store.put_value("time_series", series).id)  # the JSON encoding carries the timestamps and unit
    assert again.timestamps.tolist() == series.timestamps.tolist() and again.time_unit == TIME_UNIT_EPOCH


def test_time_unit_is_optional_in_json_and_needs_timestamps(tmp_path: Path):
    store = ArtifactStore(tmp_path / "store")
    old = store.load(store.put("time_series", b'{"values": [1, 2], "timestamps": [0, 1]}').id)  # written before time_unit
    assert old.time_unit is None
    assert b"time_unit" not in store.read_bytes(store.put_value("time_series", old).id)  # unknown: the JSON as before
    assert read("time,v\n07:00,1\n07:05,2\n")[0].time_unit == TIME_UNIT_CLOCK
    assert read("t,v\n0,1\n1,2\n")[0].time_unit is None  # numbers as written
    with pytest.raises(InvalidInputError, match="time_unit but no timestamps"):
        store.put("time_series", b'{"values": [1, 2], "time_unit": "s"}')
    with pytest.raises(InvalidInputError, match="time_unit must be a short string"):
        store.put("time_series", b'{"values": [1, 2], "timestamps": [0, 1], "time_unit": 5}')


# ------------------------------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    "text,words",
    [
        ("date,v\n2024-03-01,1\n2024-03-02,inf\n", ("line 3", "column 2", "non-finite")),
        ("v\n1\n-Infinity\n", ("line 3", "column 1", "non-finite")),
        ("v\n1\n1e999\n", ("line 3", "column 1", "non-finite")),
        ("date,v\n2024-03-01,1e308\n", ("line 2", "column 2", "too large")),
        ("date,v\n2024-03-01,-1e100\n", ("line 2", "column 2", "too large")),
        ("date,v\n2024-03-01,1\n2024-03-02,abc\n", ("line 3", "column 2", "'abc'", "not a number")),
        ("date,v\n2024-03-01,1\n2024-03-02,\"1,234\"\n", ("line 3", "column 2", "'1,234'")),
        ("date,v\n2024-03-01,1\n2024-03-02\n", ("line 3", "1 columns", "expected 2")),
        ("date,v\n01/03/2024,1\n02/03/2024,2\n", ("line 2", "column 1", "day/month or month/day", "YYYY-MM-DD")),
        ("date,v\n13/03/2024,1\n03/14/2024,2\n", ("line 3", "column 1", "month first", "line 2", "day first")),
        ("date,v\n2024-02-28,1\n2024-02-30,2\n", ("line 3", "column 1", "'2024-02-30'", "not a valid date")),
        ("date,v\n2024-13,1\n", ("line 2", "column 1", "not a valid date")),
        ("date,v\n2024-03-01 25:00,1\n", ("line 2", "column 1", "not a valid date")),
        ("date,v\n2024-03-01,1\n,2\n", ("line 3", "column 1", "time is missing")),
        ("date,v\n2024-03-01,1\n2024-03-01,2\n", ("line 3", "column 1", "repeats", "'2024-03-01'")),
        ("date,v\n2024-03-01,1\n2024-03-03,2\n2024-03-02,3\n", ("line 4", "column 1", "comes before", "'2024-03-03'")),
        ("time,v\n07:05,1\n07:00,2\n", ("line 3", "column 1", "comes before")),
        ("date,v\n2024-03-01,1\n07:00,2\n", ("line 3", "column 1", "'07:00'", "2024-03-01")),
        ("date,v\n2024-03-01,1\nsoon,2\n", ("line 3", "column 1", "'soon'")),
        ("time,v\n0,1\nlater,2\n", ("line 3", "column 1", "'later'", "not a number")),
        ("date,weekday\n2024-03-01,Mon\n2024-03-02,Tue\n", ("no numeric column", "line 2", "column 2", "'Mon'")),
        ("date\n2024-03-01\n2024-03-02\n", ("no numeric column", "only the times")),
        ("date,v\n2024-03-01,\n2024-03-02,NA\n", ("no numeric column", "empty or missing")),
        ("time,value\n", ("header but no values",)),
        ("Dear diary, today was sunny.\nI walked the dog; then I slept.\n", ("line 1", "column 1", "not a table")),
        ("Dear diary, today was sunny.\nI walked the dog, then I slept.\n", ("no numeric column", "line 1", "column 1")),
        ("date,v\n2024-03-01,1\n2024-03-02,NA\n2024-03-03,NA\n", ("column 2", "'v'", "2 of 3", "more than half", "line 3")),
    ],
    ids=["inf", "-infinity", "1e999", "1e308", "1e100", "text", "thousands", "ragged", "ambiguous", "conflicting",
         "feb-30", "month-13", "hour-25", "no-time", "repeat", "out-of-order", "clock-back", "mixed", "bad-date",
         "bad-number-time", "all-text", "only-times", "all-missing", "header-only", "prose", "prose-2-columns", "half-missing"],
)
def test_refused_with_line_and_column(text: str, words: tuple[str, ...]):
    refused(text, *words)


def test_too_many_points_is_refused_early():
    refused("date,v\n" + "".join(f"2024-01-{d:02d},{d}\n" for d in range(1, 7)), "values", "limit of 10",
            max_time_series_points=10)
    big = "v\n" + "1\n" * 100_000
    message = refused(big, "limit of 1,000", "by line", max_time_series_points=1000)
    assert "line 1,0" not in message  # stops near the limit, not at the end of the file
    assert read("v\n" + "1\n" * 10, max_time_series_points=10)[0].length == 10  # the limit itself is allowed


def test_not_utf8_is_refused():
    refused("date,v\n2024-03-01,1\n".encode("utf-16"), "UTF-8")


# ------------------------------------------------------------------------------------------ end to end


def test_cli_describes_a_dated_csv_with_gaps(tmp_path: Path):
    path = tmp_path / "visits.csv"
    values = {d: "NA" if d in (5, 11) else "" if d == 17 else str(100 + 3 * d) for d in range(1, 25)}  # 3 gaps
    rows = ["date,visitors"] + [f"2024-03-{d:02d},{value}" for d, value in values.items()]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    env = {**os.environ, "ANYMODA_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    env.pop("ANYMODA_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "tool", "time-series-description", "--series", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("visitors (24 points, one per day, from 2024-03-01 to 2024-03-24; lowest 103 at 2024-03-01, highest 172 at "
            "2024-03-24): an upward trend of +3 per step") in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    [artifact] = ArtifactStore(tmp_path / "home" / "artifacts").list(kind="time_series")
    assert artifact.metadata["missing_filled"] == 3
    assert (artifact.metadata["start"], artifact.metadata["end"]) == ("2024-03-01", "2024-03-24")


def test_a_dated_series_reports_its_events_as_dates_not_epoch_seconds(tmp_path: Path):
    """'The day with more visitors than usual was 1708473600' came from epoch seconds in the describer's text."""
    from orchestrator.config import Settings
    from tools.time_series import TimeSeriesDescription

    rows = ["date,visitors"]
    for day in range(60):
        value = 100 + 10 * (day % 7 in (5, 6)) + 0.5 * ((day * 37) % 5 - 2)  # a weekly cycle, a little jitter
        value += 60 if day == 20 else 0  # 2024-02-21
        value += 25 if day >= 40 else 0  # a step on 2024-03-12
        rows.append(f"2024-{2 + (day >= 29):02d}-{day + 1 - 29 * (day >= 29):02d},{value}")
    series = read("\n".join(rows) + "\n")[0]
    tool = TimeSeriesDescription(settings=Settings.from_dict({"home": str(tmp_path), "offline": True}))
    out = tool.run(tool.build_method(), {"series": series}, tool.check_params({}))
    text, [report] = out["text"].value, out["report"].value["channels"]
    assert "2024-02-21 (" in text and "level shift at 2024-03-12" in text, text
    assert "from 2024-02-01 to 2024-03-31" in text and "one per day" in text
    assert "1708473600" not in text and "t=" not in text
    spike = next(item for item in report["spikes"]["items"] if item["index"] == 20)
    assert spike["date"] == "2024-02-21" and spike["time"] == 1708473600  # the number stays for programs
    assert report["span"] == {"from": "2024-02-01", "to": "2024-03-31"} and report["step"] == "1 day"
    count, unit = report["seasonality"]["period"].split()  # '6.98 days' (a week to the estimate's precision)
    assert unit == "days" and float(count) == pytest.approx(7, abs=0.1)


def test_times_of_day_are_reported_as_clock_times(tmp_path: Path):
    from orchestrator.config import Settings
    from tools.time_series import TimeSeriesDescription

    values = [10.0 + (h % 2) * 0.1 for h in range(48)]
    values[30] = 40.0
    rows = ["time,load"] + [f"2024-05-0{1 + h // 24} {h % 24:02d}:00,{v}" for h, v in enumerate(values)]
    series = read("\n".join(rows) + "\n")[0]
    tool = TimeSeriesDescription(settings=Settings.from_dict({"home": str(tmp_path), "offline": True}))
    out = tool.run(tool.build_method(), {"series": series}, tool.check_params({}))
    text = out["text"].value
    assert "2024-05-02 06:00 (40" in text and "one per hour, from 2024-05-01 00:00 to 2024-05-02 23:00" in text, text


@pytest.mark.parametrize("rows, words, key, value", [
    # Monthly sales peaking in summer: "which months sell the most?" needs the month, not "7 steps in".
    ([f"{2021 + i // 12}-{i % 12 + 1:02d}-01,{100 + 60 * np.cos(2 * np.pi * (i % 12 + 1 - 7) / 12) + 0.4 * i:.2f}"
      for i in range(36)], "highest in July each year", "peak_month", "July"),
    # Daily visits with a Saturday rush, from a Monday.
    ([f"2024-01-{d + 1:02d},{50 + 30 * (d % 7 == 5) + d % 3}" for d in range(28)], "highest on Saturdays",
     "peak_weekday", "Saturday"),
])
def test_a_calendar_cycle_says_when_it_peaks(tmp_path: Path, rows, words, key, value):
    from orchestrator.config import Settings
    from tools.time_series import TimeSeriesDescription

    series = read("\n".join(["date,value", *rows]) + "\n")[0]
    tool = TimeSeriesDescription(settings=Settings.from_dict({"home": str(tmp_path), "offline": True}))
    out = tool.run(tool.build_method(), {"series": series}, tool.check_params({}))
    assert words in out["text"].value, out["text"].value
    assert out["report"].value["channels"][0]["seasonality"][key] == value
