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
import datetime as dt
import errno
import io
import json
import math
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, shown_path
from .artifacts import ArtifactKind
from .media import (
    TIME_UNIT_CLOCK,
    TIME_UNIT_EPOCH,
    AudioClip,
    Detections,
    Masks,
    TimeSeries,
    has_clock_times,
    time_text,
)

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
    # What one request may hold for the planner's LLM (estimated tokens, see token_budget): a 100,000-character
    # request once planned for ten minutes at 6.6 GB; a request has a few sentences, a document goes in a file.
    max_request_tokens: int = 2_000
    # What the answer writer is shown of the tools' outputs in one prompt (estimated tokens): each text result is
    # cut at 1,500 characters, and past this budget the rest are named, not quoted (a 64-task plan of long texts).
    max_results_tokens: int = 3_000
    # What the planner and the writer are shown of earlier turns (estimated tokens): the newest four turns as
    # they were and a line per older one, cut from the oldest end past this.
    max_history_tokens: int = 2_000


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
    """Turn stored bytes into the value tools work with (see :mod:`orchestrator.storage.media`)."""
    return _DECODERS[kind](data, mime, limits)


def encode(kind: ArtifactKind, value: Any) -> tuple[bytes, str | None]:
    """Turn a tool's value into bytes (and a mime type, where the value decides it)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    encoder = _ENCODERS.get(kind)
    if encoder is None:
        raise InvalidInputError(f"a {kind.value} artifact must be given as bytes, got {type(value).__name__}")
    return encoder(value)


# --------------------------------------------------------------------------- files named by users

# Kernel and device views: their sizes lie (0 or 4096 whatever they hold) and reading some never ends or
# has side effects, so no input is read from them even when stat calls them regular files.
_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
_FILE_TYPES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input_file(path: str | os.PathLike[str], max_bytes: int, what: str) -> Path:
    """``path`` as a regular file of at most ``max_bytes`` that may be read, or an error naming what is wrong.

    Directories, pipes, devices, sockets and anything under /proc, /sys or /dev are refused before
    they are opened (opening a FIFO blocks; /dev/zero never ends).
    """
    text = os.fspath(path)
    if not text:
        raise InvalidInputError(f"{what}: no file named (the path is empty)")
    file = Path(text).expanduser()
    try:
        resolved = file.resolve()  # through symlinks: a link into /proc is still /proc
        info = os.stat(file)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidInputError(f"{what}: no file {shown_path(text)}: that path does not exist") from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, EACCES on a folder, a NUL byte
        raise InvalidInputError(f"{what}: cannot read {shown_path(text)} ({getattr(exc, 'strerror', None) or exc})") from None
    if any(resolved == root or root in resolved.parents for root in _PSEUDO_FILESYSTEMS):
        raise InvalidInputError(f"{what}: {shown_path(text)} is a special file of the system ({resolved.parts[1]}), not a "
                                "file of data; copy what you need into a regular file")
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(f"{what}: {shown_path(text)} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(info.st_mode)), "not a regular file")
        raise InvalidInputError(f"{what}: {shown_path(text)} is {kind}, not a regular file")
    if info.st_size > max_bytes:
        raise InvalidInputError(f"{what}: {shown_path(text)} is {info.st_size:,} bytes, over the limit of {max_bytes:,}")
    return file


def check_output_file(path: str | os.PathLike[str], what: str, *, noun: str = "file") -> Path:
    """``path`` as a file this program may create or replace, or an error naming what is wrong.

    A file is written beside its destination and renamed over it, which would replace a FIFO, a device
    or a socket with a plain file (as root, /dev/null too); opening one instead blocks or never ends.
    Those, anything under /proc, /sys or /dev, and names the system refuses (too long, a NUL byte) are
    refused before anything is made. Folders are the caller's to handle (:func:`check_output_folder`).
    """
    text = os.fspath(path)
    if not text:
        raise InvalidInputError(f"{what}: no {noun} named (the path is empty)")
    file = Path(text).expanduser()
    try:
        resolved = file.resolve()  # through symlinks: a link to /dev/null is /dev/null
        info = os.lstat(resolved) if os.path.lexists(resolved) else None
        for part in (file.name, *[p.name for p in file.parents]):
            if len(os.fsencode(part)) > 255:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, a NUL byte
        raise InvalidInputError(f"{what}: cannot write {shown_path(text)} ({getattr(exc, 'strerror', None) or exc})") from None
    if any(resolved == root or root in resolved.parents for root in _PSEUDO_FILESYSTEMS):
        raise InvalidInputError(f"{what}: {shown_path(text)} is a special file of the system ({resolved.parts[1]}), "
                                f"not a {noun} to write to")
    if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        kind = next((name for test, name in _FILE_TYPES if test(info.st_mode)), "not a regular file")
        raise InvalidInputError(f"{what}: {shown_path(text)} is {kind}, not a {noun} to write to")
    return file


def check_output_folder(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a folder this program may write files into (made if missing), checked before any work is done:
    not a file, nothing :func:`check_output_file` refuses, and not under a file."""
    folder = check_output_file(path, what, noun="folder")
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{what}: {shown_path(os.fspath(path))} is a file, not a folder")
    ancestor = folder.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidInputError(f"{what}: {shown_path(os.fspath(path))} cannot be made: {shown_path(str(ancestor))} "
                                "is a file")
    return folder


