"""Image classification: the packaged EfficientNet-Lite0 (ImageNet-1k) or any Hugging Face checkpoint."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np

from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .weight_packages import EFFICIENTNET_LITE0_WEIGHTS

EFFICIENTNET_LITE0 = "efficientnet-lite0"


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (from timm's synset lemmas, Apache-2.0)."""
    text = files("tools").joinpath("data", "imagenet_labels.txt").read_text(encoding="utf-8")
    labels = text.splitlines()
    assert len(labels) == 1000, "tools/data/imagenet_labels.txt must hold exactly 1000 labels"
    return labels


def efficientnet_lite_input(image: Any, size: int = 224):
    """EfficientNet-Lite's input: the whole image resized to size x size (bicubic), scaled as (x - 127) / 128.

    The paper's evaluation takes a central crop instead; users' photos often have their subject off
    centre (the sample eagle photo is classified 'kite' with the crop, 'bald eagle' without), so the
    whole frame is kept, as the TFLite deployments of this model do.
    """
    import torch
    from PIL import Image

    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


@dataclass
class _Classifier:
    """A loaded classifier, whichever backend: a torch module, its preprocessing and its label names."""

    module: Any
    preprocess: Any
    labels: list[str]
    device: str


class ImageClassification(Tool):
    name = "image-classification"
    task = "image-classification"
    description = "Say what an image shows: the most likely categories (1000 ImageNet classes by default) with probabilities."
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image to classify")}
    outputs = {
        "labels": Output(ArtifactKind.JSON, "the top categories as a list of {label, score}, best first"),
        "label": Output(ArtifactKind.TEXT, "the single most likely category"),
    }
    params = {"top_k": Param(int, 5, "how many categories to return", minimum=1, maximum=50)}
    default_model = EFFICIENTNET_LITE0
    requires = ("torch",)
    uses_torch_device = True

    def packaged_weights(self):
        return {EFFICIENTNET_LITE0: EFFICIENTNET_LITE0_WEIGHTS.locator(self.settings.cache_dir)}

    def hub_location(self, model_id: str) -> HubLocation | None:
        return None if model_id == EFFICIENTNET_LITE0 else HubLocation(model_id)

    def load(self, source: ModelSource, device: str) -> Any:
        import torch

        if source.model_id == EFFICIENTNET_LITE0 and source.path.suffix == ".pth":
            from efficientnet_lite_pytorch import EfficientNet

            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner to stdout
                module = EfficientNet.from_pretrained(EFFICIENTNET_LITE0, weights_path=str(source.path))
            return _Classifier(module.eval().to(device), efficientnet_lite_input, imagenet_labels(), device)

        from transformers import AutoImageProcessor, AutoModelForImageClassification

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        module = AutoModelForImageClassification.from_pretrained(str(source.path), dtype=dtype).eval().to(device)
        processor = AutoImageProcessor.from_pretrained(str(source.path))
        labels = [module.config.id2label[i] for i in range(module.config.num_labels)]

        def preprocess(image: Any):
            return processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"].to(dtype)

        return _Classifier(module, preprocess, labels, device)

    def run(self, classifier: _Classifier, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        pixels = classifier.preprocess(inputs["image"]).to(classifier.device)
        with torch.inference_mode():
            output = classifier.module(pixels)
        logits = getattr(output, "logits", output)
        probabilities = logits.float().softmax(-1)[0]
        top = probabilities.topk(min(params["top_k"], probabilities.shape[0]))
        ranked = [{"label": classifier.labels[i], "score": round(float(p), 4)}
                  for p, i in zip(top.values, top.indices, strict=True)]
        return {"labels": ranked, "label": OutputValue(ranked[0]["label"], {"score": ranked[0]["score"]})}
