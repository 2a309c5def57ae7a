"""Native-path data generators: what they make must match the attributes they declare.

Each property is measured from the output itself (slope sign, FFT peak, residual spikes, pixel
colours, OCR, Whisper transcription), never read back from the generator's own bookkeeping.
"""

from __future__ import annotations

import re
import time
from difflib import SequenceMatcher

import numpy as np
import pytest

from orchestrator.errors import InvalidInputError
from orchestrator.native.datasets import QAItem, parse_choice, parse_number, parse_yes_no
from orchestrator.native.datasets import scenes as scene_data
from orchestrator.native.datasets import speech as speech_data
from orchestrator.native.datasets.timeseries import (
    QA_KINDS,
    describe_series,
    make_series,
    score_answer,
    timeseries_qa,
)
from orchestrator.native.encoders import TimeSeriesPatchEncoder

from conftest import requires_offline_extra

# ---------------------------------------------------------------------------------------------- time series


def _fitted_change(values: np.ndarray) -> float:
    """End-to-end change of the least-squares line through the observed values."""
    steps = np.arange(values.shape[0])
    seen = ~np.isnan(values)
    return float(np.polyfit(steps[seen], values[seen], 1)[0] * (values.shape[0] - 1))


def test_series_trend_matches_the_measured_slope():
    counts = {"up": 0, "down": 0, "flat": 0}
    for seed in range(150):
        values, attributes = make_series(np.random.default_rng(seed), 256)
        change = _fitted_change(values) / attributes.scale  # in shape units: trends change by >= 3.5, flat by 0
        counts[attributes.trend] += 1
        if attributes.trend == "up":
            assert change > 1.5, (seed, change)
        elif attributes.trend == "down":
            assert change < -1.5, (seed, change)
        else:
            assert abs(change) < 1.0, (seed, change)
    assert min(counts.values()) > 30  # every direction is drawn


def test_declared_slope_offset_and_scale_are_those_of_the_series():
    values, attributes = make_series(np.random.default_rng(3), 200, trend="down", seasonal=False, spikes=[],
                                     level_shifts=[], offset=40.0, scale=2.5)
    assert (attributes.trend, attributes.offset, attributes.scale) == ("down", 40.0, 2.5)
    measured = np.polyfit(np.arange(200), values, 1)
    assert measured[0] == pytest.approx(attributes.slope, rel=0.05)
    assert measured[1] == pytest.approx(40.0, abs=0.3)
    residual = values - np.polyval(measured, np.arange(200))
    assert residual.std() == pytest.approx(attributes.noise, rel=0.2)


def test_seasonal_series_peak_at_the_declared_period():
    for seed in range(40):
        values, attributes = make_series(np.random.default_rng(seed), 256, seasonal=True, spike_count=0)
        detrended = values - np.polyval(np.polyfit(np.arange(256), values, 1), np.arange(256))
        spectrum = np.abs(np.fft.rfft(detrended * np.hanning(256)))
        peak = int(np.argmax(spectrum[1:])) + 1
        assert abs(peak - 256 / attributes.period) <= 1.0, (seed, peak, attributes.period)
        assert attributes.amplitude > 0
    for seed in range(20):
        values, attributes = make_series(np.random.default_rng(seed), 256, seasonal=False, spike_count=0, trend="flat")
        spectrum = np.abs(np.fft.rfft(values - values.mean()))
        # Without a cycle no frequency stands out from the noise floor.
        assert spectrum[1:].max() < 6 * np.median(spectrum[1:]), seed
        assert attributes.period is None and attributes.amplitude == 0


def test_spikes_and_level_shifts_sit_where_declared():
    from scipy.ndimage import median_filter

    for seed in range(60):
        values, attributes = make_series(np.random.default_rng(seed), 256, spike_count=int(seed % 4))
        residual = np.abs(values - median_filter(values, size=5, mode="nearest")) / attributes.scale
        declared = sorted(p for p, _ in attributes.spikes)
        found = sorted(int(i) for i in np.argsort(residual)[::-1][: len(declared)])
        assert found == declared, (seed, found, declared)
        if declared:  # spikes stand well above everything else
            others = np.delete(residual, declared)
            assert residual[declared].min() > 2 * others.max(), seed
        for position, height in attributes.spikes:
            assert np.sign(values[position] - np.median(values[max(0, position - 3): position + 4])) == np.sign(height)
    shifted = 0
    for seed in range(80):
        values, attributes = make_series(np.random.default_rng(seed), 256, seasonal=False, spike_count=0)
        for position, size in attributes.level_shifts:
            shifted += 1
            before = values[position - 10: position] - attributes.slope * np.arange(position - 10, position)
            after = values[position: position + 10] - attributes.slope * np.arange(position, position + 10)
            assert after.mean() - before.mean() == pytest.approx(size, abs=4 * attributes.noise), seed
        if attributes.trend == "flat":
            assert attributes.level_shifts == []
    assert shifted > 5


