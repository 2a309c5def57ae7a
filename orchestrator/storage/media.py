"""In-memory values of the non-trivial artifact kinds.

Tools receive and return these (plus ``str`` for text, ``PIL.Image.Image`` for images and plain
JSON-able values for json); :mod:`orchestrator.storage.codecs` turns them into bytes and back.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError


def _finite_number(value: Any) -> bool:
    # bool is an int to Python, but true is no coordinate; strings are refused, not parsed.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (JSON allows any number of digits)
        return False


@dataclass
class AudioClip:
    """Float32 samples in [-1, 1], shape (frames,) for mono or (frames, channels)."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if samples.ndim not in (1, 2):
            raise InvalidInputError(f"audio samples must have shape (frames,) or (frames, channels), got {samples.shape}")
        if self.sample_rate <= 0:
            raise InvalidInputError(f"audio sample rate must be positive, got {self.sample_rate}")
        if not np.issubdtype(samples.dtype, np.floating):
            # Integer PCM: scale by the dtype's full range so loudness is preserved.
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
        self.samples = samples.astype(np.float32, copy=False)
        if not np.all(np.isfinite(self.samples)):
            raise InvalidInputError("audio samples contain NaN or infinite values")
        self.sample_rate = int(self.sample_rate)

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def mono(self) -> AudioClip:
        if self.samples.ndim == 1:
            return self
        return AudioClip(self.samples.mean(axis=1), self.sample_rate)

    def resampled(self, sample_rate: int) -> AudioClip:
        if sample_rate == self.sample_rate:
            return self
        import soxr  # librosa's resampler compiles with numba on first use (~30 s); soxr is instant

        return AudioClip(soxr.resample(self.samples, self.sample_rate, sample_rate), sample_rate)

    def for_model(self, sample_rate: int = 16_000) -> np.ndarray:
        """Mono float32 at ``sample_rate``: what speech models expect."""
        return np.ascontiguousarray(self.mono().resampled(sample_rate).samples, dtype=np.float32)


# What a TimeSeries' timestamps count (its time_unit; None: as written, unit unknown).
TIME_UNIT_EPOCH = "seconds since 1970-01-01 UTC"  # dates and datetimes
TIME_UNIT_CLOCK = "seconds since 00:00 of the first row's day"  # times of day without dates
SECONDS_UNITS = (TIME_UNIT_EPOCH, TIME_UNIT_CLOCK)


def has_clock_times(timestamps: np.ndarray) -> bool:
    """Whether any timestamp (in seconds) falls inside a day rather than at its midnight."""
    return bool(np.any(np.asarray(timestamps, dtype=np.float64) % 86400))


def time_text(seconds: float, unit: str | None, clock: bool = True) -> Any:
    """A timestamp as a person reads it: '2024-02-21' (``clock=False``: no row has a time of day),
    '2024-02-21 13:45', '13:45 (day 2)'; for any other unit the number itself."""
    if unit == TIME_UNIT_EPOCH:
        try:
            moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):  # beyond the years a datetime holds: the number it is
            return int(seconds) if float(seconds).is_integer() else float(seconds)
        if not clock:
            return moment.date().isoformat()
        return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second or moment.microsecond else "%Y-%m-%d %H:%M")
    if unit == TIME_UNIT_CLOCK:
        day, rest = divmod(int(seconds), 86400)
        text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}" + (f":{rest % 60:02d}" if rest % 60 else "")
        return text + (f" (day {day + 1})" if day else "")
    return int(seconds) if float(seconds).is_integer() else float(seconds)


