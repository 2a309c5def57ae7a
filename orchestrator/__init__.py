"""anymoda's engine: artifacts, tools, the model pool, settings and the command line."""

from .artifacts import Artifact, ArtifactKind
from .codecs import MediaLimits
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
from .invoke import ToolRun, run_tool
from .media import AudioClip, Detections, Masks, TimeSeries
from .pool import ModelPool, default_pool
from .registry import ToolRegistry
from .store import ArtifactStore
from .tool import Availability, Input, Output, OutputValue, Param, Tool

__version__ = "0.1.0"

__all__ = [
    "AnymodaError", "Artifact", "ArtifactKind", "ArtifactNotFoundError", "ArtifactStore", "AudioClip", "Availability",
    "ConfigError", "Detections", "Input", "InvalidInputError", "Masks", "MediaLimits", "MemoryBudgetError",
    "ModelNotAvailableError", "ModelPool", "Output", "OutputValue", "Param", "Settings", "TimeSeries", "Tool",
    "ToolExecutionError", "ToolNotFoundError", "ToolRegistry", "ToolRun", "ToolUnavailableError", "current_settings",
    "default_pool", "run_tool", "use_settings",
]