def read_input_file(path: str | os.PathLike[str], max_bytes: int, what: str) -> bytes:
    """The bytes of a user's file (see :func:`check_input_file`), never more than ``max_bytes``."""
    file = check_input_file(path, max_bytes, what)
    try:
        # O_NONBLOCK: should the path have been swapped for a FIFO since the check, open() must not hang on it.
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InvalidInputError(f"{what}: {shown_path(os.fspath(path))} is not a regular file")
            data = handle.read(max_bytes + 1)  # a file still growing is cut here, not read to the end
    except OSError as exc:
        raise InvalidInputError(f"{what}: cannot read {shown_path(os.fspath(path))} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise InvalidInputError(f"{what}: {shown_path(os.fspath(path))} is over the limit of {max_bytes:,} bytes")
    return data


def file_reference(value: str) -> str | None:
    """The path of an ``@path`` argument, else None. ``@@...`` is no reference: it stands for a text that
    begins with one '@' (see :func:`literal_argument`)."""
    if value.startswith("@") and not value.startswith("@@"):
        return value[1:]
    return None


def literal_argument(value: str) -> str:
    """A text or JSON argument that is no ``@path``, as meant: ``@@x`` is the text ``@x``."""
    return value[1:] if value.startswith("@@") else value


def text_argument(value: str, what: str, limits: MediaLimits) -> tuple[str, str | None]:
    """A text argument from the command line: the words themselves, or with ``@path`` the file's contents.

    Returns the text and the file's name (None for a literal). A text is never taken for a path because
    a file of that name happens to exist: reading a file is asked for with '@'.
    """
    path = file_reference(value)
    if path is None:
        text = literal_argument(value)
        name = None
    else:
        text = _decode_utf8(read_input_file(path, limits.max_bytes, what), f"{what}: file {shown_path(path)}")
        name = Path(path).name
    if len(text) > limits.max_text_chars:
        raise InvalidInputError(f"{what}: the text has {len(text):,} characters, over the limit of {limits.max_text_chars:,}")
    return text, name


def json_argument(value: str, what: str, limits: MediaLimits) -> tuple[Any, str | None]:
    """A JSON argument from the command line: JSON written out, or with ``@path`` a JSON file; and the file's name."""
    text, name = text_argument(value, what, limits)
    source = f"{what}: file {shown_path(file_reference(value))}" if name is not None else what
    return _parse_json(text.encode("utf-8"), source), name


# --------------------------------------------------------------------------- text and json


def _decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid UTF-8 (bad byte at offset {exc.start}); found {describe_content(data)}") from None


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
        except Image.UnidentifiedImageError:  # its message names the in-memory buffer: '<_io.BytesIO object at 0x...>'
            raise InvalidInputError(f"not a readable image ({describe_content(data)}): Pillow cannot identify its "
                                    "format from its first bytes") from None
        except Exception as exc:  # SyntaxError, struct.error...
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
            # Counting frames reads every frame's header (GIF, TIFF, WebP): a corrupt later frame raises here,
            # at the door, rather than (IndexError, TypeError...) in whoever decodes the stored image later.
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
        except Exception as exc:
            raise InvalidInputError(f"corrupt or truncated {image.format} image: {type(exc).__name__}: {exc}") from None
    return image


def _orientation(image: Any) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception as exc:  # a broken EXIF block: the picture itself decoded
        raise InvalidInputError(f"{image.format} image has corrupt EXIF metadata ({type(exc).__name__}: {exc})") from None


def _inspect_image(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    image = _open_image(data, limits)
    width, height = image.size
    if _orientation(image) in (5, 6, 7, 8):  # EXIF orientation: stored on its side, decoded upright
        width, height = height, width
    meta = {"width": width, "height": height, "mode": image.mode, "format": image.format}
    return _IMAGE_FORMATS[image.format], meta


def _decode_image(data: bytes, mime: str, limits: MediaLimits):
    from PIL import ImageOps

    image = _open_image(data, limits)
    _orientation(image)
    # Phone photos store their rotation in EXIF; models must see them upright.
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        raise InvalidInputError(f"{image.format} image cannot be turned upright ({type(exc).__name__}: {exc})") from None


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
                raise InvalidInputError(
                    f"truncated WAV: its header declares {size:,} bytes of audio but only {available:,} are present")
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
        raise InvalidInputError(
            f"truncated {info.format} audio: header declares {info.frames:,} frames but {samples.shape[0]:,} decode")
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
            raise InvalidInputError("a time series JSON object needs a 'values' list (and optionally 'timestamps', "
                                    "'channel_names', 'time_unit')")
        values, timestamps, names = value["values"], value.get("timestamps"), value.get("channel_names")
        unit = value.get("time_unit")
    elif isinstance(value, list):
        values, timestamps, names, unit = value, None, None, None
    else:
        raise InvalidInputError(
            f"a time series JSON must be a list of numbers or an object with 'values', got {type(value).__name__}")
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
    return TimeSeries(array, None if timestamps is None else np.asarray(timestamps, dtype=np.float64), names, unit)


# CSV rules: see _time_series_from_csv's docstring.
_CSV_MISSING = frozenset({"", "na", "n/a", "#n/a", "nan", "null", "none", "-", "--"})
_CSV_INFINITE = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
_CSV_MAX_MAGNITUDE = 1e100
_CSV_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_CSV_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_CSV_TIME_NAMES = frozenset({"t", "time", "timestamp", "seconds", "index", "date", "datetime", "day", "year", "epoch", "step"})
_CLOCK = r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?"
_CSV_ISO = re.compile(rf"(\d{{4}})([-/])(\d{{1,2}})(?:\2(\d{{1,2}})(?:(?:T|\s+){_CLOCK}\s*(Z|[+-]\d{{2}}:?\d{{2}})?)?)?", re.I)
_CSV_DMY = re.compile(rf"(\d{{1,2}})([-/.])(\d{{1,2}})\2(\d{{4}})(?:(?:T|\s+){_CLOCK})?", re.I)
_CSV_CLOCK = re.compile(_CLOCK)
_EPOCH_UNIT = TIME_UNIT_EPOCH
_CLOCK_UNIT = TIME_UNIT_CLOCK


def _csv_delimiter(text: str) -> str:
    head = text[:65536].splitlines()
    if len(text) > 65536:
        head = head[:-1]  # the last line may be cut
    sample = [line for line in head if line.strip(" \t,;")][:50]
    if not sample:
        return ","
    for delimiter in ("\t", ";", ","):
        try:
            widths = {len(row) for row in csv.reader(sample, delimiter=delimiter)}
        except csv.Error:
            continue
        if len(widths) == 1 and widths.pop() > 1:
            return delimiter
    return max((",", ";", "\t"), key=lambda d: sample[0].count(d))  # ties: ','


def _csv_time(cell: str) -> tuple[str, tuple] | None:
    """('iso', groups), ('dmy', groups) or ('clock', groups) for a date or time cell, else None."""
    for family, pattern in (("iso", _CSV_ISO), ("dmy", _CSV_DMY), ("clock", _CSV_CLOCK)):
        match = pattern.fullmatch(cell)
        if match:
            return family, match.groups()
    return None


def _clock_seconds(hour: str | None, minute: str | None, second: str | None, fraction: str | None) -> tuple[int, int, int, int]:
    h, m, s = int(hour or 0), int(minute or 0), int(second or 0)
    if h > 23 or m > 59 or s > 59:
        raise ValueError(f"{h:02d}:{m:02d}:{s:02d} is not a time of day")
    return h, m, s, int((fraction or "").ljust(6, "0"))


def _csv_epoch(year: int, month: int, day: int, clock: tuple, zone: str | None) -> float:
    tz = dt.timezone.utc
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{zone} is not a time zone offset")
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return dt.datetime(year, month, day, *_clock_seconds(*clock), tzinfo=tz).timestamp()


def _csv_times(rows: list[tuple[int, list[str]]], family: str | None) -> tuple[np.ndarray, str | None]:
    """The first column as timestamps (numbers when ``family`` is None) and their unit; refusals name the cell."""
    def refuse(line: int, message: str) -> InvalidInputError:
        return InvalidInputError(f"time series CSV line {line}, column 1: {message}")

    times = np.empty(len(rows))
    parsed: list[tuple[int, str, tuple]] = []
    for r, (line, cells) in enumerate(rows):
        cell = cells[0]
        if cell.lower() in _CSV_MISSING:
            raise refuse(line, "the time is missing (every row needs one)")
        if family is None:
            if not _CSV_NUMBER.fullmatch(cell):
                raise refuse(line, f"{cell!r} is not a number (column 1 holds the times)")
            times[r] = float(cell)
            if not math.isfinite(times[r]):
                raise refuse(line, f"{cell!r} is non-finite (infinity); times must be finite")
            continue
        found = _csv_time(cell)
        if found is None or found[0] != family:
            what = {"iso": "a date like 2024-03-01", "dmy": "a date like 01/03/2024", "clock": "a time of day like 07:00"}
            raise refuse(line, f"{cell!r} is not {what[family]}, as the first row's time is")
        parsed.append((line, cell, found[1]))
    if family is None:
        return times, None

    day_first = month_first = None
    if family == "dmy":  # which of the first two numbers is the day: the column's values decide, or nothing is read
        for line, cell, groups in parsed:
            if int(groups[0]) > 12 and day_first is None:
                day_first = (line, cell)
            if int(groups[2]) > 12 and month_first is None:
                month_first = (line, cell)
        if day_first and month_first:
            raise refuse(month_first[0], f"{month_first[1]!r} is month first, but line {day_first[0]}'s {day_first[1]!r} is day "
                                         "first; write dates as YYYY-MM-DD")
        if not day_first and not month_first:
            line, cell, groups = parsed[0]
            raise refuse(line, f"{cell!r} could be day/month or month/day (no value in the column has a part above 12 to "
                               "tell); write dates as YYYY-MM-DD")
    rollover, previous = 0.0, None
    for r, (line, cell, g) in enumerate(parsed):
        try:
            if family == "iso":
                times[r] = _csv_epoch(int(g[0]), int(g[2]), int(g[3] or 1), g[4:8], g[8])
            elif family == "dmy":
                day, month = (g[0], g[2]) if day_first else (g[2], g[0])
                times[r] = _csv_epoch(int(g[3]), int(month), int(day), g[4:8], None)
            else:
                h, m, s, us = _clock_seconds(*g)
                seconds = h * 3600 + m * 60 + s + us / 1e6 + rollover
                if previous is not None and previous - seconds > 43200:  # over midnight
                    rollover += 86400
                    seconds += 86400
                times[r] = previous = seconds
        except (ValueError, OverflowError) as exc:
            raise refuse(line, f"{cell!r} is not a valid date or time ({exc})") from None
    return times, (_CLOCK_UNIT if family == "clock" else _EPOCH_UNIT)


def _time_series_from_csv(text: str, limits: MediaLimits) -> tuple[TimeSeries, dict[str, Any]]:
    """A CSV table as a TimeSeries and the metadata of how it was read: what spreadsheets, loggers and pandas
    export. The rules, in the order they apply:

    * encoding: UTF-8, a leading byte-order mark ignored; blank lines (and rows of empty cells) anywhere skipped;
    * delimiter: tab, ';' or ',', whichever splits the first 50 rows into the same number (> 1) of columns, in that
      order of preference; none does: the one that splits the first row most (a row of another width is then
      refused by its line);
    * header: the first row is one when a cell of it is text (not a number, date, time or missing marker) above a
      cell of the second row that is not text; header cells name the channels;
    * times: the first column holds the times when its first cell is a date or time; all of its cells must then be:
      - ISO dates and datetimes: 2024-03-01, 2024-3-1, 2024/03/01, 2024-03-01 12:00, 2024-03-01T12:00:05.250,
        with an optional zone (Z, +02:00, -0500); a datetime without a zone is read as UTC, so a series does not
        depend on the server's zone;
      - a year and month: 2021-01 (the first of that month);
      - day and month with a 4-digit year, 01/03/2024 or 01.03.2024 or 01-03-2024 (optionally with a time): the
        order is the column's, decided by a day above 12 (13/03/2024 is day-first, 03/13/2024 month-first); a
        column where no value tells (all parts <= 12) or the two orders disagree is refused, with ISO suggested;
      - times of day, 07:00 or 07:00:30: seconds after 00:00 of the first row's day; a time more than 12 hours
        before the previous one is on the next day (23:59 -> 00:01 runs on over midnight);
      dates become timestamps in seconds since 1970-01-01 UTC. A first column of plain numbers holds the times
      when its header is t, time, timestamp, seconds, index, date, datetime, day, year, epoch or step (a unit
      after it, "time (s)", is ignored); they are kept as written. Times must increase down the file; a file
      that lists them newest first (all decreasing) is read in reverse ("reversed": true in the metadata); a
      repeated or out-of-order time is refused by its line.
    * values: every other column is a channel when it holds numbers: decimal points, an optional exponent
      (1.5e3); in a ';'-separated file a decimal comma too (18,5: Excel's export in many European locales, where
      the comma cannot be the delimiter). Thousands separators are refused (1,234 could be either). A column
      with no number at all (labels, notes, a second date column, every cell missing) is left out and named in
      "ignored_columns"; a column with some numbers and some other text is refused at its first non-number.
    * missing values: an empty cell, NA, N/A, #N/A, nan, null, none, - or -- (any case). A column more than half
      missing is refused. The rest are filled at decode time by linear interpolation over the times (over the
      row index without times), the nearest value at either end, and counted in "missing_filled": a TimeSeries
      holds finite values only, and every consumer (time-series-description, the plots, the ts-patch encoder)
      relies on that.
    * refused: infinity (inf, 1e999) and numbers of magnitude 1e100 or more (their squares overflow the
      statistics), a file with no numeric column (prose, labels only), rows of different widths, more values
      than MediaLimits.max_time_series_points (checked while reading); every refusal is one InvalidInputError
      line naming the line and column at fault.

    The metadata (merged into the artifact's by :func:`inspect`): "time_column", "time_unit", "start" and
    "end" (readable) when there are times; "missing_filled", "ignored_columns", "reversed" and "delimiter"
    (when not ',') when they apply. Unsupported on purpose: month names (Mar 2024), AM/PM, 2-digit years.
    """
    text = text.removeprefix("\ufeff")
    delimiter = _csv_delimiter(text)
    decimal_comma = delimiter == ";"
    limit = limits.max_time_series_points
    rows: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, [cell.strip() for cell in row]))
                if (len(rows) - 1) * len(rows[0][1]) > limit:  # stop reading long before the end of a huge file
                    raise InvalidInputError(f"time series CSV reaches over {limit:,} values by line {reader.line_num}, "
                                            f"over the limit of {limit:,}")
    except csv.Error as exc:
        raise InvalidInputError(f"time series CSV line {reader.line_num}: {exc}") from None
    if not rows:
        raise InvalidInputError("time series CSV has no rows")

    def number(cell: str) -> float | None:
        if _CSV_NUMBER.fullmatch(cell):
            return float(cell)
        if decimal_comma and _CSV_DECIMAL_COMMA.fullmatch(cell):
            return float(cell.replace(",", "."))
        return None

    def is_text(cell: str) -> bool:
        lowered = cell.lower()
        return not (lowered in _CSV_MISSING or lowered in _CSV_INFINITE or number(cell) is not None or _csv_time(cell))

    first_line, first = rows[0]
    header: list[str] | None = None
    below = rows[1][1] if len(rows) > 1 else []
    if any(is_text(cell) and (col >= len(below) or not is_text(below[col])) for col, cell in enumerate(first)):
        header, rows = list(first), rows[1:]
        while len(header) > 1 and not header[-1]:  # 'date,sales,' from a trailing delimiter
            header.pop()
    if not rows:
        raise InvalidInputError("time series CSV has a header but no values")
    width = len(header) if header else len(rows[0][1])
    if width * len(rows) > limit:
        raise InvalidInputError(f"time series has {width * len(rows):,} values, over the limit of {limit:,}")
    for line, cells in rows:
        while len(cells) > width and not cells[-1]:
            cells.pop()
        if len(cells) != width:
            if not any(number(cell) is not None for _, row in rows for cell in row):
                raise InvalidInputError(f"time series CSV line {first_line}, column 1: {first[0][:40]!r}...: no cell of the "
                                        "file is a number; it is not a table of values")
            raise InvalidInputError(f"time series CSV line {line} has {len(cells)} columns, expected {width}")

    def name(col: int) -> str:
        return (header[col] if header and header[col] else f"column {col + 1}")

    lead = next((cells[0] for _, cells in rows if cells[0].lower() not in _CSV_MISSING), None)
    timestamps: np.ndarray | None = None
    unit: str | None = None
    if lead is not None and _csv_time(lead):
        timestamps, unit = _csv_times(rows, _csv_time(lead)[0])
    elif header and width > 1 and re.sub(r"\s*[(\[].*$", "", header[0].lower()) in _CSV_TIME_NAMES and lead is not None \
            and _CSV_NUMBER.fullmatch(lead):
        timestamps, unit = _csv_times(rows, None)
    order = slice(None)
    if timestamps is not None and len(rows) > 1:
        steps = np.diff(timestamps)
        if unit != _CLOCK_UNIT and np.all(steps < 0):
            order = slice(None, None, -1)  # newest first
        elif np.any(steps <= 0):
            i = int(np.argmax(steps <= 0)) + 1
            (line, cells), previous = rows[i], rows[i - 1][1][0]
            how = "repeats" if steps[i - 1] == 0 else "comes before"
            raise InvalidInputError(f"time series CSV line {line}, column 1: {cells[0]!r} {how} the previous row's {previous!r}; "
                                    "times must increase down the file")

    channels, names, ignored = [], [], []
    first_text: tuple[int, int, str] | None = None
    filled = 0
    for col in range(0 if timestamps is None else 1, width):
        column = np.empty(len(rows))
        numbers = missing = 0
        bad: tuple[int, str] | None = None
        for r, (line, cells) in enumerate(rows):
            cell = cells[col]
            lowered = cell.lower()
            if lowered in _CSV_MISSING:
                column[r] = math.nan
                missing += 1
                continue
            value = number(cell)
            if value is None and lowered not in _CSV_INFINITE:
                bad = bad or (line, cell)
                continue
            if value is None or not math.isfinite(value):
                raise InvalidInputError(f"time series CSV line {line}, column {col + 1}: {cell!r} is non-finite (infinity); "
                                        "values must be finite numbers")
            if abs(value) >= _CSV_MAX_MAGNITUDE:
                raise InvalidInputError(f"time series CSV line {line}, column {col + 1}: {cell!r} is too large (values must be "
                                        f"below {_CSV_MAX_MAGNITUDE:g} in magnitude)")
            column[r] = value
            numbers += 1
        if numbers == 0:  # labels, notes, an empty column
            ignored.append(name(col))
            if bad and first_text is None:
                first_text = (bad[0], col + 1, bad[1])
            continue
        if bad:
            hint = ""
            if _CSV_DECIMAL_COMMA.fullmatch(bad[1]):
                hint = " (a decimal comma is read only in ';'-separated files; write it with a decimal point)"
            raise InvalidInputError(f"time series CSV line {bad[0]}, column {col + 1}: {bad[1]!r} is not a number{hint}")
        if missing * 2 > len(rows):
            line = next(line for line, cells in rows if cells[col].lower() in _CSV_MISSING)
            raise InvalidInputError(f"time series CSV column {col + 1} ({name(col)!r}): {missing} of {len(rows)} values are "
                                    f"missing (from line {line}), more than half; too few to fill in")
        channels.append(column[order])
        names.append(name(col))
    if not channels:
        where = (f": line {first_text[0]}, column {first_text[1]}: {first_text[2]!r} is not a number" if first_text
                 else " (every value cell is empty or missing)" if width > (0 if timestamps is None else 1)
                 else " (it holds only the times)")
        raise InvalidInputError(f"time series CSV has no numeric column{where}")
    if timestamps is not None:
        timestamps = timestamps[order]
    x = timestamps if timestamps is not None else np.arange(len(rows), dtype=np.float64)
    for column in channels:
        gaps = np.isnan(column)
        if gaps.any():
            column[gaps] = np.interp(x[gaps], x[~gaps], column[~gaps])  # the nearest value beyond either end
            filled += int(gaps.sum())
    values = channels[0] if len(channels) == 1 else np.column_stack(channels)
    info: dict[str, Any] = {}
    if timestamps is not None:
        clock = has_clock_times(timestamps)
        info.update({"time_column": name(0), "time_unit": unit or "as written",
                     "start": time_text(float(timestamps[0]), unit, clock),
                     "end": time_text(float(timestamps[-1]), unit, clock)})
    if order.step == -1:
        info["reversed"] = True
    if filled:
        info["missing_filled"] = filled
    if ignored:
        info["ignored_columns"] = ignored
    if delimiter != ",":
        info["delimiter"] = delimiter
    return TimeSeries(values, timestamps, names if header else None, unit), info