def test_missing_values_are_nan_where_declared_and_never_on_a_spike():
    values, attributes = make_series(np.random.default_rng(1), 128, missing_fraction=0.1, spike_count=2)
    assert np.flatnonzero(np.isnan(values)).tolist() == attributes.missing and len(attributes.missing) == 13
    assert not {p for p, _ in attributes.spikes} & set(attributes.missing)
    features = TimeSeriesPatchEncoder().encode(values)
    assert "13 missing" in features.prefix_text
    assert features.features[:, 16:].sum() == 128 - 13


def test_series_are_deterministic_from_the_seed():
    a = timeseries_qa(12, seed=5)
    b = timeseries_qa(12, seed=5)
    c = timeseries_qa(12, seed=6)
    assert all(np.array_equal(x, y, equal_nan=True) and p == q for (x, p), (y, q) in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y, equal_nan=True) for (x, _), (y, _) in zip(a, c, strict=True))
    kinds = [item.kind for _, item in timeseries_qa(60, seed=0)]
    assert {kind: kinds.count(kind) for kind in QA_KINDS} == dict.fromkeys(QA_KINDS, 10)
    assert len({item.question for _, item in timeseries_qa(60, seed=0)}) > 12  # several phrasings


def test_series_qa_answers_follow_the_series_and_score():
    for values, item in timeseries_qa(60, seed=1, length=128):
        truth = item.attributes
        assert score_answer(item, item.answer), item
        assert len(values) == truth["length"] == 128
        if item.kind == "spike_position":
            position = int(item.answer)
            assert len(truth["spikes"]) == 1
            assert abs(values[position] - np.nanmedian(values)) > 2 * truth["scale"]
            assert score_answer(item, f"At step {position + 8}.") and not score_answer(item, str(position + 9))
            assert score_answer(item, str(position + 9), tolerance=9)
        elif item.kind == "trend":
            wrong = {"up": "down", "down": "flat", "flat": "up"}[item.answer]
            assert not score_answer(item, wrong) and not score_answer(item, "up or down")
            assert score_answer(item, {"up": "It is increasing.", "down": "Falling.", "flat": "It stays stable."}[item.answer])
        elif item.kind == "seasonality":
            assert item.answer == ("yes" if truth["seasonal"] else "no")
            assert not score_answer(item, "no" if truth["seasonal"] else "yes") and not score_answer(item, "maybe")
        elif item.kind == "period":
            assert truth["seasonal"] and score_answer(item, f"About {truth['period'] + 1} steps.")
            assert not score_answer(item, str(truth["period"] * 2))
        elif item.kind == "spike_count":
            assert int(item.answer) == len(truth["spikes"])
            assert not score_answer(item, str(len(truth["spikes"]) + 1))
        elif item.kind == "description":
            assert item.answer.startswith("The series")
            flipped = "The series rises steadily" if truth["trend"] != "up" else "The series falls steadily"
            assert not score_answer(item, flipped + item.answer.split("steadily" if "steadily" in item.answer else "flat", 1)[1])


def test_description_names_the_attributes():
    _, attributes = make_series(np.random.default_rng(0), 256, trend="up", seasonal=True, period=20,
                                spikes=[(50, 5.0), (120, 5.0)], level_shifts=[(80, 1.0)])
    assert describe_series(attributes) == ("The series rises steadily, repeating a cycle every 20 steps and has 2 spikes, "
                                           "near steps 50 and 120; its level changes suddenly at step 80.")
    item = QAItem("Describe this time series.", "", "description", {"trend": "up", "seasonal": False})
    assert score_answer(item, "It goes up, with no repeating cycle.")
    assert not score_answer(item, "It goes up and repeats a cycle every 10 steps.")


def test_answer_parsers():
    assert parse_number("No, there are 2 spikes") == 2 and parse_number("none") == 0 and parse_number("three") == 3
    assert parse_number("I cannot tell") is None
    assert parse_yes_no("Yes, it does.") is True and parse_yes_no("There is no cycle.") is False
    assert parse_yes_no("It doesn't repeat") is False and parse_yes_no("yes and no") is None
    assert parse_choice("going upward", {"up": ("upward",), "down": ("downward",)}) == "up"
    assert parse_choice("upward then downward", {"up": ("upward",), "down": ("downward",)}) is None


