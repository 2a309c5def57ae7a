"""anymoda's engine: artifacts and their store, tools and their registry, the model pool, settings, and (loaded
on first use, so that ``import orchestrator`` and ``anymoda --help`` stay fast) the agent (``Orchestrator``,
``Session``, ``RunResult``, ``Event``), the planner, workflows and pipelines. ``@tool`` makes a tool of a function.

    from orchestrator import Orchestrator
    result = Orchestrator().run("what is the total on this receipt?", files=["receipt.png"])
"""

from importlib import import_module, metadata
from typing import Any

from .config import Settings, current_settings, use_settings
from .errors import (
    AnymodaError,
    ArtifactNotFoundError,
    ConfigError,
    InvalidInputError,
    MemoryBudgetError,
    ModelNotAvailableError,
    ToolExecutionError,
    ToolNotFoundError,
    ToolUnavailableError,
)
from .models.pool import ModelPool, default_pool
from .storage.artifacts import Artifact, ArtifactKind
from .storage.codecs import MediaLimits
from .storage.media import AudioClip, Detections, Masks, TimeSeries
from .storage.store import ArtifactStore
from .tooling.function_tool import tool
from .tooling.invoke import ToolRun, run_tool
from .tooling.registry import ToolRegistry
from .tooling.tool import Availability, Input, Output, OutputValue, Param, Tool

try:
    __version__ = metadata.version("anymoda")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# Public names whose modules pull in LangGraph, the LLM stack or YAML: imported when first asked for.
_LAZY = {
    "Orchestrator": ".agent", "Session": ".agent", "RunResult": ".agent", "Event": ".execution.events",
    "Planner": ".planning.planner", "Composer": ".execution.compose", "Workflow": ".workflows.definition",
    "Pipeline": ".workflows.pipeline", "step": ".workflows.pipeline", "item": ".workflows.pipeline",
    "pipeline_function": ".workflows.pipeline", "run_batch": ".workflows.batch", "WeightlessTool": ".tooling.tool",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "AnymodaError", "Artifact", "ArtifactKind", "ArtifactNotFoundError", "ArtifactStore", "AudioClip", "Availability",
    "ConfigError", "Detections", "Input", "InvalidInputError", "Masks", "MediaLimits", "MemoryBudgetError",
    "ModelNotAvailableError", "ModelPool", "Output", "OutputValue", "Param", "Settings", "TimeSeries", "Tool",
    "ToolExecutionError", "ToolNotFoundError", "ToolRegistry", "ToolRun", "ToolUnavailableError", "current_settings",
    "default_pool", "run_tool", "tool", "use_settings", *_LAZY,
]
