"""Input validation: every bad input is refused with a message naming the problem and changes nothing stored;
good inputs of every kind round-trip."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageFile

from orchestrator.storage.codecs import DETECTIONS_MIME, MASKS_MIME, TIME_SERIES_JSON_MIME, MediaLimits
from orchestrator.errors import InvalidInputError
from orchestrator.storage.media import AudioClip, Detections, Masks, TimeSeries
from orchestrator.storage.store import ArtifactStore

# --------------------------------------------------------------------------- helpers


def stored_state(store: ArtifactStore) -> tuple[int, set[str], set[str]]:
    blobs = {p.name for p in (store.root / "blobs").glob("??/*")}
    temps = {p.name for p in (store.root / "tmp").iterdir()}
    return store.count(), blobs, temps


def refused(store: ArtifactStore, action: Callable[[], object], *words: str) -> str:
    """Run ``action``; it must raise InvalidInputError mentioning every word and leave the store as it was."""
    before = stored_state(store)
    with pytest.raises(InvalidInputError) as caught:
        action()
    message = str(caught.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert stored_state(store) == before
    return message


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    store.put("text", b"something already stored")  # so 'nothing changed' is checked against a non-empty store
    return store


def small_store(tmp_path: Path, **limits) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "small", MediaLimits(**limits))
    store.put("text", b"x")
    return store


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (48, 32)) -> bytes:
    """Seeded noise (incompressible, so truncating the file cuts into the pixel data)."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def tone(seconds: float = 0.5, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return mono if channels == 1 else np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)


def audio_bytes(fmt: str = "WAV", seconds: float = 0.5, rate: int = 16_000, channels: int = 1, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate, channels), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def one_bit_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, built row by row so a huge one costs kilobytes, never its pixels."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------- empty, truncated, mislabelled


@pytest.mark.parametrize("name", ["empty.png", "empty.wav", "empty.txt", "empty.csv", "empty.json"])
def test_zero_byte_file_is_refused(store: ArtifactStore, tmp_path: Path, name: str):
    path = write(tmp_path, name, b"")
    refused(store, lambda: store.ingest_file(path), name, "empty", "0 bytes")


@pytest.mark.parametrize("kind", ["image", "audio", "video", "time_series", "json", "detections", "masks"])
def test_zero_bytes_are_refused_for_every_kind_but_text(store: ArtifactStore, kind: str):
    refused(store, lambda: store.put(kind, b""), kind, "empty")


def test_empty_text_is_a_storable_result(store: ArtifactStore):
    # A transcript of silence or the text of a blank page is empty, and still an answer.
    artifact = store.put_value("text", "")
    assert artifact.size == 0 and store.load(artifact.id) == ""


def test_missing_file_is_refused(store: ArtifactStore, tmp_path: Path):
    refused(store, lambda: store.ingest_file(tmp_path / "nope.png"), "nope.png", "does not exist")
    refused(store, lambda: store.ingest_file(tmp_path), "not a regular file")


