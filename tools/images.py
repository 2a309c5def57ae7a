"""PIL details the vision adapters share."""

from __future__ import annotations

from typing import Any


def rgb(image: Any) -> Any:
    """The image in RGB (models take three channels; greyscale, palette and RGBA files are common)."""
    return image if image.mode == "RGB" else image.convert("RGB")
