"""Bytes <-> values for every artifact kind, with the validation every outside input goes through.

Three entry points:

* :func:`sniff` guesses a kind and mime type from the first bytes (never from a file name);
* :func:`inspect` checks that bytes really are a valid artifact of a kind within :class:`MediaLimits`
  (header checks before any decoding, so a decompression bomb is refused before it is expanded) and
  returns the mime type and metadata to index;
* :func:`encode` / :func:`decode` convert between stored bytes and in-memory values.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .artifacts import ArtifactKind
from .errors import InvalidInputError
from .media import AudioClip, Detections, Masks, TimeSeries

DETECTIONS_MIME = "application/vnd.anymoda.detections+json"
MASKS_MIME = "application/vnd.anymoda.masks+npz"
TIME_SERIES_JSON_MIME = "application/vnd.anymoda.time-series+json"

# MPO is Pillow's name for a JPEG with more pictures appended (depth, HDR gain map), as many phones write.
_IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp",
                  "BMP": "image/bmp", "TIFF": "image/tiff"}
_AUDIO_FORMATS = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}

# Extensions say what a file claims to be; the content decides what it is. A claim that disagrees
# with the content's kind is refused rather than guessed around.
EXTENSION_KINDS: dict[str, ArtifactKind] = {
    **{ext: ArtifactKind.IMAGE for ext in (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")},
    **{ext: ArtifactKind.AUDIO for ext in (".wav", ".flac", ".ogg", ".oga", ".mp3")},
    **{ext: ArtifactKind.VIDEO for ext in (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")},
    **{ext: ArtifactKind.TEXT for ext in (".txt", ".md")},
    ".json": ArtifactKind.JSON,
    ".csv": ArtifactKind.TIME_SERIES,
    ".npy": ArtifactKind.TIME_SERIES,
    ".npz": ArtifactKind.MASKS,
}


@dataclass(frozen=True)
class MediaLimits:
    """Upper bounds applied to every input before it is decoded."""

    max_bytes: int = 512 * 1024 * 1024
    max_image_pixels: int = 64_000_000  # e.g. 8000 x 8000; larger is refused before decoding
    max_audio_seconds: float = 4 * 3600.0
    max_time_series_points: int = 10_000_000
    max_text_chars: int = 10_000_000


def describe_content(data: bytes) -> str:
    """Name a byte string's format for error messages ('a PNG image', 'a WAV file', 'UTF-8 text')."""
    kind, mime = sniff(data)
    if mime:
        return f"{mime} ({kind.value})" if kind else mime
    return "unrecognised binary data"


def sniff(data: bytes) -> tuple[ArtifactKind | None, str | None]:
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ArtifactKind.IMAGE, "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return ArtifactKind.IMAGE, "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ArtifactKind.IMAGE, "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ArtifactKind.IMAGE, "image/webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return ArtifactKind.IMAGE, "image/tiff"
    if head.startswith(b"BM") and len(data) > 26:
        return ArtifactKind.IMAGE, "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ArtifactKind.AUDIO, "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ArtifactKind.VIDEO, "video/x-msvideo"
    if head.startswith(b"fLaC"):
        return ArtifactKind.AUDIO, "audio/flac"
    if head.startswith(b"OggS"):
        return ArtifactKind.AUDIO, "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ArtifactKind.AUDIO, "audio/mpeg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return ArtifactKind.AUDIO, "audio/mp4"
        return ArtifactKind.VIDEO, "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ArtifactKind.VIDEO, "video/webm"
    if head.startswith(b"\x93NUMPY"):
        return ArtifactKind.TIME_SERIES, "application/x-npy"
    if head.startswith(b"PK\x03\x04"):
        return None, "application/zip"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 4096-byte boundary is still text; a bad byte anywhere else is not.
        if len(data) <= 4096 or exc.reason != "unexpected end of data":
            return None, None
        text = data[: exc.start].decode("utf-8")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        return ArtifactKind.JSON, "application/json"
    return ArtifactKind.TEXT, "text/plain"


