"""A run to be killed: tests/test_agent.py starts this as a child process and kill -9s it mid-run.

    python tests/crash_child.py HOME [plan|workflow] [LEASE_S]

starts the plan of :func:`crash_plan` (or the workflow of :func:`crash_workflow`) in a fresh run under ``HOME``, prints the run id (one line)
and drives the run until it is killed (or, when the test opens the gate, to its end), holding the run's
lease (``LEASE_S``: ``Settings.run_lease_s``, default the setting's default). :class:`GatedWait` is the test-only tool of that plan: it
notes every execution in ``HOME/executions.log`` (one line per call: the label), and a call with a
``gate`` waits until that file exists, so the test decides when the slow task may finish. The
test process imports this module too (same tool class in both processes, so the resumed run
finds the tool the crashed one planned with).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, Param, WeightlessTool

GATE_LIMIT_S = 60.0  # a gated call gives up after this long (the test kills the child well before)


class _Sleeper:
    """The tool's "model". Its declared size keeps the model pool from importing torch to measure it
    (two seconds of the child's start-up, in a process that has no other use for torch)."""

    anymoda_size_bytes = 0

    def __call__(self, seconds: float) -> None:
        time.sleep(seconds)


class GatedWait(WeightlessTool):
    name = "gated-wait"
    task = "stub"
    description = "Note the call in a log file, wait for a gate file to exist (if given), then return a label."
    inputs = {"a": Input(ArtifactKind.TEXT, "an earlier result", required=False)}
    outputs = {"text": Output(ArtifactKind.TEXT, "the label, then the input")}
    params = {
        "label": Param(str, "done", "the text this call returns and logs"),
        "log": Param(str, "", "the file each call appends its label to"),
        "gate": Param(str, "", "a file to wait for before returning (empty: do not wait)"),
    }
    default_model = "gate"

    def build_method(self) -> Any:
        return _Sleeper()

    def run(self, sleep: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if params["log"]:
            with open(params["log"], "a", encoding="utf-8") as log:
                log.write(params["label"] + "\n")
                log.flush()
                os.fsync(log.fileno())
        if params["gate"]:
            deadline = time.monotonic() + GATE_LIMIT_S
            while not Path(params["gate"]).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gate {params['gate']} never opened")
                sleep(0.02)
        parts = [params["label"]] + ([str(inputs["a"])] if inputs.get("a") else [])
        return {"text": " | ".join(parts)}


def crash_plan(home: Path) -> dict[str, Any]:
    """one -> two -> slow (waits for the gate) -> four."""
    log, gate = str(home / "executions.log"), str(home / "gate")
    return {"tasks": [
        {"id": "one", "tool": "gated-wait", "args": {"label": "one", "log": log}},
        {"id": "two", "tool": "gated-wait", "args": {"label": "two", "log": log, "a": "<one>"}},
        {"id": "slow", "tool": "gated-wait", "args": {"label": "slow", "log": log, "gate": gate, "a": "<two>"}},
        {"id": "four", "tool": "gated-wait", "args": {"label": "four", "log": log, "a": "<slow>"}},
    ]}


def crash_workflow(home: Path) -> str:
    """first -> each line of $words (fan-out) -> slow (waits for the gate, takes the gathered lines) -> last."""
    log, gate = home / "executions.log", home / "gate"
    return f"""
name: crash-fan-out
inputs:
  words: text
nodes:
  first:
    tool: gated-wait
    args: {{label: first, log: "{log}"}}
  each:
    tool: gated-wait
    for_each: {{lines: $words}}
    args: {{a: $item, label: item, log: "{log}"}}
  slow:
    tool: gated-wait
    args: {{a: $each.text, label: slow, log: "{log}", gate: "{gate}"}}
  last:
    tool: gated-wait
    args: {{a: $slow.text, label: last, log: "{log}"}}
outputs:
  items: $each.text
  result: $last.text
"""


def build_orchestrator(home: Path, lease_s: float | None = None):
    from orchestrator.agent import Orchestrator
    from orchestrator.execution.compose import Composer
    from orchestrator.config import Settings
    from orchestrator.tooling.registry import ToolRegistry
    from orchestrator.tooling.stub_tools import STUB_TOOLS

    settings = Settings.from_dict({"home": str(home), "offline": True, "device": "cpu",
                                   **({"run_lease_s": lease_s} if lease_s is not None else {})})
    return Orchestrator(settings=settings, registry=ToolRegistry([*STUB_TOOLS, GatedWait]), planner=None,
                        composer=Composer(None))


def start_child(tmp_path: Path, home: Path, mode: str = "plan", lease_s: float | None = None,
                timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start this script as a child process driving a new run on ``home``; the child and its run id.
    Its stderr goes to ``tmp_path / 'child.err'``."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(Path(__file__).resolve()), str(home), mode] + ([str(lease_s)] if lease_s is not None else [])
    with open(tmp_path / "child.err", "w") as err:
        child = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    run_id = (first_line or [""])[0].strip()
    if not re.fullmatch(r"run-[0-9a-f]{16}", run_id):
        stop_child(child)
        raise AssertionError((first_line, (tmp_path / "child.err").read_text()))
    return child, run_id


def wait_until(tmp_path: Path, home: Path, child: subprocess.Popen, run_id: str,
               ready: Callable[[dict[str, str], list[str]], bool], timeout_s: float = 60.0) -> None:
    """Poll until ``ready(task statuses, logged calls)`` holds while the child lives."""
    from orchestrator.execution.journal import RunJournal

    journal = RunJournal(home / "runs.sqlite")
    log = home / "executions.log"
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {t.task: t.status for t in journal.tasks(run_id)}
        calls = log.read_text().split() if log.exists() else []
        if ready(rows, calls):
            return
        assert child.poll() is None, (child.returncode, (tmp_path / "child.err").read_text())
        assert time.monotonic() < deadline, (rows, calls)
        time.sleep(0.02)


def stop_child(child: subprocess.Popen) -> None:
    """Make sure the child is gone (a stopped one too) and its pipe closed."""
    if child.poll() is None:
        try:
            os.kill(child.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        child.kill()
        child.wait(10)
    if child.stdout is not None:
        child.stdout.close()


def run_until_then_kill(tmp_path: Path, home: Path, ready: Callable[[dict[str, str], list[str]], bool],
                        mode: str = "plan", timeout_s: float = 60.0, lease_s: float | None = None) -> str:
    """Start this script as a child process on ``home``, wait until ``ready(task statuses, logged calls)``
    holds, kill -9 it, and return the run id it printed. For the tests' crash-and-resume cases."""
    child, run_id = start_child(tmp_path, home, mode, lease_s, timeout_s)
    try:
        wait_until(tmp_path, home, child, run_id, ready, timeout_s)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        stop_child(child)
    assert child.returncode == -signal.SIGKILL
    return run_id


def main(home: Path, mode: str = "plan", lease_s: str | None = None) -> None:
    orch = build_orchestrator(home, float(lease_s) if lease_s is not None else None)
    if mode == "workflow":
        from orchestrator.workflows.definition import Workflow

        workflow = Workflow.loads(crash_workflow(home), registry=orch.registry)
        events = orch.stream_workflow(workflow, {"words": "x\ny\nz"})
    else:
        events = orch.stream("count to four", plan=crash_plan(home))
    for event in events:
        if event.type == "run_started":
            print(event.run, flush=True)


if __name__ == "__main__":
    # Run as a script this module is __main__: use the importable copy, the one the test process uses.
    import crash_child

    crash_child.main(Path(sys.argv[1]), *sys.argv[2:4])
