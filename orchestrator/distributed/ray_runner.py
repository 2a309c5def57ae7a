"""The Ray runner: tasks run in Ray actors spread over a cluster, behind the same TaskRunner protocol.

Each expert (tool) gets ``replicas_per_node`` actors on every node that can hold one, placed by what
the tool needs (``[runner.resources.<tool>]``: ``num_gpus`` for GPU experts, ``memory`` for large
models). An actor keeps one :class:`~orchestrator.pool.ModelPool`, so a second task for the same
expert on that actor finds its model loaded, and runs up to ``slots`` tasks at once (more wait in its
queue, which ``anymoda cluster status`` reports). Actors open the same state as the driver from the
same settings, so with ``store = "s3://..."`` and ``database = "postgresql://..."`` a task's outputs
are the same wherever it ran; on one host the embedded default (files under the home) works too.

What the executor sees does not change: a :class:`TaskSpec` goes out, a :class:`TaskOutcome` comes
back. Progress reports travel through a Ray queue to the driver; cancelling a task's future calls
``ray.cancel``. A task whose actor or node died comes back as a *transient* failure and the actor is
dropped, so the executor's retry policy runs it again, on a replica that is still alive (a node that
joins later gets replicas at the next refresh).
"""

from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from ..backends import missing_extra
from ..backends.locations import ExpertResources, RunnerSettings
from ..config import Settings
from ..errors import ConfigError
from ..execution.runner import ProgressReport, TaskOutcome, TaskSpec
from ..tooling.registry import ToolRegistry
from ..tooling.tool import WeightlessTool

try:
    import ray
    import ray.exceptions as ray_errors
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise missing_extra("[runner] kind = \"ray\"") from exc

log = logging.getLogger(__name__)
ACTOR_PREFIX = "anymoda-expert"
NODE_REFRESH_S = 2.0
# What a lost node or actor looks like from the driver: worth running again elsewhere.
LOST = (ray_errors.RayActorError, ray_errors.NodeDiedError, ray_errors.WorkerCrashedError, ray_errors.ObjectLostError,
        ray_errors.OwnerDiedError, ray_errors.LocalRayletDiedError, ray_errors.ActorUnschedulableError)
# A node where an actor was just lost is likely dying, though Ray may not say so for a few seconds: no new
# replicas go there meanwhile (unless no other node can take the expert).
SUSPECT_NODE_S = 15.0


class ExpertActor:
    """One replica of one expert on one node: a model pool kept warm between tasks."""

    def __init__(self, tool: str, registry: ToolRegistry, settings: Settings, slots: int,
                 memory_budget: int | None = None):
        from ..execution.state import open_store
        from ..models.pool import ModelPool

        self.tool = tool
        self.registry = registry
        self.settings = settings
        self.store = open_store(settings)
        # The memory Ray reserved for this replica is its pool's budget: several replicas on one node must not
        # each assume they have the machine's.
        self.pool = ModelPool(memory_budget or settings.memory_budget)
        self.slots = threading.BoundedSemaphore(slots)
        self.lock = threading.Lock()
        self.waiting = self.running = self.finished = 0
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        import os
        import socket

        self.pid, self.host = os.getpid(), socket.gethostname()

    def run(self, spec: dict[str, Any], token: str, progress_queue: Any) -> dict[str, Any]:
        """Run one task; progress goes to the queue of the front end that sent it (a shared expert serves many)."""
        from ..execution.runner import execute_spec

        sent: list[Any] = []

        def progress(done: float, total: float | None, message: str) -> None:
            # Not waited for here: a slow driver must not slow the model down.
            # Numbered: the queue is an async actor, which may run two puts out of order.
            sent.append(progress_queue.actor.put_nowait.remote((token, len(sent), done, total, message)))

        with self.lock:
            self.waiting += 1
        with self.slots:
            with self.lock:
                self.waiting -= 1
                self.running += 1
            try:
                outcome = execute_spec(TaskSpec(**spec), self.registry, self.store, settings=self.settings,
                                       pool=self.pool, progress=progress)
            finally:
                with self.lock:
                    self.running -= 1
                    self.finished += 1
        # The reports must be in the driver's queue before the result is back, or the driver would see the
        # task finish first and drop them (a front end's new queue can still be starting).
        if sent:
            ray.wait(sent, num_returns=len(sent), timeout=10)
        return {"outcome": outcome.to_json(), "node": self.node, "progress": len(sent)}

    def status(self) -> dict[str, Any]:
        with self.lock:
            counts = {"waiting": self.waiting, "running": self.running, "finished": self.finished}
        return {"tool": self.tool, "node": self.node, "host": self.host, "pid": self.pid, **counts,
                "warm": [str(info.key) for info in self.pool.loaded()], "loads": self.pool.loads,
                "pool_bytes": self.pool.used_bytes, "pool_budget": self.pool.budget_bytes}