def test_truncated_png_is_refused(store: ArtifactStore, tmp_path: Path):
    data = image_bytes("PNG", (64, 64))
    path = write(tmp_path, "cut.png", data[: len(data) // 2])
    refused(store, lambda: store.ingest_file(path), "truncated", "PNG")
    refused(store, lambda: store.put("image", data[:-40]), "truncated")  # only the end of IDAT and IEND missing


def test_truncated_jpeg_is_refused(store: ArtifactStore):
    data = image_bytes("JPEG", (64, 64))
    refused(store, lambda: store.put("image", data[: len(data) // 2]), "truncated", "JPEG")


def test_truncated_wav_is_refused(store: ArtifactStore, tmp_path: Path):
    data = audio_bytes("WAV", seconds=1.0)
    path = write(tmp_path, "cut.wav", data[: len(data) // 2])
    message = refused(store, lambda: store.ingest_file(path), "truncated WAV")
    at = data.index(b"data")
    declared = struct.unpack("<I", data[at + 4 : at + 8])[0]
    assert f"declares {declared:,} bytes" in message
    refused(store, lambda: store.put("audio", data[:30]), "WAV", "no 'data' chunk")


def test_truncated_flac_is_refused(store: ArtifactStore):
    data = audio_bytes("FLAC", seconds=1.0)
    refused(store, lambda: store.put("audio", data[: len(data) // 2]), "audio")


@pytest.mark.parametrize("width,height", [(20_000, 20_000), (9_000, 9_000)])
def test_decompression_bomb_png_is_refused_before_decoding(
    store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int
):
    bomb = one_bit_png(width, height)
    assert len(bomb) < 200_000  # small on disk, hundreds of megabytes once decoded
    path = write(tmp_path, "bomb.png", bomb)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image.size) or real_load(image))
    started = time.perf_counter()
    message = refused(store, lambda: store.ingest_file(path), "pixels")
    seconds = time.perf_counter() - started
    assert str(width * height) in message.replace(",", ""), message
    assert decoded == [], "the image was decoded"
    assert seconds < 5.0, message  # generous for a loaded CI machine; decoding would not be caught by time alone


def test_image_limit_above_pillows_own_warning_threshold_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; our limit is the one configured.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    store = small_store(tmp_path, max_image_pixels=5000)
    accepted = store.put("image", one_bit_png(40, 40))  # 1,600 pixels: over Pillow's 1,000, under our 5,000
    assert (accepted.metadata["width"], accepted.metadata["height"]) == (40, 40)
    assert store.load(accepted.id).size == (40, 40)
    refused(store, lambda: store.put("image", one_bit_png(80, 80)), "pixels")


def test_png_bytes_named_wav_are_refused(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "song.wav", image_bytes("PNG"))
    refused(store, lambda: store.ingest_file(path), "song.wav", ".wav", "image/png")


def test_wav_bytes_named_png_are_refused(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "photo.png", audio_bytes("WAV"))
    refused(store, lambda: store.ingest_file(path), "photo.png", ".png", "audio/wav")


def test_text_file_declared_as_audio_is_refused(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "notes.txt", b"this is a shopping list, not a recording\n")
    refused(store, lambda: store.ingest_file(path, kind="audio"), "notes.txt", "audio", "text/plain")
    path = write(tmp_path, "recording", b"this is a shopping list, not a recording\n")  # no extension at all
    refused(store, lambda: store.ingest_file(path, kind="audio"), "recording", "given as audio")


@pytest.mark.parametrize(
    "data",
    [b"random bytes that are certainly not a recording", bytes(range(256)) * 8, b"RIFF\x10\x00\x00\x00WAVEjunkjunk"],
    ids=["text", "binary", "fake-riff"],
)
def test_non_audio_bytes_put_as_audio_are_refused(store: ArtifactStore, data: bytes):
    refused(store, lambda: store.put("audio", data), "audio")


def test_image_bytes_put_as_other_kinds_are_refused(store: ArtifactStore):
    png = image_bytes("PNG")
    refused(store, lambda: store.put("audio", png), "not decodable audio", "image/png")
    refused(store, lambda: store.put("text", png), "not valid UTF-8")
    refused(store, lambda: store.put("time_series", png), "time series", "UTF-8")
    refused(store, lambda: store.put("video", png), "video", "image/png")
    refused(store, lambda: store.put("masks", png), "masks", "npz")
    refused(store, lambda: store.put("image", audio_bytes()), "not a readable image", "audio/wav")


def test_unknown_content_without_a_kind_is_refused(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "mystery.bin", bytes(range(256)) * 4)
    refused(store, lambda: store.ingest_file(path), "mystery.bin", "cannot tell")


def test_binary_ending_in_a_bad_byte_is_not_taken_for_text(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "blob", b"\x01\x02 mostly ascii \xfe")
    refused(store, lambda: store.ingest_file(path), "blob", "cannot tell", "unrecognised binary data")


def test_text_whose_sniffed_head_cuts_a_character_is_text(store: ArtifactStore, tmp_path: Path):
    text = "a" * 4095 + "é and more"  # the é straddles the first 4096 bytes that sniffing looks at
    artifact = store.ingest_file(write(tmp_path, "notes", text.encode()))
    assert artifact.kind.value == "text" and store.load(artifact.id) == text


def test_unknown_kind_is_refused(store: ArtifactStore):
    refused(store, lambda: store.put("hologram", b"data"), "hologram", "known kinds")


# --------------------------------------------------------------------------- time series


def test_missing_csv_value_is_filled_and_infinity_refused_by_line(store: ArtifactStore, tmp_path: Path):
    # A CSV's nan is a missing value (spreadsheets write it): filled by interpolation, counted in the metadata.
    path = write(tmp_path, "sensor.csv", b"time,value\n0,1.5\n1,2.5\n2,nan\n3,4.0\n")
    artifact = store.ingest_file(path)
    assert artifact.metadata["missing_filled"] == 1
    assert store.load(artifact.id).values.tolist() == [1.5, 2.5, 3.25, 4.0]
    path = write(tmp_path, "two.csv", b"a,b\n1,2\n3,inf\n")
    refused(store, lambda: store.ingest_file(path), "non-finite", "line 3", "column 2")


def test_nan_in_json_time_series_names_the_index(store: ArtifactStore):
    refused(store, lambda: store.put("time_series", b'{"values": [1.0, 2.0, 3.0, NaN]}'), "index 3")
    refused(store, lambda: store.put("time_series", b"[1, Infinity, 3]"), "index 1")
    refused(store, lambda: store.put("time_series", b'{"values": [1, 2, null]}'), "index 2", "not a number")
    refused(store, lambda: store.put("time_series", b'[1, "NaN", 3]'), "index 1", "not a number")


def test_nan_in_npy_time_series_names_the_index(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "series.npy", npy_bytes(np.array([0.0, 1.0, np.nan, 3.0, np.nan])))
    refused(store, lambda: store.ingest_file(path), "2 non-finite", "index 2")
    matrix = np.zeros((4, 3))
    matrix[3, 1] = np.inf
    refused(store, lambda: store.put("time_series", npy_bytes(matrix)), "(3, 1)")


def test_npy_with_object_dtype_is_refused_without_unpickling(store: ArtifactStore, tmp_path: Path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    data = npy_bytes(np.array([Payload(), 1], dtype=object), allow_pickle=True)
    path = write(tmp_path, "evil.npy", data)
    refused(store, lambda: store.ingest_file(path), "npy", "object")
    refused(store, lambda: store.put("time_series", data), "object")
    assert not marker.exists()


@pytest.mark.parametrize(
    "array,words",
    [
        (np.array([True, False]), ("real numbers", "bool")),
        (np.array([1 + 2j, 3j]), ("real numbers", "complex")),
        (np.array(["1", "2"]), ("real numbers",)),
        (np.zeros((2, 2, 2)), ("shape",)),
        (np.zeros((0,)), ("at least one value",)),
    ],
    ids=["bool", "complex", "str", "3d", "empty"],
)
def test_npy_that_is_not_a_series_is_refused(store: ArtifactStore, array: np.ndarray, words: tuple[str, ...]):
    refused(store, lambda: store.put("time_series", npy_bytes(array)), *words)


def test_malformed_time_series_text_is_refused(store: ArtifactStore):
    refused(store, lambda: store.put("time_series", b"t,value\n0,1\n1,abc\n"), "line 3", "column 2", "'abc'")
    refused(store, lambda: store.put("time_series", b"1,2\n3\n"), "line 2", "1 columns", "expected 2")
    refused(store, lambda: store.put("time_series", b"time,value\n"), "header but no values")
    refused(store, lambda: store.put("time_series", b'{"timestamps": [1]}'), "'values'")
    refused(store, lambda: store.put("time_series", b'{"values": [1, 2], "timestamps": [2, 1]}'), "strictly increasing")
    refused(store, lambda: store.put("time_series", b'{"values": [1, 2], "timestamps": [0]}'), "2 values but 1 timestamps")
    refused(store, lambda: store.put("time_series", b"[[1, 2], [3]]"), "different numbers of channels")
    refused(store, lambda: store.put("time_series", b"\x93NUMPY garbage"), "npy")


# --------------------------------------------------------------------------- oversize


def test_input_over_max_bytes_is_refused(tmp_path: Path):
    store = small_store(tmp_path, max_bytes=1000)
    path = write(tmp_path, "big.txt", b"a" * 1001)
    refused(store, lambda: store.ingest_file(path), "big.txt", "1,001 bytes", "1,000")
    refused(store, lambda: store.put("text", b"a" * 1001), "1,001 bytes", "limit")
    refused(store, lambda: store.put("image", image_bytes("PNG", (64, 64))), "bytes", "limit")
    assert store.put("text", b"a" * 1000).size == 1000  # the limit itself is allowed


def test_audio_over_max_seconds_is_refused(tmp_path: Path):
    store = small_store(tmp_path, max_audio_seconds=1.0)
    path = write(tmp_path, "long.wav", audio_bytes("WAV", seconds=2.5, rate=8000))
    refused(store, lambda: store.ingest_file(path), "2.5 s", "limit of 1 s")
    refused(store, lambda: store.put("audio", audio_bytes("FLAC", seconds=1.5, rate=8000)), "1.5 s", "limit")
    assert store.put("audio", audio_bytes("WAV", seconds=1.0, rate=8000)).metadata["duration_s"] == 1.0


def test_text_over_max_chars_is_refused(tmp_path: Path):
    store = small_store(tmp_path, max_text_chars=10)
    refused(store, lambda: store.put("text", b"eleven char"), "11 characters", "limit of 10")
    assert store.put("text", "éééééééééé".encode()).metadata["chars"] == 10  # characters, not bytes


@pytest.mark.parametrize(
    "data",
    [
        b"\n".join(str(i).encode() for i in range(11)),
        json.dumps(list(range(11))).encode(),
        json.dumps({"values": [[i, i] for i in range(6)]}).encode(),
        npy_bytes(np.arange(11, dtype=np.float32)),
        npy_bytes(np.zeros((6, 2))),
    ],
    ids=["csv", "json", "json-2ch", "npy", "npy-2ch"],
)
def test_time_series_over_max_points_is_refused(tmp_path: Path, data: bytes):
    store = small_store(tmp_path, max_time_series_points=10)
    refused(store, lambda: store.put("time_series", data), "values", "limit of 10")


def test_masks_over_max_pixels_are_refused(tmp_path: Path):
    store = small_store(tmp_path, max_image_pixels=100)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, label_map=np.zeros((11, 10), np.uint8), labels=np.array(["a"]))
    refused(store, lambda: store.put("masks", buffer.getvalue()), "110 pixels", "limit of 100")


def test_masks_labels_that_expand_past_max_bytes_are_refused(tmp_path: Path):
    store = small_store(tmp_path, max_bytes=10_000)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, label_map=np.zeros((4, 4), np.uint8), labels=np.array(["x" * 3000]))  # '<U3000': 12 kB
    assert len(buffer.getvalue()) < 10_000
    refused(store, lambda: store.put("masks", buffer.getvalue()), "'labels'", "12,000 bytes", "limit of 10,000")


def test_masks_decompression_bomb_is_refused_before_expanding(store: ArtifactStore):
    # 100 million zero bytes compress to ~100 kB; the label map must be measured from its header.
    side = 8_200  # 67 million pixels, over the default 64 million
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (side, side)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("label_map.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = bytes(side * 100)
            for _ in range(side // 100):
                member.write(zeros)
        archive.writestr("labels.npy", npy_bytes(np.array(["cat"])))
    data = buffer.getvalue()
    assert len(data) < 1_000_000
    tracemalloc.start()
    try:
        refused(store, lambda: store.put("masks", data), f"{side * side:,} pixels")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak:,} bytes allocated: the mask was decompressed"


# --------------------------------------------------------------------------- text and json


def test_invalid_utf8_text_is_refused(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "latin1.txt", "café au lait".encode("latin-1"))
    refused(store, lambda: store.ingest_file(path), "not valid UTF-8", "offset 3")
    refused(store, lambda: store.put("text", b"ok so far \xff\xfe"), "UTF-8", "offset 10")
    refused(store, lambda: store.put("json", b'{"a": "caf\xe9"}'), "json", "UTF-8")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_with_nan_is_refused(store: ArtifactStore, tmp_path: Path, literal: bytes):
    path = write(tmp_path, "data.json", b'{"score": ' + literal + b"}")
    refused(store, lambda: store.ingest_file(path), literal.decode().lstrip("-"), "not valid JSON")


def test_malformed_json_is_refused(store: ArtifactStore):
    refused(store, lambda: store.put("json", b'{"a": 1,}'), "not valid JSON", "line 1")
    refused(store, lambda: store.put("json", b"[" * 100_000 + b"]" * 100_000), "json", "nested")
    refused(store, lambda: store.put("detections", b"[" * 100_000), "nested")


@pytest.mark.parametrize(
    "payload,words",
    [
        ({"boxes": []}, ("'detections' list",)),
        ([{"box": [0, 0, 1, 1], "label": "cat"}], ("'detections' list",)),
        ({"detections": [{"box": [0, 0, 1, 1]}]}, ("detection 0", "'label'")),
        ({"detections": [{"box": [0, 0, 1, 1], "label": "a"}, {"label": "cat"}]}, ("detection 1", "'box'")),
        ({"detections": ["cat"]}, ("detection 0", "object")),
        ({"detections": [{"box": [0, 0, 1], "label": "cat"}]}, ("box 0", "4 finite numbers")),
        ({"detections": [{"box": [5, 0, 1, 1], "label": "cat"}]}, ("box 0", "x1 < x0")),
        ({"detections": [{"box": ["a", 0, 1, 1], "label": "cat"}]}, ("box 0", "4 finite numbers")),
        ({"detections": [{"box": "0011", "label": "cat"}]}, ("box 0", "4 finite numbers")),
        ({"detections": [{"box": 7, "label": "cat"}]}, ("box 0", "4 finite numbers")),
        ({"detections": [{"box": None, "label": "cat"}]}, ("box 0", "4 finite numbers")),
        ({"detections": [{"box": [0, 0, 1, 1], "label": "cat", "score": "high"}]}, ("score", "0", "'high'")),
        ({"detections": [{"box": [0, 0, 1, 1], "label": "cat", "score": None}]}, ("score",)),
        ({"image_size": 640, "detections": []}, ("image_size",)),
        ({"image_size": ["wide", "tall"], "detections": []}, ("image_size",)),
    ],
    ids=[
        "no-list", "bare-list", "no-label", "no-box", "not-object", "three-numbers", "reversed", "text-in-box",
        "box-string", "box-number", "box-null", "score-text", "score-null", "size-number", "size-text",
    ],
)
def test_bad_detections_are_refused(store: ArtifactStore, tmp_path: Path, payload, words: tuple[str, ...]):
    data = json.dumps(payload).encode()
    refused(store, lambda: store.put("detections", data), *words)


@pytest.mark.parametrize(
    "arrays,words",
    [
        ({"label_map": np.zeros((2, 2), np.uint8)}, ("'label_map' and 'labels'",)),
        ({"label_map": np.array([[0, 2]], np.uint8), "labels": np.array(["a"])}, ("value 2", "1 labels")),
        ({"label_map": np.array([[0.0, np.nan]]), "labels": np.array(["a"])}, ("label map", "integers")),
        ({"label_map": np.array([[0.0, 1.5]]), "labels": np.array(["a"])}, ("label map", "integers")),
        ({"label_map": np.array([[-1, 1]]), "labels": np.array(["a"])}, ("label map", "-1")),
        ({"label_map": np.zeros((2, 2, 2), np.uint8), "labels": np.array(["a"])}, ("2-D",)),
        ({"label_map": np.zeros((2, 2), np.uint8), "labels": np.array(["a"]), "scores": np.array([0.5, 0.2])}, ("one score per label",)),
    ],
    ids=["no-labels", "label-out-of-range", "nan", "fractional", "negative", "3d", "scores"],
)
def test_bad_masks_are_refused(store: ArtifactStore, arrays: dict, words: tuple[str, ...]):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    refused(store, lambda: store.put("masks", buffer.getvalue()), *words)


def test_masks_with_pickled_labels_are_refused_without_unpickling(store: ArtifactStore, tmp_path: Path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    buffer = io.BytesIO()
    np.savez(buffer, label_map=np.zeros((2, 2), np.uint8), labels=np.array([Payload()], dtype=object))
    refused(store, lambda: store.put("masks", buffer.getvalue()), "masks", "object")
    assert not marker.exists()


# --------------------------------------------------------------------------- good inputs round-trip


@pytest.mark.parametrize(
    "fmt,ext,mime,lossless",
    [
        ("PNG", "png", "image/png", True),
        ("JPEG", "jpg", "image/jpeg", False),
        ("WEBP", "webp", "image/webp", False),
        ("GIF", "gif", "image/gif", False),
        ("BMP", "bmp", "image/bmp", True),
        ("TIFF", "tiff", "image/tiff", True),
    ],
)
def test_images_round_trip(store: ArtifactStore, tmp_path: Path, fmt: str, ext: str, mime: str, lossless: bool):
    data = image_bytes(fmt, (48, 32))
    artifact = store.ingest_file(write(tmp_path, f"picture.{ext}", data))
    assert artifact.kind.value == "image" and artifact.mime == mime
    assert (artifact.metadata["width"], artifact.metadata["height"], artifact.metadata["name"]) == (48, 32, f"picture.{ext}")
    assert store.read_bytes(artifact.id) == data
    image = store.load(artifact.id)
    assert image.size == (48, 32)
    if lossless:
        original = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)  # what image_bytes drew
        assert np.array_equal(np.asarray(image.convert("RGB")), original)


def test_put_value_image_round_trips_losslessly(store: ArtifactStore):
    pixels = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    artifact = store.put_value("image", Image.fromarray(pixels))
    assert artifact.mime == "image/png"
    assert np.array_equal(np.asarray(store.load(artifact.id)), pixels)


def test_exif_rotated_jpeg_decodes_upright(store: ArtifactStore, tmp_path: Path):
    # Stored 40 wide x 20 high, left half red, right half blue; orientation 6 means "rotate 90° clockwise to view".
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=95)
    artifact = store.ingest_file(write(tmp_path, "phone.jpg", buffer.getvalue()))

    image = store.load(artifact.id).convert("RGB")
    assert image.size == (20, 40)  # upright: taller than wide
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60, top  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert (artifact.metadata["width"], artifact.metadata["height"]) == image.size  # what tools will see


def test_multi_picture_jpeg_from_a_phone_is_accepted(store: ArtifactStore, tmp_path: Path):
    # Many phones write MPO: a JPEG with extra pictures appended (depth, HDR gain map); Pillow calls it "MPO".
    first = Image.fromarray(np.full((24, 32, 3), 200, np.uint8))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (16, 12))])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    artifact = store.ingest_file(write(tmp_path, "IMG_0001.jpg", buffer.getvalue()))
    assert artifact.mime == "image/jpeg"
    assert (artifact.metadata["width"], artifact.metadata["height"]) == (32, 24)
    assert store.load(artifact.id).size == (32, 24)


@pytest.mark.parametrize(
    "fmt,ext,mime,subtype,tolerance",
    [
        ("WAV", "wav", "audio/wav", "PCM_16", 1e-4),
        ("WAV", "wav", "audio/wav", "FLOAT", 1e-7),
        ("FLAC", "flac", "audio/flac", None, 1e-4),
        ("OGG", "ogg", "audio/ogg", "VORBIS", None),
    ],
)
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_round_trips(store: ArtifactStore, tmp_path: Path, fmt, ext, mime, subtype, tolerance, channels):
    rate = 22_050
    data = audio_bytes(fmt, seconds=0.6, rate=rate, channels=channels, subtype=subtype)
    artifact = store.ingest_file(write(tmp_path, f"sound.{ext}", data))
    assert artifact.kind.value == "audio" and artifact.mime == mime
    meta = artifact.metadata
    assert (meta["sample_rate"], meta["channels"], meta["format"]) == (rate, channels, fmt)
    assert meta["duration_s"] == pytest.approx(0.6, abs=0.01)
    clip = store.load(artifact.id)
    assert isinstance(clip, AudioClip) and clip.sample_rate == rate and clip.channels == channels
    expected = tone(0.6, rate, channels)
    if tolerance is None:  # lossy: same length, same tone
        assert abs(clip.samples.shape[0] - expected.shape[0]) < rate * 0.01
        n = min(clip.samples.shape[0], expected.shape[0])
        assert np.corrcoef(clip.samples[:n].ravel(), expected[:n].ravel())[0, 1] > 0.95
    else:
        np.testing.assert_allclose(clip.samples, expected, atol=tolerance)
    assert clip.for_model(16_000).shape[0] == pytest.approx(0.6 * 16_000, abs=16_000 * 0.01)


def test_put_value_audio_round_trips(store: ArtifactStore):
    clip = AudioClip(tone(0.25, 8000).astype(np.float32), 8000)
    artifact = store.put_value("audio", clip)
    assert artifact.mime == "audio/wav"
    np.testing.assert_allclose(store.load(artifact.id).samples, clip.samples, atol=1e-4)


def test_csv_time_series_with_header_and_timestamps_round_trips(store: ArtifactStore, tmp_path: Path):
    path = write(tmp_path, "weather.csv", b"timestamp,temp,humidity\n0,20.5,30\n1.5,21,31\n3,21.5,32.5\n\n")
    artifact = store.ingest_file(path)
    assert artifact.kind.value == "time_series" and artifact.mime == "text/csv"
    assert (artifact.metadata["length"], artifact.metadata["channels"]) == (3, 2)
    series = store.load(artifact.id)
    assert isinstance(series, TimeSeries)
    np.testing.assert_array_equal(series.timestamps, [0, 1.5, 3])
    np.testing.assert_array_equal(series.values, [[20.5, 30], [21, 31], [21.5, 32.5]])
    assert series.channel_names == ["temp", "humidity"]

    plain = store.put("time_series", b"1\n2\n4\n")
    assert store.load(plain.id).values.tolist() == [1, 2, 4] and store.load(plain.id).timestamps is None


def test_json_time_series_round_trips(store: ArtifactStore, tmp_path: Path):
    payload = {"values": [[1, 10], [2, 20], [3, 30]], "timestamps": [0.0, 0.5, 1.0], "channel_names": ["x", "y"]}
    artifact = store.put("time_series", json.dumps(payload).encode())
    assert artifact.mime == TIME_SERIES_JSON_MIME and artifact.metadata == {"length": 3, "channels": 2}
    series = store.load(artifact.id)
    assert series.values.tolist() == payload["values"] and series.timestamps.tolist() == payload["timestamps"]
    assert series.channel_names == ["x", "y"]

    again = store.put_value("time_series", series)
    assert store.load(again.id).values.tolist() == payload["values"]
    bare = store.put("time_series", b"[3, 1, 2]")
    assert store.load(bare.id).values.tolist() == [3, 1, 2]


def test_npy_time_series_round_trips(store: ArtifactStore, tmp_path: Path):
    array = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    artifact = store.ingest_file(write(tmp_path, "imu.npy", npy_bytes(array)))
    assert artifact.mime == "application/x-npy" and artifact.metadata == {"length": 50, "channels": 3, "name": "imu.npy"}
    np.testing.assert_array_equal(store.load(artifact.id).values, array.astype(np.float64))
    ints = store.put("time_series", npy_bytes(np.arange(5, dtype=np.int16)))
    assert store.load(ints.id).values.tolist() == [0, 1, 2, 3, 4]


def test_detections_round_trip(store: ArtifactStore, tmp_path: Path):
    payload = {
        "image_size": [640, 480],
        "detections": [
            {"box": [10, 20, 110, 220], "label": "cat", "score": 0.9},
            {"box": [0.5, 0.5, 1.5, 2.5], "label": "dog", "text": "WOOF"},
        ],
    }
    artifact = store.ingest_file(write(tmp_path, "boxes.json", json.dumps(payload).encode()), kind="detections")
    assert artifact.mime == DETECTIONS_MIME and artifact.metadata["count"] == 2 and artifact.metadata["labels"] == ["cat", "dog"]
    detections = store.load(artifact.id)
    assert isinstance(detections, Detections)
    assert detections.boxes == [(10, 20, 110, 220), (0.5, 0.5, 1.5, 2.5)]
    assert detections.labels == ["cat", "dog"] and detections.scores == [0.9, 1.0] and detections.image_size == (640, 480)
    assert detections.extra[1] == {"text": "WOOF"}
    again = store.load(store.put_value("detections", detections).id)
    assert again.to_json() == detections.to_json()


def test_masks_round_trip(store: ArtifactStore, tmp_path: Path):
    label_map = np.zeros((6, 8), np.uint8)
    label_map[1:3, 1:4] = 1
    label_map[4:, 5:] = 2
    masks = Masks(label_map, ["cat", "dog"], [0.75, 0.5])
    artifact = store.put_value("masks", masks)
    assert artifact.mime == MASKS_MIME
    assert artifact.metadata == {"width": 8, "height": 6, "count": 2, "labels": ["cat", "dog"]}
    loaded = store.load(artifact.id)
    assert np.array_equal(loaded.label_map, label_map) and loaded.labels == ["cat", "dog"] and loaded.scores == [0.75, 0.5]
    assert np.array_equal(loaded.mask(0), label_map == 1) and loaded.mask(1)[4:, 5:].all() and loaded.mask(1).sum() == 6

    path = tmp_path / "seg.npz"
    np.savez_compressed(path, label_map=label_map.astype(np.int32), labels=np.array(["cat", "dog"]))
    ingested = store.ingest_file(path)
    assert ingested.kind.value == "masks" and np.array_equal(store.load(ingested.id).label_map, label_map)


def test_text_and_json_round_trip(store: ArtifactStore, tmp_path: Path):
    text = "naïve café 🐍\nline two"
    artifact = store.ingest_file(write(tmp_path, "notes.md", text.encode()))
    assert artifact.kind.value == "text" and store.load(artifact.id) == text
    assert artifact.metadata["chars"] == len(text)
    document = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    stored = store.ingest_file(write(tmp_path, "doc.json", json.dumps(document).encode()))
    assert stored.kind.value == "json" and store.load(stored.id) == document
    assert store.load(store.put_value("json", document).id) == document
    refused(store, lambda: store.put_value("json", {"x": math.nan}), "JSON")


def test_video_container_is_checked_by_magic(store: ArtifactStore, tmp_path: Path):
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
    artifact = store.ingest_file(write(tmp_path, "clip.mp4", mp4))
    assert artifact.kind.value == "video" and artifact.mime == "video/mp4"
    path = write(tmp_path, "clip2.mp4", b"just text pretending to be a video")
    refused(store, lambda: store.ingest_file(path), "clip2.mp4", ".mp4", "text/plain")
