"""One driver per run: the run lease in the journal, tested with real processes.

A child process (tests/crash_child.py) drives a run whose third task waits for a gate file. While it
lives, a second driver (``Orchestrator.resume``, ``anymoda runs resume``) is refused with the child's
pid, and nothing runs twice. A stopped (SIGSTOP) child keeps no heartbeat: after the lease it is taken
over, and once woken it stops without touching the journal. A kill -9'd driver is resumable at once on
this host, and after the lease from another host.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # crash_child: the same test-only tool in this process and the child
from orchestrator.config import Settings, use_settings  # noqa: E402
from orchestrator.errors import ConfigError  # noqa: E402
from orchestrator.execution.journal import LeaseLostError, RunBusyError, RunJournal, new_run_id  # noqa: E402

import crash_child  # noqa: E402


def slow_is_running(rows: dict[str, str], calls: list[str]) -> bool:
    return rows.get("one") == rows.get("two") == "done" and rows.get("slow") == "running" and "slow" in calls


def calls_of(home: Path) -> Counter:
    return Counter((home / "executions.log").read_text().split())


def journal_state(journal: RunJournal, run_id: str) -> tuple:
    record = journal.get_run(run_id)
    return record.status, record.answer, tuple((t.task, t.status, t.attempts, tuple(t.outputs.items()))
                                               for t in record.tasks)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "lease-home"
    path.mkdir()
    return path


def test_a_second_driver_of_a_live_run_is_refused_naming_the_process(tmp_path, home, capsys):
    from orchestrator.cli.commands import main

    child, run_id = crash_child.start_child(tmp_path, home)
    try:
        crash_child.wait_until(tmp_path, home, child, run_id, slow_is_running)
        journal = RunJournal(home / "runs.sqlite")
        holder = journal.lease_holder(run_id)
        assert (holder.pid, holder.host) == (child.pid, socket.gethostname())
        before = journal_state(journal, run_id)

        orch = crash_child.build_orchestrator(home)
        with pytest.raises(RunBusyError, match=rf"^run {run_id} is being driven by process {child.pid} on "):
            orch.resume(run_id)

        # The CLI: one line naming the process, exit code 2, no traceback.
        use_settings(Settings.from_dict({"home": str(home), "offline": True, "device": "cpu"}))
        try:
            capsys.readouterr()
            code = main(["runs", "resume", run_id])
        finally:
            use_settings(None)
        captured = capsys.readouterr()
        message = " ".join(captured.err.split())  # rich wraps long lines at the console's width
        assert code == 2 and not captured.out, captured
        assert message.startswith(f"error: run {run_id} is being driven by process {child.pid} on "), message
        assert message.count("error:") == 1 and "Traceback" not in message

        # Neither attempt ran or recorded anything: the slow task ran once, the journal is as it was.
        assert calls_of(home) == {"one": 1, "two": 1, "slow": 1}
        assert journal_state(journal, run_id) == before and journal.lease_holder(run_id).token == holder.token

        (home / "gate").touch()  # the owner finishes its run
        assert child.wait(60) == 0, (tmp_path / "child.err").read_text()
    finally:
        crash_child.stop_child(child)
    assert calls_of(home) == {"one": 1, "two": 1, "slow": 1, "four": 1}
    assert journal.get_run(run_id).status == "done"
    assert journal.lease_holder(run_id) is None  # released at the end of the drive


def test_a_stalled_driver_is_taken_over_after_its_lease_and_then_stops_without_writing(tmp_path, home):
    lease_s = 3.0
    child, run_id = crash_child.start_child(tmp_path, home, lease_s=lease_s)
    journal = RunJournal(home / "runs.sqlite")
    orch = crash_child.build_orchestrator(home, lease_s=lease_s)
    try:
        crash_child.wait_until(tmp_path, home, child, run_id, slow_is_running)
        os.kill(child.pid, signal.SIGSTOP)  # alive, but its heartbeat stops
        stalled = journal.lease_holder(run_id)
        assert stalled.pid == child.pid
        if time.time() - stalled.heartbeat_at < lease_s - 0.5:
            with pytest.raises(RunBusyError, match=f"process {child.pid}"):
                orch.resume(run_id)
        while time.time() - stalled.heartbeat_at < lease_s:
            time.sleep(0.05)

        (home / "gate").touch()
        result = orch.resume(run_id)
        assert result.status == "done", (result.error, result.failures)
        assert result.tasks["one"].resumed and result.tasks["two"].resumed and not result.tasks["slow"].resumed
        # The stalled child had started slow; the new driver runs it again (at-least-once), and four once.
        assert calls_of(home) == {"one": 1, "two": 1, "slow": 2, "four": 1}
        taken_over = journal_state(journal, run_id)
        assert journal.lease_holder(run_id) is None

        os.kill(child.pid, signal.SIGCONT)  # the stalled driver wakes: its slow task returns, then it must stop
        code = child.wait(60)
    finally:
        crash_child.stop_child(child)
    err = (tmp_path / "child.err").read_text()
    assert code != 0 and "LeaseLostError" in err and f"run {run_id} was taken over" in err, err
    assert calls_of(home) == {"one": 1, "two": 1, "slow": 2, "four": 1}  # it did not go on to four
    assert journal_state(journal, run_id) == taken_over  # nor write anything after the takeover
    again = crash_child.build_orchestrator(home, lease_s=lease_s).result(run_id)
    assert again.status == "done" and again.answer == result.answer


def test_a_killed_driver_is_resumable_at_once_here_and_after_the_lease_from_another_host(tmp_path, home):
    lease_s = 1.5
    run_id = crash_child.run_until_then_kill(tmp_path, home, slow_is_running, lease_s=lease_s)
    journal = RunJournal(home / "runs.sqlite")
    dead = journal.lease_holder(run_id)
    assert dead is not None and dead.expired(lease_s)  # a dead process of this host: no need to wait

    # The same kill seen from another machine sharing the home: only the heartbeat can tell.
    with sqlite3.connect(home / "runs.sqlite") as db:
        db.execute("UPDATE leases SET host = 'another-host', heartbeat_at = ? WHERE run = ?", (time.time(), run_id))
    orch = crash_child.build_orchestrator(home, lease_s=lease_s)
    with pytest.raises(RunBusyError, match=f"process {dead.pid} on another-host"):
        orch.resume(run_id)
    assert calls_of(home) == {"one": 1, "two": 1, "slow": 1}
    time.sleep(lease_s)

    (home / "gate").touch()
    result = orch.resume(run_id)
    assert result.status == "done", (result.error, result.failures)
    assert calls_of(home) == {"one": 1, "two": 1, "slow": 2, "four": 1}
    assert journal.lease_holder(run_id) is None


def test_a_second_thread_of_the_same_process_is_refused_too(home):
    orch = crash_child.build_orchestrator(home)
    first: dict = {}
    driver = threading.Thread(target=lambda: first.setdefault("result", orch.run(
        "count to four", plan=crash_child.crash_plan(home))))
    driver.start()
    try:
        deadline = time.monotonic() + 30
        while not (home / "executions.log").exists() or "slow" not in calls_of(home):
            assert time.monotonic() < deadline and driver.is_alive()
            time.sleep(0.02)
        run_id = orch.journal.runs(limit=1)[0].id
        with pytest.raises(RunBusyError, match=f"process {os.getpid()} on"):
            orch.resume(run_id)
    finally:
        (home / "gate").touch()
        driver.join(60)
    assert first["result"].status == "done" and calls_of(home)["slow"] == 1


def test_journal_writes_of_a_taken_over_driver_are_refused_in_the_same_statement(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    stalled, successor = RunJournal(path), RunJournal(path)
    run_id = new_run_id()
    stalled.create_run(run_id, "s", "r", [])
    monkeypatch.setattr("orchestrator.execution.journal.RunLease._beat", lambda self: None)  # a driver whose heartbeat stopped
    with stalled.lease(run_id, 0.2):
        stalled.task_started(run_id, "t1", "tool", {}, 1)
        with pytest.raises(RunBusyError):
            successor.lease(run_id, 0.2).__enter__()
        time.sleep(0.25)
        with successor.lease(run_id, 0.2):
            successor.task_finished(run_id, "t1", "tool", "done", attempts=1, outputs={"text": "text-0000000000000000"})
            state = journal_state(successor, run_id)
            for write in (lambda: stalled.task_finished(run_id, "t1", "tool", "failed", error="late"),
                          lambda: stalled.task_started(run_id, "t2", "tool", {}, 1),
                          lambda: stalled.update_run(run_id, status="failed", error="late"),
                          lambda: stalled.task_repaired(run_id, "t1", {"tool": "tool"}),
                          lambda: stalled.forget_unfinished_tasks(run_id),
                          lambda: stalled.check_lease(run_id)):
                with pytest.raises(LeaseLostError, match=f"run {run_id} was taken over by process {os.getpid()}"):
                    write()
            assert journal_state(successor, run_id) == state
        assert successor.lease_holder(run_id) is None
    # The stalled driver leaving does not remove the successor's lease (there is none now) nor write.
    assert journal_state(successor, run_id) == state


def test_a_finished_run_leaves_no_lease_and_the_lease_is_a_setting(home, monkeypatch):
    orch = crash_child.build_orchestrator(home)
    (home / "gate").touch()
    result = orch.run("count to four", plan=crash_child.crash_plan(home))
    assert result.status == "done" and orch.journal.lease_holder(result.run_id) is None
    assert orch.settings.run_lease_s == 60.0

    assert Settings.load(env={"ANYMODA_HOME": str(home), "ANYMODA_RUN_LEASE_S": "2.5"}).run_lease_s == 2.5
    for bad in ("0", "nan", "inf", "-1", "soon", True):
        with pytest.raises(ConfigError, match="run_lease_s"):
            Settings.from_dict({"run_lease_s": bad})


def test_a_taken_over_driver_does_not_run_the_tasks_it_had_queued(home, monkeypatch):
    """The scheduler hands every ready task to the runner at once; the runner's pool runs a few and queues
    the rest. A driver taken over must not go on to run its queue (a fan-out of 120 text-to-speech lines:
    the stalled owner, woken, spoke the 80 it had queued again): only what had already started may finish."""
    from orchestrator.agent import Orchestrator
    from orchestrator.execution.compose import Composer
    from orchestrator.execution.executor import RunScheduler
    from orchestrator.execution.runner import LocalTaskRunner
    from orchestrator.storage.store import ArtifactStore
    from orchestrator.tooling.registry import ToolRegistry
    from orchestrator.tooling.stub_tools import STUB_TOOLS

    lease_s = 0.6
    settings = Settings.from_dict({"home": str(home), "offline": True, "device": "cpu", "run_lease_s": lease_s})
    registry = ToolRegistry([*STUB_TOOLS, crash_child.GatedWait])
    store = ArtifactStore(settings.store_dir)
    orch = Orchestrator(settings=settings, registry=registry, store=store, planner=None, composer=Composer(None),
                        runner=LocalTaskRunner(registry, store, settings=settings, max_workers=1))
    log, gate = str(home / "executions.log"), str(home / "gate")
    plan = {"tasks": [{"id": f"q{i}", "tool": "gated-wait", "args": {"label": f"q{i}", "log": log, "gate": gate}}
                      for i in range(6)]}
    # The driver stalls (as if suspended): no heartbeat, and its scheduler sleeps until the run is taken over.
    monkeypatch.setattr("orchestrator.execution.journal.RunLease._beat", lambda self: None)
    stall, taken = threading.Event(), threading.Event()
    take_message = RunScheduler.take_message

    def stalling_take_message(self) -> None:
        if stall.is_set():
            taken.wait(30)
        take_message(self)
    monkeypatch.setattr(RunScheduler, "take_message", stalling_take_message)
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["result"] = orch.run("six at once", plan=plan)
        except Exception as exc:  # noqa: BLE001 - the test looks at it below
            outcome["error"] = exc
    driver = threading.Thread(target=drive)
    driver.start()
    successor = RunJournal(home / "runs.sqlite")
    try:
        deadline = time.monotonic() + 30
        while not (home / "executions.log").exists():
            assert time.monotonic() < deadline and driver.is_alive(), outcome
            time.sleep(0.02)
        run_id = orch.journal.runs(limit=1)[0].id
        stall.set()
        time.sleep(lease_s + 0.6)
        with successor.lease(run_id, lease_s):  # taken over while q0 holds the only worker and q1..q5 wait
            taken.set()
            driver.join(30)
            assert isinstance(outcome.get("error"), LeaseLostError), outcome
    finally:
        taken.set()
        (home / "gate").touch()
        driver.join(30)
    time.sleep(1.0)  # a queued task that was not dropped would run now, on the freed worker
    orch.runner.shutdown()
    assert calls_of(home) == {"q0": 1}