def test_series_generator_refuses_bad_requests():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="cannot force colour"):
        make_series(rng, 64, colour="red")
    with pytest.raises(InvalidInputError, match="length must be an integer from 32"):
        make_series(rng, 8)
    with pytest.raises(InvalidInputError, match="trend must be one of"):
        make_series(rng, 64, trend="sideways")
    with pytest.raises(InvalidInputError, match="period must be an integer from 4 to length/4"):
        make_series(rng, 64, seasonal=True, period=40)
    with pytest.raises(InvalidInputError, match="rng must be a numpy Generator"):
        make_series(0, 64)
    with pytest.raises(InvalidInputError, match="kinds must be among"):
        timeseries_qa(2, 0, kinds=("colour",))
    with pytest.raises(InvalidInputError, match="non-negative integer"):
        timeseries_qa(-1, 0)


# ---------------------------------------------------------------------------------------------- scenes

_ZONES = {"left": ((0, 0.35), (0.35, 0.65)), "right": ((0.65, 1), (0.35, 0.65)), "top": ((0.35, 0.65), (0, 0.35)),
          "bottom": ((0.35, 0.65), (0.65, 1)), "centre": ((0.35, 0.65), (0.35, 0.65))}


def test_scene_pixels_have_the_declared_colours_at_the_declared_places():
    for seed in range(25):
        image, scene = scene_data.render_scene(np.random.default_rng(seed), 224)
        pixels = np.asarray(image).astype(int)
        size = image.width
        claimed = np.zeros(pixels.shape[:2], bool)
        shapes = [o.shape for o in scene.objects]
        assert len(set(shapes)) == len(shapes) and len({o.region for o in scene.objects}) == len(shapes)
        for obj in scene.objects:
            rgb = np.array(scene_data.COLOURS[obj.colour])
            cx, cy = obj.centre
            assert (pixels[cy, cx] == rgb).all(), (seed, obj)
            (x_lo, x_hi), (y_lo, y_hi) = _ZONES[obj.region]
            assert x_lo * size < cx < x_hi * size and y_lo * size < cy < y_hi * size, (seed, obj)
            x0, y0, x1, y1 = obj.box
            inside = (pixels[y0:y1 + 1, x0:x1 + 1] == rgb).all(-1)
            assert inside.mean() > 0.4, (seed, obj.shape, inside.mean())  # a filled shape, not an outline
            claimed[y0:y1 + 1, x0:x1 + 1] = True
        if scene.word:
            x0, y0, x1, y1 = scene.word_box
            dark = pixels.sum(-1) < 200
            assert dark[y0:y1, x0:x1].sum() > 30 and not dark[~_box_mask(pixels.shape, scene.word_box)].any()
            claimed[y0:y1 + 1, x0:x1 + 1] = True
        # Everything no object or word claims is background.
        assert (pixels[~claimed] == np.array(scene.background)).all(), seed


def _box_mask(shape, box) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
    return mask


def test_scene_examples_are_deterministic_and_score_their_own_answers():
    first = scene_data.scene_examples(6, seed=2)
    again = scene_data.scene_examples(6, seed=2)
    assert [e.caption for e in first] == [e.caption for e in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again, strict=True))
    assert [e.caption for e in scene_data.scene_examples(6, seed=3)] != [e.caption for e in first]
    kinds = set()
    for example in scene_data.scene_examples(30, seed=0):
        for item in example.qa:
            kinds.add(item.kind)
            assert scene_data.score_answer(item, item.answer), item
            assert not scene_data.score_answer(item, "I do not know")
        by_kind = {item.kind: item for item in example.qa}
        colour = by_kind["colour"]
        other = next(c for c in scene_data.COLOURS if c != colour.answer)
        assert not scene_data.score_answer(colour, other) and not scene_data.score_answer(colour, f"{colour.answer} or {other}")
        assert scene_data.score_answer(colour, f"It is {colour.answer}.")
        assert scene_data.score_answer(by_kind["count"], f"There are {len(example.scene.objects)} shapes.")
        assert not scene_data.score_answer(by_kind["count"], str(len(example.scene.objects) + 1))
        position = by_kind["position"]
        said = {"centre": "in the middle", "top": "at the top"}.get(position.answer, position.answer)
        assert scene_data.score_answer(position, said)
        caption = by_kind["caption"]
        first_object = example.scene.objects[0]
        recoloured = next(c for c in scene_data.COLOURS if c != first_object.colour)
        assert not scene_data.score_answer(caption, caption.answer.replace(first_object.colour, recoloured, 1))
        if len(example.scene.objects) > 1:
            assert not scene_data.score_answer(caption, caption.answer.split(",")[0].split(" and ")[0])
        assert ("word" in by_kind) == (example.scene.word is not None)
        if example.scene.word:
            assert scene_data.score_answer(by_kind["word"], f'It says "{example.scene.word.lower()}".')
    assert kinds == set(scene_data.QA_KINDS)


