"""Image captioning with BLIP or GIT checkpoints (the family is read from the checkpoint's config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInputError, ToolExecutionError
from orchestrator.models.pool import measure_size
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .torch_runtime import seeded_torch, torch_dtype
from .transformers_runtime import model_type, transformers_hub_location


@dataclass
class _Captioner:
    model: Any
    processor: Any
    family: str  # "blip" or "git"
    device: str
    dtype: Any
    max_text_positions: int

    @property
    def anymoda_size_bytes(self) -> int | None:
        """What the model pool counts: the loaded weights, not the folder (which may hold two copies)."""
        return measure_size(self.model)


class ImageCaptioning(Tool):
    name = "image-captioning"
    task = "image-to-text"
    description = (
        "Describe what an image shows in one short English sentence (a caption). Optionally give the start of "
        "the caption (e.g. 'a painting of') and the model completes it. Not for reading text in images (use ocr) "
        "or answering questions (use visual-question-answering)."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the image to describe"),
        "prompt": Input(ArtifactKind.TEXT, "optional start of the caption for the model to continue, e.g. 'a photo of'",
                        required=False),
    }
    outputs = {"caption": Output(ArtifactKind.TEXT, "the caption (beginning with the prompt when one is given)")}
    params = {
        "max_new_tokens": Param(int, 30, "longest caption, in tokens (about 3/4 of a word each)", minimum=1, maximum=128),
        "num_beams": Param(int, 3, "beam search width (more: more likely captions, slower); unused when sampling",
                           minimum=1, maximum=10),
        "sampling": Param(bool, False, "sample words (nucleus sampling, top_p 0.9) for varied captions instead of beam search"),
        "temperature": Param(float, 1.0, "sampling temperature (higher: more unusual words); only when sampling",
                             minimum=0.1, maximum=2.0),
        "seed": Param(int, 0, "random seed for sampling: the same seed gives the same caption", minimum=0, maximum=2**32 - 1),
    }
    default_model = "Salesforce/blip-image-captioning-base"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def hub_location(self, model_id: str) -> HubLocation | None:
        return transformers_hub_location(model_id)

    def load(self, source: ModelSource, device: str) -> _Captioner:
        from transformers import (
            AutoModelForCausalLM,
            AutoProcessor,
            BlipForConditionalGeneration,
        )

        family = model_type(source.path)
        dtype = torch_dtype(device)
        if family == "blip":
            model = BlipForConditionalGeneration.from_pretrained(str(source.path), dtype=dtype)
            positions = model.config.text_config.max_position_embeddings
        elif family == "git":
            model = AutoModelForCausalLM.from_pretrained(str(source.path), dtype=dtype)
            positions = model.config.max_position_embeddings  # text positions only: image tokens have their own
        else:
            raise InvalidInputError(
                f"tool {self.name!r} runs BLIP (e.g. Salesforce/blip-image-captioning-base) and GIT "
                f"(e.g. microsoft/git-base-coco) checkpoints; {source.model_id!r} is a {family!r} model"
            )
        processor = AutoProcessor.from_pretrained(str(source.path))
        return _Captioner(model.eval().to(device), processor, family, device, dtype, int(positions))

    def _prompt_ids(self, captioner: _Captioner, prompt: str) -> Any:
        import torch

        tokenizer = captioner.processor.tokenizer
        if captioner.family == "blip":
            # BLIP's generate swaps the leading [CLS] for its decoder start token and drops the final [SEP].
            ids = tokenizer(prompt, return_tensors="pt").input_ids
        else:
            # GIT continues text that starts with [CLS] and has no [SEP] (microsoft/git-base model card).
            ids = torch.tensor([[tokenizer.cls_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]])
        return ids

    def run(self, captioner: _Captioner, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        prompt = inputs.get("prompt")
        if prompt is not None:
            prompt = " ".join(prompt.split())
            if not prompt:
                raise InvalidInputError(f"tool {self.name!r}: input 'prompt' is empty; leave it out for a caption from scratch")
        pixels = captioner.processor(images=inputs["image"].convert("RGB"), return_tensors="pt")["pixel_values"]
        arguments: dict[str, Any] = {"pixel_values": pixels.to(captioner.device, captioner.dtype)}
        prompt_length = 1  # the decoder's start token
        if prompt is not None:
            ids = self._prompt_ids(captioner, prompt).to(captioner.device)
            arguments["input_ids"] = ids
            arguments["attention_mask"] = torch.ones_like(ids)
            prompt_length = ids.shape[1] - (1 if captioner.family == "blip" else 0)  # BLIP drops the [SEP]
        if prompt_length + params["max_new_tokens"] > captioner.max_text_positions:
            raise InvalidInputError(
                f"tool {self.name!r}: the prompt ({prompt_length} tokens) plus max_new_tokens ({params['max_new_tokens']}) "
                f"exceed the model's {captioner.max_text_positions} text positions; shorten the prompt"
            )
        # min_new_tokens=1: a caption never ends before its first word (BLIP's own decoding sets a minimum length too).
        options: dict[str, Any] = {"max_new_tokens": params["max_new_tokens"], "min_new_tokens": 1}
        if params["sampling"]:
            options.update(do_sample=True, top_p=0.9, temperature=params["temperature"], num_beams=1)
        else:
            options.update(do_sample=False, num_beams=params["num_beams"])

        with torch.inference_mode():
            if params["sampling"]:
                with seeded_torch(params["seed"], captioner.device):
                    sequences = captioner.model.generate(**arguments, **options)
            else:
                sequences = captioner.model.generate(**arguments, **options)
        caption = " ".join(captioner.processor.batch_decode(sequences, skip_special_tokens=True)[0].split())
        if not caption:
            raise ToolExecutionError(f"tool {self.name!r}: the model produced no words for this image")

        metadata: dict[str, Any] = {"model_type": captioner.family, "prompt": prompt, "sampling": params["sampling"],
                                    "generated_tokens": int(sequences.shape[1] - prompt_length)}
        if params["sampling"]:
            metadata.update(seed=params["seed"], temperature=params["temperature"], top_p=0.9)
        else:
            metadata["num_beams"] = params["num_beams"]
        return {"caption": OutputValue(caption, metadata)}
