"""PlanExecutor on stub tools: dependency-driven starts, overlap, failure isolation, retries, timeouts,
cancellation, resume from the journal, and the policies' own checks.

Every run here goes through the real LocalTaskRunner, store and journal; only the tools are stubs
(they sleep, echo, fail on purpose). Sleeps are tenths of a second and the timing margins are wide:
the CI machine has two loaded cores.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.execution.compose import Composer
from orchestrator.errors import InvalidInputError, ToolExecutionError, TransientError
from orchestrator.execution.events import Event
from orchestrator.execution.executor import ExecutionPolicy, PlanExecutor, RetryPolicy, TaskResult
from orchestrator.execution.journal import RunJournal, new_run_id
from orchestrator.planning.plan import Plan, validate_plan
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.execution.runner import LocalTaskRunner, TaskOutcome, TaskSpec, execute_spec, is_transient
from orchestrator.tooling.stub_tools import STUB_TOOLS
from orchestrator.tooling.tool import Input, Output, Param, WeightlessTool

SESSION = "exec-tests"

# How often each CountedEcho label really ran (a resumed task must not add to it).
CALLS: Counter[str] = Counter()


class CountedEcho(WeightlessTool):
    name = "counted-echo"
    task = "stub"
    description = "Count the call under its label, wait a moment, return the label joined to the input."
    inputs = {"a": Input(ArtifactKind.TEXT, "an earlier result", required=False)}
    outputs = {"text": Output(ArtifactKind.TEXT, "the label, then the input")}
    params = {"label": Param(str, "x", "what is counted and returned"),
              "seconds": Param(float, 0.0, "how long the call takes", minimum=0.0, maximum=60.0)}
    default_model = "count"

    def build_method(self) -> Any:
        return time.sleep

    def run(self, sleep: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        CALLS[params["label"]] += 1
        sleep(params["seconds"])
        return {"text": " | ".join([params["label"]] + ([str(inputs["a"])] if inputs.get("a") else []))}


class Progressing(WeightlessTool):
    name = "stub-progress"
    task = "stub"
    description = "Report progress twice, then return."
    inputs = {"a": Input(ArtifactKind.TEXT, "ignored", required=False)}
    outputs = {"text": Output(ArtifactKind.TEXT, "'ok'")}
    default_model = "progress"

    def build_method(self) -> Any:
        return time.sleep

    def run(self, sleep: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self.report_progress(1, 2, "half way")
        sleep(0.02)
        self.report_progress(2, 2, "all done")
        return {"text": "ok"}


class Harness:
    """A registry, store, journal and runner, and one executor per policy; events land in ``events``."""

    def __init__(self, tmp_path: Path, settings, store):
        self.registry = ToolRegistry([*STUB_TOOLS, CountedEcho, Progressing])
        self.store = store
        self.journal = RunJournal(tmp_path / "runs.sqlite")
        self.runner = LocalTaskRunner(self.registry, store, settings=settings)
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def executor(self, **policy: Any) -> PlanExecutor:
        return PlanExecutor(self.runner, self.journal, self.store, policy=ExecutionPolicy(**policy), emit=self.emit)

    def validated(self, tasks: list[dict[str, Any]], session: str = SESSION):
        return validate_plan(Plan.from_json({"tasks": tasks}), self.registry, store=self.store, session=session)

    def execute(self, tasks: list[dict[str, Any]], *, run_id: str | None = None, session: str = SESSION,
                policy: dict[str, Any] | None = None, **kwargs: Any) -> tuple[str, dict[str, TaskResult]]:
        run_id = run_id or new_run_id()
        if not any(r.id == run_id for r in self.journal.runs(limit=10_000)):
            self.journal.create_run(run_id, session, "test", [])
        results = self.executor(**(policy or {})).execute(run_id, session, self.validated(tasks, session), **kwargs)
        return run_id, results

    def of(self, kind: str, task: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.type == kind and (task is None or e.task == task)]

    def one(self, kind: str, task: str) -> Event:
        found = self.of(kind, task)
        assert len(found) == 1, (kind, task, [(e.type, e.task) for e in self.events])
        return found[0]

    def text(self, result: TaskResult) -> str:
        return self.store.load(result.outputs["text"], session=SESSION)


@pytest.fixture
def harness(tmp_path: Path, settings, store):
    h = Harness(tmp_path, settings, store)
    yield h
    h.runner.shutdown()
    h.journal.close()


def wait(task_id: str, seconds: float, label: str | None = None, **args: Any) -> dict[str, Any]:
    return {"id": task_id, "tool": "stub-wait", "args": {"label": label or task_id, "seconds": seconds, **args}}


def fresh_key() -> str:
    return uuid.uuid4().hex  # stub-wait counts transient failures per key, process-wide


# ---------------------------------------------------------------------- scheduling


def test_a_task_starts_as_soon_as_its_own_inputs_are_ready(harness: Harness):
    # Branch A: one long step then a short one; branch B: three short steps in a chain. Level by level,
    # b2 would wait for a1 (same level); dependency-driven, the whole of B runs while a1 still works.
    tasks = [wait("a1", 1.0), wait("a2", 0.02, a="<a1>"),
             wait("b1", 0.05), wait("b2", 0.05, a="<b1>"), wait("b3", 0.05, a="<b2>")]
    run_id, results = harness.execute(tasks)

    assert {t: r.status for t, r in results.items()} == dict.fromkeys(["a1", "a2", "b1", "b2", "b3"], "done")
    a1_finished = harness.one("task_finished", "a1").time
    assert harness.one("task_started", "b2").time < a1_finished
    assert harness.one("task_started", "b3").time < a1_finished
    assert harness.one("task_finished", "b3").time < a1_finished
    # The journal tells the same story (started_at / finished_at of each task row).
    rows = {t.task: t for t in harness.journal.tasks(run_id)}
    assert rows["b3"].started_at < rows["a1"].finished_at
    assert rows["a2"].started_at >= rows["a1"].finished_at - 0.05  # a2 did wait for its own input
    # Values flowed along the references.
    assert harness.text(results["b3"]) == "b3 | b2 | b1"
    assert harness.text(results["a2"]) == "a2 | a1"


def test_independent_tasks_overlap_in_time(harness: Harness):
    tasks = [wait(f"t{i}", 0.4) for i in range(4)]
    started = time.monotonic()
    _, results = harness.execute(tasks)
    wall = time.monotonic() - started

    assert all(r.status == "done" for r in results.values())
    assert wall < 1.1, f"4 x 0.4 s independent tasks took {wall:.2f} s (sum 1.6 s): they did not overlap"
    last_start = max(e.time for e in harness.of("task_started"))
    first_finish = min(e.time for e in harness.of("task_finished"))
    assert last_start < first_finish, "every task should have started before the first one finished"


def test_dependencies_by_deps_alone_order_tasks(harness: Harness):
    # 'deps' without a reference: second must not start before first is done.
    tasks = [wait("first", 0.2), {**wait("second", 0.01), "deps": ["first"]}]
    run_id, results = harness.execute(tasks)
    assert results["second"].status == "done"
    assert harness.one("task_started", "second").time >= harness.one("task_finished", "first").time - 0.01
    rows = {t.task: t for t in harness.journal.tasks(run_id)}
    assert rows["second"].started_at >= rows["first"].finished_at - 0.01


def test_progress_reports_become_task_progress_events(harness: Harness):
    _, results = harness.execute([{"id": "p", "tool": "stub-progress", "args": {}}])
    assert results["p"].status == "done"
    progress = harness.of("task_progress", "p")
    assert [(e.data["done"], e.data["total"], e.data["message"]) for e in progress] == [
        (1, 2, "half way"), (2, 2, "all done")]
    assert progress[-1].time <= harness.one("task_finished", "p").time


# ---------------------------------------------------------------------- failures


def test_a_failure_fails_only_its_dependants(harness: Harness, store):
    tasks = [wait("bad", 0.02, fail=True), wait("child", 0.01, a="<bad>"), wait("grandchild", 0.01, a="<child>"),
             wait("sibling", 0.05), wait("nephew", 0.01, a="<sibling>")]
    run_id, results = harness.execute(tasks)

    assert results["bad"].status == "failed"
    assert "failed on purpose" in results["bad"].error
    assert results["bad"].attempts == 1
    assert results["child"].status == "skipped"
    assert "bad" in results["child"].error and "failed" in results["child"].error
    assert results["grandchild"].status == "skipped"
    assert "child" in results["grandchild"].error and "skipped" in results["grandchild"].error
    assert results["sibling"].status == results["nephew"].status == "done"
    assert harness.text(results["nephew"]) == "nephew | sibling"
    assert not harness.of("task_started", "child") and not harness.of("task_started", "grandchild")
    assert harness.one("task_skipped", "child").data["because"] == "bad"
    assert harness.one("task_failed", "bad").data["error"] == results["bad"].error
    rows = {t.task: t for t in harness.journal.tasks(run_id)}
    assert rows["bad"].status == "failed" and rows["child"].status == "skipped" and rows["nephew"].status == "done"

    # The answer says what did not complete and why, and still delivers what did.
    validated = harness.validated(tasks)
    answer = Composer(None).compose("go", validated, results, store, SESSION)
    assert any(line.startswith("bad (stub-wait) failed") and "failed on purpose" in line for line in answer.failures)
    assert any(line.startswith("child (stub-wait) skipped") for line in answer.failures)
    assert len(answer.failures) == 3
    assert list(answer.artifacts) == list(results["nephew"].outputs.values())
    assert "Not completed" in answer.text and "failed on purpose" in answer.text


def test_transient_failures_are_retried_with_backoff(harness: Harness):
    key = fresh_key()
    policy = {"retry": RetryPolicy(attempts=4, backoff_s=0.1, factor=2.0)}
    _, results = harness.execute([wait("flaky", 0.0, transient_failures=2, key=key)], policy=policy)

    assert results["flaky"].status == "done"
    assert results["flaky"].attempts == 3
    retries = harness.of("task_retry", "flaky")
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert [e.data["retry_in_s"] for e in retries] == pytest.approx([0.1, 0.2])
    assert all("transient failure" in e.data["error"] for e in retries)
    starts = harness.of("task_started", "flaky")
    assert [e.data["attempt"] for e in starts] == [1, 2, 3]
    # Each retry waited (at least about) its backoff before starting again.
    for retry, restart in zip(retries, starts[1:]):
        assert restart.time - retry.time >= retry.data["retry_in_s"] - 0.02
    assert harness.one("task_finished", "flaky").data["attempts"] == 3


def test_a_permanent_failure_is_not_retried(harness: Harness):
    policy = {"retry": RetryPolicy(attempts=5, backoff_s=0.01)}
    _, results = harness.execute([wait("broken", 0.0, fail=True)], policy=policy)
    assert results["broken"].status == "failed" and results["broken"].attempts == 1
    assert not harness.of("task_retry")
    assert len(harness.of("task_started", "broken")) == 1


def test_retries_run_out(harness: Harness):
    key = fresh_key()
    policy = {"retry": RetryPolicy(attempts=2, backoff_s=0.02)}
    _, results = harness.execute([wait("hopeless", 0.0, transient_failures=5, key=key), wait("after", 0.0, a="<hopeless>")],
                                 policy=policy)
    assert results["hopeless"].status == "failed"
    assert results["hopeless"].attempts == 2
    assert "transient failure" in results["hopeless"].error
    assert len(harness.of("task_retry", "hopeless")) == 1
    assert results["after"].status == "skipped"


def test_a_timed_out_task_fails_and_its_dependants_are_skipped(harness: Harness):
    tasks = [wait("slow", 1.5), wait("after_slow", 0.0, a="<slow>"), wait("quick", 0.05), wait("after_quick", 0.0, a="<quick>")]
    started = time.monotonic()
    _, results = harness.execute(tasks, policy={"timeout_s": 0.3})
    wall = time.monotonic() - started

    assert results["slow"].status == "failed"
    assert "timed out" in results["slow"].error and "0.3" in results["slow"].error
    assert results["after_slow"].status == "skipped" and "slow" in results["after_slow"].error
    assert results["quick"].status == results["after_quick"].status == "done"
    assert wall < 1.2, f"the executor waited {wall:.2f} s for a task it had given up on after 0.3 s"
    assert harness.one("task_failed", "slow")


def test_the_timeout_applies_to_each_attempt(harness: Harness):
    # Three attempts of 0.2 s each: over the 0.5 s timeout in all, never in one attempt.
    key = fresh_key()
    _, results = harness.execute([wait("flaky", 0.2, transient_failures=2, key=key)],
                                 policy={"timeout_s": 0.5, "retry": RetryPolicy(attempts=3, backoff_s=0.01)})
    assert results["flaky"].status == "done" and results["flaky"].attempts == 3


# ---------------------------------------------------------------------- cancellation


def test_cancelling_stops_new_starts_and_abandons_running_tasks(harness: Harness):
    cancel = threading.Event()
    tasks = [wait("quick", 0.02), wait("long", 1.5, a="<quick>"), wait("after_long", 0.0, a="<long>"),
             wait("other", 1.5)]

    def cancel_once_quick_is_done() -> None:
        deadline = time.monotonic() + 10
        while not harness.of("task_finished", "quick") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # 'long' is running by now
        cancel.set()

    canceller = threading.Thread(target=cancel_once_quick_is_done)
    canceller.start()
    started = time.monotonic()
    run_id, results = harness.execute(tasks, cancel=cancel)
    wall = time.monotonic() - started
    canceller.join()

    assert results["quick"].status == "done"
    assert results["long"].status == "cancelled" and results["other"].status == "cancelled"
    assert results["after_long"].status == "cancelled"
    assert all("cancelled" in results[t].error for t in ("long", "other", "after_long"))
    assert not harness.of("task_started", "after_long"), "nothing may start once the run is cancelled"
    assert {e.task for e in harness.of("task_cancelled")} == {"long", "other", "after_long"}
    assert wall < 1.2, f"cancelling waited {wall:.2f} s for running tasks"
    rows = {t.task: t.status for t in harness.journal.tasks(run_id)}
    assert rows == {"quick": "done", "long": "cancelled", "other": "cancelled", "after_long": "cancelled"}


def test_a_cancel_set_before_the_start_runs_nothing(harness: Harness):
    cancel = threading.Event()
    cancel.set()
    _, results = harness.execute([wait("t1", 0.0), wait("t2", 0.0)], cancel=cancel)
    assert {r.status for r in results.values()} == {"cancelled"}
    assert not harness.of("task_started")


# ---------------------------------------------------------------------- resume


def counted(task_id: str, label: str, seconds: float = 0.0, **args: Any) -> dict[str, Any]:
    return {"id": task_id, "tool": "counted-echo", "args": {"label": label, "seconds": seconds, **args}}


def test_resume_skips_tasks_the_journal_has_as_done(harness: Harness, store):
    tag = fresh_key()[:8]
    tasks = [counted("t1", f"{tag}-1"), counted("t2", f"{tag}-2", a="<t1>"), counted("t3", f"{tag}-3", a="<t2>")]
    run_id, first = harness.execute(tasks)
    assert all(r.status == "done" and not r.resumed for r in first.values())
    assert [CALLS[f"{tag}-{i}"] for i in (1, 2, 3)] == [1, 1, 1]
    artifacts_after_first = store.count()

    harness.events.clear()
    _, second = harness.execute(tasks, run_id=run_id)
    assert [CALLS[f"{tag}-{i}"] for i in (1, 2, 3)] == [1, 1, 1], "a finished task ran again"
    assert all(r.status == "done" and r.resumed for r in second.values())
    assert {t: r.outputs for t, r in second.items()} == {t: r.outputs for t, r in first.items()}
    assert store.count() == artifacts_after_first
    assert not harness.of("task_started")
    assert all(e.data.get("resumed") for e in harness.of("task_finished"))


def test_resume_after_a_cancel_runs_only_what_was_left(harness: Harness, store):
    tag = fresh_key()[:8]
    tasks = [counted("t1", f"{tag}-1"), counted("t2", f"{tag}-2", seconds=1.0, a="<t1>"), counted("t3", f"{tag}-3", a="<t2>"),
             counted("side", f"{tag}-side")]
    cancel = threading.Event()

    def cancel_while_t2_runs() -> None:
        deadline = time.monotonic() + 10
        while not harness.of("task_started", "t2") and time.monotonic() < deadline:
            time.sleep(0.01)
        cancel.set()

    canceller = threading.Thread(target=cancel_while_t2_runs)
    canceller.start()
    run_id, first = harness.execute(tasks, cancel=cancel)
    canceller.join()
    assert first["t1"].status == "done" and first["side"].status == "done"
    assert first["t2"].status == "cancelled" and first["t3"].status == "cancelled"

    # The abandoned t2 call was counted when it began; it may still be sleeping, which changes nothing here.
    _, second = harness.execute(tasks, run_id=run_id, cancel=threading.Event())
    assert {t: r.status for t, r in second.items()} == dict.fromkeys(["t1", "t2", "t3", "side"], "done")
    assert second["t1"].resumed and second["side"].resumed
    assert not second["t2"].resumed and not second["t3"].resumed
    assert CALLS[f"{tag}-1"] == 1 and CALLS[f"{tag}-side"] == 1
    assert CALLS[f"{tag}-2"] == 2  # once abandoned, once for real
    assert CALLS[f"{tag}-3"] == 1
    assert second["t2"].outputs["text"] != first["t2"].outputs.get("text")
    assert harness.text(second["t3"]) == f"{tag}-3 | {tag}-2 | {tag}-1"


def test_resume_reruns_a_done_task_whose_outputs_the_session_cannot_see(harness: Harness):
    tag = fresh_key()[:8]
    tasks = [counted("t1", f"{tag}-1")]
    run_id, _ = harness.execute(tasks)
    # The same run executed for another session: the journal's output ids are not visible there.
    _, second = harness.execute(tasks, run_id=run_id, session="someone-else")
    assert CALLS[f"{tag}-1"] == 2
    assert second["t1"].status == "done" and not second["t1"].resumed


def test_resume_reruns_a_task_whose_journal_row_names_missing_outputs_or_another_tool(harness: Harness):
    tag = fresh_key()[:8]
    run_id = new_run_id()
    harness.journal.create_run(run_id, SESSION, "test", [])
    harness.journal.task_finished(run_id, "t1", "counted-echo", "done", attempts=1, outputs={"text": "text-00000000000000ff"})
    harness.journal.task_finished(run_id, "t2", "stub-wait", "done", attempts=1, outputs={})
    harness.journal.task_started(run_id, "t3", "counted-echo", {}, 1)  # a crash left it 'running'
    tasks = [counted("t1", f"{tag}-1"), counted("t2", f"{tag}-2"), counted("t3", f"{tag}-3")]
    _, results = harness.execute(tasks, run_id=run_id)
    assert [CALLS[f"{tag}-{i}"] for i in (1, 2, 3)] == [1, 1, 1]
    assert not any(r.resumed for r in results.values())
    # Every row now names the tool that ran, so a further resume takes all three as finished.
    assert {t.task: (t.tool, t.status) for t in harness.journal.tasks(run_id)} == dict.fromkeys(
        ["t1", "t2", "t3"], ("counted-echo", "done"))
    _, again = harness.execute(tasks, run_id=run_id)
    assert all(r.resumed for r in again.values())
    assert [CALLS[f"{tag}-{i}"] for i in (1, 2, 3)] == [1, 1, 1]


# ---------------------------------------------------------------------- approvals, at the executor


def test_tasks_of_approve_before_tools_wait_and_everything_else_runs(harness: Harness):
    tasks = [wait("colour", 0.0, label="red"), {"id": "paint", "tool": "stub-paint", "args": {"text": "<colour>"}},
             {"id": "brighter", "tool": "stub-brighten", "args": {"image": "<paint>"}}, wait("side", 0.0)]
    run_id, first = harness.execute(tasks, policy={"approve_before": frozenset({"stub-paint"})})
    assert first["paint"].status == "awaiting_approval"
    assert "brighter" not in first  # neither run nor skipped: it waits with its input
    assert first["colour"].status == first["side"].status == "done"

    _, second = harness.execute(tasks, run_id=run_id, policy={"approve_before": frozenset({"stub-paint"})},
                                approvals={"paint": True})
    assert second["paint"].status == second["brighter"].status == "done"
    assert second["colour"].resumed and second["side"].resumed

    run_id, declined = harness.execute(tasks, policy={"approve_before": frozenset({"stub-paint"})},
                                       approvals={"paint": False})
    assert declined["paint"].status == "skipped" and "declined" in declined["paint"].error
    assert declined["brighter"].status == "skipped" and "paint" in declined["brighter"].error


# ---------------------------------------------------------------------- policies and runner


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"backoff_s": -0.1}, {"factor": 0.5}, {"max_backoff_s": -1}])
def test_retry_policy_refuses_nonsense(kwargs: dict[str, Any]):
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(**kwargs)


def test_retry_delays_grow_and_are_capped():
    policy = RetryPolicy(attempts=5, backoff_s=0.5, factor=3.0, max_backoff_s=2.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.5, 1.5, 2.0, 2.0])
    assert RetryPolicy(backoff_s=0.0).delay(3) == 0.0


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_execution_policy_refuses_a_non_positive_timeout(timeout: float):
    with pytest.raises(ValueError, match="timeout_s"):
        ExecutionPolicy(timeout_s=timeout)


def test_execution_policy_accepts_no_timeout():
    assert ExecutionPolicy(timeout_s=None).timeout_s is None


def test_local_runner_needs_a_worker(settings, store):
    with pytest.raises(ValueError, match="max_workers"):
        LocalTaskRunner(ToolRegistry(STUB_TOOLS), store, settings=settings, max_workers=0)


def test_a_one_worker_runner_runs_tasks_one_at_a_time(tmp_path: Path, settings, store):
    h = Harness(tmp_path, settings, store)
    h.runner = LocalTaskRunner(h.registry, store, settings=settings, max_workers=1)
    try:
        _, results = h.execute([wait("t1", 0.15), wait("t2", 0.15)])
    finally:
        h.runner.shutdown()
    assert all(r.status == "done" for r in results.values())
    rows = sorted(h.journal.tasks(h.journal.runs()[-1].id), key=lambda r: r.finished_at)
    # The second call's work began only after the first one's ended (its row may start earlier: it was queued).
    assert rows[1].finished_at - rows[0].finished_at >= 0.12


def test_execute_spec_turns_every_failure_into_an_outcome(settings, store):
    registry = ToolRegistry(STUB_TOOLS)
    unknown = execute_spec(TaskSpec("run-0000000000000001", "t1", "stub-nope", {}, SESSION), registry, store,
                           settings=settings)
    assert not unknown.ok and "stub-nope" in unknown.error and not unknown.transient
    bad_arg = execute_spec(TaskSpec("run-0000000000000001", "t1", "stub-wait", {"colour": "red"}, SESSION), registry,
                           store, settings=settings)
    assert not bad_arg.ok and bad_arg.error_type == "InvalidInputError" and not bad_arg.transient
    ok = execute_spec(TaskSpec("run-0000000000000001", "t1", "stub-wait", {"label": "hi", "seconds": 0}, SESSION),
                      registry, store, settings=settings)
    assert ok.ok and isinstance(ok, TaskOutcome)
    artifact = store.get(ok.outputs["text"], session=SESSION)
    assert artifact.task == "run-0000000000000001/t1" and store.load(artifact.id, session=SESSION) == "hi"


def test_what_counts_as_transient():
    assert is_transient(TransientError("busy")) and is_transient(ConnectionError()) and is_transient(TimeoutError())
    assert not is_transient(InvalidInputError("bad")) and not is_transient(ToolExecutionError("broken"))
    try:
        try:
            raise ConnectionError("reset")
        except ConnectionError as cause:
            raise ToolExecutionError("tool failed") from cause
    except ToolExecutionError as wrapped:
        assert is_transient(wrapped)
