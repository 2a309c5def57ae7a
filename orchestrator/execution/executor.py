"""Dependency-driven execution of a validated plan.

A task starts the moment the tasks it takes outputs from have finished, not when a whole level of
the graph has: LangGraph's own fan-out (``Send``) runs in supersteps, which wait for the slowest
sibling before anything downstream starts, so on a graph whose branches differ in length the short
branch's successors idle (``benchmarks/executor_overhead.py`` measures both). The scheduler runs in
the graph's execute node and hands tasks to a :class:`~orchestrator.execution.runner.TaskRunner`.

Failure isolation: a task that fails (after its retries, for transient errors) fails only the tasks
downstream of it, which are reported as skipped with the reason; everything else completes.
Per-task timeouts and cancellation stop waiting for a task (a Python thread cannot be killed, so a
timed-out local task finishes in the background and its late result is ignored). Each finished task
is written to the :class:`~orchestrator.execution.journal.RunJournal` at once, which is what makes a resumed
run skip the work already done. When the caller holds the run's lease (the Orchestrator does), the
scheduler checks it before each task starts and on every turn of its loop, and stops with
:class:`~orchestrator.execution.journal.LeaseLostError` once another process has taken the run over.

:class:`ExecutionHooks` let the caller (the agent) say, before a task starts, that its tool cannot
run here (status ``unavailable``, dependants skipped), adjust its arguments (text read aloud never
holds an artifact id), and replace a call that failed on a bad argument or found nothing, once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..errors import AnymodaError
from ..planning.plan import ValidatedPlan
from ..storage.store import ArtifactStore
from .events import Event, EventSink, ignore_events
from .journal import RunJournal
from .runner import TaskOutcome, TaskRunner, TaskSpec


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures are retried: ``attempts`` tries in all, waiting backoff_s, x factor each time."""

    attempts: int = 3
    backoff_s: float = 0.5
    factor: float = 2.0
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.factor < 1 or self.max_backoff_s < 0:
            raise ValueError("retry policy: attempts >= 1, backoff_s >= 0, factor >= 1, max_backoff_s >= 0")

    def delay(self, failed_attempt: int) -> float:
        return min(self.backoff_s * self.factor ** (failed_attempt - 1), self.max_backoff_s)


@dataclass(frozen=True)
class ExecutionPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = 3600.0  # per attempt; None waits forever
    approve_before: frozenset[str] = frozenset()  # tool names that wait for a person's yes before running

    def __post_init__(self) -> None:
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive (or None)")


UNAVAILABLE_ERRORS = ("ModelNotAvailableError", "ToolUnavailableError")  # the tool found out while running
REPAIRABLE_ERRORS = ("InvalidInputError",)  # a bad argument: a better call may work


@dataclass
class TaskResult:
    """A task's outcome as run state: JSON-able, artifact ids only."""

    tool: str
    status: str  # done | failed | unavailable | skipped | cancelled | awaiting_approval
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    model: str | None = None
    resumed: bool = False  # finished in an earlier attempt at this run, not re-run
    unavailable: dict[str, Any] | None = None  # why the tool cannot run here (recovery.Unavailable.to_json())
    repairs: list[dict[str, Any]] = field(default_factory=list)  # earlier calls of this task: tool, arguments, error

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        return cls(**data)


@dataclass
class ExecutionHooks:
    """Optional decisions the executor asks its caller for (all None: plain execution).

    ``unavailable(task, tool, model, arguments, error)``: before a task runs (``error`` None), or after it
    failed with a ModelNotAvailableError / ToolUnavailableError, a JSON record of why its tool cannot
    run here, or None. ``prepare(task, tool, arguments)``: the arguments to run with.
    ``repair(task, tool, arguments, error)``: a replacement call ``(tool, arguments)`` for a task that
    failed on a bad argument or found nothing, or None; asked at most once per task.
    ``empty(outputs)``: whether a finished task's outputs hold nothing at all.
    """

    unavailable: Callable[[str, str, str | None, dict[str, Any], str | None], dict[str, Any] | None] | None = None
    prepare: Callable[[str, str, dict[str, Any]], dict[str, Any]] | None = None
    repair: Callable[[str, str, dict[str, Any], str], tuple[str, dict[str, Any]] | None] | None = None
    empty: Callable[[dict[str, str]], bool] | None = None