def _read_time_series(data: bytes, mime: str | None, limits: MediaLimits) -> tuple[TimeSeries, dict[str, Any]]:
    """The series and what reading it noted for the metadata (CSV only: see the rules above)."""
    if data.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle outside data
        except Exception as exc:
            raise InvalidInputError(f"not a readable .npy array: {exc}") from None
        if array.size > limits.max_time_series_points:
            raise InvalidInputError(f"time series has {array.size:,} values, over the limit of {limits.max_time_series_points:,}")
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise InvalidInputError(f"a .npy time series must hold real numbers, not {array.dtype}")
        return TimeSeries(array), {}
    text = _decode_utf8(data, "time series input")
    info: dict[str, Any] = {}
    if text.lstrip()[:1] in ("[", "{"):
        series = _time_series_from_json(_parse_json(data, "time series input", constants=True))  # NaN: TimeSeries names its index
    else:
        series, info = _time_series_from_csv(text, limits)
    if series.values.size > limits.max_time_series_points:
        raise InvalidInputError(
            f"time series has {series.values.size:,} values, over the limit of {limits.max_time_series_points:,}")
    return series, info


def _inspect_time_series(data: bytes, limits: MediaLimits, mime: str | None) -> tuple[str, dict[str, Any]]:
    series, info = _read_time_series(data, mime, limits)
    if data.startswith(b"\x93NUMPY"):
        out_mime = "application/x-npy"
    elif data.lstrip()[:1] in (b"[", b"{"):
        out_mime = TIME_SERIES_JSON_MIME
    else:
        out_mime = "text/csv"
    return out_mime, {"length": series.length, "channels": series.channels, **info}


def _decode_time_series(data: bytes, mime: str, limits: MediaLimits) -> TimeSeries:
    return _read_time_series(data, mime, limits)[0]


def _encode_time_series(value: Any) -> tuple[bytes, str]:
    if not isinstance(value, TimeSeries):
        raise InvalidInputError(f"a time_series artifact must be a TimeSeries, got {type(value).__name__}")
    payload: dict[str, Any] = {"values": value.values.tolist()}
    if value.timestamps is not None:
        payload["timestamps"] = value.timestamps.tolist()
    if value.channel_names is not None:
        payload["channel_names"] = list(value.channel_names)
    if value.time_unit is not None:  # absent when unknown, so older readers see the same JSON
        payload["time_unit"] = value.time_unit
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
                        f"masks array {name!r} would expand to {count * dtype.itemsize:,} bytes, "
                        f"over the limit of {limits.max_bytes:,}"
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
