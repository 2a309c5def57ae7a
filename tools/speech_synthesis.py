"""Text to speech with Piper voices (VITS exported to ONNX; espeak-ng phonemes bundled with piper-tts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import AudioClip
from orchestrator.tooling.tool import (
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

from .weight_packages import JOE_VOICE

MAX_CHARACTERS = 20_000  # ~25 minutes of speech; longer texts belong in a batch job
_VOICE_NAME = re.compile(
    r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<name>[A-Za-z0-9_]+)-(?P<quality>x_low|low|medium|high)$")


def _voice_files(path: Path) -> tuple[Path, Path]:
    """The .onnx model and its .onnx.json config, given either file or a folder holding one voice."""
    if path.is_file():
        model = path
    else:
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) != 1:
            raise ModelNotAvailableError(f"expected exactly one .onnx voice in {path}, found {len(candidates)}")
        model = candidates[0]
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise ModelNotAvailableError(f"Piper voice {model.name} has no config {config.name} beside it")
    return model, config


class TextToSpeech(Tool):
    name = "text-to-speech"
    task = "text-to-speech"
    description = "Speak text aloud with a natural voice; returns the speech as audio."
    inputs = {"text": Input(ArtifactKind.TEXT, "what to say")}
    outputs = {"audio": Output(ArtifactKind.AUDIO, "the spoken text")}
    params = {
        "speed": Param(float, 1.0, "speaking rate; 2.0 is twice as fast", minimum=0.25, maximum=4.0),
        "volume": Param(float, 1.0, "loudness multiplier", minimum=0.0, maximum=2.0),
        "speaker": Param(int, None, "speaker number for multi-speaker voices", minimum=0, maximum=10_000, nullable=True),
        "variability": Param(float, 0.667, "how much the intonation varies (Piper's noise scale)", minimum=0.0, maximum=1.5),
    }
    default_model = "en_US-joe-medium"
    requires = ("piper", "onnxruntime")

    def packaged_weights(self):
        return {"en_US-joe-medium": JOE_VOICE.locator(self.settings.cache_dir)}

    def hub_location(self, model_id: str) -> HubLocation | None:
        match = _VOICE_NAME.match(model_id)
        if match is None:
            return None
        folder = f"{match['lang']}/{match['lang']}_{match['region']}/{match['name']}/{match['quality']}"
        return HubLocation("rhasspy/piper-voices", allow_patterns=(f"{folder}/*",), subfolder=folder)

    def load(self, source: ModelSource, device: str) -> Any:
        from piper import PiperVoice

        model, config = _voice_files(source.path)
        return PiperVoice.load(model, config_path=config, use_cuda=device.startswith("cuda"))

    def run(self, voice: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from piper import SynthesisConfig

        text = inputs["text"].strip()
        if not text:
            raise InvalidInputError("text-to-speech: the text to speak is empty")
        if len(text) > MAX_CHARACTERS:
            raise InvalidInputError(
                f"text-to-speech: the text has {len(text):,} characters, over the limit of {MAX_CHARACTERS:,}")
        speakers = voice.config.num_speakers
        if params["speaker"] is not None and params["speaker"] >= speakers:
            raise InvalidInputError(f"text-to-speech: voice {self.model_id} has {speakers} speaker(s); "
                                    f"speaker {params['speaker']} does not exist")
        config = SynthesisConfig(
            speaker_id=params["speaker"], length_scale=1.0 / params["speed"], noise_scale=params["variability"],
            volume=params["volume"],
        )
        pieces = []
        for chunk in voice.synthesize(text, syn_config=config):  # one chunk per sentence
            pieces.append(chunk.audio_float_array)
            self.report_progress(sum(len(p) for p in pieces) / voice.config.sample_rate, None, "speaking")
        if not pieces or sum(len(p) for p in pieces) == 0:
            raise InvalidInputError(f"text-to-speech: nothing pronounceable in {text[:60]!r}")
        clip = AudioClip(np.concatenate(pieces), voice.config.sample_rate)
        return {"audio": OutputValue(clip, {"voice": self.model_id, "text": text[:200]})}
