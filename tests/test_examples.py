"""Every script in examples/ runs as a user runs it, and does what it says.

Each example runs in a child process (offline, one torch thread, its own anymoda home under tmp_path,
its own working directory), on the real packaged weights; the packaged Qwen is converted once for the
whole test session (the ``packaged_llm`` fixture of conftest.py) and linked into each home. The checks
are on what the example made (artifacts, files, the journal), not only on its exit code.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import requires_offline_extra

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = [pytest.mark.real_weights, requires_offline_extra]
PNG = b"\x89PNG\r\n\x1a\n"


def run_example(script: str, tmp_path: Path, *args: str, home: Path, extra_env: dict[str, str] | None = None,
                timeout: float = 600) -> str:
    """Run examples/<script> with OUT_DIR = tmp_path/out; returns its stdout (the test fails with both
    streams' tails when it exits non-zero)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANYMODA_")}
    env.update(ANYMODA_HOME=str(home), ANYMODA_OFFLINE="1", ANYMODA_DEVICE="cpu", ANYMODA_TORCH_THREADS="1",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               **(extra_env or {}))
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    completed = subprocess.run([sys.executable, str(EXAMPLES / script), str(tmp_path / "out"), *args], cwd=work,
                               env=env, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, (
        f"{script} exited {completed.returncode}\n--- stdout\n{completed.stdout[-3000:]}\n"
        f"--- stderr\n{completed.stderr[-6000:]}")
    return completed.stdout


@pytest.fixture
def home(tmp_path: Path, packaged_llm) -> Path:
    """A fresh anymoda home whose cache already holds the session's converted packaged Qwen."""
    home = tmp_path / "home"
    packaged_llm.use_in(home)
    return home


@pytest.fixture
def plain_home(tmp_path: Path) -> Path:
    """A fresh anymoda home, for examples that load no LLM."""
    return tmp_path / "home"


def lines_after(stdout: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in stdout.splitlines() if line.startswith(prefix)]


def store_of(home: Path):
    from orchestrator.storage.store import ArtifactStore

    return ArtifactStore(home / "artifacts")


# ------------------------------------------------------------------------------------ no planner


def test_tool_pipeline_makes_every_kind_it_names(tmp_path: Path, plain_home: Path) -> None:
    home = plain_home
    stdout = run_example("tool_pipeline.py", tmp_path, home=home)
    assert "status: done" in stdout
    kinds = dict(re.findall(r"^output (\w+): \S+ \((\w+)\)$", stdout, re.MULTILINE))
    assert kinds == {"text": "text", "lines": "detections", "speech": "audio", "heard": "text", "agreement": "json",
                     "photo_labels": "json"}, stdout
    store = store_of(home)
    ids = dict(re.findall(r"^output (\w+): (\S+) ", stdout, re.MULTILINE))
    assert "TOTAL 42.50" in store.load(ids["text"])
    assert "42.50" in store.load(ids["heard"])                      # Piper said it, Whisper heard it back
    assert store.load(ids["agreement"])[0]["score"] > 0.5
    assert "eagle" in store.load(ids["photo_labels"])[0]["label"]
    # Lineage: the transcript was made from the speech, which was made from the text the OCR read.
    assert {a.id for a in store.ancestors(ids["heard"])} >= {ids["speech"], ids["text"]}
    assert (tmp_path / "out" / f"{ids['speech']}.wav").read_bytes()[:4] == b"RIFF"

    from orchestrator.workflows.definition import Workflow

    saved = Workflow.load(tmp_path / "out" / "read-receipt-aloud.yaml")   # the saved file is a valid workflow
    assert {node.tool for node in saved.nodes.values()} >= {"ocr", "text-to-speech", "speech-recognition"}


def test_workflow_file_on_a_folder_gives_a_result_per_file(tmp_path: Path, plain_home: Path) -> None:
    stdout = run_example("workflow_on_folder.py", tmp_path, home=plain_home)
    results = tmp_path / "out" / "results"
    with open(results / "results.csv", encoding="utf-8", newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"bakery.png", "grocer.png", "books.png", "blank.png"}
    # The first batch ran every file; the table is the second batch's, which found them all done.
    assert "{'done': 4}; table:" in stdout and "second time: {'skipped': 4}" in stdout
    assert {row["status"] for row in rows.values()} == {"skipped"} and all(row["run"] for row in rows.values())
    for stem, total in (("bakery", "42.50"), ("grocer", "17.35"), ("books", "63.00")):
        assert total in rows[f"{stem}.png"]["total_line"], rows[f"{stem}.png"]
        assert (results / stem / "spoken.wav").read_bytes()[:4] == b"RIFF"
    # The blank page: read (no text), then the condition skipped finding and speaking.
    assert rows["blank.png"]["total_line"] == "" and not (results / "blank" / "spoken.wav").exists()


def test_time_series_report_names_the_trend(tmp_path: Path, home: Path) -> None:
    stdout = run_example("time_series_report.py", tmp_path, home=home)
    assert "status: done" in stdout
    description = stdout.split("what the statistics found:")[1].split("trend:")[0]
    assert "upward trend" in description and "7 days" in description and "2024-09-07" in description
    assert "trend: up" in stdout
    report = stdout.split("the report:")[1].split("plot saved:")[0].strip().lower()
    assert report and re.search(r"\b(upward|up|rising|rises|increas\w*|grow\w*)\b", report), report
    assert (tmp_path / "out" / "sales-plot.png").read_bytes()[:8] == PNG


# ------------------------------------------------------------------------------------ the agent


def test_conversation_reuses_the_first_turns_output(tmp_path: Path, home: Path) -> None:
    stdout = run_example("conversation.py", tmp_path, home=home)
    turns = re.findall(r"^--- turn (\d) \((\w+); tools: (.*)\)$", stdout, re.MULTILINE)
    assert [(n, status) for n, status, _ in turns] == [("1", "done"), ("2", "done"), ("3", "done")], stdout
    assert "ocr" in turns[0][2] and "42.50" in stdout.split("--- turn 2")[0]
    assert turns[1][2] == "text-to-speech", stdout                  # nothing read again: the earlier text is spoken
    assert turns[2][2] == "none"                                     # answered from the history

    from orchestrator.execution.journal import RunJournal

    session = lines_after(stdout, "session:")[0]
    turns_recorded = sorted(RunJournal(home / "runs.sqlite").runs(session=session), key=lambda r: r.created_at)
    assert len(turns_recorded) == 3
    first = turns_recorded[0]
    made_in_turn_one = {first.answer_id} | {output for task in first.tasks for output in (task.outputs or {}).values()}
    speech = re.search(r"^delivered: (audio-\w+) \(audio\)$", stdout, re.MULTILINE).group(1)
    lineage = {a.id for a in store_of(home).ancestors(speech, session=session)}
    assert lineage & made_in_turn_one, (lineage, made_in_turn_one)
    assert set(lines_after(stdout, "turn 2 reused from turn 1:")[0].split(", ")) <= lineage
    assert (tmp_path / "out" / f"{speech}.wav").is_file()
    # "What did I ask you first?", answered from the history (the LLM's wording varies: "You asked me to read the
    # receipt", "... about the text in the picture").
    assert re.search(r"\b(receipt|read|text|picture)\b", lines_after(stdout, "answer:")[-1].lower())


def test_custom_tool_installed_as_a_plugin_is_planned_and_called(tmp_path: Path, home: Path) -> None:
    # Install the example plugin as pip would (a copy: building in place would leave build/ in examples/),
    # into a folder of its own that the child process gets on its path: the entry point is then found.
    source, site = tmp_path / "plugin-src", tmp_path / "site"
    shutil.copytree(EXAMPLES / "plugin", source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    stdout = run_example("custom_tool_plugin.py", tmp_path, home=home, extra_env={"PYTHONPATH": str(site)})
    origin = lines_after(stdout, "receipt-items comes from:")
    assert origin == ["entry point 'receipt-items' (receipt_items:ReceiptItems)"]
    assert "'total': '4.30 EUR'" in lines_after(stdout, "called directly:")[0]
    tasks = re.findall(r"^task (t\d+): ([\w-]+) -> (\w+)$", stdout, re.MULTILINE)
    assert ("receipt-items", "done") in [(tool, status) for _, tool, status in tasks], stdout  # planned and run
    assert lines_after(stdout, "total:") == ["42.50"]
    assert lines_after(stdout, "items:")[0].startswith("4;")


def test_progress_events_arrive_in_order(tmp_path: Path, home: Path) -> None:
    stdout = run_example("progress_events.py", tmp_path, home=home)
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished" and events[-1]["data"]["status"] == "done"
    plan_ready = types.index("plan_ready")
    assert "plan_token" in types[:plan_ready] and "plan_token" not in types[plan_ready:]
    tasks = [t["id"] for t in events[plan_ready]["data"]["plan"]["tasks"]]
    assert tasks
    position = {(e["type"], e["task"]): i for i, e in enumerate(events) if e["task"]}
    for task in tasks:
        assert plan_ready < position[("task_started", task)] < position[("task_finished", task)]
    progress = [i for i, e in enumerate(events) if e["type"] == "task_progress"]
    assert progress
    for i in progress:
        assert position[("task_started", events[i]["task"])] < i < position[("task_finished", events[i]["task"])]
    tokens = [i for i, t in enumerate(types) if t == "answer_token"]
    assert tokens and min(tokens) > max(position[("task_finished", t)] for t in tasks)
    assert max(tokens) < types.index("answer") < types.index("run_finished")
    assert "answer (done):" in stdout and "42.5" in stdout.split("answer (done):")[1]
    assert lines_after(stdout, "delivered: audio saved as")                # the spoken total


def test_trained_connector_answers_about_a_series(tmp_path: Path, home: Path) -> None:
    stdout = run_example("train_connector.py", tmp_path, "4", home=home)      # 4 steps: the example's API, quickly
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["task"] == "timeseries-qa"
    assert (tmp_path / "out" / "checkpoint" / "native.json").is_file()
    assert (tmp_path / "out" / "loss_curve.png").read_bytes()[:8] == PNG
    assert re.search(r"^trained 4 steps .*: loss [\d.]+ -> [\d.]+$", stdout, re.MULTILINE), stdout
    answers = re.findall(r"^a series going (up|down): the model says '(.*)'$", stdout, re.MULTILINE)
    assert [trend for trend, _ in answers] == ["up", "down"], stdout
    assert all(answer.strip() for _, answer in answers)                       # the native-chat tool answered