def resolve_arguments(validated: ValidatedPlan, task_id: str, results: dict[str, TaskResult]) -> dict[str, Any]:
    """The task's arguments with every reference replaced by the artifact id it points at."""
    task = next(t for t in validated.plan.tasks if t.id == task_id)
    arguments = dict(task.args)
    for (referring, argument), reference in validated.references.items():
        if referring == task_id:
            arguments[argument] = results[reference.task].outputs[reference.output]
    return arguments


@dataclass(frozen=True)
class Skip:
    """A task that will not run although its inputs exist (a workflow condition came out false)."""

    reason: str


class TaskGraph(Protocol):
    """What the scheduler needs of a graph of tasks. A plan's graph is fixed; a workflow's grows while
    it runs (a fan-out node becomes one task per item once its list exists) and may decide not to
    run a task (a condition), so both questions are asked with the results so far."""

    def task_ids(self, results: dict[str, TaskResult]) -> Sequence[str]: ...  # known tasks, in start priority

    def tool(self, task_id: str) -> str: ...

    def dependencies(self, task_id: str) -> Collection[str]: ...

    def arguments(self, task_id: str, results: dict[str, TaskResult]) -> dict[str, Any] | Skip: ...

    def model(self, task_id: str) -> str | None: ...  # None: the tool's configured model


class PlanTaskGraph:
    """A validated plan as a :class:`TaskGraph`."""

    def __init__(self, validated: ValidatedPlan):
        self.validated = validated
        self._tools = {t.id: t.tool for t in validated.plan.tasks}

    def task_ids(self, results: dict[str, TaskResult]) -> Sequence[str]:
        return self.validated.order

    def tool(self, task_id: str) -> str:
        return self._tools[task_id]

    def dependencies(self, task_id: str) -> Collection[str]:
        return self.validated.dependencies[task_id]

    def arguments(self, task_id: str, results: dict[str, TaskResult]) -> dict[str, Any]:
        return resolve_arguments(self.validated, task_id, results)

    def model(self, task_id: str) -> str | None:
        return None


def finished_in_journal(journal: RunJournal, run_id: str, store: ArtifactStore, session: str) -> dict[str, TaskResult]:
    """Tasks an earlier attempt at this run finished, whose outputs are all still in the store.

    The scheduler takes one of them as finished only when the graph has a task of that id calling
    the same tool (a workflow's fan-out tasks exist only once their list does)."""
    found: dict[str, TaskResult] = {}
    for record in journal.tasks(run_id):
        if record.status != "done":
            continue
        if all(store.exists(artifact_id, session=session) for artifact_id in record.outputs.values()):
            found[record.task] = TaskResult(record.tool, "done", dict(record.outputs), None, record.attempts,
                                            record.seconds or 0.0, record.model, resumed=True)
    return found


class PlanExecutor:
    """Runs one validated plan to the end (or to the approvals it waits for); see the module docstring."""

    def __init__(self, runner: TaskRunner, journal: RunJournal, store: ArtifactStore, *,
                 policy: ExecutionPolicy | None = None, emit: EventSink = ignore_events,
                 hooks: ExecutionHooks | None = None):
        self.runner = runner
        self.journal = journal
        self.store = store
        self.policy = policy or ExecutionPolicy()
        self.emit = emit
        self.hooks = hooks or ExecutionHooks()

    def execute(self, run_id: str, session: str, graph: ValidatedPlan | TaskGraph, *,
                approvals: dict[str, bool] | None = None, cancel: threading.Event | None = None) -> dict[str, TaskResult]:
        if isinstance(graph, ValidatedPlan):
            graph = PlanTaskGraph(graph)
        return RunScheduler(self, run_id, session, graph, approvals or {}, cancel or threading.Event()).run()