def inspect(kind: ArtifactKind, data: bytes, limits: MediaLimits, mime: str | None = None) -> tuple[str, dict[str, Any]]:
    """Validate ``data`` as an artifact of ``kind``; return its mime type and index metadata."""
    if not data and kind is not ArtifactKind.TEXT:  # empty text is a real result: silence transcribed, a blank page read
        raise InvalidInputError(f"{kind.value} input is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidInputError(f"{kind.value} input is {len(data):,} bytes, over the limit of {limits.max_bytes:,} bytes")
    inspector = _INSPECTORS[kind]
    return inspector(data, limits, mime)


def decode(kind: ArtifactKind, data: bytes, mime: str, limits: MediaLimits) -> Any:
    """Turn stored bytes into the value tools work with (see :mod:`orchestrator.media`)."""
    return _DECODERS[kind](data, mime, limits)


def encode(kind: ArtifactKind, value: Any) -> tuple[bytes, str | None]:
    """Turn a tool's value into bytes (and a mime type, where the value decides it)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        raise InvalidInputError(f"a {kind.value} artifact must be given as bytes, got {type(value).__name__}")
    return encoder(value)


# --------------------------------------------------------------------------- text and json


def _decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid UTF-8 (bad byte at offset {exc.start}); found {describe_content(data)}") from None


def _reject_constant(name: str) -> Any:
    raise InvalidInputError(f"JSON contains {name}, which is not valid JSON")


def _parse_json(data: bytes, what: str, constants: bool = False) -> Any:
    text = _decode_utf8(data, what)
    try:
        # constants=True lets NaN and Infinity through for a caller whose own check can say where they are.
        return json.loads(text, parse_constant=float if constants else _reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # json's parser recurses once per [ or {
        raise InvalidInputError(f"{what} is nested too deeply to be read as JSON") from None


def _inspect_text(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    text = _decode_utf8(data, "text input")
    if len(text) > limits.max_text_chars:
        raise InvalidInputError(f"text input has {len(text):,} characters, over the limit of {limits.max_text_chars:,}")
    return "text/plain; charset=utf-8", {"chars": len(text), "preview": text[:80]}


def _inspect_json(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    value = _parse_json(data, "json input")
    return "application/json", {"type": type(value).__name__}


def _encode_text(value: Any) -> tuple[bytes, str]:
    if not isinstance(value, str):
        raise InvalidInputError(f"a text artifact must be a str, got {type(value).__name__}")
    return value.encode("utf-8"), "text/plain; charset=utf-8"


def _encode_json(value: Any) -> tuple[bytes, str]:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"), "application/json"
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"value cannot be stored as JSON: {exc}") from None


# --------------------------------------------------------------------------- images


def _open_image(data: bytes, limits: MediaLimits):
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated upload must fail, not decode to grey
    with warnings.catch_warnings():
        # Pillow warns above its own MAX_IMAGE_PIXELS; the configured limit, checked below, is the one that counts.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as exc:
            raise InvalidInputError(f"image refused as a decompression bomb: {exc}") from None
        except Exception as exc:  # PIL raises UnidentifiedImageError, SyntaxError, struct.error...
            raise InvalidInputError(f"not a readable image ({describe_content(data)}): {exc}") from None
        if image.format not in _IMAGE_FORMATS:
            raise InvalidInputError(f"unsupported image format {image.format}; supported: {', '.join(_IMAGE_FORMATS)}")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidInputError(f"image has an empty size {width}x{height}")
        if width * height > limits.max_image_pixels:
            raise InvalidInputError(
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limits.max_image_pixels:,} "
                "(refused before decoding: possible decompression bomb)"
            )
        try:
            image.load()
        except Exception as exc:
            raise InvalidInputError(f"corrupt or truncated {image.format} image: {exc}") from None
    return image


def _inspect_image(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    image = _open_image(data, limits)
    width, height = image.size
    if image.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: stored on its side, decoded upright
        width, height = height, width
    meta = {"width": width, "height": height, "mode": image.mode, "format": image.format}
    return _IMAGE_FORMATS[image.format], meta


def _decode_image(data: bytes, mime: str, limits: MediaLimits):
    from PIL import ImageOps

    image = _open_image(data, limits)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    # Phone photos store their rotation in EXIF; models must see them upright.
    return ImageOps.exif_transpose(image)


def _encode_image(value: Any) -> tuple[bytes, str]:
    from PIL import Image

    if not isinstance(value, Image.Image):
        raise InvalidInputError(f"an image artifact must be a PIL image, got {type(value).__name__}")
    buffer = io.BytesIO()
    value.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


# --------------------------------------------------------------------------- audio


def _check_wav_complete(data: bytes) -> None:
    """libsndfile quietly reads what is there of a cut-off WAV; a truncated upload must fail instead."""
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack("<4sI", data[offset : offset + 8])
        if chunk_id == b"data":
            available = len(data) - offset - 8
            if size != 0xFFFFFFFF and available < size:  # 0xFFFFFFFF marks a streamed WAV of unknown length
                raise InvalidInputError(f"truncated WAV: its header declares {size:,} bytes of audio but only {available:,} are present")
            return
        offset += 8 + size + (size & 1)
    raise InvalidInputError("WAV file has no 'data' chunk (truncated or not really audio)")


def _audio_info(data: bytes, limits: MediaLimits):
    import soundfile as sf

    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        _check_wav_complete(data)
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:
        raise InvalidInputError(
            f"not decodable audio ({describe_content(data)}); supported formats: WAV, FLAC, OGG/Vorbis/Opus, MP3 ({exc})"
        ) from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise InvalidInputError(f"audio header is invalid: {info.samplerate} Hz, {info.channels} channels")
    duration = info.frames / info.samplerate
    if duration > limits.max_audio_seconds:
        raise InvalidInputError(f"audio is {duration:,.1f} s long, over the limit of {limits.max_audio_seconds:,.0f} s")
    return info


def _read_audio(data: bytes, limits: MediaLimits) -> tuple[AudioClip, Any]:
    import soundfile as sf

    info = _audio_info(data, limits)
    try:
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as exc:
        raise InvalidInputError(f"corrupt {info.format} audio: {exc}") from None
    if samples.shape[0] == 0:
        raise InvalidInputError("audio contains no samples")
    if info.frames > 0 and samples.shape[0] < info.frames:
        raise InvalidInputError(f"truncated {info.format} audio: header declares {info.frames:,} frames but {samples.shape[0]:,} decode")
    return AudioClip(samples, sample_rate), info


def _inspect_audio(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    clip, info = _read_audio(data, limits)
    kind, sniffed = sniff(data)
    meta = {
        "sample_rate": clip.sample_rate,
        "channels": clip.channels,
        "duration_s": round(clip.duration_s, 3),
        "format": info.format,
    }
    return _AUDIO_FORMATS.get(info.format, sniffed or "application/octet-stream"), meta


def _decode_audio(data: bytes, mime: str, limits: MediaLimits) -> AudioClip:
    return _read_audio(data, limits)[0]


def _encode_audio(value: Any) -> tuple[bytes, str]:
    import soundfile as sf

    if not isinstance(value, AudioClip):
        raise InvalidInputError(f"an audio artifact must be an AudioClip, got {type(value).__name__}")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(value.samples, -1.0, 1.0), value.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), "audio/wav"


# --------------------------------------------------------------------------- video


def _inspect_video(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    # Decoding video needs ffmpeg, which we do not require; the container is checked by its magic
    # number so that a mislabelled file is still refused.
    kind, sniffed = sniff(data)
    if kind is not ArtifactKind.VIDEO:
        raise InvalidInputError(f"not a supported video container (MP4, MOV, WebM/MKV, AVI); found {describe_content(data)}")
    return sniffed, {"container": sniffed.split("/")[-1]}


def _decode_video(data: bytes, mime: str, limits: MediaLimits) -> bytes:
    return data


# --------------------------------------------------------------------------- time series


def _time_series_from_json(value: Any) -> TimeSeries:
    if isinstance(value, dict):
        if "values" not in value:
            raise InvalidInputError("a time series JSON object needs a 'values' list (and optionally 'timestamps', 'channel_names')")
        values, timestamps, names = value["values"], value.get("timestamps"), value.get("channel_names")
    elif isinstance(value, list):
        values, timestamps, names = value, None, None
    else:
        raise InvalidInputError(f"a time series JSON must be a list of numbers or an object with 'values', got {type(value).__name__}")
    if not isinstance(values, list) or not values:
        raise InvalidInputError("time series 'values' must be a non-empty list")
    for i, v in enumerate(values):
        row = v if isinstance(v, list) else [v]
        for x in row:
            if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
                raise InvalidInputError(f"time series value at index {i} is {x!r}, not a number")
    try:
        array = np.asarray(values, dtype=np.float64)
    except ValueError:
        raise InvalidInputError("time series rows have different numbers of channels") from None
    return TimeSeries(array, None if timestamps is None else np.asarray(timestamps, dtype=np.float64), names)


def _time_series_from_csv(text: str, limits: MediaLimits) -> TimeSeries:
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise InvalidInputError("time series CSV has no rows")

    def number(cell: str, line: int, col: int) -> float:
        try:
            return float(cell)
        except ValueError:
            raise InvalidInputError(f"time series CSV line {line}, column {col}: {cell.strip()!r} is not a number") from None

    header: list[str] | None = None
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise InvalidInputError("time series CSV has a header but no values")
    width = len(rows[0])
    if width * len(rows) > limits.max_time_series_points:
        raise InvalidInputError(f"time series has {width * len(rows):,} values, over the limit of {limits.max_time_series_points:,}")
    table = []
    for line, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise InvalidInputError(f"time series CSV line {line} has {len(row)} columns, expected {width}")
        table.append([number(cell, line, col + 1) for col, cell in enumerate(row)])
    array = np.asarray(table, dtype=np.float64)
    timestamps = None
    if header and header[0].lower() in ("t", "time", "timestamp", "seconds", "index") and width > 1:
        timestamps, array, header = array[:, 0], array[:, 1:], header[1:]
    values = array[:, 0] if array.shape[1] == 1 else array
    return TimeSeries(values, timestamps, header)


def _read_time_series(data: bytes, mime: str | None, limits: MediaLimits) -> TimeSeries:
    if data.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle outside data
        except Exception as exc:
            raise InvalidInputError(f"not a readable .npy array: {exc}") from None
        if array.size > limits.max_time_series_points:
            raise InvalidInputError(f"time series has {array.size:,} values, over the limit of {limits.max_time_series_points:,}")
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise InvalidInputError(f"a .npy time series must hold real numbers, not {array.dtype}")
        return TimeSeries(array)
    text = _decode_utf8(data, "time series input")
    if text.lstrip()[:1] in ("[", "{"):
        series = _time_series_from_json(_parse_json(data, "time series input", constants=True))  # NaN: TimeSeries names its index
    else:
        series = _time_series_from_csv(text, limits)
    if series.values.size > limits.max_time_series_points:
        raise InvalidInputError(f"time series has {series.values.size:,} values, over the limit of {limits.max_time_series_points:,}")
    return series


def _inspect_time_series(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    series = _read_time_series(data, mime, limits)
    if data.startswith(b"\x93NUMPY"):
        out_mime = "application/x-npy"
    elif data.lstrip()[:1] in (b"[", b"{"):
        out_mime = TIME_SERIES_JSON_MIME
    else:
        out_mime = "text/csv"
    return out_mime, {"length": series.length, "channels": series.channels}


def _decode_time_series(data: bytes, mime: str, limits: MediaLimits) -> TimeSeries:
    return _read_time_series(data, mime, limits)


def _encode_time_series(value: Any) -> tuple[bytes, str]:
    if not isinstance(value, TimeSeries):
        raise InvalidInputError(f"a time_series artifact must be a TimeSeries, got {type(value).__name__}")
    payload: dict[str, Any] = {"values": value.values.tolist()}
    if value.timestamps is not None:
        payload["timestamps"] = value.timestamps.tolist()
    if value.channel_names is not None:
        payload["channel_names"] = list(value.channel_names)
    return json.dumps(payload, allow_nan=False).encode("utf-8"), TIME_SERIES_JSON_MIME


# --------------------------------------------------------------------------- detections and masks


def _inspect_detections(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    detections = Detections.from_json(_parse_json(data, "detections input"))
    return DETECTIONS_MIME, {"count": len(detections), "labels": sorted(set(detections.labels))[:20]}


def _decode_detections(data: bytes, mime: str, limits: MediaLimits) -> Detections:
    return Detections.from_json(_parse_json(data, "detections"))


def _encode_detections(value: Any) -> tuple[bytes, str]:
    if not isinstance(value, Detections):
        raise InvalidInputError(f"a detections artifact must be Detections, got {type(value).__name__}")
    return json.dumps(value.to_json(), allow_nan=False).encode("utf-8"), DETECTIONS_MIME


def _npz_header(archive: Any, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an .npz member, read from its header without decompressing its data."""
    member = name if name in archive.zip.namelist() else f"{name}.npy"
    with archive.zip.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    return shape, dtype


def _read_masks(data: bytes, limits: MediaLimits) -> Masks:
    if not data.startswith(b"PK"):
        raise InvalidInputError(f"masks must be an .npz archive with 'label_map' and 'labels'; found {describe_content(data)}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if "label_map" not in archive or "labels" not in archive:
                raise InvalidInputError("masks archive needs the arrays 'label_map' and 'labels'")
            # An .npz is compressed: a few kilobytes can expand to gigabytes, so sizes come from the headers.
            for name in ("label_map", "labels", "scores"):
                if name not in archive:
                    continue
                shape, dtype = _npz_header(archive, name)
                count = math.prod(shape)
                if name == "label_map" and count > limits.max_image_pixels:
                    raise InvalidInputError(f"mask has {count:,} pixels, over the limit of {limits.max_image_pixels:,}")
                if count * dtype.itemsize > limits.max_bytes:
                    raise InvalidInputError(
                        f"masks array {name!r} would expand to {count * dtype.itemsize:,} bytes, over the limit of {limits.max_bytes:,}"
                    )
            label_map = archive["label_map"]
            labels = [str(x) for x in archive["labels"].tolist()]
            scores = archive["scores"].astype(float).tolist() if "scores" in archive else None
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"not a readable masks archive: {exc}") from None
    return Masks(label_map, labels, scores)


def _inspect_masks(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    masks = _read_masks(data, limits)
    height, width = masks.label_map.shape
    return MASKS_MIME, {"width": width, "height": height, "count": len(masks.labels), "labels": masks.labels[:20]}


def _decode_masks(data: bytes, mime: str, limits: MediaLimits) -> Masks:
    return _read_masks(data, limits)


def _encode_masks(value: Any) -> tuple[bytes, str]:
    if not isinstance(value, Masks):
        raise InvalidInputError(f"a masks artifact must be Masks, got {type(value).__name__}")
    buffer = io.BytesIO()
    arrays = {"label_map": value.label_map, "labels": np.asarray(value.labels, dtype=str)}
    if value.scores is not None:
        arrays["scores"] = np.asarray(value.scores, dtype=np.float32)
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue(), MASKS_MIME


_INSPECTORS = {
    ArtifactKind.TEXT: _inspect_text,
    ArtifactKind.JSON: _inspect_json,
    ArtifactKind.IMAGE: _inspect_image,
    ArtifactKind.AUDIO: _inspect_audio,
    ArtifactKind.VIDEO: _inspect_video,
    ArtifactKind.TIME_SERIES: _inspect_time_series,
    ArtifactKind.DETECTIONS: _inspect_detections,
    ArtifactKind.MASKS: _inspect_masks,
}

_DECODERS = {
    ArtifactKind.TEXT: lambda data, mime, limits: _decode_utf8(data, "text"),
    ArtifactKind.JSON: lambda data, mime, limits: _parse_json(data, "json"),
    ArtifactKind.IMAGE: _decode_image,
    ArtifactKind.AUDIO: _decode_audio,
    ArtifactKind.VIDEO: _decode_video,
    ArtifactKind.TIME_SERIES: _decode_time_series,
    ArtifactKind.DETECTIONS: _decode_detections,
    ArtifactKind.MASKS: _decode_masks,
}

_ENCODERS = {
    ArtifactKind.TEXT: _encode_text,
    ArtifactKind.JSON: _encode_json,
    ArtifactKind.IMAGE: _encode_image,
    ArtifactKind.AUDIO: _encode_audio,
    ArtifactKind.TIME_SERIES: _encode_time_series,
    ArtifactKind.DETECTIONS: _encode_detections,
    ArtifactKind.MASKS: _encode_masks,
}

assert set(_INSPECTORS) == set(ArtifactKind) == set(_DECODERS)
