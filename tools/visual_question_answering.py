"""Visual question answering: BLIP (writes its answer) or ViLT (picks from its answer vocabulary)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInputError, ToolExecutionError
from orchestrator.models.pool import measure_size
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .torch_runtime import torch_dtype
from .transformers_runtime import model_type, transformers_hub_location

MAX_QUESTION_WORDS = 50


def blip_question(question: str, max_words: int = MAX_QUESTION_WORDS) -> str:
    """A question as BLIP's VQA fine-tuning saw it (``pre_question`` in salesforce/BLIP's data/utils.py).

    Lowercased, without the punctuation ``.!"()*#:;~`` (question marks and commas stay), at most
    ``max_words`` words.
    """
    question = re.sub(r"([.!\"()*#:;~])", "", question.lower()).rstrip(" ")
    return " ".join(question.split(" ")[:max_words])


@dataclass
class _Answerer:
    model: Any
    processor: Any
    family: str  # "blip" (generative) or "vilt" (classifier over config.id2label)
    device: str
    dtype: Any

    @property
    def anymoda_size_bytes(self) -> int | None:
        """What the model pool counts: the loaded weights, not the folder (which may hold two copies)."""
        return measure_size(self.model)


class VisualQuestionAnswering(Tool):
    name = "visual-question-answering"
    task = "visual-question-answering"
    description = (
        "Answer a short question about what an image shows (what is it, what colour, how many, is there a ..., "
        "where is ...) with a short answer of a word or a few, plus alternative answers with scores. For text "
        "written in a document image use document-question-answering."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the image the question is about"),
        "question": Input(ArtifactKind.TEXT, "the question, in English"),
    }
    outputs = {
        "answer": Output(ArtifactKind.TEXT, "the answer the model gives (the first of answers)"),
        "answers": Output(ArtifactKind.JSON, (
            "candidate answers as a list of {answer, score} in the model's order of preference (score: the "
            "probability the model gives that answer)"
        )),
    }
    params = {
        "top_k": Param(int, 3, "how many candidate answers to list", minimum=1, maximum=20),
        "max_new_tokens": Param(int, 10, "longest answer in tokens (BLIP; ViLT picks whole answers)", minimum=1, maximum=64),
        "num_beams": Param(int, 3, "beam search width (BLIP); also caps how many BLIP candidates there are",
                           minimum=1, maximum=10),
    }
    default_model = "Salesforce/blip-vqa-base"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def hub_location(self, model_id: str) -> HubLocation | None:
        return transformers_hub_location(model_id)

    def load(self, source: ModelSource, device: str) -> _Answerer:
        from transformers import (
            AutoProcessor,
            BlipForQuestionAnswering,
            ViltForQuestionAnswering,
        )

        family = model_type(source.path)
        dtype = torch_dtype(device)
        if family == "blip":
            model = BlipForQuestionAnswering.from_pretrained(str(source.path), dtype=dtype)
        elif family == "vilt":
            model = ViltForQuestionAnswering.from_pretrained(str(source.path), dtype=dtype)
        else:
            raise InvalidInputError(
                f"tool {self.name!r} runs BLIP (e.g. Salesforce/blip-vqa-base) and ViLT "
                f"(e.g. dandelin/vilt-b32-finetuned-vqa) checkpoints; {source.model_id!r} is a {family!r} model"
            )
        processor = AutoProcessor.from_pretrained(str(source.path))
        return _Answerer(model.eval().to(device), processor, family, device, dtype)

    def run(self, answerer: _Answerer, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        question = " ".join(inputs["question"].split())
        if not question:
            raise InvalidInputError(f"tool {self.name!r}: input 'question' is empty")
        image = inputs["image"].convert("RGB")
        if answerer.family == "blip":
            ranked = self._generate(answerer, image, question, params)
        else:
            ranked = self._classify(answerer, image, question, params["top_k"])
        if not ranked:
            raise ToolExecutionError(f"tool {self.name!r}: the model produced no answer")
        best = ranked[0]
        metadata = {"model_type": answerer.family, "score": best["score"], "question": question}
        return {"answer": OutputValue(best["answer"], metadata), "answers": OutputValue(ranked, {"model_type": answerer.family})}

    def _classify(self, answerer: _Answerer, image: Any, question: str, top_k: int) -> list[dict[str, Any]]:
        import torch

        model = answerer.model
        # ViLT's text position table is short (40 for the VQA checkpoint); longer questions are cut, not refused.
        encoding = answerer.processor(image, question, return_tensors="pt", truncation=True,
                                      max_length=model.config.max_position_embeddings)
        encoding = {k: v.to(answerer.device) for k, v in encoding.items()}
        encoding["pixel_values"] = encoding["pixel_values"].to(answerer.dtype)
        with torch.inference_mode():
            logits = model(**encoding).logits[0].float()
        # ViLT's VQA head is trained with a binary cross-entropy per answer (VQA soft scores): sigmoid, not softmax.
        probabilities = logits.sigmoid()
        top = probabilities.topk(min(top_k, probabilities.shape[0]))
        return [{"answer": model.config.id2label[int(i)], "score": round(float(p), 4)} for p, i in zip(top.values, top.indices)]

    def _generate(self, answerer: _Answerer, image: Any, question: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        import torch

        model = answerer.model
        encoding = answerer.processor(images=image, text=blip_question(question), return_tensors="pt", truncation=True,
                                      max_length=model.config.text_config.max_position_embeddings)
        encoding = {k: v.to(answerer.device) for k, v in encoding.items()}
        encoding["pixel_values"] = encoding["pixel_values"].to(answerer.dtype)
        beams = params["num_beams"]
        returned = min(params["top_k"], beams)
        with torch.inference_mode():
            # BLIP's own VQA decoding: beam search, at least one answer token.
            output = model.generate(**encoding, max_new_tokens=params["max_new_tokens"], min_new_tokens=1,
                                    num_beams=beams, num_return_sequences=returned, do_sample=False,
                                    return_dict_in_generate=True, output_scores=True)
            # Per-token log-probabilities of each returned answer; their sum is the answer's log-probability.
            # Beam search reports log-softmaxed scores already; greedy search reports raw logits.
            steps = model.text_decoder.compute_transition_scores(
                output.sequences, output.scores, getattr(output, "beam_indices", None), normalize_logits=beams == 1
            )
        texts = answerer.processor.batch_decode(output.sequences, skip_special_tokens=True)
        # Kept in the beam search's order (length-normalised, as BLIP picks its answer); the score is the
        # probability of the whole answer. Finished beams' padding steps score 0 and add nothing.
        ranked: dict[str, float] = {}
        for text, token_scores in zip(texts, steps.float()):
            answer = " ".join(text.split())
            if answer and answer not in ranked:
                ranked[answer] = float(token_scores.sum().exp())
        return [{"answer": a, "score": float(f"{s:.4g}")} for a, s in ranked.items()]
