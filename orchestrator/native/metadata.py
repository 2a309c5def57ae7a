"""A native checkpoint's metadata file (``native.json``) and the folder names around it, readable without torch.

``anymoda models list`` and the native-chat tool's availability check read checkpoints this way, so that telling
what is installed never loads torch or the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

CHECKPOINT_FORMAT = "anymoda-native"
FORMAT_VERSION = 1
METADATA_FILE = "native.json"
FINAL_CHECKPOINT = "checkpoint"  # the folder inside a training run that holds the last (evaluated) checkpoint


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The ``native.json`` of a checkpoint folder, checked for format and version."""
    folder = Path(path)
    metadata_file = folder / METADATA_FILE
    if not metadata_file.is_file():
        raise InvalidInputError(f"{folder} is not a native checkpoint: {METADATA_FILE} is missing")
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InvalidInputError(f"{metadata_file} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInputError(f"{metadata_file} is not an {CHECKPOINT_FORMAT} checkpoint")
    if metadata.get("version") != FORMAT_VERSION:
        raise InvalidInputError(
            f"{metadata_file}: checkpoint format version {metadata.get('version')!r}, this anymoda reads {FORMAT_VERSION}")
    for key in ("connectors", "llm", "encoders"):
        if not isinstance(metadata.get(key), dict):
            raise InvalidInputError(f"{metadata_file}: {key!r} is missing or not an object")
    return metadata