class RunScheduler:
    """One run's scheduling state: what is running, waiting to retry, finished; made by :meth:`PlanExecutor.execute`
    for each call and dropped when it returns.

    Each turn of :meth:`run` checks the lease and cancellation, starts what is ready, and waits for one message from
    the runner (an outcome or progress) or for the next deadline. Bookkeeping (journal rows, events) waits in
    ``deferred`` until the tasks a result unblocks have been handed to the runner: it is off the critical path that
    way, and a crash in between re-runs at most those."""

    def __init__(self, executor: PlanExecutor, run_id: str, session: str, graph: TaskGraph,
                 approvals: dict[str, bool], cancel: threading.Event):
        self.executor = executor
        self.journal = executor.journal
        self.emit = executor.emit
        self.policy = executor.policy
        self.hooks = executor.hooks
        self.run_id = run_id
        self.session = session
        self.graph = graph
        self.approvals = approvals
        self.cancel_event = cancel
        self.earlier = finished_in_journal(executor.journal, run_id, executor.store, session)
        self.journal.forget_unfinished_tasks(run_id)
        self.results: dict[str, TaskResult] = {}
        self.inbox: queue.Queue[tuple] = queue.Queue()
        self.running: dict[str, tuple[int, float | None, Future[TaskOutcome]]] = {}  # task -> (attempt, deadline, future)
        self.retry_at: dict[str, tuple[int, float]] = {}  # task -> (next attempt, when)
        self.retry_arguments: dict[str, dict[str, Any]] = {}  # a retried task runs with the arguments it first had
        self.replaced: dict[str, str] = {}  # task -> the tool of its repaired call
        self.repairs: dict[str, list[dict[str, Any]]] = {}  # task -> its earlier calls
        self.asked_to_repair: set[str] = set()
        self.checked: set[str] = set()  # tasks whose tool's availability was asked
        self.deferred: list[Callable[[], None]] = []

    def run(self) -> dict[str, TaskResult]:
        try:
            return self._turns()
        except BaseException:
            # Stopped early (taken over, a journal write refused, interrupted): the runner may still hold tasks
            # it has not started (a pool runs a few and queues the rest). Drop them: whoever drives the run
            # next runs them, and a driver taken over must not (a thread pool drains its queue even at exit).
            for _, _, future in self.running.values():
                future.cancel()
            raise

    def _turns(self) -> dict[str, TaskResult]:
        while True:
            # Taken over (this process stalled past its run lease): stop here and write nothing; the new
            # driver owns the journal. Tasks already running cannot be stopped (threads); their results are dropped.
            self.journal.check_lease(self.run_id)
            if self.cancel_event.is_set():
                self.cancel()
                return self.results
            self.start_due_retries()
            self.start_ready_tasks()
            self.flush()
            if not self.running and not self.retry_at:
                return self.results
            self.take_message()
            self.expire_deadlines()

    # ------------------------------------------------------------------ starting

    def tool_of(self, task_id: str) -> str:
        return self.replaced.get(task_id) or self.graph.tool(task_id)

    def start_due_retries(self) -> None:
        now = time.monotonic()
        for task_id, (attempt, when) in list(self.retry_at.items()):
            if when <= now:
                del self.retry_at[task_id]
                self.start(task_id, attempt, self.retry_arguments[task_id])

    def start_ready_tasks(self) -> None:
        for task_id in self.graph.task_ids(self.results):
            if task_id not in self.results and task_id not in self.running and task_id not in self.retry_at:
                self.consider(task_id)

    def consider(self, task_id: str) -> None:
        """Start ``task_id`` if it is ready, or settle it without running (unavailable, skipped, resumed,
        awaiting approval); a task whose dependencies are still running is left for a later turn."""
        graph, results = self.graph, self.results
        if self.hooks.unavailable is not None and task_id not in self.checked:
            self.checked.add(task_id)
            previous = self.earlier.get(task_id)
            if previous is None or previous.tool != graph.tool(task_id):
                record = self.ask(self.hooks.unavailable, task_id, graph.tool(task_id), graph.model(task_id), {}, None)
                if record:
                    self.finish(task_id, TaskResult(graph.tool(task_id), "unavailable", error=record.get("reason"),
                                                    unavailable=record), "task_failed", unavailable=record)
                    return
        dependencies = graph.dependencies(task_id)
        blocked = [d for d in dependencies if d in results and results[d].status not in ("done", "awaiting_approval")]
        if blocked:
            cause = blocked[0]
            self.finish(task_id, TaskResult(graph.tool(task_id), "skipped",
                                            error=f"not run: {cause} ({results[cause].tool}) {results[cause].status}"),
                        "task_skipped", because=cause, because_unavailable=results[cause].status == "unavailable")
            return
        if not all(d in results and results[d].status == "done" for d in dependencies):
            return
        tool = graph.tool(task_id)
        previous = self.earlier.get(task_id)
        if previous is not None and previous.tool == tool:
            results[task_id] = previous
            self.deferred.append(lambda: self.emit(Event(
                "task_finished", self.run_id, task_id, {"tool": previous.tool, "outputs": previous.outputs,
                                                        "seconds": previous.seconds, "resumed": True})))
            return
        try:
            arguments = graph.arguments(task_id, results)
        except Exception as exc:  # noqa: BLE001 - e.g. a workflow condition over a malformed artifact
            self.finish(task_id, TaskResult(tool, "failed", error=f"{type(exc).__name__}: {exc}" if not isinstance(
                exc, AnymodaError) else str(exc)), "task_failed")
            return
        if isinstance(arguments, Skip):
            self.finish(task_id, TaskResult(tool, "skipped", error=f"not run: {arguments.reason}"), "task_skipped")
            return
        if tool in self.policy.approve_before:
            decision = self.approvals.get(task_id)
            if decision is None:
                results[task_id] = TaskResult(tool, "awaiting_approval")
                self.journal.task_finished(self.run_id, task_id, tool, "awaiting_approval")
                return
            if decision is False:
                self.finish(task_id, TaskResult(tool, "skipped", error="not run: a person declined it"), "task_skipped")
                return
        if self.hooks.prepare is not None:
            try:
                arguments = self.hooks.prepare(task_id, tool, arguments)
            except Exception as exc:  # noqa: BLE001 - e.g. a text that cannot be read
                self.finish(task_id, TaskResult(tool, "failed", error=str(exc) if isinstance(exc, AnymodaError)
                                                else f"{type(exc).__name__}: {exc}"), "task_failed")
                return
        self.retry_arguments[task_id] = arguments
        self.start(task_id, 1, arguments)

    def start(self, task_id: str, attempt: int, arguments: dict[str, Any]) -> None:
        tool = self.tool_of(task_id)
        model = self.graph.model(task_id) if tool == self.graph.tool(task_id) else None
        spec = TaskSpec(self.run_id, task_id, tool, arguments, self.session, model=model, attempt=attempt)
        inbox = self.inbox

        def progress(done: float, total: float | None, message: str) -> None:
            inbox.put(("progress", task_id, attempt, (done, total, message)))

        # A driver that stalled past its lease must not start a task its successor runs too.
        self.journal.check_lease(self.run_id)
        future = self.executor.runner.submit(spec, progress)
        deadline = time.monotonic() + self.policy.timeout_s if self.policy.timeout_s else None
        self.running[task_id] = (attempt, deadline, future)
        future.add_done_callback(lambda f: inbox.put(("done", task_id, attempt, f)))

        def record() -> None:
            self.journal.task_started(self.run_id, task_id, tool, arguments, attempt)
            self.emit(Event("task_started", self.run_id, task_id, {"tool": tool, "arguments": arguments,
                                                                    "attempt": attempt}))
        self.deferred.append(record)

    # ------------------------------------------------------------------ outcomes

    def take_message(self) -> None:
        """Wait for one message from the runner, no longer than the nearest deadline or retry (and 0.5 s)."""
        deadlines = [d for _, d, _ in self.running.values() if d is not None] + [w for _, w in self.retry_at.values()]
        wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        try:
            kind, task_id, attempt, payload = self.inbox.get(timeout=min(wait, 0.5) if wait is not None else 0.5)
        except queue.Empty:
            return
        current = task_id in self.running and self.running[task_id][0] == attempt  # else a late or cancelled attempt
        if kind == "progress" and current:
            done, total, message = payload
            self.emit(Event("task_progress", self.run_id, task_id, {"done": done, "total": total, "message": message}))
        elif kind == "done" and current:
            del self.running[task_id]
            self.take_outcome(task_id, self.tool_of(task_id), attempt, payload)

    def take_outcome(self, task_id: str, tool: str, attempt: int, future: Future[TaskOutcome]) -> None:
        """A finished attempt: done, retried later (transient), unavailable, repaired (a bad argument), or failed."""
        hooks = self.hooks
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - a runner that raised instead of reporting
            outcome = TaskOutcome(False, error=f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
        if outcome.ok:
            if hooks.empty is not None and task_id not in self.asked_to_repair and self.ask(hooks.empty, outcome.outputs):
                if self.try_repair(task_id, tool, attempt, "the tool returned an empty result", outcome):
                    return
            self.finish(task_id, TaskResult(tool, "done", dict(outcome.outputs), None, attempt, outcome.seconds,
                                            outcome.model), "task_finished")
            return
        if outcome.transient and attempt < self.policy.retry.attempts:
            delay = self.policy.retry.delay(attempt)
            self.retry_at[task_id] = (attempt + 1, time.monotonic() + delay)
            self.emit(Event("task_retry", self.run_id, task_id, {"tool": tool, "error": outcome.error,
                                                                  "attempt": attempt, "retry_in_s": delay}))
            return
        if hooks.unavailable is not None and outcome.error_type in UNAVAILABLE_ERRORS:
            record = self.ask(hooks.unavailable, task_id, tool, None, self.retry_arguments.get(task_id, {}),
                              outcome.error or "")
            if record:
                self.finish(task_id, TaskResult(tool, "unavailable", error=record.get("reason"), attempts=attempt,
                                                seconds=outcome.seconds, unavailable=record), "task_failed",
                            unavailable=record)
                return
        if outcome.error_type in REPAIRABLE_ERRORS and self.try_repair(task_id, tool, attempt, outcome.error or "",
                                                                       outcome):
            return
        self.finish(task_id, TaskResult(tool, "failed", error=outcome.error, attempts=attempt, seconds=outcome.seconds),
                    "task_failed")

    def try_repair(self, task_id: str, tool: str, attempt: int, error: str, outcome: TaskOutcome) -> bool:
        """Ask for a replacement call once; start it under the same task id if there is one."""
        hooks = self.hooks
        if hooks.repair is None or task_id in self.asked_to_repair:
            return False
        self.asked_to_repair.add(task_id)
        arguments = self.retry_arguments.get(task_id, {})
        replacement = self.ask(hooks.repair, task_id, tool, arguments, error)
        if not replacement:
            return False
        new_tool, new_arguments = replacement
        if hooks.prepare is not None:
            try:
                new_arguments = hooks.prepare(task_id, new_tool, new_arguments)
            except Exception:  # noqa: BLE001 - the replacement cannot even be prepared: keep the first failure
                return False
        earlier_call = {"tool": tool, "arguments": arguments, "error": error, "attempts": attempt,
                        "outputs": dict(outcome.outputs), "seconds": round(outcome.seconds, 4)}
        self.repairs.setdefault(task_id, []).append(earlier_call)
        self.flush()  # the first attempt's rows go out before the repair's
        self.journal.task_repaired(self.run_id, task_id, earlier_call)
        self.emit(Event("task_retry", self.run_id, task_id, {
            "tool": tool, "error": error, "attempt": attempt, "retry_in_s": 0.0, "repair": True,
            "replacement": {"tool": new_tool, "arguments": new_arguments}}))
        self.replaced[task_id] = new_tool
        self.retry_arguments[task_id] = new_arguments
        self.start(task_id, attempt + 1, new_arguments)
        return True

    def expire_deadlines(self) -> None:
        now = time.monotonic()
        for task_id, (attempt, deadline, future) in list(self.running.items()):
            if deadline is not None and now >= deadline:
                del self.running[task_id]
                future.cancel()
                self.finish(task_id, TaskResult(self.tool_of(task_id), "failed", attempts=attempt,
                                                error=f"timed out after {self.policy.timeout_s:g} s"), "task_failed")

    def cancel(self) -> None:
        """Every running task and every task not yet finished ends as cancelled."""
        for task_id, (attempt, _, future) in list(self.running.items()):
            future.cancel()
            self.finish(task_id, TaskResult(self.tool_of(task_id), "cancelled", error="the run was cancelled",
                                            attempts=attempt), "task_cancelled")
        self.running.clear()
        for task_id in self.graph.task_ids(self.results):
            if task_id not in self.results:
                self.finish(task_id, TaskResult(self.tool_of(task_id), "cancelled", error="the run was cancelled"),
                            "task_cancelled")
        self.flush()

    # ------------------------------------------------------------------ bookkeeping

    def finish(self, task_id: str, result: TaskResult, event: str, **data: Any) -> None:
        if task_id in self.repairs and not result.repairs:
            result.repairs = list(self.repairs[task_id])
        self.results[task_id] = result

        def record() -> None:
            detail = {"unavailable": result.unavailable} if result.unavailable else None
            self.journal.task_finished(self.run_id, task_id, result.tool, result.status, attempts=result.attempts,
                                       outputs=result.outputs, model=result.model, error=result.error, detail=detail)
            self.emit(Event(event, self.run_id, task_id, {"tool": result.tool, "outputs": result.outputs,
                                                          "error": result.error, "seconds": result.seconds,
                                                          "attempts": result.attempts, **data}))
        self.deferred.append(record)

    def flush(self) -> None:
        while self.deferred:
            self.deferred.pop(0)()

    @staticmethod
    def ask(hook: Callable[..., Any], *args: Any) -> Any:
        """A hook's answer; a hook that raises counts as no answer (the task then fails or runs as it would)."""
        try:
            return hook(*args)
        except Exception:  # noqa: BLE001 - a broken hook must not take the run down
            return None
