"""Diffusers details the image, video and audio generators share: which files of a hub repository to fetch, seeds
(recorded, so every output can be made again), the dtype argument, the prompted tool base, pipeline preparation
and progress, and the checks on prompts and sizes."""

from __future__ import annotations

import inspect
import secrets
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InvalidInputError
from orchestrator.models.resolve import HubLocation
from orchestrator.tooling.tool import Param, Tool

from .torch_runtime import torch_dtype

MIN_SIDE = 64
MAX_SIDE = 2048
MAX_PROMPT_CHARS = 2000  # CLIP reads 77 tokens (~300 characters); far longer text is a mistake, not a prompt
MAX_SEED = 2**32 - 1

# The diffusers-format folders only: many repos also keep multi-GB single-file checkpoints at their
# root (sd-turbo's sd_turbo.safetensors, instruct-pix2pix's .ckpt, ModelScope's .pth) that the
# diffusers loaders never read.
DIFFUSERS_FILES = ("model_index.json", "*/*")


def diffusers_hub_location(model_id: str) -> HubLocation:
    return HubLocation(model_id, allow_patterns=DIFFUSERS_FILES)


def seed_param() -> Param:
    return Param(int, None, "random seed; the same seed with the same settings gives the same result "
                 "(empty: a random seed, recorded in the output's metadata)", minimum=0, maximum=MAX_SEED, nullable=True)


def pick_seed(seed: int | None) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed is None else int(seed)


def seeded_generator(seed: int):
    import torch

    # A CPU generator: diffusers draws the initial noise on it and moves it to the device, so one seed
    # starts from the same noise on every device.
    return torch.Generator(device="cpu").manual_seed(seed)


def dtype_argument(device: str) -> dict[str, Any]:
    """fp16 on CUDA, fp32 elsewhere, as from_pretrained's keyword: ``dtype`` since diffusers renamed
    ``torch_dtype`` (which now warns), ``torch_dtype`` for the older releases that only know it."""
    import diffusers.utils

    key = "dtype" if hasattr(diffusers.utils, "_resolve_dtype") else "torch_dtype"
    return {key: torch_dtype(device)}


class PromptedTool(Tool):
    """A generator driven by a text prompt: the prompt is checked before the (large) pipeline loads."""

    prompt_input = "prompt"

    def validate(self, inputs: dict[str, Any], params: dict[str, Any]) -> None:
        check_prompt(self.name, self.prompt_input, inputs[self.prompt_input])
        check_prompt(self.name, "negative_prompt", inputs.get("negative_prompt"), required=False)


@dataclass
class LoadedPipeline:
    """A loaded diffusers pipeline and what tools need to know about it."""

    pipe: Any
    device: str
    anymoda_size_bytes: int  # the pool budgets by this (a pipeline is not one torch module)
    variants: dict[str, Any] = field(default_factory=dict)

    def variant(self, auto_class: Any) -> Any:
        """The pipeline for another task over the same weights (no copy): e.g. img2img from txt2img."""
        name = auto_class.__name__
        if name not in self.variants:
            pipe = auto_class.from_pipe(self.pipe)
            pipe.set_progress_bar_config(disable=True)
            self.variants[name] = pipe
        return self.variants[name]


def prepare_pipeline(pipe: Any, device: str) -> LoadedPipeline:
    import torch

    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)  # progress goes through Tool.report_progress instead
    size = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            size += sum(p.numel() * p.element_size() for p in component.parameters())
    return LoadedPipeline(pipe, device, size)


def call_defaults(pipe: Any) -> dict[str, Any]:
    """The pipeline's own defaults (steps, guidance, strength, frames...), read from its __call__."""
    return {
        name: p.default
        for name, p in inspect.signature(pipe.__call__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def run_pipeline(tool: Tool, pipe: Any, total_steps: int, message: str = "denoising", **kwargs: Any) -> Any:
    """Call ``pipe`` with ``kwargs`` it accepts, reporting each denoising step through the tool."""
    accepted = inspect.signature(pipe.__call__).parameters
    unsupported = [name for name, value in kwargs.items() if name not in accepted and value is not None]
    if unsupported:
        raise InvalidInputError(
            f"tool {tool.name!r}: the model's pipeline {type(pipe).__name__} does not take {', '.join(unsupported)}"
        )
    call = {name: value for name, value in kwargs.items() if name in accepted}
    if "callback_on_step_end" in accepted:

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # img2img runs only strength x steps of them; the pipeline knows how many.
            tool.report_progress(step + 1, getattr(pipeline, "_num_timesteps", None) or total_steps, message)
            return tensors

        call["callback_on_step_end"] = on_step_end
    elif "callback" in accepted:  # older pipelines (text-to-video, AudioLDM) have the legacy hook

        def on_step(step: int, timestep: Any, latents: Any) -> None:
            tool.report_progress(step + 1, total_steps, message)

        call["callback"] = on_step
        if "callback_steps" in accepted:
            call["callback_steps"] = 1
    return pipe(**call)


def check_prompt(tool: str, name: str, text: str | None, *, required: bool = True) -> str | None:
    stripped = (text or "").strip()
    if not stripped:
        if required:
            raise InvalidInputError(f"tool {tool!r}: input {name!r} is empty; describe what to generate")
        return None
    if len(stripped) > MAX_PROMPT_CHARS:
        raise InvalidInputError(
            f"tool {tool!r}: input {name!r} has {len(stripped):,} characters, over the limit of {MAX_PROMPT_CHARS:,}"
        )
    return stripped


def check_side(tool: str, name: str, value: int | None) -> int | None:
    # VAEs downsample by 8; diffusers refuses other sizes deep inside the call, so say it up front.
    if value is not None and value % 8:
        below, above = value - value % 8, value - value % 8 + 8
        raise InvalidInputError(f"tool {tool!r}: param {name!r} must be a multiple of 8, got {value} (try {below} or {above})")
    return value


def size_params(maximum: int = MAX_SIDE) -> dict[str, Param]:
    return {
        "width": Param(int, None, "output width in pixels, a multiple of 8 (empty: the model's native size)",
                       minimum=MIN_SIDE, maximum=maximum, nullable=True),
        "height": Param(int, None, "output height in pixels, a multiple of 8 (empty: the model's native size)",
                        minimum=MIN_SIDE, maximum=maximum, nullable=True),
    }


def native_side(pipe: Any, fallback: int = 512) -> int:
    """The resolution the model was trained at: latent sample size x the VAE's downscale factor."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if isinstance(sample, (list, tuple)):
        sample = max(sample)
    factor = getattr(pipe, "vae_scale_factor", None)
    if isinstance(sample, int) and isinstance(factor, int):
        return sample * factor
    return fallback
