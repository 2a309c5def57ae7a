"""Property tests for the boundaries outside bytes and names reach: the codecs (random, cut and corrupted
images, audio, CSV, JSON, arrays, masks), artifact ids and session ids.

Each property is the same: a clear AnymodaError or a valid result, never another exception, and never a
stored row for a refused input. A result counts as valid only when what was stored also decodes. The
examples are drawn deterministically (``derandomize``), so a run is repeatable and needs no database.
"""

from __future__ import annotations

import io
import json
import string

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from orchestrator.storage import codecs
from orchestrator.storage.artifacts import ArtifactKind, check_artifact_id, is_artifact_id
from orchestrator.storage.codecs import MediaLimits
from orchestrator.errors import AnymodaError, ArtifactNotFoundError, InvalidInputError
from orchestrator.execution.journal import RunJournal, check_session_id, new_run_id
from orchestrator.storage.media import Masks, TimeSeries
from orchestrator.storage.store import ArtifactStore

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LIMITS = MediaLimits(max_bytes=1 << 20, max_image_pixels=1 << 20, max_audio_seconds=60, max_time_series_points=100_000)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 60)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _audio(fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(1600) / 16000
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.linspace(0, 1, 20))
    return buffer.getvalue()


def _masks() -> bytes:
    return codecs.encode(ArtifactKind.MASKS, Masks(np.eye(6, dtype=np.uint8), ["thing"]))[0]


# A valid sample of each format users send, by the kind it is stored as.
SAMPLES: dict[str, tuple[ArtifactKind, bytes]] = {
    "png": (ArtifactKind.IMAGE, _png()),
    "jpeg": (ArtifactKind.IMAGE, _image("JPEG", quality=80, exif=Image.Exif())),
    "gif": (ArtifactKind.IMAGE, _image("GIF")),
    "webp": (ArtifactKind.IMAGE, _image("WEBP")),
    "bmp": (ArtifactKind.IMAGE, _image("BMP")),
    "tiff": (ArtifactKind.IMAGE, _image("TIFF")),
    "wav": (ArtifactKind.AUDIO, _audio("WAV", "PCM_16")),
    "flac": (ArtifactKind.AUDIO, _audio("FLAC")),
    "ogg": (ArtifactKind.AUDIO, _audio("OGG", "VORBIS")),
    "csv": (ArtifactKind.TIME_SERIES, b"date,visitors,notes\n2024-03-01,12,ok\n2024-03-02,NA,\n2024-03-03,15.5,busy\n"),
    "csv-semicolon": (ArtifactKind.TIME_SERIES, b"time;a;b\n00:00;1,5;2\n01:00;2,5;3\n02:00;3,5;4\n"),
    "series-json": (ArtifactKind.TIME_SERIES, json.dumps({"values": [[1, 2], [3, 4], [5, 6]], "timestamps": [0, 60, 120],
                                                          "channel_names": ["a", "b"], "time_unit": "seconds"}).encode()),
    "npy": (ArtifactKind.TIME_SERIES, _npy()),
    "json": (ArtifactKind.JSON, json.dumps({"rows": [{"boat": "Mary", "catch": 12.5}], "ok": True}).encode()),
    "detections": (ArtifactKind.DETECTIONS, json.dumps({"image_size": [16, 12], "detections": [
        {"box": [1, 2, 8, 9], "label": "gull", "score": 0.9}]}).encode()),
    "masks": (ArtifactKind.MASKS, _masks()),
    "text": (ArtifactKind.TEXT, "Nets mended by noon — ünïcode too.\n".encode()),
}


def accepted_or_clear_error(store: ArtifactStore, kind: ArtifactKind, data: bytes) -> bool:
    """Store ``data`` as ``kind``: True if stored (and its value then loads), False if refused with an
    AnymodaError (and nothing was stored). Any other exception fails the test."""
    before = store.count()
    try:
        artifact = store.put(kind, data)
    except AnymodaError as refused:
        assert str(refused) and "\n" not in str(refused), repr(str(refused))
        assert store.count() == before, "a refused input left a row"
        return False
    assert store.count() == before + 1
    store.load(artifact.id)  # accepted means usable: decoding what was stored must not fail
    return True


def test_every_sample_is_accepted_as_it_is(store):
    for name, (kind, data) in SAMPLES.items():
        assert accepted_or_clear_error(store, kind, data), name


@pytest.mark.parametrize("name", sorted(SAMPLES))
@FUZZ
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_cut_off_file_is_refused_or_still_valid(store, name, cut):
    kind, data = SAMPLES[name]
    accepted_or_clear_error(store, kind, data[: int(len(data) * cut)])


@pytest.mark.parametrize("name", sorted(SAMPLES))
@FUZZ
@given(data=st.data())
def test_a_corrupted_file_is_refused_or_still_valid(store, name, data):
    kind, sample = SAMPLES[name]
    mutated = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        position = data.draw(st.integers(0, len(mutated) - 1), label="position")
        mutated[position] = data.draw(st.integers(0, 255), label="byte")
    accepted_or_clear_error(store, kind, bytes(mutated))


@pytest.mark.parametrize("kind", list(ArtifactKind), ids=lambda k: k.value)
@FUZZ
@given(payload=st.binary(max_size=600))
def test_random_bytes_are_refused_or_valid_for_every_kind(store, kind, payload):
    accepted_or_clear_error(store, kind, payload)


@pytest.mark.parametrize("kind", [ArtifactKind.IMAGE, ArtifactKind.AUDIO, ArtifactKind.TIME_SERIES, ArtifactKind.MASKS],
                         ids=lambda k: k.value)
