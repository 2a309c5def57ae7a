"""Audio classification, voice conversion, transformers Whisper and the time-series describer.

The model-backed tools run tiny random checkpoints built from their configs and saved with
save_pretrained (the same from_pretrained path real hub weights take); their checks are on shapes,
bounds, seeds and refusals. The time-series describer is checked on generated series whose trend,
period, noise, spikes and level shifts are known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.tooling.invoke import run_tool
from orchestrator.storage.media import AudioClip, TimeSeries
from orchestrator.models.pool import ModelPool
from tiny_tokenizers import CORPUS

RATE = 16_000


def tone(seconds: float, rate: int = RATE, frequency: float = 220.0, seed: int = 0) -> AudioClip:
    samples = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, samples.shape[0])
    return AudioClip((0.3 * np.sin(2 * np.pi * frequency * samples) + noise).astype(np.float32), rate)


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool(2**32)


# ------------------------------------------------------------------------------------------ audio classification

AST_LABELS = ["Speech", "Music", "Dog", "Siren"]


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory) -> Path:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-ast")
    # max_length 100 frames = a 1-second window, so a 2.5 s clip spans three windows.
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_length=100,
                       num_mel_bins=32, frequency_stride=8, time_stride=8, num_labels=len(AST_LABELS),
                       id2label=dict(enumerate(AST_LABELS)), label2id={l: i for i, l in enumerate(AST_LABELS)},
                       problem_type="multi_label_classification")
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(folder)
    return folder


def test_audio_classification_scores_windows_of_a_tiny_ast(tiny_ast, settings, store, pool):
    from tools.audio_analysis import AudioClassification

    tool = AudioClassification(model=str(tiny_ast), settings=settings, pool=pool)
    clip = store.put_value("audio", tone(2.5, rate=44_100))  # resampled to the extractor's 16 kHz
    run = run_tool(tool, {"audio": clip.id, "top_k": 3}, store=store)
    ranked, timeline = run.values["labels"], run.values["timeline"]
    assert len(ranked) == 3 and {item["label"] for item in ranked} <= set(AST_LABELS)
    assert all(0.0 <= item["score"] <= 1.0 for item in ranked)
    assert [item["score"] for item in ranked] == sorted((item["score"] for item in ranked), reverse=True)
    assert run.values["label"] == ranked[0]["label"]
    assert len(timeline) == 3 and timeline[0]["start"] == 0.0 and timeline[-1]["end"] == pytest.approx(2.5, abs=0.01)
    assert all(a["end"] == b["start"] for a, b in zip(timeline, timeline[1:]))
    metadata = run.outputs["labels"].metadata
    assert metadata["scoring"] == "sigmoid" and metadata["windows"] == 3 and metadata["model"] == str(tiny_ast)


def test_audio_classification_combines_windows_by_max_or_by_mean(tiny_ast, settings, pool):
    """Sigmoid scores: an event counts if any window has it (max); softmax: the duration-weighted mean."""
    from tools.audio_analysis import AudioClassification

    tool = AudioClassification(model=str(tiny_ast), settings=settings, pool=pool)
    rng = np.random.default_rng(5)
    thirds = [np.zeros(12_800, np.float32), rng.normal(0, 0.5, 12_800).astype(np.float32), tone(0.8, frequency=900.0).samples]
    whole = AudioClip(np.concatenate(thirds), RATE)  # 2.4 s: three windows of exactly these 0.8 s
    for scoring, combine in (("sigmoid", np.max), ("softmax", np.mean)):
        overall = {item["label"]: item["score"] for item in tool(audio=whole, top_k=4, scoring=scoring)["labels"]}
        parts = [{item["label"]: item["score"] for item in tool(audio=AudioClip(third, RATE), top_k=4, scoring=scoring)["labels"]}
                 for third in thirds]
        for label in AST_LABELS:
            assert overall[label] == pytest.approx(combine([part[label] for part in parts]), abs=2e-4), (scoring, label)
        if scoring == "softmax":
            assert sum(overall.values()) == pytest.approx(1.0, abs=1e-3)


def test_audio_classification_picks_sigmoid_for_multi_label_and_audioset_heads():
    from transformers import ASTConfig

    from tools.audio_analysis import is_multi_label

    assert is_multi_label(ASTConfig(num_labels=3, problem_type="multi_label_classification"))
    assert not is_multi_label(ASTConfig(num_labels=527, problem_type="single_label_classification"))
    assert is_multi_label(ASTConfig(num_labels=527))  # AudioSet checkpoints leave problem_type unset
    assert not is_multi_label(ASTConfig(num_labels=10))


def test_audio_classification_refuses_bad_arguments(tiny_ast, settings, store, pool):
    from tools.audio_analysis import AudioClassification

    tool = AudioClassification(model=str(tiny_ast), settings=settings, pool=pool)
    clip = store.put_value("audio", tone(0.5))
    with pytest.raises(InvalidInputError, match="'top_k'"):
        run_tool(tool, {"audio": clip.id, "top_k": 0}, store=store)
    with pytest.raises(InvalidInputError, match="'scoring'"):
        run_tool(tool, {"audio": clip.id, "scoring": "max"}, store=store)
    image = store.put_value("image", Image.new("RGB", (8, 8)))
    with pytest.raises(InvalidInputError, match="takes audio"):
        run_tool(tool, {"audio": image.id}, store=store)
    with pytest.raises(InvalidInputError, match="at least 100 ms"):
        tool(audio=tone(0.02))


# ------------------------------------------------------------------------------------------ voice conversion


def write_xvector_checkpoint(folder: Path, channels=(8, 8, 8, 8, 16), kernels=(5, 3, 3, 1, 1), mels: int = 24) -> None:
    """A random x-vector TDNN saved in SpeechBrain's embedding_model.ckpt layout (keys and shapes)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    state, inputs = {}, mels
    for block, (width, kernel) in enumerate(zip(channels, kernels)):
        state[f"blocks.{3 * block}.conv.weight"] = torch.randn(width, inputs, kernel, generator=generator) * 0.3
        state[f"blocks.{3 * block}.conv.bias"] = torch.randn(width, generator=generator) * 0.1
        for name, value in torch.nn.BatchNorm1d(width).state_dict().items():
            state[f"blocks.{3 * block + 2}.norm.{name}"] = value
        inputs = width
    state[f"blocks.{3 * len(channels) + 1}.w.weight"] = torch.randn(512, 2 * inputs, generator=generator) * 0.2
    state[f"blocks.{3 * len(channels) + 1}.w.bias"] = torch.zeros(512)
    torch.save(state, folder / "embedding_model.ckpt")
    (folder / "hyperparams.yaml").write_text(f"n_mels: {mels}\ntdnn_dilations: [1, 2, 3, 1, 1]\n")


