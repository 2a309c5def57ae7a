"""Generators (Stable Diffusion, InstructPix2Pix, text-to-video, AudioLDM) on tiny random models.

Each model is assembled from tiny parts, saved with ``save_pretrained`` and loaded by the tool from
that folder: the same ``from_pretrained`` path the hub weights take. Outputs are noise, but their
kind, size, duration, container and seed behaviour are those of the real models.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator import ArtifactKind, AudioClip, InvalidInputError, ModelPool, run_tool

from tiny_tokenizers import CORPUS, clip_tokenizer

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------------------------ tiny models


def _tiny_clip_text_model(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def _tiny_vae(channels: int = 3):
    from diffusers import AutoencoderKL

    # Two blocks: the VAE scales by 2 (real ones by 8), so 96-px images are 48-px latents.
    return AutoencoderKL(block_out_channels=(16, 32), in_channels=channels, out_channels=channels, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8)


def _sd_tokenizer(folder: Path):
    tokenizer = clip_tokenizer(folder / "tokenizer")
    tokenizer.model_max_length = 77  # CLIP's context; the builder leaves it unbounded
    tokenizer.save_pretrained(folder / "tokenizer")
    return tokenizer


def _save_stable_diffusion(folder: Path, in_channels: int = 4, pix2pix: bool = False) -> Path:
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    tokenizer = _sd_tokenizer(folder)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=48, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    parts = dict(unet=unet, vae=_tiny_vae(), text_encoder=_tiny_clip_text_model(tokenizer), tokenizer=tokenizer,
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if pix2pix:
        pipe = StableDiffusionInstructPix2PixPipeline(scheduler=EulerAncestralDiscreteScheduler(), **parts)
    else:
        pipe = StableDiffusionPipeline(scheduler=EulerDiscreteScheduler(steps_offset=1), **parts)
    pipe.save_pretrained(folder)
    return folder


def _save_text_to_video(folder: Path) -> Path:
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    torch.manual_seed(0)
    tokenizer = _sd_tokenizer(folder)
    unet = UNet3DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    TextToVideoSDPipeline(vae=_tiny_vae(), text_encoder=_tiny_clip_text_model(tokenizer), tokenizer=tokenizer, unet=unet,
                          scheduler=DDIMScheduler(steps_offset=1, clip_sample=False)).save_pretrained(folder)
    return folder


def _roberta_tokenizer():
    """CLAP reads RoBERTa's byte-level BPE: trained here on the shared corpus, with RoBERTa's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300,
                                                        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=77)


def _save_audioldm(folder: Path) -> Path:
    from diffusers import AudioLDMPipeline, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    tokenizer = _roberta_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(16, 32), class_embed_type="simple_projection", projection_class_embeddings_input_dim=16,
        class_embeddings_concat=True, norm_num_groups=8, attention_head_dim=4,
    )
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, projection_dim=16, max_position_embeddings=80,
    ))
    # 8 x 5 x 4 = 160 samples per spectrogram frame at 16 kHz: AudioLDM's real hop, so durations are real.
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 5, 4],
        upsample_kernel_sizes=[16, 10, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    ))
    AudioLDMPipeline(vae=_tiny_vae(channels=1), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                     scheduler=DDIMScheduler(), vocoder=vocoder).save_pretrained(folder)
    return folder