@FUZZ
@given(payload=st.binary(max_size=600))
def test_random_bytes_behind_a_real_magic_number_are_refused_or_valid(store, kind, payload):
    """Random bytes rarely get past the first check; behind a real header they reach the decoders."""
    heads = {ArtifactKind.IMAGE: SAMPLES["png"][1][:33], ArtifactKind.AUDIO: SAMPLES["wav"][1][:44],
             ArtifactKind.TIME_SERIES: SAMPLES["npy"][1][:128], ArtifactKind.MASKS: SAMPLES["masks"][1][:40]}
    accepted_or_clear_error(store, kind, heads[kind] + payload)


# Text shaped like CSV: the cells, separators and line ends the reader has rules for.
CSV_CELLS = st.sampled_from(["", "1", "-2.5", "1e5", "1e400", "NA", "inf", "x", "2024-02-30", "2024-03-01", "25:00", "12:30",
                             "3,5", '"q"', "1,000", "nan", "  7 "])
CSV_TEXT = st.lists(st.lists(CSV_CELLS, min_size=1, max_size=4), min_size=1, max_size=8).flatmap(
    lambda rows: st.sampled_from([",", ";", "\t"]).map(lambda sep: "\n".join(sep.join(row) for row in rows)))


@FUZZ
@given(text=CSV_TEXT)
def test_csv_shaped_text_is_a_series_or_a_clear_error(store, text):
    accepted_or_clear_error(store, ArtifactKind.TIME_SERIES, text.encode())


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["values", "timestamps", "channel_names", "time_unit", "detections", "box", "label", "score", "image_size"]),
        inner, max_size=4),
    max_leaves=20)


@pytest.mark.parametrize("kind", [ArtifactKind.JSON, ArtifactKind.TIME_SERIES, ArtifactKind.DETECTIONS], ids=lambda k: k.value)
@FUZZ
@given(value=JSON_VALUES)
def test_json_shaped_input_is_valid_or_a_clear_error(store, kind, value):
    accepted_or_clear_error(store, kind, json.dumps(value).encode())


# ------------------------------------------------------------------------------------------ ids


ID_LIKE = st.one_of(
    st.text(max_size=40),
    st.builds(lambda kind, digits, tail: f"{kind}-{digits}{tail}", st.sampled_from([k.value for k in ArtifactKind] + ["Image", ""]),
              st.text(alphabet="0123456789abcdefABCDEF", min_size=14, max_size=18), st.sampled_from(["", "\n", "/", " ", "\x00"])),
    st.sampled_from(["../../etc/passwd", "image-0123456789abcdef/../x", "image-0123456789abcde\u0660"]),
)


@FUZZ
@given(value=ID_LIKE)
def test_artifact_ids_are_checked_before_any_lookup(store, value):
    try:
        checked = check_artifact_id(value)
    except InvalidInputError:
        assert not is_artifact_id(value)
        with pytest.raises(InvalidInputError):
            store.get(value)
        return
    assert checked == value and value.isascii() and "/" not in value and len(value) <= 30
    with pytest.raises(ArtifactNotFoundError):  # well formed, never stored
        store.get(value)


SESSION_LIKE = st.one_of(st.text(max_size=140), st.text(alphabet=string.ascii_letters + string.digits + "_.:-/ ", max_size=140))


@FUZZ
@given(session=SESSION_LIKE, other=SESSION_LIKE)
def test_session_ids_are_checked_and_sessions_stay_apart(tmp_path_factory, store, session, other):
    """A session id is valid or refused before a run row exists; what one session stores another cannot see."""
    journal = RunJournal(tmp_path_factory.mktemp("journal") / "runs.sqlite")
    try:
        check_session_id(session)
    except InvalidInputError:
        with pytest.raises(InvalidInputError):
            journal.create_run(new_run_id(), session, "hello", [])
        assert journal.runs(limit=10) == []
        return
    run_id = new_run_id()
    journal.create_run(run_id, session, "hello", [])
    assert [r.id for r in journal.runs(session=session)] == [run_id]
    artifact = store.put_value("text", "only for one session", session=session)
    assert store.get(artifact.id, session=session).id == artifact.id
    if other != session:
        with pytest.raises(ArtifactNotFoundError):
            store.get(artifact.id, session=other)
        assert journal.runs(session=other) == []


def test_the_fuzz_inputs_reach_the_decoders():
    """The properties above are only worth something if the cut and corrupted samples are sometimes accepted and
    sometimes refused: check both happen for a few formats (a harness that refuses everything proves nothing)."""
    outcomes: dict[str, set[bool]] = {}
    for name in ("png", "wav", "csv", "json"):
        kind, data = SAMPLES[name]
        for cut in (0.3, 0.7, 0.99, 1.0):
            try:
                codecs.inspect(kind, data[: int(len(data) * cut)], LIMITS)
                outcomes.setdefault(name, set()).add(True)
            except AnymodaError:
                outcomes.setdefault(name, set()).add(False)
    assert all(seen == {True, False} for seen in outcomes.values()), outcomes


@pytest.mark.parametrize(("name", "position", "byte"), [("gif", 63, 33), ("tiff", 130, 1)])
def test_a_corrupt_later_frame_is_refused_at_the_door_not_when_loaded(store, name, position, byte):
    """Found by the corruption property: one byte made a GIF (IndexError) and a TIFF (TypeError) that were
    stored, then failed to load, because only counting their frames reads past the first."""
    kind, data = SAMPLES[name]
    mutated = bytearray(data)
    mutated[position] = byte
    with pytest.raises(InvalidInputError, match=f"corrupt or truncated {name.upper()} image"):
        store.put(kind, bytes(mutated))
    assert store.count() == 0