@pytest.fixture(scope="module")
def tiny_speecht5_vc(tmp_path_factory) -> Path:
    import torch
    from transformers import SpeechT5Config, SpeechT5FeatureExtractor, SpeechT5ForSpeechToSpeech, SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-speecht5-vc")
    config = SpeechT5Config(vocab_size=81, hidden_size=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, conv_dim=(16,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, speech_decoder_prenet_units=32,
                            speech_decoder_prenet_layers=2, speech_decoder_postnet_units=32, speech_decoder_postnet_layers=2,
                            speech_decoder_postnet_kernel=3)
    model = SpeechT5ForSpeechToSpeech(config)
    # A random stop head fires within a step or two; silenced, the output runs to its length bound,
    # which the test can then check.
    torch.nn.init.constant_(model.speech_decoder_postnet.prob_out.bias, -20.0)
    model.save_pretrained(folder)
    SpeechT5FeatureExtractor().save_pretrained(folder)
    SpeechT5HifiGan(SpeechT5HifiGanConfig(upsample_initial_channel=16, upsample_rates=[4, 4, 4, 4], upsample_kernel_sizes=[8, 8, 8, 8],
                                          resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])).save_pretrained(folder / "vocoder")
    write_xvector_checkpoint(folder / "speaker_encoder")
    return folder


