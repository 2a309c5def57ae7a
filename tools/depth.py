"""Monocular depth estimation: Depth Anything (V1/V2), DPT and other transformers depth models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.extras import import_extra
from orchestrator.models.resolve import ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .images import rgb
from .torch_runtime import torch_dtype

COLORMAPS = ("inferno", "magma", "viridis", "plasma", "turbo", "Spectral_r", "gray")
# Model types whose output is metric depth (metres, larger = farther); the others predict relative
# inverse depth (disparity-like: larger = nearer) up to an unknown scale and shift.
_METRIC_TYPES = ("zoedepth", "glpn", "depth_pro", "prompt_depth_anything")


@dataclass
class _DepthModel:
    module: Any
    processor: Any
    metric: bool
    device: str
    dtype: Any


def colorize(normalized: np.ndarray, colormap: str) -> Any:
    """A [0, 1] array as an RGB image through a matplotlib colormap (the ``plot`` extra)."""
    from PIL import Image

    rgba = import_extra("matplotlib", "the depth map's colours").colormaps[colormap](normalized, bytes=True)
    return Image.fromarray(np.ascontiguousarray(rgba[..., :3]))


class DepthEstimation(Tool):
    name = "depth-estimation"
    task = "depth-estimation"
    description = (
        "Estimate how far away every pixel of a photo is (a depth map) from the single image; returns a 16-bit "
        "greyscale depth image at the photo's size (with the value range in its metadata) and a coloured picture "
        "of it where near things are bright. Relative depth by default, not metres."
    )
    inputs = {"image": Input(ArtifactKind.IMAGE, "the photo")}
    outputs = {
        "depth": Output(ArtifactKind.IMAGE, "16-bit greyscale PNG at the input's size: 0..65535 spans the model's output "
                        "from its minimum to its maximum (given in the metadata with what the values mean)"),
        "visualization": Output(ArtifactKind.IMAGE, "the depth map in colour, near bright and far dark"),
    }
    params = {"colormap": Param(str, "inferno", "colours of the visualization", choices=COLORMAPS)}
    default_model = "depth-anything/Depth-Anything-V2-Small-hf"
    requires = ("torch", "transformers", "matplotlib")  # matplotlib: the visualization's colour map (the `plot` extra)
    uses_torch_device = True

    def load(self, source: ModelSource, device: str) -> _DepthModel:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        path = str(source.path)
        dtype = torch_dtype(device)
        module = AutoModelForDepthEstimation.from_pretrained(path, dtype=dtype).eval().to(device)
        config = module.config
        metric = config.model_type in _METRIC_TYPES or getattr(config, "depth_estimation_type", None) == "metric"
        return _DepthModel(module, AutoImageProcessor.from_pretrained(path), metric, device, dtype)

    def run(self, model: _DepthModel, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch
        from PIL import Image

        image = rgb(inputs["image"])
        width, height = image.size
        encoded = model.processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            predicted = model.module(pixel_values=encoded["pixel_values"].to(model.device, model.dtype)).predicted_depth
            predicted = predicted.float().reshape(1, 1, *predicted.shape[-2:])
            # Bicubic, as the models' own post-processing does; it can overshoot, so clip to the predicted range.
            depth = torch.nn.functional.interpolate(predicted, size=(height, width), mode="bicubic", align_corners=False)
            depth = depth.clamp(predicted.min(), predicted.max())[0, 0].cpu().numpy().astype(np.float64)
        low, high = float(depth.min()), float(depth.max())
        span = high - low
        normalized = (depth - low) / span if span > 0 else np.zeros_like(depth)
        png = Image.fromarray(np.round(normalized * 65535).astype(np.uint16))  # mode I;16: a 16-bit PNG
        nearness = 1.0 - normalized if model.metric else normalized
        meaning = (
            "metric depth in metres: larger is farther" if model.metric
            else "relative inverse depth: larger is nearer; scale and offset unknown"
        )
        metadata = {"min": low, "max": high, "meaning": meaning, "encoding": "value = min + pixel / 65535 * (max - min)"}
        return {
            "depth": OutputValue(png, metadata),
            "visualization": OutputValue(colorize(nearness, params["colormap"]), {"colormap": params["colormap"], **metadata}),
        }
