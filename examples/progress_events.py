"""Follow a run as it happens: its events drive a progress display, and the answer streams in token by token.

    python examples/progress_events.py [OUT_DIR]

The agent is asked to read a receipt and say its total out loud: the packaged Qwen2.5-Coder-0.5B plans
(ocr -> text-generation -> text-to-speech), PP-OCR reads, Qwen finds the total (reporting each token),
Piper speaks it, and Qwen writes the answer. Offline; some 30-60 s on two CPU cores (plus a one-time
conversion of the packaged LLM on the very first run).
Every event is also written to OUT_DIR/events.jsonl.
"""

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from orchestrator.agent import Orchestrator
from orchestrator.storage.sample_inputs import receipt_image

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("output") / "progress_events")
out.mkdir(parents=True, exist_ok=True)
console = Console()

receipt = out / "receipt.png"
receipt_image().save(receipt)  # a receipt photo, drawn on the spot

orch = Orchestrator()
progress = Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console)
rows = {}          # task id -> the progress row that shows it
plan_text = ""     # the plan's text, as the LLM writes it
answer = ""        # the answer's text, as it streams in

# stream() yields Event(type, run, task, data) while the run works: run_started, plan_token..., plan_ready,
# then task_started / task_progress / task_finished (or task_failed, task_skipped) per task, answer_token...,
# answer, and last run_finished (or run_failed / run_interrupted when a tool waits for an approval).
with progress, open(out / "events.jsonl", "w", encoding="utf-8") as log:
    planning = progress.add_task("planning", total=None, note="")
    for event in orch.stream("Read the receipt and tell me the total out loud", files=[receipt]):
        log.write(json.dumps(event.to_json(), default=str) + "\n")
        if event.type == "plan_token":                  # the plan as the LLM writes it
            plan_text += event.data["text"]
            progress.update(planning, note=plan_text.strip().splitlines()[-1][:40] if plan_text.strip() else "")
        elif event.type == "plan_ready":                # the validated plan: one row per task, in order
            progress.update(planning, total=1, completed=1, description="planned", note="")
            for task in event.data["plan"]["tasks"]:
                rows[task["id"]] = progress.add_task(f"{task['id']} {task['tool']}", total=1, start=False,
                                                     note="waiting")
        elif event.type == "task_started":
            progress.start_task(rows[event.task])
            progress.update(rows[event.task], note="running")
        elif event.type == "task_progress":            # tools that know how far they are say so
            data = event.data
            if data.get("total"):
                progress.update(rows[event.task], total=data["total"], completed=data["done"])
            progress.update(rows[event.task], note=data.get("message") or "running")
        elif event.type in ("task_finished", "task_failed", "task_skipped"):
            note = {"task_finished": "done", "task_failed": "failed", "task_skipped": "skipped"}[event.type]
            if event.data.get("unavailable"):           # its tool cannot run here: data says what it needs
                note = f"cannot run here: {event.data['unavailable']['fetch_command']}"
            progress.update(rows[event.task], total=1, completed=1, note=note)
        elif event.type == "answer_token":              # the LLM writing the answer, a few characters at a time
            if not answer:
                answering = progress.add_task("answer", total=None, note="")
            answer += event.data["text"]
            progress.update(answering, note=answer.strip()[-40:])
        elif event.type == "run_started":
            run_id = event.run

# What streamed is the LLM's reply; the answer is that reply once checked against what the tools found
# (if it fails a check, a template answer replaces it: result.composed_by and result.fallback_reason say so).
result = orch.result(run_id)
console.print(f"streamed: {answer.strip()}")
console.print(f"answer ({result.status}): {result.answer}")
for artifact in result.artifacts:
    console.print(f"delivered: {artifact.kind.value} saved as {orch.session(result.session).export(artifact.id, out)}")