def test_scene_generator_refuses_bad_requests():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="size must be an integer from 64"):
        scene_data.render_scene(rng, 10)
    with pytest.raises(InvalidInputError, match="num_objects must be 1 to 4"):
        scene_data.render_scene(rng, num_objects=5)
    with pytest.raises(InvalidInputError, match="unknown question kind"):
        scene_data.score_answer(QAItem("?", "x", "smell", {}), "x")


@requires_offline_extra
def test_the_written_word_is_readable_by_ocr():
    from rapidocr_onnxruntime import RapidOCR

    ocr = RapidOCR()
    for seed in range(2):
        image, scene = scene_data.render_scene(np.random.default_rng(seed), 224, with_word=True)
        found, _ = ocr(np.asarray(image))
        assert scene.word in [text for _, text, _ in (found or [])], (scene.word, found)


# ---------------------------------------------------------------------------------------------- speech


def test_default_sentences_are_varied_and_fixed():
    sentences = speech_data.default_sentences()
    assert len(sentences) == len(set(sentences)) == 300 and sentences == speech_data.default_sentences()
    assert any(s.endswith("?") for s in sentences[:10])
    assert any("o'clock" in s or "miles" in s or "chairs" in s for s in sentences[:10])
    assert all(3 <= len(s.split()) <= 12 for s in sentences)
    with pytest.raises(InvalidInputError, match="at most"):
        speech_data.default_sentences(5000)


def test_spoken_sentences_validate_before_loading_a_voice(tmp_path):
    with pytest.raises(InvalidInputError, match="sentence 1 is empty"):
        speech_data.spoken_sentences(1, 0, tmp_path, sentences=["Hello there.", "  "])
    with pytest.raises(InvalidInputError, match="asked for 3 but only 2"):
        speech_data.spoken_sentences(3, 0, tmp_path, sentences=["One.", "Two."])
    with pytest.raises(InvalidInputError, match="speed"):
        speech_data.spoken_sentences(1, 0, tmp_path, speed=9)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@requires_offline_extra
def test_spoken_sentences_say_their_transcripts_and_are_cached(tmp_path, monkeypatch):
    import soundfile

    from orchestrator.native.encoders import build_encoder
    from tools.speech import SpeechRecognition

    spoken = speech_data.spoken_sentences(2, seed=4, out_dir=tmp_path, progress=False)
    assert [s.transcript for s in spoken] == [speech_data.default_sentences()[i]
                                               for i in np.random.default_rng(4).permutation(300)[:2]]
    recogniser = SpeechRecognition()
    for sentence in spoken:
        info = soundfile.info(str(sentence.path))
        assert info.samplerate == 16_000 and info.channels == 1
        assert sentence.duration_s == pytest.approx(info.frames / 16_000)
        assert 0.15 * len(_words(sentence.transcript)) < sentence.duration_s < 1.0 * len(_words(sentence.transcript)) + 1
        heard = _words(recogniser(audio=sentence.audio(), beam_size=1)["text"])
        # Whisper tiny.en mishears a word now and then ("windy and cloudy" -> "Wendy and Claudia"),
        # and Piper's voice varies from run to run: most words, not all, must come back.
        assert SequenceMatcher(None, heard, _words(sentence.transcript)).ratio() >= 0.6, (heard, sentence.transcript)
        others = [s.transcript for s in spoken if s is not sentence]
        assert all(SequenceMatcher(None, heard, _words(other)).ratio() < 0.5 for other in others)

    # The second call reads the cached wavs: no synthesis at all.
    def refuse(*_args, **_kwargs):
        raise AssertionError("synthesised again")

    monkeypatch.setattr(speech_data, "_synthesise", refuse)
    started = time.perf_counter()
    again = speech_data.spoken_sentences(2, seed=4, out_dir=tmp_path, progress=False)
    assert time.perf_counter() - started < 1.0
    assert [(s.path, s.transcript) for s in again] == [(s.path, s.transcript) for s in spoken]
    monkeypatch.undo()

    # The caller's own sentences; a corrupt cached wav is made again.
    own = speech_data.spoken_sentences(1, seed=0, out_dir=tmp_path, sentences=["Seven green apples."], progress=False)
    assert own[0].transcript == "Seven green apples."
    own[0].path.write_bytes(b"RIFF")
    remade = speech_data.spoken_sentences(1, seed=0, out_dir=tmp_path, sentences=["Seven green apples."], progress=False)
    assert remade[0].path == own[0].path and soundfile.info(str(remade[0].path)).frames > 8_000

    features = build_encoder("whisper-ct2").encode(spoken[0].audio())
    assert features.features.shape[0] == int(np.ceil(np.ceil(spoken[0].duration_s * 50) / 4))
