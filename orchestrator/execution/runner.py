"""Task runners: where one task of a plan actually runs.

The executor decides *when* a task runs; a runner decides *where*. A task travels as a
:class:`TaskSpec` (plain JSON: tool name, arguments whose artifacts are ids, session, run and task
ids) and comes back as a :class:`TaskOutcome` (output artifact ids, or an error), so nothing assumes
the executor and the tool share a process: a Ray runner can ship specs to workers (models as Ray
Serve deployments) that open the same artifact store, and the executor does not change.

:class:`LocalTaskRunner` runs tasks on a thread pool in this process. Model calls release the GIL in
torch/ONNX kernels, so independent tasks overlap and an asyncio caller's event loop is never blocked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..config import Settings, current_settings
from ..errors import (
    AnymodaError,
    InvalidInputError,
    MemoryBudgetError,
    ToolExecutionError,
    ToolUnavailableError,
    TransientError,
)
from ..models.pool import ModelPool
from ..storage.store import ArtifactStore
from ..tooling.invoke import run_tool
from ..tooling.registry import ToolRegistry

ProgressReport = Callable[[float, "float | None", str], None]


@dataclass(frozen=True)
class TaskSpec:
    run: str
    task: str
    tool: str
    arguments: dict[str, Any]  # literals and artifact ids only: references are resolved before a spec is made
    session: str
    model: str | None = None  # None: the tool's configured model
    attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskOutcome:
    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> artifact id
    model: str | None = None
    error: str | None = None
    error_type: str | None = None
    transient: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the same call may well succeed in a moment."""
    if isinstance(exc, (TransientError, MemoryBudgetError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, (InvalidInputError, ToolUnavailableError)):
        return False
    cause = exc.__cause__
    return isinstance(exc, ToolExecutionError) and cause is not None and isinstance(cause, (ConnectionError, TimeoutError))


def execute_spec(spec: TaskSpec, registry: ToolRegistry, store: ArtifactStore, *, settings: Settings | None = None,
                 pool: ModelPool | None = None, progress: ProgressReport | None = None) -> TaskOutcome:
    """Run one spec here and now; every failure becomes an outcome, never an exception."""
    started = time.perf_counter()
    try:
        tool = registry.get(spec.tool)(spec.model, settings=settings, pool=pool)
        tool.progress_callback = progress
        run = run_tool(tool, spec.arguments, store=store, session=spec.session, task=f"{spec.run}/{spec.task}")
        return TaskOutcome(True, {name: artifact.id for name, artifact in run.outputs.items()}, run.model,
                           seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a task's failure is data for the executor, not a crash
        message = str(exc) if isinstance(exc, AnymodaError) else f"{type(exc).__name__}: {exc}"
        return TaskOutcome(False, error=message, error_type=type(exc).__name__, transient=is_transient(exc),
                           seconds=time.perf_counter() - started)


class TaskRunner(Protocol):
    """Runs task specs somewhere; ``progress`` may be called from any thread."""

    def submit(self, spec: TaskSpec, progress: ProgressReport | None = None) -> Future[TaskOutcome]: ...

    def shutdown(self) -> None: ...


class LocalTaskRunner:
    """A thread pool in this process; ``max_workers`` bounds how many tasks run at once."""

    def __init__(self, registry: ToolRegistry, store: ArtifactStore, *, settings: Settings | None = None,
                 pool: ModelPool | None = None, max_workers: int = 8):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.registry = registry
        self.store = store
        self.settings = settings or current_settings()
        self.pool = pool
        self.max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, spec: TaskSpec, progress: ProgressReport | None = None) -> Future[TaskOutcome]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="anymoda-task")
            executor = self._executor
        return executor.submit(execute_spec, spec, self.registry, self.store, settings=self.settings, pool=self.pool,
                               progress=progress)

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
