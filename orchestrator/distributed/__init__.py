"""Running tasks across machines: the Ray runner (:mod:`.ray_runner`) and ``anymoda cluster status``
(:mod:`.cluster_status`). Both need the ``ray`` extra; the thread pool needs nothing."""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings
    from ..execution.runner import ProgressReport, TaskOutcome, TaskRunner, TaskSpec
    from ..storage.store import ArtifactStore
    from ..tooling.registry import ToolRegistry


class DeferredRayRunner:
    """The Ray runner, joined to the cluster at the first task rather than when the Orchestrator is built:
    showing, listing or cancelling runs (``anymoda runs show``) must not need the cluster to be up."""

    kind = "ray"

    def __init__(self, registry: ToolRegistry, settings: Settings):
        self._registry = registry
        self._settings = settings
        self._runner: Any = None
        self._lock = threading.Lock()

    @property
    def runner(self) -> Any:
        with self._lock:
            if self._runner is None:
                from .ray_runner import RayTaskRunner

                self._runner = RayTaskRunner(self._registry, self._settings)
            return self._runner

    def submit(self, spec: TaskSpec, progress: ProgressReport | None = None) -> Future[TaskOutcome]:
        return self.runner.submit(spec, progress)

    def shutdown(self) -> None:
        with self._lock:
            runner = self._runner
        if runner is not None:
            runner.shutdown()

    def __getattr__(self, name: str) -> Any:  # placements, replicas(), ... of the real runner
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.runner, name)


def build_runner(settings: Settings, registry: ToolRegistry, store: ArtifactStore) -> TaskRunner:
    """The runner ``[runner] kind`` names: the thread pool (default) or Ray."""
    from ..backends.locations import RunnerSettings
    from ..execution.runner import LocalTaskRunner

    runner = settings.runner or RunnerSettings()
    if runner.kind == "ray":
        try:
            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules
            found = False
        if not found:
            from ..backends import missing_extra

            raise missing_extra('[runner] kind = "ray"')
        return DeferredRayRunner(registry, settings)
    return LocalTaskRunner(registry, store, settings=settings, max_workers=runner.max_workers)
