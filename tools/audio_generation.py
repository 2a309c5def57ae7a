"""Text to audio (sound effects, ambiences, music) with AudioLDM, or AudioLDM 2, through diffusers.

AudioLDM denoises a mel spectrogram in a VAE's latent space, conditioned on a CLAP text embedding;
a HiFi-GAN vocoder turns the spectrogram into a 16 kHz waveform. The pipeline class comes from
model_index.json, so ``cvssp/audioldm-*`` and ``cvssp/audioldm2*`` checkpoints both load by id.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from orchestrator.errors import ToolExecutionError, ToolUnavailableError
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import AudioClip
from orchestrator.tooling.tool import Input, Output, OutputValue, Param

from .diffusers_runtime import (
    LoadedPipeline,
    PromptedTool,
    call_defaults,
    check_prompt,
    diffusers_hub_location,
    dtype_argument,
    pick_seed,
    prepare_pipeline,
    run_pipeline,
    seed_param,
    seeded_generator,
)
from .torch_runtime import torch_dtype

SUPPORTED = ("AudioLDMPipeline", "AudioLDM2Pipeline")


def _audioldm2_language_model(path: Any, dtype: Any) -> dict[str, Any]:
    """cvssp/audioldm2* checkpoints declare a GPT2Model; the pipeline's generation loop needs GPT2LMHeadModel.

    GPT2Model lacks the generation helpers the pipeline calls (diffusers issue #12630). The LM-head
    class loads the same weights (its head is tied to the embeddings) and yields the same hidden
    states, which are all the pipeline reads.
    """
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    if index.get("_class_name") != "AudioLDM2Pipeline" or (index.get("language_model") or [None, None])[1] != "GPT2Model":
        return {}
    from transformers import GPT2LMHeadModel

    return {"language_model": GPT2LMHeadModel.from_pretrained(str(path / "language_model"), dtype=dtype)}


class TextToAudio(PromptedTool):
    name = "text-to-audio"
    task = "text-to-audio"
    description = (
        "Generate a sound from a text description: sound effects, ambiences, simple music (e.g. 'rain on a tin "
        "roof with distant thunder', 'a dog barking'); not speech (use text-to-speech for that). Returns audio "
        "of the requested duration."
    )
    inputs = {
        "prompt": Input(ArtifactKind.TEXT, "the sound to make, described in words"),
        "negative_prompt": Input(ArtifactKind.TEXT, "qualities to avoid, e.g. 'low quality, noise'", required=False),
    }
    outputs = {"audio": Output(ArtifactKind.AUDIO, "the generated sound (mono, at the vocoder's rate: 16 kHz)")}
    params = {
        "duration": Param(float, 5.0, "length of the sound in seconds", minimum=1.0, maximum=30.0),
        "steps": Param(int, None, "denoising steps; more is cleaner and slower (empty: the pipeline's default, 10 for "
                       "AudioLDM as on its model card, 200 for AudioLDM 2)", minimum=1, maximum=400, nullable=True),
        "guidance_scale": Param(float, None, "how strictly to follow the prompt (empty: the pipeline's default, 2.5 for "
                                "AudioLDM, 3.5 for AudioLDM 2)", minimum=0.0, maximum=20.0, nullable=True),
        "seed": seed_param(),
    }
    default_model = "cvssp/audioldm-s-full-v2"
    requires = ("torch", "diffusers", "transformers")
    uses_torch_device = True
    thread_safe = False

    def hub_location(self, model_id: str) -> HubLocation | None:
        return diffusers_hub_location(model_id)

    def load(self, source: ModelSource, device: str) -> LoadedPipeline:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(str(source.path), **dtype_argument(device),
                                                 **_audioldm2_language_model(source.path, torch_dtype(device)))
        if type(pipe).__name__ not in SUPPORTED:
            raise ToolUnavailableError(
                f"tool {self.name!r}: {source.model_id} is a {type(pipe).__name__}; this tool runs {' and '.join(SUPPORTED)}"
            )
        return prepare_pipeline(pipe, device)

    def run(self, model: LoadedPipeline, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        prompt = check_prompt(self.name, "prompt", inputs["prompt"])
        negative = check_prompt(self.name, "negative_prompt", inputs.get("negative_prompt"), required=False)
        pipe = model.pipe
        defaults = call_defaults(pipe)
        steps = params["steps"] or defaults.get("num_inference_steps", 10)
        guidance = params["guidance_scale"]
        if guidance is None:
            guidance = defaults.get("guidance_scale", 2.5)
        seed = pick_seed(params["seed"])
        result = run_pipeline(
            self, pipe, steps, prompt=prompt, negative_prompt=negative, audio_length_in_s=params["duration"],
            num_inference_steps=steps, guidance_scale=guidance, generator=seeded_generator(seed), output_type="np",
        )
        samples = np.asarray(result.audios[0], dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise ToolExecutionError(f"tool {self.name!r}: the model produced NaN samples (try another seed, or fp32)")
        rate = int(pipe.vocoder.config.sampling_rate)
        clip = AudioClip(samples, rate)
        return {"audio": OutputValue(clip, {
            "seed": seed, "steps": steps, "guidance_scale": guidance, "duration_s": round(clip.duration_s, 3),
            "sample_rate": rate, "peak": round(float(np.max(np.abs(samples))) if samples.size else 0.0, 4),
            "pipeline": type(pipe).__name__,
        })}