def test_voice_conversion_speaks_in_the_reference_voice_reproducibly(tiny_speecht5_vc, settings, store, pool):
    from tools.audio_analysis import VoiceConversion

    tool = VoiceConversion(model=str(tiny_speecht5_vc), settings=settings, pool=pool)
    source = store.put_value("audio", tone(0.5))
    reference = store.put_value("audio", tone(1.5, rate=22_050, frequency=150.0, seed=1))
    arguments = {"audio": source.id, "speaker": reference.id, "seed": 7, "max_length_ratio": 1.0}
    first = run_tool(tool, arguments, store=store)
    audio = first.values["audio"]
    assert isinstance(audio, AudioClip) and audio.sample_rate == RATE and audio.channels == 1
    assert 0.3 <= audio.duration_s <= 0.5 + 1e-6  # bounded by max_length_ratio x the input's 0.5 s
    assert np.abs(audio.samples).max() <= 1.0
    embedding = first.values["speaker_embedding"]
    assert embedding["dimensions"] == 512 and np.linalg.norm(embedding["vector"]) == pytest.approx(1.0, abs=1e-4)
    assert first.outputs["audio"].metadata["seed"] == 7 and first.outputs["audio"].metadata["speaker"] == "reference recording"

    again = run_tool(tool, arguments, store=store).values["audio"]
    other_seed = run_tool(tool, {**arguments, "seed": 8}, store=store).values["audio"]
    assert np.array_equal(again.samples, audio.samples)
    assert not np.array_equal(other_seed.samples, audio.samples)

    longer = tool(audio=tone(0.5), speaker=tone(1.5, frequency=150.0, seed=1), seed=7, max_length_ratio=2.0)["audio"]
    assert longer.duration_s == pytest.approx(2 * audio.duration_s, rel=0.05)
    # The returned x-vector is the same voice: given back as input, it reproduces the conversion.
    reused = tool(audio=tone(0.5), speaker_embedding=embedding, seed=7, max_length_ratio=1.0)["audio"]
    assert np.allclose(reused.samples, audio.samples, atol=1e-4)


def test_voice_conversion_needs_exactly_one_valid_target_voice(tiny_speecht5_vc, settings, pool):
    from tools.audio_analysis import VoiceConversion

    tool = VoiceConversion(model=str(tiny_speecht5_vc), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="either input 'speaker'"):
        tool(audio=tone(0.5))
    with pytest.raises(InvalidInputError, match="exactly one"):
        tool(audio=tone(0.5), speaker=tone(1.5), speaker_embedding=[0.1] * 512)
    with pytest.raises(InvalidInputError, match="'speaker_embedding' must have 512 numbers"):
        tool(audio=tone(0.5), speaker_embedding=[0.1] * 192)
    with pytest.raises(InvalidInputError, match="'speaker' is 0.50 s long"):
        tool(audio=tone(0.5), speaker=tone(0.5))
    with pytest.raises(InvalidInputError, match="'max_length_ratio'"):
        tool(audio=tone(0.5), speaker=tone(1.5), max_length_ratio=50)


def test_speaker_encoder_follows_speechbrain_layout_and_ignores_loudness(tmp_path):
    import torch

    from tools.audio_analysis import SpeakerEncoder

    write_xvector_checkpoint(tmp_path / "encoder")
    encoder = SpeakerEncoder(tmp_path / "encoder", "cpu")
    voice = tone(2.0, frequency=180.0).samples
    vector = encoder.embed(voice)
    assert vector.shape == (512,) and np.all(np.isfinite(vector))
    # Per-utterance mean normalisation of log filterbanks cancels a gain: a louder take is the same voice.
    assert np.allclose(encoder.embed(voice * 3.0), vector, atol=1e-3)
    assert not np.allclose(encoder.embed(tone(2.0, frequency=600.0).samples), vector, atol=1e-3)
    features = encoder.features(voice)
    assert features.shape == (201, 24)  # 10 ms hop (+1 centred frame), 24 bands
    assert torch.allclose(features.mean(dim=0), torch.zeros(24), atol=1e-4)

    state = torch.load(tmp_path / "encoder" / "embedding_model.ckpt")
    state.pop("blocks.2.norm.running_mean")
    torch.save(state, tmp_path / "encoder" / "embedding_model.ckpt")
    with pytest.raises(RuntimeError, match="running_mean"):  # a layout that differs fails loudly
        SpeakerEncoder(tmp_path / "encoder", "cpu")
    with pytest.raises(ModelNotAvailableError, match="embedding_model.ckpt"):
        SpeakerEncoder(tmp_path, "cpu")


