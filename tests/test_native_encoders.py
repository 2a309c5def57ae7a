"""Native-path encoders and the feature cache.

The packaged EfficientNet-Lite0 and Whisper tiny.en (CTranslate2) run with their real weights; the
Hugging Face paths (CLIP, SigLIP, transformers Whisper) load tiny random checkpoints saved to a tmp
folder through the same from_pretrained path a hub id takes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import requires_offline_extra
from PIL import Image

from orchestrator.config import current_settings
from orchestrator.errors import InvalidInputError
from orchestrator.storage.media import AudioClip, TimeSeries
from orchestrator.native.encoders import (
    FeatureEncoder,
    MediaFeatures,
    TimeSeriesPatchEncoder,
    average_pool_frames,
    build_encoder,
)
from orchestrator.native.feature_cache import FeatureCache, canonical_bytes, encode_all, encode_cached
from orchestrator.storage.sample_inputs import eagle_photo_path


def _tone(seconds: float, rate: int = 22_050, frequency: float = 440.0) -> AudioClip:
    t = np.arange(int(seconds * rate)) / rate
    return AudioClip((0.3 * np.sin(2 * np.pi * frequency * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), rate)


def _picture(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- tiny HF checkpoints


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    root = tmp_path_factory.mktemp("tiny-native-encoders")
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8)
    clip_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    folders = {}

    folders["clip"] = root / "clip-vision"
    CLIPVisionModel(CLIPVisionConfig(**vision)).save_pretrained(folders["clip"])
    clip_processor.save_pretrained(folders["clip"])

    # A whole CLIP checkpoint (text + vision), as openai/clip-vit-base-patch32 is published.
    folders["clip-full"] = root / "clip-full"
    full = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                       vocab_size=99, max_position_embeddings=16), vision_config=vision, projection_dim=16)
    CLIPModel(full).save_pretrained(folders["clip-full"])
    clip_processor.save_pretrained(folders["clip-full"])

    folders["siglip"] = root / "siglip-vision"
    SiglipVisionModel(SiglipVisionConfig(**vision)).save_pretrained(folders["siglip"])
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folders["siglip"])

    # Whisper with a 2-second window: 200 mel frames -> 100 encoder positions.
    folders["whisper"] = root / "whisper"
    config = WhisperConfig(vocab_size=120, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_mel_bins=80,
                           max_source_positions=100, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    WhisperForConditionalGeneration(config).save_pretrained(folders["whisper"])
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folders["whisper"])

    folders["whisper-mismatched"] = root / "whisper-mismatched"
    WhisperForConditionalGeneration(config).save_pretrained(folders["whisper-mismatched"])
    WhisperFeatureExtractor(feature_size=80, chunk_length=3).save_pretrained(folders["whisper-mismatched"])
    return folders


def test_clip_tower_gives_penultimate_patch_tokens_without_cls(tiny):
    from transformers import CLIPImageProcessor, CLIPVisionModel

    encoder = build_encoder(f"clip:{tiny['clip']}")
    assert isinstance(encoder, FeatureEncoder)
    assert encoder.modality == "image" and encoder.feature_dim == 32
    assert encoder.identity == f"clip:{tiny['clip']}"
    image = _picture()
    out = encoder.encode(image)
    assert out.modality == "image" and out.features.shape == (16, 32)  # (32 / 8)^2 patches, CLS dropped
    assert out.features.dtype == torch.float32 and not out.features.requires_grad
    assert out.mask.dtype == torch.bool and out.mask.all() and out.mask.shape == (16,)

    model = CLIPVisionModel.from_pretrained(tiny["clip"]).eval()
    pixels = CLIPImageProcessor.from_pretrained(tiny["clip"])(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(out.features, hidden[-2][0, 1:])

    last = build_encoder(f"clip:{tiny['clip']}", layer=-1)
    assert last.identity.endswith("@layer-1")
    torch.testing.assert_close(last.encode(image).features, hidden[-1][0, 1:])
    assert build_encoder(last.identity).identity == last.identity  # identities rebuild their encoder


def test_clip_tower_loads_from_a_whole_clip_checkpoint(tiny):
    encoder = build_encoder(f"clip:{tiny['clip-full']}")
    assert encoder.feature_dim == 32
    assert encoder.encode(_picture()).features.shape == (16, 32)


def test_siglip_tower_keeps_every_patch(tiny):
    encoder = build_encoder(f"siglip:{tiny['siglip']}")
    out = encoder.encode(_picture(48))
    assert out.features.shape == (16, 32)  # SigLIP has no CLS token to drop
    assert not torch.allclose(out.features, encoder.encode(_picture(48, seed=1)).features)


def test_vision_tower_refuses_bad_input_and_options(tiny, tmp_path):
    encoder = build_encoder(f"clip:{tiny['clip']}")
    with pytest.raises(InvalidInputError, match="PIL image"):
        encoder.encode(np.zeros((8, 8, 3)))
    with pytest.raises(InvalidInputError, match="does not exist"):
        encoder.encode(tmp_path / "missing.png")
    with pytest.raises(InvalidInputError, match="layer 7 does not exist"):
        build_encoder(f"clip:{tiny['clip']}", layer=7)
    with pytest.raises(InvalidInputError, match="no clip vision config"):
        build_encoder(f"clip:{tiny['whisper']}")


def test_transformers_whisper_trims_to_the_audio_and_pools(tiny):
    encoder = build_encoder(f"whisper:{tiny['whisper']}")
    assert encoder.identity == f"whisper:{tiny['whisper']}@pool4" and encoder.feature_dim == 16
    assert build_encoder(encoder.identity).identity == encoder.identity
    short = encoder.encode(_tone(1.3))
    assert short.modality == "audio" and short.features.shape == (math.ceil(65 / 4), 16)
    unpooled = build_encoder(f"whisper:{tiny['whisper']}", pool_stride=1)
    frames = unpooled.encode(_tone(1.3)).features
    assert frames.shape == (65, 16)  # 1.3 s at 50 frames per second
    torch.testing.assert_close(short.features, average_pool_frames(frames, 4))
    # Longer than the 2 s window: encoded window by window, 150 frames in all.
    assert unpooled.encode(_tone(3.0)).features.shape == (150, 16)
    torch.testing.assert_close(unpooled.encode(_tone(3.0)).features[:100], unpooled.encode(_tone(2.0)).features)
    with pytest.raises(InvalidInputError, match="window gives 150 encoder frames"):
        build_encoder(f"whisper:{tiny['whisper-mismatched']}").encode(_tone(1.0))


def test_average_pool_frames_averages_a_short_last_run():
    frames = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    torch.testing.assert_close(average_pool_frames(frames, 2), torch.tensor([[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]))
    assert average_pool_frames(frames, 1) is frames


def test_whisper_refuses_bad_audio_and_options(tiny, tmp_path):
    encoder = build_encoder(f"whisper:{tiny['whisper']}", max_seconds=5)
    with pytest.raises(InvalidInputError, match="at least 0.05 s"):
        encoder.encode(AudioClip(np.zeros(100, np.float32), 16_000))
    with pytest.raises(InvalidInputError, match="over this encoder's max_seconds of 5"):
        encoder.encode(AudioClip(np.zeros(16_000 * 6, np.float32), 16_000))
    with pytest.raises(InvalidInputError, match="AudioClip"):
        encoder.encode([0.0] * 16_000)
    (tmp_path / "noise.wav").write_bytes(b"not a wav")
    with pytest.raises(InvalidInputError, match="not a readable audio file"):
        encoder.encode(tmp_path / "noise.wav")
    with pytest.raises(InvalidInputError, match="pool_stride"):
        build_encoder(f"whisper:{tiny['whisper']}", pool_stride=0)
    with pytest.raises(InvalidInputError, match="is a transformers model, not ctranslate2"):
        build_encoder("whisper-ct2", model=str(tiny["whisper"]))


# ---------------------------------------------------------------------------------------------- packaged real weights


@requires_offline_extra
def test_efficientnet_lite0_feature_map_is_what_the_classifier_pools():
    from tools.image_classification import imagenet_labels

    encoder = build_encoder("efficientnet-lite0")
    assert encoder.identity == "efficientnet-lite0" and encoder.feature_dim == 1280
    eagle = Image.open(eagle_photo_path())  # the real photo the package ships
    out = encoder.encode(eagle)
    assert out.features.shape == (49, 1280) and out.features.dtype == torch.float32 and out.mask.all()
    assert not out.features.requires_grad
    # Mean-pooling the 7x7 tokens and applying the classifier head must recover the model's own answer.
    module = encoder._loaded()
    with torch.no_grad():
        logits = module._fc(out.features.mean(0))
    top = [imagenet_labels()[i] for i in logits.topk(3).indices]
    assert any("eagle" in label for label in top), top
    larger = build_encoder("efficientnet-lite0@320px")
    assert larger.identity == "efficientnet-lite0@320px"
    assert larger.encode(eagle).features.shape == (100, 1280)
    torch.testing.assert_close(encoder.encode(eagle).features, out.features)
    with pytest.raises(InvalidInputError, match="multiple of 32"):
        build_encoder("efficientnet-lite0", image_size=100)


@requires_offline_extra
def test_whisper_ct2_encoder_keeps_the_frames_that_hold_audio():
    import ctranslate2

    encoder = build_encoder("whisper-ct2")
    assert encoder.identity == "whisper-tiny.en-ct2@pool4" and encoder.feature_dim == 384
    assert build_encoder(encoder.identity).identity == encoder.identity
    assert build_encoder("whisper-ct2", pool_stride=2).identity == "whisper-tiny.en-ct2@pool2"
    clip = _tone(3.3)
    out = encoder.encode(clip)
    assert out.modality == "audio" and out.features.shape == (math.ceil(165 / 4), 384) and out.mask.all()

    frames = build_encoder("whisper-ct2@pool1").encode(clip).features
    assert frames.shape == (165, 384)
    model = encoder._loaded()
    from faster_whisper.transcribe import pad_or_trim

    mel = pad_or_trim(model.feature_extractor(clip.for_model(16_000)))
    full = np.array(model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True))[0]
    assert full.shape == (1500, 384)
    np.testing.assert_allclose(frames.numpy(), full[:165], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.features, average_pool_frames(frames, 4))

    long = encoder.encode(AudioClip(np.tile(clip.samples, 11)[: int(35 * clip.sample_rate)], clip.sample_rate))
    assert long.features.shape == (math.ceil(1750 / 4), 384)  # two windows joined: 30 s + 5 s


# ---------------------------------------------------------------------------------------------- time series


def test_time_series_patches_hold_normalised_values_and_their_mask():
    encoder = TimeSeriesPatchEncoder()
    assert encoder.identity == "ts-patch16" and encoder.feature_dim == 32
    values = 50 + 10 * np.sin(np.arange(40) / 3.0)
    values[[3, 17]] = np.nan
    out = encoder.encode(values)
    assert out.modality == "ts" and out.features.shape == (3, 32) and out.mask.all()
    series_values = out.features[:, :16].reshape(-1).numpy()
    observed = out.features[:, 16:].reshape(-1).numpy()
    assert observed[:40].sum() == 38 and observed[[3, 17]].sum() == 0 and observed[40:].sum() == 0
    assert series_values[[3, 17]].tolist() == [0, 0] and not series_values[40:].any()

    match = re.fullmatch(r"\[series: 40 points, 2 missing, offset (\S+), scale (\S+)\] ", out.prefix_text)
    assert match, out.prefix_text
    offset, scale = float(match[1]), float(match[2])
    real = ~np.isnan(values)
    assert offset == pytest.approx(values[real].mean(), rel=1e-3) and scale == pytest.approx(values[real].std(), rel=1e-3)
    np.testing.assert_allclose(series_values[:40][real] * scale + offset, values[real], rtol=1e-3)
    assert series_values[:40][real].mean() == pytest.approx(0, abs=1e-5)


def test_time_series_encoder_options_and_inputs():
    encoder = build_encoder("ts-patch8")
    assert encoder.identity == "ts-patch8" and encoder.feature_dim == 16
    assert build_encoder(encoder.identity).identity == "ts-patch8"
    assert encoder.encode(TimeSeries(np.arange(20.0))).features.shape == (3, 16)
    assert encoder.encode(torch.arange(16.0)).features.shape == (2, 16)
    assert build_encoder("ts-patch", patch_size=4).identity == "ts-patch4"
    constant = encoder.encode(np.full(10, 7.0))
    assert "offset 7, scale 1]" in constant.prefix_text and not constant.features[:, :8].any()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((5, 2)), "must be 1-D"),
        (np.array([np.nan] * 10), "every value of the series is missing"),
        (np.array([1.0]), "1 points; this encoder takes 2 to"),
        (np.array([1.0, np.inf, 2.0]), "infinite values"),
        (["a", "b"], "1-D array of numbers"),
        (TimeSeries(np.ones((5, 2))), "2 channels"),
    ],
)
def test_time_series_encoder_refuses_invalid_series(value, message):
    with pytest.raises(InvalidInputError, match=message):
        TimeSeriesPatchEncoder().encode(value)


def test_time_series_encoder_length_bound():
    with pytest.raises(InvalidInputError, match="100 points; this encoder takes 2 to 64"):
        TimeSeriesPatchEncoder(max_length=64).encode(np.ones(100))
    with pytest.raises(InvalidInputError, match="patch_size"):
        TimeSeriesPatchEncoder(patch_size=0)


def test_build_encoder_names_and_media_features_validation():
    with pytest.raises(InvalidInputError, match="unknown encoder 'resnet'"):
        build_encoder("resnet")
    with pytest.raises(InvalidInputError, match="unexpected keyword"):
        build_encoder("ts-patch", pool_stride=2)
    with pytest.raises(InvalidInputError, match="modality"):
        MediaFeatures("video", torch.zeros(2, 3))
    with pytest.raises(InvalidInputError, match=r"\[T, D\]"):
        MediaFeatures("ts", torch.zeros(3))
    with pytest.raises(InvalidInputError, match="mask must be a \\[T\\] tensor with T = 2"):
        MediaFeatures("ts", torch.zeros(2, 3), torch.ones(3, dtype=torch.bool))
    made = MediaFeatures("ts", torch.zeros(2, 3, dtype=torch.float64, requires_grad=True))
    assert made.features.dtype == torch.float32 and not made.features.requires_grad


# ---------------------------------------------------------------------------------------------- feature cache


class _Counting:
    """An encoder that counts how often it actually encodes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.modality, self.feature_dim, self.identity = inner.modality, inner.feature_dim, inner.identity

    def encode(self, value):
        self.calls += 1
        return self.inner.encode(value)


