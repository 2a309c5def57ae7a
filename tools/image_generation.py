"""Image generation and editing with diffusers: Stable Diffusion (incl. turbo) and InstructPix2Pix.

Three tools over two model families:

* ``text-to-image`` and ``image-to-image``: any checkpoint diffusers' AutoPipelines know (Stable
  Diffusion 1.x/2.x, SDXL, their turbo distillations, ...). The two tools share one loaded model:
  the image-to-image pipeline is derived from the text-to-image one with ``from_pipe`` (same weights).
* ``image-editing``: instruction-following edits ("make it winter") with InstructPix2Pix, or any
  pipeline whose call takes an ``image_guidance_scale`` (the SDXL InstructPix2Pix variant).

What the three diffusion families share (dtype, seeds, progress, size checks, hub patterns, the prompted
tool base) is in :mod:`tools.diffusers_runtime`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInputError, ToolUnavailableError
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .diffusers_runtime import (
    MAX_SIDE,
    MIN_SIDE,
    LoadedPipeline,
    PromptedTool,
    call_defaults,
    check_prompt,
    check_side,
    diffusers_hub_location,
    dtype_argument,
    native_side,
    pick_seed,
    prepare_pipeline,
    run_pipeline,
    seed_param,
    seeded_generator,
    size_params,
)


def round8(value: float) -> int:
    return int(min(MAX_SIDE, max(MIN_SIDE, round(value / 8) * 8)))


def fit_size(image_size: tuple[int, int], native: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Working size for an input image: as asked, else its aspect ratio at the model's native size."""
    w, h = image_size
    if width and height:
        return width, height
    if width:
        return width, round8(width * h / w)
    if height:
        return round8(height * w / h), height
    scale = native / max(w, h)  # the longer side at the native size: SD makes mush far from its training size
    return round8(w * scale), round8(h * scale)


def checked_images(tool: str, result: Any) -> list[Any]:
    flagged = getattr(result, "nsfw_content_detected", None)
    if flagged and any(flagged):
        # The safety checker has already replaced the picture with a black one; passing that on would
        # look like a result.
        raise InvalidInputError(
            f"tool {tool!r}: the model's safety checker flagged the result as not safe for work and blanked it; "
            "rephrase the prompt or try another seed"
        )
    return list(result.images)


def is_turbo(model_id: str) -> bool:
    """SD-Turbo / SDXL-Turbo (adversarial diffusion distillation): 1-4 steps, no classifier-free guidance.

    Recognised by 'turbo' in the model id or folder name, the way Stability AI names them; their
    folders carry nothing else that tells them apart from the base models.
    """
    return "turbo" in model_id.lower()


def check_turbo_guidance(tool: Tool, guidance: float) -> None:
    # diffusers applies classifier-free guidance only above 1; turbo models were trained without it and
    # give burnt, oversaturated images with it.
    if is_turbo(tool.model_id) and guidance > 1.0:
        raise InvalidInputError(
            f"tool {tool.name!r}: param 'guidance_scale' must be 0 for the turbo model {tool.model_id} "
            f"(it was distilled to work without guidance), got {guidance}"
        )


_SD_REQUIRES = ("torch", "diffusers", "transformers")
_STEPS_DOC = "denoising steps (empty: 1 for turbo models, else the pipeline's default, 50 for Stable Diffusion)"
_GUIDANCE_DOC = ("how strictly to follow the prompt (classifier-free guidance; empty: 0 for turbo models, "
                 "else the pipeline's default, 7.5 for Stable Diffusion 1/2, 5 for SDXL)")


@dataclass
class _Request:
    """What both Stable Diffusion tools work out alike before they differ."""

    prompt: str
    negative: str | None
    width: int | None
    height: int | None
    pipe: Any
    defaults: dict[str, Any]
    turbo: bool
    steps: int
    guidance: float


class _StableDiffusionTool(PromptedTool):
    family = "stable-diffusion"  # text-to-image and image-to-image share the loaded weights
    requires = _SD_REQUIRES
    uses_torch_device = True
    thread_safe = False  # a pipeline's scheduler keeps per-call state (timesteps, step index)
    default_model = "stabilityai/sd-turbo"

    def hub_location(self, model_id: str) -> HubLocation | None:
        return diffusers_hub_location(model_id)

    def load(self, source: ModelSource, device: str) -> LoadedPipeline:
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(str(source.path), **dtype_argument(device))
        return prepare_pipeline(pipe, device)

    def prepare(self, model: LoadedPipeline, pipeline_class: Any, inputs: dict[str, Any], params: dict[str, Any],
                *, turbo_steps: int) -> _Request:
        prompt = check_prompt(self.name, "prompt", inputs["prompt"])
        negative = check_prompt(self.name, "negative_prompt", inputs.get("negative_prompt"), required=False)
        width, height = check_side(self.name, "width", params["width"]), check_side(self.name, "height", params["height"])
        pipe = model.variant(pipeline_class)
        defaults = call_defaults(pipe)
        turbo = is_turbo(self.model_id)
        steps = params["steps"] or (turbo_steps if turbo else defaults.get("num_inference_steps", 50))
        guidance = params["guidance_scale"]
        if guidance is None:
            guidance = 0.0 if turbo else defaults.get("guidance_scale", 7.5)
        check_turbo_guidance(self, guidance)
        return _Request(prompt, negative, width, height, pipe, defaults, turbo, steps, guidance)