def _t5_tokenizer():
    """T5's SentencePiece-style unigram vocabulary, trained on the shared corpus, ending every text with </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    unigram.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"],
                                                                unk_token="<unk>"))
    unigram.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                           special_tokens=[("</s>", unigram.token_to_id("</s>"))])
    return T5TokenizerFast(tokenizer_object=unigram, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           model_max_length=77, extra_ids=0)


def _save_audioldm2(folder: Path) -> Path:
    """AudioLDM 2 saved with a GPT2Model language model, as the cvssp/audioldm2 checkpoints are."""
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, DDIMScheduler
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        GPT2Config,
        GPT2Model,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    torch.manual_seed(0)
    tokenizer, tokenizer_2 = _roberta_tokenizer(), _t5_tokenizer()
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 32], [None, 16, 32]), norm_num_groups=8, attention_head_dim=4,
    )
    clap = ClapModel(ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), bos_token_id=0, pad_token_id=1, eos_token_id=2, hidden_size=16,
                         intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, projection_dim=16,
                         max_position_embeddings=80),
        audio_config=dict(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=32, depths=[1, 1],
                          num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=32, projection_dim=16, patch_size=2,
                          patch_stride=2, patch_embed_input_channels=4),
        projection_dim=16,
    ))
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=32, d_kv=8, num_heads=2, num_layers=1))
    language_model = GPT2Model(GPT2Config(n_embd=16, n_head=2, n_layer=1, vocab_size=len(tokenizer), n_positions=99,
                                          bos_token_id=0, eos_token_id=2))
    language_model.config.max_new_tokens = 8
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 5, 4],
        upsample_kernel_sizes=[16, 10, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    ))
    AudioLDM2Pipeline(
        vae=_tiny_vae(channels=1), text_encoder=clap, text_encoder_2=t5,
        projection_model=AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16),
        language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(),
        unet=unet, scheduler=DDIMScheduler(), vocoder=vocoder,
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-generators")
    folders = {
        "sd": _save_stable_diffusion(root / "tiny-sd"),
        "pix2pix": _save_stable_diffusion(root / "tiny-pix2pix", in_channels=8, pix2pix=True),
        "video": _save_text_to_video(root / "tiny-t2v"),
        "audio": _save_audioldm(root / "tiny-audioldm"),
        "audio2": _save_audioldm2(root / "tiny-audioldm2"),
    }
    # Turbo models are told apart by name, as Stability AI names them.
    folders["turbo"] = Path(shutil.copytree(folders["sd"], root / "tiny-sd-turbo"))
    return folders


@pytest.fixture(scope="module")
def pool():
    pool = ModelPool(2**32)
    yield pool
    pool.clear()


def _tool(cls, folder: Path, settings, pool):
    return cls(model=str(folder), settings=settings, pool=pool)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _photo(size=(80, 60)) -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    y = np.linspace(0, 255, size[1], dtype=np.uint8)
    return Image.fromarray(np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.full((size[1], size[0]), 90, np.uint8)), -1))


def _refused(tool, arguments, store, param: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        run_tool(tool, arguments, store=store)
    assert repr(param) in str(caught.value), str(caught.value)
    return str(caught.value)


# ------------------------------------------------------------------------------------------ text-to-image


def test_text_to_image_size_seed_and_progress(tiny, settings, store, pool):
    from tools.image_generation import TextToImage

    tool = _tool(TextToImage, tiny["sd"], settings, pool)
    reports = []
    tool.progress_callback = lambda done, total, message: reports.append((done, total))
    run = run_tool(tool, {"prompt": "a red fox in snow", "steps": 3, "width": 80, "height": 64, "seed": 7}, store=store)
    image = run.values["image"]
    assert image.size == (80, 64)
    assert run.outputs["image"].kind is ArtifactKind.IMAGE and run.outputs["image"].metadata["seed"] == 7
    assert run.outputs["image"].metadata["steps"] == 3 and run.outputs["image"].metadata["guidance_scale"] == 7.5
    assert reports == [(1, 3), (2, 3), (3, 3)]

    again = tool(prompt="a red fox in snow", steps=3, width=80, height=64, seed=7)["image"]
    other = tool(prompt="a red fox in snow", steps=3, width=80, height=64, seed=8)["image"]
    assert np.array_equal(_pixels(again), _pixels(image))
    assert np.abs(_pixels(other) - _pixels(image)).mean() > 1.0

    # Empty size: the model's native one (latent sample size 48 x VAE factor 2).
    native = run_tool(tool, {"prompt": "a cat", "steps": 1, "negative_prompt": "blurry"}, store=store)
    assert native.values["image"].size == (96, 96)
    assert native.outputs["image"].metadata["negative_prompt"] == "blurry"
    assert isinstance(native.outputs["image"].metadata["seed"], int)  # drawn at random, and recorded


def test_text_to_image_turbo_defaults_and_guidance(tiny, settings, store, pool):
    from tools.image_generation import TextToImage

    tool = _tool(TextToImage, tiny["turbo"], settings, pool)
    run = run_tool(tool, {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "seed": 1}, store=store)
    meta = run.outputs["image"].metadata
    assert (meta["steps"], meta["guidance_scale"], meta["negative_prompt"]) == (1, 0.0, None)
    arguments = {"prompt": "a lighthouse", "guidance_scale": 7.5, "width": 64, "height": 64}
    message = _refused(tool, arguments, store, "guidance_scale")
    assert "turbo" in message


@pytest.mark.parametrize(("arguments", "param"), [
    ({"steps": -1}, "steps"),
    ({"steps": 0}, "steps"),
    ({"width": 100_000, "height": 100_000}, "width"),
    ({"width": 100}, "width"),
    ({"height": 60}, "height"),
    ({"guidance_scale": 100.0}, "guidance_scale"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 5000}, "prompt"),
])
def test_text_to_image_refuses_bad_arguments(tiny, settings, store, pool, arguments, param):
    from tools.image_generation import TextToImage

    tool = _tool(TextToImage, tiny["sd"], settings, pool)
    _refused(tool, {"prompt": "a cat", **arguments}, store, param)


def test_text_to_image_refuses_a_wrong_artifact_kind(tiny, settings, store, pool):
    from tools.image_generation import ImageToImage

    sound = store.put_value("audio", AudioClip(np.zeros(1600, np.float32), 16000))
    tool = _tool(ImageToImage, tiny["sd"], settings, pool)
    _refused(tool, {"image": sound.id, "prompt": "a cat"}, store, "image")


# ------------------------------------------------------------------------------------------ image-to-image


def test_image_to_image_keeps_aspect_and_is_reproducible(tiny, settings, store, pool):
    from tools.image_generation import ImageToImage, TextToImage

    tool = _tool(ImageToImage, tiny["sd"], settings, pool)
    start = store.put_value("image", _photo((80, 60)))
    reports = []
    tool.progress_callback = lambda done, total, message: reports.append((done, total))
    run = run_tool(tool, {"image": start.id, "prompt": "as an oil painting", "strength": 0.5, "steps": 4, "seed": 3}, store=store)
    assert run.values["image"].size == (96, 72)  # longer side at the native 96 px, aspect kept
    assert start.id in run.outputs["image"].parents
    assert reports[-1] == (2, 2)  # strength 0.5 of 4 steps
    tool_t2i = _tool(TextToImage, tiny["sd"], settings, pool)
    tool_t2i(prompt="a cat", steps=1, seed=0)
    same_weights = [info.key for info in pool.loaded() if info.key[1] == str(tiny["sd"].resolve())]
    assert same_weights == [("stable-diffusion", str(tiny["sd"].resolve()), "cpu")]  # one copy for both tools
    same = tool(image=_photo((80, 60)), prompt="as an oil painting", strength=0.5, steps=4, seed=3)["image"]
    other = tool(image=_photo((80, 60)), prompt="as an oil painting", strength=0.5, steps=4, seed=4)["image"]
    assert np.array_equal(_pixels(same), _pixels(run.values["image"]))
    assert np.abs(_pixels(other) - _pixels(same)).mean() > 1.0
    assert tool(image=_photo((80, 60)), prompt="x", steps=1, strength=1.0, width=128, seed=0)["image"].size == (128, 96)

    _refused(tool, {"image": start.id, "prompt": "x", "strength": 1.5}, store, "strength")
    message = _refused(tool, {"image": start.id, "prompt": "x", "strength": 0.1, "steps": 2}, store, "strength")
    assert "'steps'" in message
    with pytest.raises(InvalidInputError, match="'prompt'"):
        tool(image=_photo(), prompt="")
    _refused(tool, {"image": start.id, "prompt": "x", "width": 65}, store, "width")


def test_image_to_image_turbo_follows_the_model_card(tiny, settings, store, pool):
    from tools.image_generation import ImageToImage

    tool = _tool(ImageToImage, tiny["turbo"], settings, pool)
    run = run_tool(tool, {"image": _photo((64, 64)), "prompt": "a cat", "width": 64, "height": 64, "seed": 0}, store=store)
    meta = run.outputs["image"].metadata
    assert (meta["steps"], meta["strength"], meta["guidance_scale"]) == (2, 0.5, 0.0)


# ------------------------------------------------------------------------------------------ image-editing


def test_image_editing_with_instruct_pix2pix(tiny, settings, store, pool):
    from tools.image_generation import ImageEditing

    tool = _tool(ImageEditing, tiny["pix2pix"], settings, pool)
    photo = store.put_value("image", _photo((60, 80)))
    arguments = {"image": photo.id, "instruction": "make it winter", "steps": 2, "seed": 5}
    run = run_tool(tool, arguments, store=store)
    assert run.values["image"].size == (72, 96)
    assert run.outputs["image"].metadata["image_guidance_scale"] == 1.5
    assert np.array_equal(_pixels(run_tool(tool, arguments, store=store).values["image"]), _pixels(run.values["image"]))
    other = run_tool(tool, {**arguments, "seed": 6}, store=store).values["image"]
    assert np.abs(_pixels(other) - _pixels(run.values["image"])).mean() > 1.0
    sized = run_tool(tool, {**arguments, "width": 64, "height": 64}, store=store).values["image"]
    assert sized.size == (64, 64)

    _refused(tool, {**arguments, "instruction": " "}, store, "instruction")
    _refused(tool, {**arguments, "image_guidance_scale": 0.5}, store, "image_guidance_scale")
    _refused(tool, {**arguments, "steps": -3}, store, "steps")


def test_image_editing_refuses_a_model_that_is_not_an_editor(tiny, settings, store, pool):
    from orchestrator.errors import ToolUnavailableError
    from tools.image_generation import ImageEditing

    tool = _tool(ImageEditing, tiny["video"], settings, ModelPool(2**30))
    with pytest.raises(ToolUnavailableError, match="not an instruction-editing pipeline"):
        run_tool(tool, {"image": _photo(), "instruction": "make it winter", "steps": 1}, store=store)


# ------------------------------------------------------------------------------------------ text-to-video


def _decode_video(data: bytes) -> tuple[np.ndarray, float, str]:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
        return frames, float(stream.average_rate), stream.codec_context.name


def test_text_to_video_writes_a_playable_mp4(tiny, settings, store, pool):
    pytest.importorskip("av")
    from tools.video_generation import TextToVideo

    tool = _tool(TextToVideo, tiny["video"], settings, pool)
    reports = []
    tool.progress_callback = lambda done, total, message: reports.append((done, total))
    arguments = {"prompt": "a dog runs across a field", "num_frames": 5, "fps": 4, "steps": 2, "width": 80, "height": 64,
                 "seed": 11}
    run = run_tool(tool, arguments, store=store)
    data = run.values["video"]
    assert data[4:8] == b"ftyp" and run.outputs["video"].mime == "video/mp4"
    frames, fps, codec = _decode_video(data)
    assert frames.shape == (5, 64, 80, 3) and fps == 4 and codec == "h264"
    meta = run.outputs["video"].metadata
    assert (meta["frames"], meta["duration_s"], meta["seed"]) == (5, 1.25, 11)
    assert reports == [(1, 2), (2, 2)]

    # The seed fixes the frames (hashed before encoding; x264 itself is not always bit-exact run to run).
    same = run_tool(tool, arguments, store=store)
    assert same.outputs["video"].metadata["frames_sha256"] == meta["frames_sha256"]
    assert np.abs(_decode_video(same.values["video"])[0].astype(np.int16) - frames).mean() < 1.0
    different = run_tool(tool, {**arguments, "seed": 12}, store=store)
    assert different.outputs["video"].metadata["frames_sha256"] != meta["frames_sha256"]
    assert np.abs(_decode_video(different.values["video"])[0].astype(np.int16) - frames).mean() > 5.0

    native = tool(prompt="waves", num_frames=2, steps=1, seed=0)["video"]
    assert _decode_video(native)[0].shape == (2, 64, 64, 3)

    for bad, param in (({"num_frames": 0}, "num_frames"), ({"num_frames": 1000}, "num_frames"), ({"fps": 0}, "fps"),
                       ({"width": 100_000}, "width"), ({"height": 50}, "height"), ({"steps": -1}, "steps"),
                       ({"prompt": " "}, "prompt")):
        _refused(tool, {**arguments, **bad}, store, param)
    _refused(tool, {**arguments, "num_frames": 64, "width": 1024, "height": 1024}, store, "num_frames")


# ------------------------------------------------------------------------------------------ text-to-audio


def test_text_to_audio_duration_rate_and_seed(tiny, settings, store, pool):
    from tools.audio_generation import TextToAudio

    tool = _tool(TextToAudio, tiny["audio"], settings, pool)
    reports = []
    tool.progress_callback = lambda done, total, message: reports.append((done, total))
    arguments = {"prompt": "rain on a tin roof", "negative_prompt": "low quality", "duration": 1.5, "steps": 2, "seed": 21}
    run = run_tool(tool, arguments, store=store)
    clip = run.values["audio"]
    assert isinstance(clip, AudioClip) and clip.sample_rate == 16000 and clip.channels == 1
    assert abs(clip.duration_s - 1.5) < 0.01
    assert run.outputs["audio"].metadata["duration_s"] == pytest.approx(1.5, abs=0.01)
    assert run.outputs["audio"].metadata["guidance_scale"] == 2.5  # AudioLDM's own default
    assert reports == [(1, 2), (2, 2)]

    assert np.array_equal(tool(**arguments)["audio"].samples, clip.samples)
    other = tool(**{**arguments, "seed": 22})["audio"].samples
    assert not np.allclose(other, clip.samples)
    assert abs(tool(prompt="a dog barks", duration=3.2, steps=1, seed=0)["audio"].duration_s - 3.2) < 0.01

    for bad, param in (({"duration": 100.0}, "duration"), ({"duration": 0}, "duration"), ({"steps": -2}, "steps"),
                       ({"guidance_scale": -1.0}, "guidance_scale"), ({"prompt": "  "}, "prompt")):
        _refused(tool, {**arguments, **bad}, store, param)


def test_text_to_audio_runs_audioldm2_saved_with_a_gpt2model(tiny, settings, store, pool):
    from tools.audio_generation import TextToAudio

    assert json.loads((tiny["audio2"] / "model_index.json").read_text())["language_model"][1] == "GPT2Model"
    tool = _tool(TextToAudio, tiny["audio2"], settings, pool)
    arguments = {"prompt": "a hammer hitting a wooden surface", "duration": 1.2, "steps": 2, "seed": 4}
    run = run_tool(tool, arguments, store=store)
    meta = run.outputs["audio"].metadata
    assert (meta["pipeline"], meta["guidance_scale"], meta["sample_rate"]) == ("AudioLDM2Pipeline", 3.5, 16000)
    assert abs(run.values["audio"].duration_s - 1.2) < 0.01
    assert np.array_equal(tool(**arguments)["audio"].samples, run.values["audio"].samples)


# ------------------------------------------------------------------------------------------ cards


def test_generator_cards_describe_bounded_params():
    from tools.audio_generation import TextToAudio
    from tools.image_generation import ImageEditing, ImageToImage, TextToImage
    from tools.video_generation import TextToVideo

    expected = {TextToImage: "stabilityai/sd-turbo", ImageToImage: "stabilityai/sd-turbo",
                ImageEditing: "timbrooks/instruct-pix2pix", TextToVideo: "damo-vilab/text-to-video-ms-1.7b",
                TextToAudio: "cvssp/audioldm-s-full-v2"}
    for cls, model in expected.items():
        card = cls.card()
        assert card["default_model"] == model and "seed" in card["params"]
        for name, schema in card["params"].items():
            if schema["type"] in ("integer", "number", ["integer", "null"], ["number", "null"]):
                assert "minimum" in schema and "maximum" in schema, (cls.name, name)
        assert cls(settings=None).hub_location(model).allow_patterns == ("model_index.json", "*/*")
        jsonschema = pytest.importorskip("jsonschema")
        jsonschema.Draft202012Validator.check_schema(card["arguments_schema"])
        example = {name: "a cat" if spec["kind"] == "text" else f"{spec['kind']}-0123456789abcdef"
                   for name, spec in card["inputs"].items()}
        jsonschema.validate({**example, **{name: schema["default"] for name, schema in card["params"].items()}},
                            card["arguments_schema"])