def test_cache_hit_returns_identical_features_without_encoding(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    encoder = _Counting(TimeSeriesPatchEncoder())
    series = np.r_[np.linspace(0, 5, 50), np.nan, np.ones(13)]
    first = encode_cached(encoder, series, cache)
    second = encode_cached(encoder, series.copy(), cache)
    assert encoder.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first.features, second.features) and torch.equal(first.mask, second.mask)
    assert second.prefix_text == first.prefix_text and second.modality == "ts"
    entries = list((tmp_path / "cache").rglob("*"))
    assert [p.suffix for p in entries if p.is_file()] == [".safetensors"]  # no temporary file left behind

    other = _Counting(TimeSeriesPatchEncoder(patch_size=8))
    assert encode_cached(other, series, cache).features.shape == (8, 16) and other.calls == 1  # identity is in the key
    assert encode_cached(encoder, series + 1, cache) is not None and encoder.calls == 2


def test_corrupt_or_foreign_cache_entries_are_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    encoder = _Counting(TimeSeriesPatchEncoder())
    series = np.arange(30.0)
    expected = encode_cached(encoder, series, cache)
    path = cache.path_for(cache.key(encoder, series))

    path.write_bytes(path.read_bytes()[:40])  # truncated
    again = encode_cached(encoder, series, cache)
    assert encoder.calls == 2 and cache.corrupt == 1 and torch.equal(again.features, expected.features)
    assert encode_cached(encoder, series, cache) is not None and encoder.calls == 2  # rewritten whole

    path.write_bytes(b"\x00" * 64)
    encode_cached(encoder, series, cache)
    assert encoder.calls == 3 and cache.corrupt == 2

    # A valid file written for another encoder under this key is not trusted either.
    foreign = TimeSeriesPatchEncoder(patch_size=8)
    cache.store(cache.key(encoder, series), foreign.identity, foreign.encode(series))
    assert torch.equal(encode_cached(encoder, series, cache).features, expected.features) and encoder.calls == 4


