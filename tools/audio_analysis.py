"""Sound understanding and voice changing: audio classification (AST and any transformers audio classifier)
and voice conversion (SpeechT5 + HiFi-GAN, with the speaker's x-vector from a reference recording)."""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.models.resolve import HubLocation, ModelSource, resolve_model
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import AudioClip
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .torch_runtime import seeded_torch

AUDIOSET_CLASSES = 527  # the AudioSet ontology's label count
AST_FRAME_SHIFT_S = 0.010  # AST's Kaldi filterbank: 25 ms windows every 10 ms
DEFAULT_WINDOW_S = 30.0  # waveform classifiers (wav2vec2, HuBERT, Whisper encoders) take up to 30 s at once


def _float_inputs(batch: Any, device: str, dtype: Any) -> dict[str, Any]:
    """Processor output on the model's device; only floating tensors take the model's dtype (masks stay integer)."""
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


@dataclass
class _AudioClassifier:
    module: Any
    extractor: Any
    labels: list[str]
    multi_label: bool
    window_s: float
    device: str
    dtype: Any


def is_multi_label(config: Any) -> bool:
    """Whether scores are independent (sigmoid) or compete (softmax).

    transformers' problem_type says it when set. AudioSet checkpoints (MIT/ast-finetuned-audioset-*, and
    other 527-class heads) leave it unset although they were trained with a per-class binary loss: a clip
    holds speech *and* music *and* traffic, so they score with a sigmoid. (The audio-classification
    pipeline applies a softmax to them, which makes every score tiny and the scores sum to one.)
    Everything else (keywords, emotions, languages, ESC-50) is single-label.
    """
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return True
    if problem in ("single_label_classification", "regression"):
        return False
    return int(config.num_labels) == AUDIOSET_CLASSES


