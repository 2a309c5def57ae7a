"""Which runtime reads a weights folder, told from its files alone (nothing is loaded or imported).

Shared by the speech-recognition tool and the native path's Whisper encoder, which both accept a Whisper model
in either format.
"""

from __future__ import annotations

import json
from pathlib import Path

CTRANSLATE2, TRANSFORMERS = "ctranslate2", "transformers"


def whisper_backend(path: Path) -> str | None:
    """Which runtime reads a Whisper folder: CTranslate2 (model.bin + vocabulary) or transformers (config + weights)."""
    if path.is_file():
        return None
    if (path / "model.bin").is_file() and any(path.glob("vocabulary.*")):
        return CTRANSLATE2
    config = path / "config.json"
    if config.is_file() and (any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))):
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError):
            return None
        return TRANSFORMERS if model_type == "whisper" else None
    return None
