"""Running tasks across machines: the Ray runner (:mod:`.ray_runner`) and ``anymoda cluster status``
(:mod:`.cluster_status`). Both need the ``ray`` extra; the thread pool needs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import ToolRegistry
    from ..runner import TaskRunner
    from ..store import ArtifactStore


def build_runner(settings: Settings, registry: ToolRegistry, store: ArtifactStore) -> TaskRunner:
    """The runner ``[runner] kind`` names: the thread pool (default) or Ray."""
    from ..backends.locations import RunnerSettings
    from ..runner import LocalTaskRunner

    runner = settings.runner or RunnerSettings()
    if runner.kind == "ray":
        from .ray_runner import RayTaskRunner

        return RayTaskRunner(registry, settings)
    return LocalTaskRunner(registry, store, settings=settings, max_workers=runner.max_workers)