def duration_text(seconds: float) -> str:
    """A span of seconds in the largest unit that keeps it readable: '7 days', '24 hours', '1.5 minutes'."""
    for size, name in ((86400 * 365.25, "year"), (86400 * 7, "week"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if abs(seconds) >= size and (name != "week" or abs(seconds / size - round(seconds / size)) < 0.001):
            count = seconds / size
            return f"{count:.3g} {name}{'' if count == 1 else 's'}"
    return f"{seconds:.3g} second{'' if seconds == 1 else 's'}"


@dataclass
class TimeSeries:
    """One or more aligned channels of finite values, shape (length,) or (length, channels).

    ``time_unit`` says what ``timestamps`` count (TIME_UNIT_EPOCH, TIME_UNIT_CLOCK or a name given with the
    data), so that dates can be shown as dates; None when unknown.
    """

    values: np.ndarray
    timestamps: np.ndarray | None = None
    channel_names: list[str] | None = None
    time_unit: str | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim not in (1, 2):
            raise InvalidInputError(f"a time series must have shape (length,) or (length, channels), got {values.shape}")
        if values.shape[0] == 0:
            raise InvalidInputError("a time series must have at least one value")
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise InvalidInputError(
                f"time series has {len(bad)} non-finite value(s) (NaN or infinity); first at index {where[0] if len(where) == 1 else where}"
            )
        self.values = values
        if self.timestamps is not None:
            timestamps = np.asarray(self.timestamps, dtype=np.float64)
            if timestamps.shape != (values.shape[0],):
                raise InvalidInputError(
                    f"time series has {values.shape[0]} values but {timestamps.shape[0] if timestamps.ndim else 0} timestamps"
                )
            if not np.all(np.isfinite(timestamps)) or np.any(np.diff(timestamps) <= 0):
                raise InvalidInputError("time series timestamps must be finite and strictly increasing")
            self.timestamps = timestamps
        if self.channel_names is not None and len(self.channel_names) != self.channels:
            raise InvalidInputError(f"time series has {self.channels} channel(s) but {len(self.channel_names)} channel names")
        if self.time_unit is not None:
            if not isinstance(self.time_unit, str) or not 0 < len(self.time_unit) <= 100:
                raise InvalidInputError(f"time series time_unit must be a short string, got {self.time_unit!r:.60}")
            if self.timestamps is None:
                raise InvalidInputError("time series has a time_unit but no timestamps")

    @property
    def length(self) -> int:
        return int(self.values.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.values.ndim == 1 else int(self.values.shape[1])


@dataclass
class Detections:
    """Axis-aligned boxes in pixel coordinates (x0, y0, x1, y1) with a label and a score each."""

    boxes: list[tuple[float, float, float, float]]
    labels: list[str]
    scores: list[float]
    image_size: tuple[int, int] | None = None  # (width, height) of the image the boxes refer to
    extra: list[dict[str, Any]] = field(default_factory=list)  # per-box extras, e.g. OCR polygons

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if len(self.labels) != n or len(self.scores) != n or (self.extra and len(self.extra) != n):
            raise InvalidInputError(
                f"detections need one label and score per box: {n} boxes, {len(self.labels)} labels, {len(self.scores)} scores"
            )
        boxes = []
        for i, box in enumerate(self.boxes):
            if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4 or not all(_finite_number(v) for v in box):
                raise InvalidInputError(f"detection box {i} must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
            x0, y0, x1, y1 = (float(v) for v in box)
            if x1 < x0 or y1 < y0:
                raise InvalidInputError(f"detection box {i} has x1 < x0 or y1 < y0: {box!r}")
            boxes.append((x0, y0, x1, y1))
        self.boxes = boxes
        self.labels = [str(label) for label in self.labels]
        for i, score in enumerate(self.scores):
            if not _finite_number(score):
                raise InvalidInputError(f"detection {i} has the score {score!r}, not a finite number")
        self.scores = [float(s) for s in self.scores]
        if self.image_size is not None:
            size = self.image_size
            if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_finite_number(v) and v > 0 for v in size):
                raise InvalidInputError(f"detections image_size must be [width, height] in pixels, got {size!r}")
            self.image_size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.boxes)

    def to_json(self) -> dict[str, Any]:
        items = []
        for i, (box, label, score) in enumerate(zip(self.boxes, self.labels, self.scores)):
            item: dict[str, Any] = {"box": [round(v, 2) for v in box], "label": label, "score": round(score, 4)}
            if self.extra:
                item.update(self.extra[i])
            items.append(item)
        return {"image_size": list(self.image_size) if self.image_size else None, "detections": items}

    @classmethod
    def from_json(cls, data: Any) -> Detections:
        if not isinstance(data, dict) or not isinstance(data.get("detections"), list):
            raise InvalidInputError("detections JSON must be an object with a 'detections' list")
        boxes, labels, scores, extra = [], [], [], []
        for i, item in enumerate(data["detections"]):
            if not isinstance(item, dict) or "box" not in item or "label" not in item:
                raise InvalidInputError(f"detection {i} must be an object with 'box' and 'label'")
            boxes.append(item["box"])  # checked, and made a tuple, by __post_init__
            labels.append(item["label"])
            scores.append(item.get("score", 1.0))
            extra.append({k: v for k, v in item.items() if k not in ("box", "label", "score")})
        return cls(boxes, labels, scores, data.get("image_size"), extra if any(extra) else [])


@dataclass
class Masks:
    """Instance masks as one label map: pixel value 0 is background, value i is ``labels[i - 1]``."""

    label_map: np.ndarray
    labels: list[str]
    scores: list[float] | None = None

    def __post_init__(self) -> None:
        label_map = np.asarray(self.label_map)
        if label_map.ndim != 2:
            raise InvalidInputError(f"a mask label map must be 2-D (height, width), got shape {label_map.shape}")
        # Stored as uint8: a float, NaN or negative value would be cut or wrapped into some other label.
        if label_map.dtype.kind not in "biu":
            raise InvalidInputError(f"a mask label map must hold integers (0 for background, i for labels[i - 1]), got {label_map.dtype}")
        if len(self.labels) > 255:
            raise InvalidInputError(f"at most 255 masks fit one label map, got {len(self.labels)}")
        if label_map.size and int(label_map.min()) < 0:
            raise InvalidInputError(f"mask label map uses value {int(label_map.min())}; 0 is background and labels start at 1")
        if label_map.size and int(label_map.max()) > len(self.labels):
            raise InvalidInputError(f"mask label map uses value {int(label_map.max())} but only {len(self.labels)} labels are given")
        self.label_map = label_map.astype(np.uint8, copy=False)
        if self.scores is not None and len(self.scores) != len(self.labels):
            raise InvalidInputError("masks need one score per label")

    def mask(self, index: int) -> np.ndarray:
        """Boolean mask of instance ``index`` (0-based)."""
        return self.label_map == (index + 1)