def test_cache_keys_follow_content_and_default_folder(tiny):
    assert FeatureCache().root == current_settings().home / "native-features"
    nan_a = np.array([1.0, np.nan, 3.0])
    nan_b = np.array([1.0, -np.nan, 3.0])
    assert canonical_bytes(nan_a) == canonical_bytes(nan_b) == canonical_bytes(TimeSeries(np.ones(3)).values * 0 + nan_a)
    assert canonical_bytes(AudioClip(np.zeros(10, np.float32), 16_000)) != canonical_bytes(AudioClip(np.zeros(10, np.float32), 8_000))
    assert canonical_bytes(_picture()) == canonical_bytes(_picture()) != canonical_bytes(_picture(seed=1))
    with pytest.raises(InvalidInputError, match="cannot key"):
        canonical_bytes(object())


def test_encode_all_goes_through_the_cache_for_images(tiny, tmp_path):
    cache = FeatureCache(tmp_path)
    encoder = _Counting(build_encoder(f"clip:{tiny['clip']}"))
    images = [_picture(seed=i) for i in range(3)]
    first = encode_all(encoder, images, cache, progress=False)
    second = encode_all(encoder, images + [_picture(seed=0)], cache, progress=False)
    assert encoder.calls == 3 and cache.hits == 4
    assert all(torch.equal(a.features, b.features) for a, b in zip(first, second))
    assert torch.equal(second[3].features, first[0].features)