_remote_class: Any = None


def _expert_actor_class() -> Any:
    global _remote_class
    if _remote_class is None:
        _remote_class = ray.remote(ExpertActor)
    return _remote_class


@dataclass
class Replica:
    handle: Any
    name: str
    node: str
    in_flight: int = 0


@dataclass
class _Tracked:
    future: Future
    replica: Replica
    progress: ProgressReport | None
    ref: Any = None
    delivered: int = 0  # progress reports passed on so far, in the order they were made
    early: dict[int, tuple] = field(default_factory=dict)  # reports that overtook an earlier one, by number
    nodes: list[str] = field(default_factory=list)


class RayTaskFuture(Future):
    """A task's future whose cancel() reaches Ray (``ray.cancel``), not just this process."""

    def __init__(self, runner: RayTaskRunner, token: str):
        super().__init__()
        self._runner = runner
        self._token = token

    def cancel(self) -> bool:
        self._runner._cancel(self._token)
        return super().cancel()


def connect(address: str, namespace: str) -> None:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``) unless already joined."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:  # no cluster there; ray:// without ray[client]
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot join the Ray cluster at runner.address = {address!r}: {first}") from None


class RayTaskRunner:
    """Runs task specs in expert actors on a Ray cluster; see the module docstring."""

    def __init__(self, registry: ToolRegistry, settings: Settings, *, runner: RunnerSettings | None = None,
                 address: str | None = None):
        self.registry = registry
        self.settings = settings
        self.config = runner or settings.runner or RunnerSettings(kind="ray")
        connect(address or self.config.address, self.config.namespace)
        self._job = secrets.token_hex(3)
        self._lock = threading.RLock()
        self._replicas: dict[str, list[Replica]] = {}
        self._tracked: dict[str, _Tracked] = {}
        self._alive_nodes: dict[str, dict[str, float]] = {}
        self._nodes_checked = 0.0
        self._suspects: dict[str, float] = {}  # node -> when an actor on it was lost (time.monotonic())
        self._counter = itertools.count()
        self._queue: Any = None
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        self._dispatch_lock = threading.Lock()  # progress goes out in queue order, from one thread at a time
        self.placements: dict[str, str] = {}  # "run/task" -> the node that ran its last attempt
        # With the embedded state (files under the home) only nodes of this host see the same files, so
        # experts go only there; shared state (postgresql:// and s3://) lets them go anywhere.
        self.shared_state = bool(settings.database) and settings.store.startswith("s3://")
        self._driver_address = ray.util.get_node_ip_address()
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._settler = threading.Thread(target=self._settle_finished, name="anymoda-ray-settle", daemon=True)
        self._settler.start()

    # ------------------------------------------------------------------ placement

    def resources_for(self, tool: str) -> ExpertResources:
        if tool in self.config.resources:
            return self.config.resources[tool]
        tool_class = self.registry.get(tool)
        if issubclass(tool_class, WeightlessTool):
            return ExpertResources()
        # A model: a CPU to itself, and a GPU when the settings run models on one.
        return ExpertResources(num_cpus=1.0, num_gpus=1.0 if self.settings.device.startswith("cuda") else 0.0)

    def _refresh_nodes(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._nodes_checked < NODE_REFRESH_S:
            return
        self._nodes_checked = now
        alive = {n["NodeID"]: dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")
                 and (self.shared_state or n.get("NodeManagerAddress") == self._driver_address)}
        self._alive_nodes = alive
        for tool, replicas in self._replicas.items():
            replicas[:] = [r for r in replicas if r.node in alive]
            self._place(tool, replicas)

    def _fits(self, need: ExpertResources, resources: dict[str, float]) -> bool:
        return (need.num_cpus <= resources.get("CPU", 0) and need.num_gpus <= resources.get("GPU", 0)
                and need.memory <= resources.get("memory", 0))

    def _place(self, tool: str, replicas: list[Replica]) -> None:
        """Start this expert's replicas on every live node that can hold one and has none yet."""
        need = self.resources_for(tool)
        covered = {r.node for r in replicas}
        now = time.monotonic()
        candidates = [node for node, resources in self._alive_nodes.items()
                      if node not in covered and self._fits(need, resources)]
        trusted = [node for node in candidates if node not in self._suspects or now - self._suspects[node] >= SUSPECT_NODE_S]
        for node in (trusted if trusted or replicas else candidates):
            for index in range(self.config.replicas_per_node):
                if self.config.shared_experts:
                    # One replica per node and index for every front end: the name finds it if it exists.
                    name = f"{ACTOR_PREFIX}:{tool}:{node[:12]}:{index}:shared"
                    lifetime = {"lifetime": "detached", "get_if_exists": True}
                else:
                    # Unique per creation: a replacement must not collide with the name of the replica it replaces.
                    name = f"{ACTOR_PREFIX}:{tool}:{node[:12]}:{index}:{self._job}-{next(self._counter)}"
                    lifetime = {}
                try:
                    handle = _expert_actor_class().options(
                        name=name, namespace=self.config.namespace, max_concurrency=min(4 * self.config.slots + 8, 512),
                        max_restarts=0, max_task_retries=0, **lifetime,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False), **need.ray_options(),
                    ).remote(tool, self.registry, self.settings, self.config.slots, need.memory or None)
                except ray_errors.RayError as exc:  # the node went away meanwhile: the next refresh sees it
                    log.warning("could not start %s on node %s: %s", tool, node[:12], exc)
                    continue
                replicas.append(Replica(handle, name, node))

    def _pick(self, tool: str) -> Replica:
        with self._lock:
            self._refresh_nodes()
            replicas = self._replicas.setdefault(tool, [])
            if not replicas:
                self._refresh_nodes(force=True)
                self._place(tool, replicas)
            if not replicas:
                need = self.resources_for(tool)
                where = "" if self.shared_state else (" on this host (the state is local files: set store = "
                                                      "\"s3://...\" and database = \"postgresql://...\" to use every host)")
                raise ConfigError(f"no live node of the Ray cluster{where} can hold {tool} (it needs "
                                  f"{need.describe()}); set [runner.resources.{tool}] or add a node that has them")
            replica = min(replicas, key=lambda r: (r.in_flight, next(self._counter)))
            replica.in_flight += 1
            return replica

    def _drop(self, replica: Replica) -> None:
        with self._lock:
            self._suspects[replica.node] = time.monotonic()
            for replicas in self._replicas.values():
                if replica in replicas:
                    replicas.remove(replica)
            self._nodes_checked = 0.0  # its node may be gone: look again before the next placement
        try:
            ray.kill(replica.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass

    # ------------------------------------------------------------------ progress

    def _progress_queue(self) -> Any:
        if self._queue is None:
            from ray.util.queue import Queue

            # The queue lives on the driver's node with no CPU of its own, so it never waits for a free core.
            self._queue = Queue(actor_options={"num_cpus": 0})
            self._listener = threading.Thread(target=self._listen, name="anymoda-ray-progress", daemon=True)
            self._listener.start()
        return self._queue

    def _listen(self) -> None:
        from ray.util.queue import Empty

        while not self._closed.is_set():
            try:
                items = [self._queue.get(timeout=0.5)]
            except Empty:
                continue
            except BaseException:  # noqa: BLE001 - the queue was killed (Ray raises SystemExit) or the cluster went away
                if self._closed.wait(1.0):
                    return
                continue
            self._dispatch(items)

    def _dispatch(self, items: list[tuple]) -> None:
        with self._dispatch_lock:
            for token, number, *report in items:
                tracked = self._tracked.get(token)
                if tracked is None:
                    continue
                tracked.early[number] = tuple(report)
                while tracked.delivered in tracked.early:
                    done, total, message = tracked.early.pop(tracked.delivered)
                    tracked.delivered += 1
                    if tracked.progress is not None:
                        try:
                            tracked.progress(done, total, message)
                        except Exception:  # noqa: BLE001 - a broken listener must not stop the others
                            log.exception("progress callback failed")

    def _drain_progress(self, tracked: _Tracked, expected: int, timeout_s: float = 5.0) -> None:
        """Pass on a finished task's reports before its result (the actor put them in the queue before returning)."""
        deadline = time.monotonic() + timeout_s
        while tracked.delivered < expected and time.monotonic() < deadline and self._queue is not None:
            try:
                items = self._queue.get_nowait_batch(self._queue.qsize())
            except Exception:  # noqa: BLE001 - the listener took them first; it will dispatch them
                items = []
            if items:
                self._dispatch(items)
            else:
                time.sleep(0.005)

    # ------------------------------------------------------------------ TaskRunner

    def submit(self, spec: TaskSpec, progress: ProgressReport | None = None) -> Future[TaskOutcome]:
        token = f"{spec.run}/{spec.task}/{spec.attempt}/{next(self._counter)}"
        future: RayTaskFuture = RayTaskFuture(self, token)
        try:
            replica = self._pick(spec.tool)
        except ConfigError as exc:
            future.set_result(TaskOutcome(False, error=str(exc), error_type="ToolUnavailableError"))
            return future
        tracked = _Tracked(future, replica, progress)
        self._tracked[token] = tracked
        try:
            tracked.ref = replica.handle.run.remote(spec.to_json(), token, self._progress_queue())
        except Exception as exc:  # noqa: BLE001 - the actor is already known dead
            self._settle(token, spec, None, exc)
            return future
        # Ray calls this back on its own I/O thread, which must never wait: settling takes our lock, and
        # a thread holding that lock may be waiting on a Ray call that needs the I/O thread (a deadlock seen
        # when an actor was being created as another task finished). The settler thread does the work.
        tracked.ref.future().add_done_callback(lambda ray_future: self._finished.put((token, spec, ray_future)))
        return future

    def _settle_finished(self) -> None:
        while True:
            item = self._finished.get()
            if item is None:
                return
            token, spec, ray_future = item
            try:
                value = ray_future.result()
            except BaseException as exc:  # noqa: BLE001 - turned into an outcome
                self._settle(token, spec, None, exc)
            else:
                self._settle(token, spec, value, None)

    def _settle(self, token: str, spec: TaskSpec, value: dict[str, Any] | None, error: BaseException | None) -> None:
        tracked = self._tracked.get(token)
        if tracked is None:
            return
        if value is not None and value.get("progress"):
            self._drain_progress(tracked, value["progress"])
        self._tracked.pop(token, None)
        with self._lock:
            tracked.replica.in_flight -= 1
        if error is None:
            outcome = TaskOutcome(**value["outcome"])
            self.placements[f"{spec.run}/{spec.task}"] = value["node"]
        elif isinstance(error, ray_errors.TaskCancelledError):
            outcome = TaskOutcome(False, error="the task was cancelled", error_type="TaskCancelledError")
        elif isinstance(error, LOST):
            self._drop(tracked.replica)
            outcome = TaskOutcome(False, error=f"{spec.tool}: its Ray actor or node was lost "
                                               f"({type(error).__name__}); another node can run it",
                                  error_type=type(error).__name__, transient=True)
        else:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            outcome = TaskOutcome(False, error=f"{type(error).__name__}: {first}", error_type=type(error).__name__)
        if tracked.future.cancelled():
            return
        try:
            tracked.future.set_result(outcome)
        except InvalidStateError:
            pass  # cancelled meanwhile

    def _cancel(self, token: str) -> None:
        tracked = self._tracked.get(token)
        if tracked is not None and tracked.ref is not None:
            try:
                ray.cancel(tracked.ref)
            except Exception:  # noqa: BLE001 - finished or lost meanwhile
                pass

    def replicas(self) -> dict[str, list[tuple[str, str]]]:
        """tool -> [(actor name, node id)] of the replicas this runner uses now."""
        with self._lock:
            return {tool: [(r.name, r.node) for r in replicas] for tool, replicas in self._replicas.items()}

    def shutdown(self) -> None:
        self._closed.set()
        self._finished.put(None)
        with self._lock:
            replicas = [r for rs in self._replicas.values() for r in rs]
            self._replicas.clear()
        if self.config.shared_experts:
            replicas = []  # they serve other front ends too; `anymoda cluster stop-experts` ends them
        for replica in replicas:
            try:
                ray.kill(replica.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._queue is not None:
            try:
                ray.kill(self._queue.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            self._queue = None
