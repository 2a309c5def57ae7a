"""Pictures of results people look at rather than read: boxes, masks, spectrograms, series."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..extras import import_extra, installed
from .media import TIME_UNIT_EPOCH, AudioClip, Detections, Masks, TimeSeries

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40)]


def _colour(label: str) -> tuple[int, int, int]:
    return _PALETTE[sum(label.encode("utf-8")) % len(_PALETTE)]


def pyplot(what: str = "plotting") -> Any:
    """matplotlib's pyplot on the Agg back end (no display needed), or MissingExtraError naming the ``plot`` extra."""
    matplotlib = import_extra("matplotlib", what)
    matplotlib.use("Agg")
    return import_extra("matplotlib.pyplot", what)


def dejavu_font(size: int, *, mono: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (or Sans Mono) at ``size`` px, from matplotlib's copy (the ``plot`` extra ships it on every
    platform; found without importing matplotlib). Without it, Pillow's own scalable default font, so labels and
    the sample receipt are still drawn (in another typeface)."""
    name = "DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf"
    spec = importlib.util.find_spec("matplotlib") if installed("matplotlib") else None
    if spec is not None and spec.submodule_search_locations:
        font = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / name
        if font.is_file():
            return ImageFont.truetype(str(font), size)
    return ImageFont.load_default(size)


def draw_detections(image: Image.Image, detections: Detections, *, min_score: float = 0.0) -> Image.Image:
    """Boxes with 'label score' tags drawn over a copy of ``image`` (OCR polygons drawn as polygons)."""
    canvas = image.convert("RGB")
    if detections.image_size and detections.image_size != canvas.size:
        sx, sy = canvas.size[0] / detections.image_size[0], canvas.size[1] / detections.image_size[1]
    else:
        sx = sy = 1.0
    draw = ImageDraw.Draw(canvas)
    font = dejavu_font(max(12, canvas.size[1] // 40))
    width = max(2, canvas.size[0] // 300)
    for i, (box, label, score) in enumerate(zip(detections.boxes, detections.labels, detections.scores, strict=True)):
        if score < min_score:
            continue
        colour = _colour(label)
        polygon = detections.extra[i].get("polygon") if detections.extra else None
        if polygon:
            draw.polygon([(x * sx, y * sy) for x, y in polygon], outline=colour, width=width)
        else:
            draw.rectangle([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], outline=colour, width=width)
        tag = f"{label} {score:.2f}"
        text_height = draw.textbbox((0, 0), tag, font=font)[3]
        left, top = box[0] * sx, max(0.0, box[1] * sy - text_height - 2)  # above the box unless at the top edge
        bbox = draw.textbbox((left, top), tag, font=font)
        draw.rectangle(bbox, fill=colour)
        draw.text((left, top), tag, fill=(255, 255, 255), font=font)
    return canvas


def overlay_masks(image: Image.Image, masks: Masks, *, alpha: float = 0.5) -> Image.Image:
    """Each instance tinted in its own colour over a copy of ``image``."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    label_map = masks.label_map
    if label_map.shape != base.shape[:2]:
        label_map = np.asarray(Image.fromarray(label_map).resize(image.size, Image.NEAREST))
    for index in range(len(masks.labels)):
        selected = label_map == index + 1
        base[selected] = (1 - alpha) * base[selected] + alpha * np.asarray(_PALETTE[index % len(_PALETTE)], np.float32)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _figure_to_image(figure: Any) -> Image.Image:
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def spectrogram(audio: AudioClip, *, title: str | None = None) -> Image.Image:
    """A log-magnitude spectrogram (dB) with time and frequency axes (the ``plot`` extra)."""
    plt = pyplot("a spectrogram picture")
    samples = audio.mono().samples
    n_fft = 1024 if audio.sample_rate >= 16_000 else 512
    hop = n_fft // 4
    if samples.shape[0] < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10 * np.log10(np.maximum(power, 1e-10))
    figure, axis = plt.subplots(figsize=(8, 3))
    extent = (0, audio.duration_s, 0, audio.sample_rate / 2000)
    mesh = axis.imshow(db.T, origin="lower", aspect="auto", extent=extent, vmin=db.max() - 80, vmax=db.max(), cmap="magma")
    axis.set_xlabel("time (s)")
    axis.set_ylabel("frequency (kHz)")
    axis.set_title(title or f"{audio.duration_s:.2f} s at {audio.sample_rate} Hz")
    figure.colorbar(mesh, ax=axis, label="dB")
    return _figure_to_image(figure)


def time_axis(series: TimeSeries) -> np.ndarray:
    """The x values of a plot: dates for a dated series (matplotlib labels them as dates), else the
    timestamps, else the index."""
    if series.timestamps is None:
        return np.arange(series.length)
    if series.time_unit == TIME_UNIT_EPOCH and np.all(np.abs(series.timestamps) < 2.5e11):  # within datetime64's years
        return (series.timestamps * 1e6).astype("datetime64[us]")
    return series.timestamps


def plot_time_series(series: TimeSeries, *, title: str | None = None) -> Image.Image:
    """The series' channels over time (the ``plot`` extra)."""
    plt = pyplot("a time-series plot")
    x = time_axis(series)
    values = series.values.reshape(series.length, -1)
    names = series.channel_names or [f"channel {i}" for i in range(values.shape[1])]
    figure, axis = plt.subplots(figsize=(8, 3))
    for column, name in enumerate(names):
        axis.plot(x, values[:, column], label=name, linewidth=1)
    if values.shape[1] > 1:
        axis.legend()
    axis.set_xlabel("time" if series.timestamps is not None else "index")
    axis.set_title(title or f"{series.length} points, {series.channels} channel(s)")
    axis.grid(alpha=0.3)
    return _figure_to_image(figure)
