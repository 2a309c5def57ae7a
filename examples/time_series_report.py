"""A written report on a time series: statistics find the facts, the LLM writes them up, a plot shows them.

    python examples/time_series_report.py [OUT_DIR]

A year of daily sales is made up (a rising trend, a weekly cycle, noise, one spike) and saved as a CSV file;
the shipped `time-series-report` workflow describes it (trend, period, spikes, level shifts: statistical,
no weights), plots it, and has the packaged Qwen2.5-Coder-0.5B write a short report from the description.
The same as `anymoda workflow run time-series-report --input series=sales.csv --out report/`.
Offline; some 20-40 s on two CPU cores (plus a one-time conversion of the packaged LLM on the first run).
"""

import sys
from datetime import date, timedelta
from importlib.resources import files
from pathlib import Path

import numpy as np

from orchestrator.agent import Orchestrator

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("output") / "time_series_report")
out.mkdir(parents=True, exist_ok=True)

# 365 days of sales: 200 a day at first, rising by 0.5 a day, 30 more at weekends, noise, and a one-day
# spike (a promotion) on day 250. A CSV with a date column: dates are kept as the series' timestamps.
rng = np.random.default_rng(7)
days = np.arange(365)
sales = 200 + 0.5 * days + 30 * (days % 7 >= 5) + rng.normal(0, 6, days.size)
sales[250] += 150
start = date(2024, 1, 1)
csv = out / "sales.csv"
rows = [f"{start + timedelta(days=int(day))},{value:.1f}" for day, value in zip(days, sales, strict=True)]
csv.write_text("date,sales\n" + "\n".join(rows) + "\n")

# The shipped workflows are files inside the `graphs` package (`anymoda workflow list` shows them).
workflow = files("graphs") / "time-series-report.yaml"

# run_workflow binds inputs (a path is read and validated as a time series), runs the fixed graph
# (describe -> report) and returns the named outputs as artifact ids. Inputs with a default, like the
# report's `audience`, may be left out or replaced.
orch = Orchestrator(planner=None, composer=None)  # no planner: the report's LLM is the text-generation tool's
result = orch.run_workflow(str(workflow), {
    "series": csv,
    "audience": "Write a three-sentence report on these daily sales for the shop's owner.",
})
print(f"status: {result.status}")

run = orch.session(result.session)
print("\nwhat the statistics found:")
print(run.load(result.outputs["description"]))

# The same facts as JSON, every number with its name: for code that acts on them.
sales_facts = run.load(result.outputs["facts"])["channels"][0]
trend, spikes = sales_facts["trend"], sales_facts["spikes"]["items"]
print(f"\ntrend: {trend['direction']} ({trend['slope_per_step']:+.2f} a day); "
      f"weekly cycle: {sales_facts['seasonality']['present']}; spikes on: {', '.join(s['date'] for s in spikes)}")
print("\nthe report:")
print(run.load(result.outputs["report"]))
print(f"\nplot saved: {run.export(result.outputs['plot'], out / 'sales-plot.png')}")