def test_long_speech_is_split_at_its_quietest_moments():
    from tools.audio_analysis import split_at_pauses

    loud = tone(45.0).samples.copy()
    loud[int(16.0 * RATE) : int(16.2 * RATE)] = 0.0  # a pause in the second half of the first 20 s
    pieces = split_at_pauses(loud, RATE)
    assert np.array_equal(np.concatenate(pieces), loud)
    assert all(piece.shape[0] <= 20 * RATE for piece in pieces) and len(pieces) == 3
    assert 16.0 <= pieces[0].shape[0] / RATE <= 16.2


# ------------------------------------------------------------------------------------------ transformers Whisper

WHISPER_LANGUAGES = ("en", "de")


def whisper_tokenizer():
    """A WhisperTokenizer with Whisper's special tokens and 1501 timestamp tokens over a small byte-level BPE."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]  # pairs, not "a b" strings
    tokenizer = WhisperTokenizer(vocab=model["vocab"], merges=merges)
    specials = ["<|startoftranscript|>", *[f"<|{code}|>" for code in WHISPER_LANGUAGES], "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])  # timestamps follow <|notimestamps|>, as in Whisper
    return tokenizer


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-whisper")
    tokenizer = whisper_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    special = {"decoder_start_token_id": ids("<|startoftranscript|>"), "eos_token_id": ids("<|endoftext|>"),
               "pad_token_id": ids("<|endoftext|>"), "bos_token_id": ids("<|endoftext|>")}
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_source_positions=1500, max_target_positions=448, **special)
    model = WhisperForConditionalGeneration(config)
    # What a real checkpoint's generation_config.json holds. suppress_tokens is empty: the usual list
    # would leave a random model nothing but special tokens to say.
    model.generation_config = GenerationConfig(
        **special, is_multilingual=True, lang_to_id={f"<|{c}|>": ids(f"<|{c}|>") for c in WHISPER_LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50, max_length=64, suppress_tokens=[], begin_suppress_tokens=[ids("<|endoftext|>")],
        alignment_heads=[[0, 0], [0, 1]],
    )
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder


def test_whisper_backend_is_chosen_by_the_weights_folder(tiny_whisper, tmp_path, settings):
    from tools.speech import CTRANSLATE2, TRANSFORMERS, SpeechRecognition, guess_whisper_backend, whisper_backend

    assert whisper_backend(tiny_whisper) == TRANSFORMERS
    converted = tmp_path / "ct2"
    converted.mkdir()
    (converted / "model.bin").write_bytes(b"\0")
    (converted / "vocabulary.txt").write_text("a\n")
    (converted / "config.json").write_text("{}")
    assert whisper_backend(converted) == CTRANSLATE2
    assert guess_whisper_backend("openai/whisper-tiny") == TRANSFORMERS
    assert guess_whisper_backend("Systran/faster-whisper-tiny.en") == CTRANSLATE2
    tool = SpeechRecognition(model=str(tiny_whisper), settings=settings)
    assert tool.backend == TRANSFORMERS and "faster_whisper" not in tool.missing_runtime()
    neither = tmp_path / "not-whisper"
    neither.mkdir()
    (neither / "config.json").write_text('{"model_type": "wav2vec2"}')
    with pytest.raises(ModelNotAvailableError, match="holds no Whisper model"):
        SpeechRecognition(model=str(neither), settings=settings, pool=ModelPool(2**30))(audio=tone(1.0))


def test_transformers_whisper_transcribes_long_audio_window_by_window(tiny_whisper, settings, store, pool):
    from tools.speech import SpeechRecognition

    tool = SpeechRecognition(model=str(tiny_whisper), settings=settings, pool=pool)
    progress: list[tuple[float, float | None]] = []
    tool.progress_callback = lambda done, total, message: progress.append((done, total))
    clip = store.put_value("audio", tone(70.0))
    run = run_tool(tool, {"audio": clip.id, "beam_size": 1, "language": "en"}, store=store)
    segments = run.values["segments"]
    assert isinstance(run.values["text"], str) and segments
    assert all(0 <= s["start"] <= s["end"] <= 70.0 for s in segments)
    assert all(a["start"] <= b["start"] for a, b in zip(segments, segments[1:]))
    assert any(s["start"] >= 30.0 for s in segments) and any(s["start"] >= 60.0 for s in segments)  # three windows
    assert run.outputs["text"].metadata["language"] == "en" and run.outputs["text"].metadata["audio_seconds"] == 70.0
    assert progress[-1] == (70.0, 70.0) and len(progress) >= 3


def test_transformers_whisper_detects_the_language_and_times_words(tiny_whisper, settings, pool):
    from tools.speech import SpeechRecognition

    tool = SpeechRecognition(model=str(tiny_whisper), settings=settings, pool=pool)
    out = tool(audio=tone(4.0), beam_size=2, word_timestamps=True)
    segments = out["segments"]
    assert segments and all(s["end"] <= 4.0 for s in segments)
    for segment in segments:
        for word in segment.get("words", []):
            assert segment["start"] - 0.02 <= word["start"] <= word["end"] <= 4.0 and word["word"]
    assert any(segment.get("words") for segment in segments)
    with pytest.raises(InvalidInputError, match="unknown language 'xx'"):
        tool(audio=tone(1.0), language="xx")


def test_transformers_whisper_reports_the_detected_language(tiny_whisper, settings, store, pool):
    from tools.speech import SpeechRecognition

    tool = SpeechRecognition(model=str(tiny_whisper), settings=settings, pool=pool)
    run = run_tool(tool, {"audio": store.put_value("audio", tone(2.0)).id, "beam_size": 1}, store=store)
    metadata = run.outputs["segments"].metadata
    assert metadata["language"] in WHISPER_LANGUAGES and 0.5 <= metadata["language_probability"] <= 1.0


# ------------------------------------------------------------------------------------------ time series


def describe(values, *, timestamps=None, names=None, settings=None, **params):
    from tools.time_series import TimeSeriesDescription

    tool = TimeSeriesDescription(settings=settings)
    return tool(series=TimeSeries(np.asarray(values, dtype=np.float64), timestamps, names), **params)


def only(report):
    [channel] = report["channels"]
    return channel


@pytest.mark.parametrize(("slope", "direction"), [(0.04, "up"), (-0.03, "down"), (0.0, "flat")])
def test_trend_direction_and_slope(slope, direction, settings):
    t = np.arange(500)
    y = 10 + slope * t + np.random.default_rng(1).normal(0, 1.0, t.size)
    described = describe(y, settings=settings)
    trend = only(described["report"])["trend"]
    assert trend["direction"] == direction
    article = {"up": "an upward trend", "down": "a downward trend", "flat": "no clear trend"}[direction]
    assert article in described["text"]
    assert trend["slope_per_step"] == pytest.approx(slope, abs=0.003)
    if slope:
        assert trend["r_squared"] > 0.85 and trend["slope_interval_95"][0] <= slope <= trend["slope_interval_95"][1]
    else:
        assert trend["r_squared"] < 0.05


@pytest.mark.parametrize("period", [24.0, 17.5])
def test_period_is_recovered_within_five_percent(period, settings):
    t = np.arange(500)
    y = 3 * np.sin(2 * np.pi * t / period + 0.4) + np.random.default_rng(2).normal(0, 1.0, t.size)
    seasonality = only(describe(y, settings=settings)["report"])["seasonality"]
    assert seasonality["present"]
    assert seasonality["period_steps"] == pytest.approx(period, rel=0.05)
    assert seasonality["strength"] > 0.6 and seasonality["amplitude"] == pytest.approx(3.0, rel=0.15)


def test_spikes_shifts_and_noise_are_found_where_they_were_put(settings):
    t = np.arange(600)
    rng = np.random.default_rng(3)
    y = 0.01 * t + 4 * np.sin(2 * np.pi * t / 30) + rng.normal(0, 0.8, t.size)
    y[330:] += 6.0
    spikes = [57, 201, 480]
    y[spikes] += [9.0, -8.0, 10.0]
    out = describe(y, settings=settings)
    channel = only(out["report"])
    assert [s["index"] for s in channel["spikes"]["items"]] == spikes
    assert [s["deviation"] > 0 for s in channel["spikes"]["items"]] == [True, False, True]
    [shift] = channel["level_shifts"]["items"]
    assert abs(shift["index"] - 330) <= 3 and shift["size"] == pytest.approx(6.0, abs=0.8)
    assert channel["noise"]["sd"] == pytest.approx(0.8, rel=0.2)
    assert channel["seasonality"]["period_steps"] == pytest.approx(30, rel=0.05)
    assert channel["trend"]["slope_per_step"] == pytest.approx(0.01, abs=0.003)
    assert "at index 57 (" in out["text"] and f"index {shift['index']} (+6" in out["text"]


@pytest.mark.parametrize("seed", range(8))
def test_plain_noise_has_no_spikes_shifts_trend_or_cycle(seed, settings):
    sd = 0.5 + seed * 0.3
    y = np.random.default_rng(100 + seed).normal(5, sd, 400)
    channel = only(describe(y, settings=settings)["report"])
    assert channel["spikes"]["count"] == 0 and channel["level_shifts"]["count"] == 0
    assert not channel["seasonality"]["present"] and channel["trend"]["direction"] == "flat"
    assert channel["noise"]["sd"] == pytest.approx(sd, rel=0.2)


@pytest.mark.parametrize(("curve", "shape"), [
    (lambda t: np.exp(t / 40), "accelerating"),
    (lambda t: 0.5 * t, "straight"),  # steep: 2.5 steps' rise between a point and its neighbours' median
    (lambda t: np.abs(t - 100) * 0.1, "reversing"),
])
def test_smooth_trends_are_neither_spikes_nor_level_shifts(curve, shape, settings):
    t = np.arange(200, dtype=np.float64)
    y = curve(t) + np.random.default_rng(6).normal(0, 0.1, t.size)
    channel = only(describe(y, settings=settings)["report"])
    assert channel["spikes"]["count"] == 0 and channel["level_shifts"]["count"] == 0
    assert channel["trend"]["shape"] == shape


def test_multichannel_series_with_timestamps_through_run_tool(settings, store, pool):
    from tools.time_series import TimeSeriesDescription

    t = np.arange(300)
    rng = np.random.default_rng(4)
    temperature = 0.05 * t + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, t.size)
    temperature[100] += 8
    load = rng.normal(5, 1, t.size)
    load[150:] -= 4
    stamps = 1_700_000_000 + 3600 * t
    series = store.put_value("time_series", TimeSeries(np.column_stack([temperature, load]), stamps, ["temperature", "load"]))
    tool = TimeSeriesDescription(settings=settings, pool=pool)
    run = run_tool(tool, {"series": series.id}, store=store)
    first, second = run.values["report"]["channels"]
    assert first["channel"] == "temperature" and second["channel"] == "load"
    assert first["trend"]["direction"] == "up" and first["seasonality"]["period_time"] == pytest.approx(24 * 3600, rel=0.05)
    assert first["spikes"]["items"][0] == {**first["spikes"]["items"][0], "index": 100, "time": 1_700_360_000}
    assert abs(second["level_shifts"]["items"][0]["index"] - 150) <= 3 and second["trend"]["direction"] == "flat"
    text = run.values["text"]
    assert text.startswith("temperature (300 points") and "\nload (300 points" in text and "t=1700360000 (index 100)" in text
    plot = run.values["plot"]
    assert isinstance(plot, Image.Image) and plot.size[0] > 400 and plot.size[1] > 300
    assert run.outputs["plot"].metadata["method"] == "statistical"
    assert json.dumps(run.values["report"])  # plain JSON all the way down


def test_time_series_inputs_are_checked(settings):
    from tools.time_series import TimeSeriesDescription

    with pytest.raises(InvalidInputError, match="non-finite"):
        TimeSeries(np.array([1.0, 2.0, math.nan, 4.0]))
    with pytest.raises(InvalidInputError, match="at least 8"):
        describe(np.arange(5.0), settings=settings)
    with pytest.raises(InvalidInputError, match="'period'"):
        describe(np.arange(40.0), period=30, settings=settings)
    with pytest.raises(InvalidInputError, match="'spike_threshold'"):
        describe(np.arange(40.0), spike_threshold=1.0, settings=settings)
    assert TimeSeriesDescription(settings=settings).available().source.origin == "packaged"
    assert not TimeSeriesDescription(model="arima", settings=settings).available()


@pytest.mark.parametrize("exponent", [-300, -200, -120, 120, 200, 300])
def test_any_magnitude_is_described_as_at_ordinary_scale(exponent, settings):
    """Squares overflow past 1e154 and underflow below 1e-154: the describer works at a power-of-two scale
    and reports in the series' own units, so a series and the same series times 10^k read alike."""
    t = np.arange(120, dtype=np.float64)
    y = 0.02 * t + np.sin(2 * np.pi * t / 12) + np.random.default_rng(8).normal(0, 0.1, t.size)
    y[60] += 5
    ordinary = only(describe(y, settings=settings)["report"])
    factor = 10.0**exponent
    scaled = only(describe(y * factor, settings=settings)["report"])
    assert json.dumps(scaled, allow_nan=False)  # every number finite
    assert scaled["trend"]["direction"] == ordinary["trend"]["direction"] == "up"
    assert scaled["trend"]["slope_per_step"] == pytest.approx(ordinary["trend"]["slope_per_step"] * factor, rel=1e-3)
    assert scaled["seasonality"]["period_steps"] == pytest.approx(ordinary["seasonality"]["period_steps"], abs=0.01)
    assert [s["index"] for s in scaled["spikes"]["items"]] == [s["index"] for s in ordinary["spikes"]["items"]] == [60]
    assert scaled["spikes"]["items"][0]["value"] == pytest.approx(y[60] * factor, rel=1e-3)
    assert scaled["noise"]["sd"] == pytest.approx(ordinary["noise"]["sd"] * factor, rel=1e-3)
    assert (scaled["max"], scaled["min"]) == pytest.approx((ordinary["max"] * factor, ordinary["min"] * factor), rel=1e-3)


def test_a_constant_series_has_no_spikes_from_rounding(settings):
    """The last bit of a constant series once made 13 'spikes' with z = inf, which no JSON could store."""
    for level in (1.0, -3.7, 1e12, 0.0):
        channel = only(describe(np.full(40, level), settings=settings)["report"])
        assert channel["spikes"]["count"] == 0 and channel["level_shifts"]["count"] == 0, level
        assert channel["trend"]["direction"] == "flat"
        assert json.dumps(channel, allow_nan=False)


@pytest.mark.parametrize("values", [[1e308, -1e308] * 10, [0.0] * 19 + [1.7e308]])
def test_values_too_large_to_compare_are_refused_before_running(values, settings, store, pool):
    from tools.time_series import TimeSeriesDescription

    series = store.put_value("time_series", TimeSeries(np.array(values)))
    before = store.count()
    with pytest.raises(InvalidInputError, match=r"values must be below 1\.07e\+301 in magnitude") as caught:
        run_tool(TimeSeriesDescription(settings=settings, pool=pool), {"series": series.id}, store=store)
    assert "\n" not in str(caught.value) and "at index" in str(caught.value)
    assert store.count() == before  # no output stored for a refused run