class AudioClassification(Tool):
    name = "audio-classification"
    task = "audio-classification"
    description = (
        "Say what can be heard in a recording: sound events, music, speech, animals, machines (the 527 AudioSet "
        "classes by default), with scores; long recordings are scored window by window, with a timeline."
    )
    inputs = {"audio": Input(ArtifactKind.AUDIO, "the recording to classify")}
    outputs = {
        "labels": Output(ArtifactKind.JSON, "the top classes as a list of {label, score}, best first"),
        "label": Output(ArtifactKind.TEXT, "the single most likely class"),
        "timeline": Output(ArtifactKind.JSON, "per window: {start, end, label, score} in seconds"),
    }
    params = {
        "top_k": Param(int, 5, "how many classes to return", minimum=1, maximum=100),
        "scoring": Param(str, "auto", "sigmoid: independent scores (sound events); softmax: classes compete; "
                         "auto: sigmoid for multi-label/AudioSet models", choices=("auto", "sigmoid", "softmax")),
    }
    default_model = "MIT/ast-finetuned-audioset-10-10-0.4593"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def hub_location(self, model_id: str) -> HubLocation | None:
        return HubLocation(model_id, allow_patterns=("*.json", "*.safetensors", "*.txt"))

    def load(self, source: ModelSource, device: str) -> Any:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        module = AutoModelForAudioClassification.from_pretrained(str(source.path), dtype=dtype).eval().to(device)
        extractor = AutoFeatureExtractor.from_pretrained(str(source.path))
        config = module.config
        labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        if config.model_type == "audio-spectrogram-transformer":
            window = extractor.max_length * AST_FRAME_SHIFT_S  # AST pads or cuts every input to max_length frames
        else:
            window = float(getattr(extractor, "chunk_length", None) or DEFAULT_WINDOW_S)
        return _AudioClassifier(module, extractor, labels, is_multi_label(config), window, device, dtype)

    def run(self, classifier: _AudioClassifier, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        rate = int(classifier.extractor.sampling_rate)
        samples = inputs["audio"].for_model(rate)
        if samples.shape[0] < rate // 10:
            raise InvalidInputError(f"audio-classification: input 'audio' is {samples.shape[0] / rate * 1000:.0f} ms long; give at least 100 ms")
        sigmoid = classifier.multi_label if params["scoring"] == "auto" else params["scoring"] == "sigmoid"
        # Equal windows no longer than the model's: a 12 s clip on AST (10.24 s) is two 6 s halves, not
        # 10.24 s plus a 1.76 s scrap scored as if it were a whole clip.
        count = max(1, math.ceil(samples.shape[0] / (classifier.window_s * rate) - 1e-9))
        pieces = np.array_split(samples, count)
        probabilities, timeline, start = [], [], 0
        for index, piece in enumerate(pieces):
            batch = classifier.extractor(piece, sampling_rate=rate, return_tensors="pt")
            with torch.inference_mode():
                logits = classifier.module(**_float_inputs(batch, classifier.device, classifier.dtype)).logits[0].float()
            scores = (logits.sigmoid() if sigmoid else logits.softmax(-1)).cpu().numpy()
            probabilities.append(scores)
            best = int(scores.argmax())
            timeline.append({"start": round(start / rate, 2), "end": round((start + piece.shape[0]) / rate, 2),
                             "label": classifier.labels[best], "score": round(float(scores[best]), 4)})
            start += piece.shape[0]
            self.report_progress(index + 1, count, "classifying")
        stacked = np.stack(probabilities)
        if sigmoid:
            overall = stacked.max(axis=0)  # a sound event counts if it is heard in any window
        else:
            weights = np.array([p.shape[0] for p in pieces], dtype=np.float64)
            overall = (stacked * weights[:, None]).sum(axis=0) / weights.sum()
        order = np.argsort(-overall)[: min(params["top_k"], overall.shape[0])]
        ranked = [{"label": classifier.labels[i], "score": round(float(overall[i]), 4)} for i in order]
        metadata = {"scoring": "sigmoid" if sigmoid else "softmax", "windows": count,
                    "window_seconds": round(classifier.window_s, 2), "audio_seconds": round(samples.shape[0] / rate, 2)}
        return {
            "labels": OutputValue(ranked, metadata),
            "label": OutputValue(ranked[0]["label"], {"score": ranked[0]["score"], **metadata}),
            "timeline": OutputValue(timeline, metadata),
        }


# ------------------------------------------------------------------------------------------ voice conversion

VOCODER = "microsoft/speecht5_hifigan"
SPEAKER_ENCODER = "speechbrain/spkrec-xvect-voxceleb"
SPEECHT5_RATE = 16_000
MAX_CHUNK_S = 20.0  # SpeechT5 attends over the whole input: long recordings are converted in pieces cut at pauses
MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 60.0


class SpeakerEncoder:
    """SpeechBrain's x-vector TDNN (speechbrain/spkrec-xvect-voxceleb), re-implemented in plain torch.

    SpeechT5 was trained with exactly these 512-d embeddings (the CMU ARCTIC x-vectors of its model card
    come from this model), so a reference recording has to go through this encoder, not another one:
    WavLMForXVector (microsoft/wavlm-base-plus-sv) also gives 512 numbers, but in a different space, and
    SpeechT5 would not speak in the reference's voice. SpeechBrain itself needs torchaudio, which is not
    a dependency here; its features and network are small enough to restate:

    - 24 log mel filterbanks: 25 ms Hamming windows every 10 ms, 400-point FFT of the power spectrum,
      triangular filters on the 2595 * log10(1 + f / 700) mel scale from 0 to 8 kHz, 10 * log10 with
      an 80 dB floor below the utterance's peak, then the utterance's mean removed per band;
    - five TDNN blocks (Conv1d with "same" reflect padding, LeakyReLU, BatchNorm), statistics pooling
      (mean and unbiased standard deviation over time) and one Linear layer whose output is the x-vector.

    The weights are the checkpoint's own ``embedding_model.ckpt``, loaded strictly, so a layout that
    differs fails loudly rather than producing a wrong voice.
    """

    def __init__(self, folder: Path, device: str):
        import torch

        checkpoint = folder / "embedding_model.ckpt"
        if not checkpoint.is_file():
            raise ModelNotAvailableError(f"speaker encoder folder {folder} has no embedding_model.ckpt")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        hyperparams = (folder / "hyperparams.yaml").read_text(encoding="utf-8") if (folder / "hyperparams.yaml").is_file() else ""
        mels = re.search(r"^n_mels:\s*(\d+)", hyperparams, re.M)
        dilations = re.search(r"tdnn_dilations:\s*\[([\d,\s]+)\]", hyperparams)
        self.n_mels = int(mels.group(1)) if mels else 24
        blocks = sorted(int(m.group(1)) for key in state if (m := re.fullmatch(r"blocks\.(\d+)\.conv\.weight", key)))
        self.dilations = [int(d) for d in dilations.group(1).split(",")] if dilations else [1, 2, 3, 1, 1]
        if len(blocks) != len(self.dilations):
            raise ModelNotAvailableError(f"speaker encoder {checkpoint}: {len(blocks)} TDNN blocks but {len(self.dilations)} dilations")
        self.network = self._network(state, len(blocks)).to(device).eval()
        self.device = device
        self._filters = self._mel_filters().to(device)

    @staticmethod
    def _network(state: dict[str, Any], blocks: int) -> Any:
        from torch import nn

        def wrap(attribute: str, module: nn.Module) -> nn.Module:
            holder = nn.Module()
            setattr(holder, attribute, module)
            return holder

        layers: list[nn.Module] = []
        for index in range(blocks):
            out_channels, in_channels, kernel = state[f"blocks.{3 * index}.conv.weight"].shape
            layers += [wrap("conv", nn.Conv1d(in_channels, out_channels, kernel)), nn.LeakyReLU(),
                       wrap("norm", nn.BatchNorm1d(out_channels))]
        layers.append(nn.Identity())  # statistics pooling has no weights
        out_features, in_features = state[f"blocks.{3 * blocks + 1}.w.weight"].shape
        layers.append(wrap("w", nn.Linear(in_features, out_features)))
        network = nn.Module()
        network.blocks = nn.ModuleList(layers)
        network.load_state_dict(state, strict=True)
        network.float()
        return network

    def _mel_filters(self):
        import torch

        def to_mel(hz):
            return 2595 * math.log10(1 + hz / 700)

        mel = torch.linspace(to_mel(0.0), to_mel(SPEECHT5_RATE / 2), self.n_mels + 2)
        hz = 700 * (10 ** (mel / 2595) - 1)
        band = (hz[1:] - hz[:-1])[:-1]
        central = hz[1:-1]
        frequencies = torch.linspace(0, SPEECHT5_RATE // 2, 400 // 2 + 1)
        slope = (frequencies[None, :] - central[:, None]) / band[:, None]
        return torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0).T  # (201, n_mels)

    def features(self, samples: np.ndarray):
        import torch

        wave = torch.from_numpy(samples).float().to(self.device)
        window = torch.hamming_window(400, device=self.device)
        spectrum = torch.stft(wave, n_fft=400, hop_length=160, win_length=400, window=window, center=True,
                              pad_mode="constant", onesided=True, return_complex=True)
        power = spectrum.abs().pow(2).T  # (frames, 201)
        decibels = 10 * torch.log10(torch.clamp(power @ self._filters, min=1e-10))
        decibels = torch.maximum(decibels, decibels.max() - 80.0)
        return decibels - decibels.mean(dim=0, keepdim=True)

    def embed(self, samples: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = self.features(samples).T.unsqueeze(0)  # (1, n_mels, frames)
            blocks = self.network.blocks
            for index, dilation in enumerate(self.dilations):
                conv = blocks[3 * index].conv
                reach = dilation * (conv.kernel_size[0] - 1)
                if reach:
                    x = torch.nn.functional.pad(x, (reach // 2, reach // 2), mode="reflect")
                x = torch.nn.functional.conv1d(x, conv.weight, conv.bias, dilation=dilation)
                x = blocks[3 * index + 2].norm(blocks[3 * index + 1](x))
            pooled = torch.cat([x.mean(dim=-1), x.std(dim=-1) + 1e-5], dim=-1)
            vector = blocks[3 * len(self.dilations) + 1].w(pooled)[0]
        return vector.cpu().numpy().astype(np.float32)


@dataclass
class _VoiceConverter:
    model: Any
    extractor: Any
    vocoder: Any
    device: str
    dtype: Any
    speaker_folder: Any  # resolves the speaker encoder's weights on first use
    _encoder: SpeakerEncoder | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def speaker_encoder(self) -> SpeakerEncoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = SpeakerEncoder(self.speaker_folder(), self.device)
            return self._encoder


def split_at_pauses(samples: np.ndarray, rate: int, max_seconds: float = MAX_CHUNK_S) -> list[np.ndarray]:
    """Pieces of at most ``max_seconds``, each cut at the quietest 50 ms of its second half."""
    limit = int(max_seconds * rate)
    frame = max(1, rate // 20)
    pieces, start = [], 0
    while samples.shape[0] - start > limit:
        lo, hi = start + limit // 2, start + limit
        region = samples[lo:hi]
        usable = region.shape[0] // frame * frame
        energy = (region[:usable].reshape(-1, frame) ** 2).mean(axis=1)
        cut = lo + int(energy.argmin()) * frame + frame // 2
        pieces.append(samples[start:cut])
        start = cut
    pieces.append(samples[start:])
    return pieces


def _embedding_from_json(value: Any, dimensions: int) -> np.ndarray:
    if isinstance(value, dict):
        for key in ("xvector", "vector", "embedding", "speaker_embedding"):
            if key in value:
                value = value[key]
                break
        else:
            raise InvalidInputError("voice-conversion: input 'speaker_embedding' must be a list of numbers or an object with an 'xvector' (or 'vector') list")
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise InvalidInputError("voice-conversion: input 'speaker_embedding' must be a list of numbers")
    vector = np.asarray(value, dtype=np.float32)
    if vector.shape != (dimensions,):
        raise InvalidInputError(f"voice-conversion: input 'speaker_embedding' must have {dimensions} numbers (a SpeechBrain x-vector), got {vector.shape[0]}")
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidInputError("voice-conversion: input 'speaker_embedding' must be finite and not all zero")
    return vector


class VoiceConversion(Tool):
    name = "voice-conversion"
    task = "audio-to-audio"
    description = (
        "Make a speech recording sound as if another person said it: same words and timing, the voice of a "
        "reference recording of the target speaker (a few seconds of clean speech), or of a given 512-number "
        "x-vector. English speech at 16 kHz works best."
    )
    inputs = {
        "audio": Input(ArtifactKind.AUDIO, "the speech to convert"),
        "speaker": Input(ArtifactKind.AUDIO, "a recording of the target voice (3-10 s of clean speech is best)", required=False),
        "speaker_embedding": Input(ArtifactKind.JSON, "instead of 'speaker': the target's 512-d x-vector "
                                   "(speechbrain/spkrec-xvect-voxceleb, e.g. from Matthijs/cmu-arctic-xvectors)", required=False),
    }
    outputs = {
        "audio": Output(ArtifactKind.AUDIO, "the converted speech (16 kHz)"),
        "speaker_embedding": Output(ArtifactKind.JSON, "{dimensions, vector}: the target voice's unit x-vector, reusable as input"),
    }
    params = {
        "seed": Param(int, 0, "random seed: SpeechT5's decoder keeps dropout on while generating", minimum=0, maximum=2**31 - 1),
        "stop_threshold": Param(float, 0.5, "probability at which the decoder ends an utterance", minimum=0.05, maximum=0.95),
        "max_length_ratio": Param(float, 2.0, "the output is at most this many times as long as the input", minimum=0.5, maximum=5.0),
    }
    default_model = "microsoft/speecht5_vc"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def hub_location(self, model_id: str) -> HubLocation | None:
        return HubLocation(model_id, allow_patterns=("*.json", "*.safetensors", "*.txt", "*.model"))

    def _component(self, folder: Path, subfolder: str, key: str, default: str, patterns: tuple[str, ...]) -> Path:
        """A part beside the main weights (``vocoder/``, ``speaker_encoder/``) or else its own model id."""
        if (folder / subfolder).is_dir():
            return folder / subfolder
        model_id = self.settings.model_for(key, default)
        return resolve_model(model_id, tool=key, hub=HubLocation(model_id, allow_patterns=patterns),
                             offline=self.settings.offline, install_hint=self.install_hint).path

    def load(self, source: ModelSource, device: str) -> Any:
        import torch
        from transformers import (
            AutoFeatureExtractor,
            SpeechT5ForSpeechToSpeech,
            SpeechT5HifiGan,
        )

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = SpeechT5ForSpeechToSpeech.from_pretrained(str(source.path), dtype=dtype).eval().to(device)
        # SpeechT5Processor would also load a SentencePiece tokenizer that speech-to-speech never uses.
        extractor = AutoFeatureExtractor.from_pretrained(str(source.path))
        vocoder_path = self._component(source.path, "vocoder", "voice-conversion-vocoder", VOCODER, ("*.json", "*.safetensors", "*.bin"))
        vocoder = SpeechT5HifiGan.from_pretrained(str(vocoder_path), dtype=dtype).eval().to(device)

        def speaker_folder() -> Path:
            return self._component(source.path, "speaker_encoder", "voice-conversion-speaker-encoder", SPEAKER_ENCODER,
                                   ("hyperparams.yaml", "embedding_model.ckpt"))

        return _VoiceConverter(model, extractor, vocoder, device, dtype, speaker_folder)

    def run(self, converter: _VoiceConverter, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        dimensions = int(converter.model.config.speaker_embedding_dim)
        if ("speaker" in inputs) == ("speaker_embedding" in inputs):
            raise InvalidInputError(
                "voice-conversion: give the target voice as either input 'speaker' (a recording of that person) "
                "or input 'speaker_embedding' (its x-vector), exactly one of them"
            )
        if "speaker" in inputs:
            reference = inputs["speaker"].for_model(SPEECHT5_RATE)
            if reference.shape[0] < MIN_REFERENCE_S * SPEECHT5_RATE:
                raise InvalidInputError(f"voice-conversion: input 'speaker' is {reference.shape[0] / SPEECHT5_RATE:.2f} s long; give at least {MIN_REFERENCE_S:.0f} s of the target voice")
            if not np.any(np.abs(reference) > 1e-4):
                raise InvalidInputError("voice-conversion: input 'speaker' is silent")
            vector = converter.speaker_encoder().embed(reference[: int(MAX_REFERENCE_S * SPEECHT5_RATE)])
            if vector.shape != (dimensions,):
                raise InvalidInputError(f"voice-conversion: the speaker encoder gives {vector.shape[0]} numbers but the model takes {dimensions}")
            origin = "reference recording"
        else:
            vector = _embedding_from_json(inputs["speaker_embedding"], dimensions)
            origin = "given x-vector"
        vector = vector / np.linalg.norm(vector)  # SpeechT5 normalises it too; the output is reusable as is

        samples = inputs["audio"].for_model(SPEECHT5_RATE)
        if samples.shape[0] < SPEECHT5_RATE // 10:
            raise InvalidInputError(f"voice-conversion: input 'audio' is {samples.shape[0] / SPEECHT5_RATE * 1000:.0f} ms long; give at least 100 ms of speech")
        # generate_speech bounds the output at encoder_frames * ratio mel frames; one encoder frame is
        # prod(conv_stride) samples and one mel frame hop_length ms, so convert "times the input duration".
        stride = int(np.prod(converter.model.config.conv_stride))
        hop = int(converter.extractor.hop_length * SPEECHT5_RATE / 1000)
        ratio = params["max_length_ratio"] * stride / hop
        speaker = torch.from_numpy(vector).unsqueeze(0).to(converter.device, converter.dtype)
        pieces = split_at_pauses(samples, SPEECHT5_RATE)
        outputs = []
        with seeded_torch(params["seed"], converter.device):  # SpeechT5 keeps dropout on while generating
            for index, piece in enumerate(pieces):
                batch = converter.extractor(audio=piece, sampling_rate=SPEECHT5_RATE, return_tensors="pt")
                values = batch["input_values"].to(converter.device, converter.dtype)
                with torch.inference_mode():
                    speech = converter.model.generate_speech(values, speaker, threshold=params["stop_threshold"],
                                                             maxlenratio=ratio, vocoder=converter.vocoder)
                outputs.append(speech.float().reshape(-1).cpu().numpy())
                self.report_progress(index + 1, len(pieces), "converting")
        converted = np.concatenate(outputs) if outputs else np.zeros(0, np.float32)
        peak = float(np.abs(converted).max()) if converted.size else 0.0
        if peak > 1.0:  # HiFi-GAN's output is not bounded; keep it a valid [-1, 1] clip
            converted = converted / peak
        metadata = {"seed": params["seed"], "speaker": origin, "pieces": len(pieces),
                    "input_seconds": round(samples.shape[0] / SPEECHT5_RATE, 2)}
        return {
            "audio": OutputValue(AudioClip(converted.astype(np.float32), SPEECHT5_RATE), metadata),
            "speaker_embedding": OutputValue({"dimensions": dimensions, "vector": [round(float(v), 6) for v in vector]},
                                             {"speaker": origin}),
        }
