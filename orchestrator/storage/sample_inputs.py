"""Sample inputs for the demo, examples and tests, made on the spot so that nothing outside the package is needed."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from PIL import Image, ImageDraw

from .render import dejavu_font

RECEIPT_LINES = [
    ("CORNER BAKERY", "center"),
    ("12 Harbour Street", "center"),
    ("", None),
    ("Sourdough loaf          6.50", "left"),
    ("Croissant x4           11.00", "left"),
    ("Coffee beans 500g      19.90", "left"),
    ("Oat milk                5.10", "left"),
    ("", None),
    ("TOTAL                  42.50", "left"),
    ("Paid by card", "left"),
    ("", None),
    ("Thank you for visiting!", "center"),
]


def receipt_image(lines: list[tuple[str, str | None]] = RECEIPT_LINES, *, width: int = 560) -> Image.Image:
    """A shop receipt, dark text on off-white, like a phone photo of one cropped to the paper."""
    font = dejavu_font(26, mono=True)
    line_height = 40
    image = Image.new("RGB", (width, 60 + line_height * len(lines)), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    for row, (text, align) in enumerate(lines):
        if not text:
            continue
        text_width = draw.textlength(text, font=font)
        x = (width - text_width) / 2 if align == "center" else 30
        draw.text((x, 30 + row * line_height), text, fill=(25, 25, 30), font=font)
    return image


def eagle_photo_path() -> Path:
    """A real photograph of a bald eagle shipped with the package."""
    return Path(str(files("orchestrator").joinpath("samples", "eagle.jpg")))