class TextToImage(_StableDiffusionTool):
    name = "text-to-image"
    task = "text-to-image"
    description = (
        "Generate a new picture from a text description (Stable Diffusion; the default SD-Turbo makes a 512x512 "
        "image in one step). Needs only a prompt; optionally a negative prompt of things to avoid."
    )
    inputs = {
        "prompt": Input(ArtifactKind.TEXT, "what the picture should show, e.g. 'a red fox in snow, photo'"),
        "negative_prompt": Input(ArtifactKind.TEXT, "what the picture should not show (ignored by turbo models)", required=False),
    }
    outputs = {"image": Output(ArtifactKind.IMAGE, "the generated picture")}
    params = {
        "steps": Param(int, None, _STEPS_DOC, minimum=1, maximum=100, nullable=True),
        "guidance_scale": Param(float, None, _GUIDANCE_DOC, minimum=0.0, maximum=30.0, nullable=True),
        **size_params(),
        "seed": seed_param(),
    }

    def run(self, model: LoadedPipeline, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from diffusers import AutoPipelineForText2Image

        request = self.prepare(model, AutoPipelineForText2Image, inputs, params, turbo_steps=1)
        pipe, guidance, negative = request.pipe, request.guidance, request.negative
        side = 512 if request.turbo else native_side(pipe)  # sdxl-turbo was trained at 512 although SDXL is 1024
        width, height = request.width or side, request.height or side
        seed = pick_seed(params["seed"])
        result = run_pipeline(
            self, pipe, request.steps, prompt=request.prompt, negative_prompt=negative if guidance > 1.0 else None,
            num_inference_steps=request.steps, guidance_scale=guidance, width=width, height=height,
            generator=seeded_generator(seed), output_type="pil",
        )
        image = checked_images(self.name, result)[0]
        return {"image": OutputValue(image, {
            "seed": seed, "steps": request.steps, "guidance_scale": guidance, "width": image.width, "height": image.height,
            "negative_prompt": negative if guidance > 1.0 else None, "pipeline": type(pipe).__name__,
        })}


class ImageToImage(_StableDiffusionTool):
    name = "image-to-image"
    task = "image-to-image"
    description = (
        "Redraw an existing picture guided by a text prompt: variations, a new style ('as an oil painting'), "
        "or a sketch turned into a finished image, keeping the input's layout. 'strength' sets how much changes "
        "(0.3 subtle, 0.8 mostly new). Needs an image and a prompt."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the picture to start from"),
        "prompt": Input(ArtifactKind.TEXT, "what the result should look like"),
        "negative_prompt": Input(ArtifactKind.TEXT, "what the result should not show (ignored by turbo models)", required=False),
    }
    outputs = {"image": Output(ArtifactKind.IMAGE, "the redrawn picture")}
    params = {
        "strength": Param(float, None, "how much to change the picture, 0-1 (empty: 0.5 for turbo models, else the "
                          "pipeline's default, 0.8 for Stable Diffusion)", minimum=0.0, maximum=1.0, nullable=True),
        "steps": Param(int, None, "denoising steps before 'strength' is applied (only strength x steps run; empty: 2 for "
                       "turbo models, else the pipeline's default, 50)", minimum=1, maximum=100, nullable=True),
        "guidance_scale": Param(float, None, _GUIDANCE_DOC, minimum=0.0, maximum=30.0, nullable=True),
        **size_params(),
        "seed": seed_param(),
    }

    def run(self, model: LoadedPipeline, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from diffusers import AutoPipelineForImage2Image
        from PIL import Image

        # SD-Turbo's model card: 2 steps at strength 0.5, no guidance.
        request = self.prepare(model, AutoPipelineForImage2Image, inputs, params, turbo_steps=2)
        pipe, steps, guidance, negative = request.pipe, request.steps, request.guidance, request.negative
        strength = params["strength"]
        if strength is None:
            strength = 0.5 if request.turbo else request.defaults.get("strength", 0.8)
        if int(steps * strength) < 1:
            raise InvalidInputError(
                f"tool {self.name!r}: params 'strength' x 'steps' must be at least 1 (that many denoising steps run); "
                f"got strength {strength} x steps {steps}: raise one of them"
            )
        source_image = inputs["image"]
        width, height = fit_size(source_image.size, 512 if request.turbo else native_side(pipe), request.width, request.height)
        start = source_image.convert("RGB").resize((width, height), Image.LANCZOS)
        seed = pick_seed(params["seed"])
        result = run_pipeline(
            self, pipe, int(steps * strength), prompt=request.prompt, image=start, strength=strength,
            negative_prompt=negative if guidance > 1.0 else None, num_inference_steps=steps, guidance_scale=guidance,
            generator=seeded_generator(seed), output_type="pil",
        )
        image = checked_images(self.name, result)[0]
        if image.size != (width, height):  # pipelines that snap to their own grid
            image = image.resize((width, height), Image.LANCZOS)
        return {"image": OutputValue(image, {
            "seed": seed, "steps": steps, "strength": strength, "guidance_scale": guidance, "width": width,
            "height": height, "pipeline": type(pipe).__name__,
        })}


class ImageEditing(PromptedTool):
    name = "image-editing"
    prompt_input = "instruction"
    task = "image-editing"
    description = (
        "Edit a picture by following a written instruction, e.g. 'make it winter', 'turn the cat into a tiger', "
        "'add fireworks to the sky' (InstructPix2Pix); the rest of the picture is kept. Needs an image and an "
        "instruction."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the picture to edit"),
        "instruction": Input(ArtifactKind.TEXT, "the edit to make, as an instruction"),
        "negative_prompt": Input(ArtifactKind.TEXT, "what the result should not show", required=False),
    }
    outputs = {"image": Output(ArtifactKind.IMAGE, "the edited picture")}
    params = {
        "steps": Param(int, 30, "denoising steps (the pipeline's 100 takes 3x longer for little visible gain; "
                       "the model card's example uses 10)", minimum=1, maximum=100),
        "guidance_scale": Param(float, 7.5, "how strongly to apply the instruction", minimum=1.0, maximum=30.0),
        "image_guidance_scale": Param(float, 1.5, "how closely to keep the original picture (1-5; raise it if the edit "
                                      "changes too much)", minimum=1.0, maximum=10.0),
        **size_params(),
        "seed": seed_param(),
    }
    default_model = "timbrooks/instruct-pix2pix"
    requires = _SD_REQUIRES
    uses_torch_device = True
    thread_safe = False

    def hub_location(self, model_id: str) -> HubLocation | None:
        return diffusers_hub_location(model_id)

    def load(self, source: ModelSource, device: str) -> LoadedPipeline:
        from diffusers import DiffusionPipeline

        # model_index.json names the class: StableDiffusionInstructPix2PixPipeline, or its SDXL variant.
        pipe = DiffusionPipeline.from_pretrained(str(source.path), **dtype_argument(device))
        if "image_guidance_scale" not in inspect.signature(pipe.__call__).parameters:
            raise ToolUnavailableError(
                f"tool {self.name!r}: {source.model_id} is a {type(pipe).__name__}, not an instruction-editing pipeline "
                "such as InstructPix2Pix"
            )
        return prepare_pipeline(pipe, device)

    def run(self, model: LoadedPipeline, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        instruction = check_prompt(self.name, "instruction", inputs["instruction"])
        negative = check_prompt(self.name, "negative_prompt", inputs.get("negative_prompt"), required=False)
        width, height = check_side(self.name, "width", params["width"]), check_side(self.name, "height", params["height"])
        width, height = fit_size(inputs["image"].size, native_side(model.pipe), width, height)
        start = inputs["image"].convert("RGB").resize((width, height), Image.LANCZOS)
        seed = pick_seed(params["seed"])
        steps = params["steps"]
        result = run_pipeline(
            self, model.pipe, steps, prompt=instruction, image=start, negative_prompt=negative,
            num_inference_steps=steps, guidance_scale=params["guidance_scale"],
            image_guidance_scale=params["image_guidance_scale"], generator=seeded_generator(seed), output_type="pil",
        )
        image = checked_images(self.name, result)[0]
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        return {"image": OutputValue(image, {
            "seed": seed, "steps": steps, "guidance_scale": params["guidance_scale"],
            "image_guidance_scale": params["image_guidance_scale"], "width": width, "height": height,
            "pipeline": type(model.pipe).__name__,
        })}
