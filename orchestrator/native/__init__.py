"""Native multimodal path: frozen encoders, trainable connectors and an LLM that perceives media directly.

Importing the package is cheap: the names below load their module (and torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Connector": "connectors",
    "build_connector": "connectors",
    "connector_from_spec": "connectors",
    "CONNECTOR_KINDS": "connectors",
    "Example": "multimodal_lm",
    "MultimodalLM": "multimodal_lm",
    "PLACEHOLDERS": "multimodal_lm",
    "escape_placeholders": "multimodal_lm",
    "CheckpointMismatchError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_multimodal_lm": "checkpoint",
    "read_metadata": "metadata",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
