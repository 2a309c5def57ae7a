"""Sentence embeddings and similarity with sentence-transformers models (all-MiniLM-L6-v2 packaged)."""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError
from orchestrator.models.resolve import ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .weight_packages import MINILM

MAX_SENTENCES = 10_000


class _SentenceTransformerTool(Tool):
    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    requires = ("sentence_transformers", "torch")
    family = "sentence-transformers"  # embedding and similarity share one loaded model
    uses_torch_device = True

    def packaged_weights(self):
        return {"sentence-transformers/all-MiniLM-L6-v2": MINILM.locator(self.settings.cache_dir)}

    def load(self, source: ModelSource, device: str) -> Any:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a per-tensor loading bar is noise in the CLI's output
        return SentenceTransformer(str(source.path), device=device)

    @staticmethod
    def embed(model: Any, sentences: list[str]) -> np.ndarray:
        return model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=len(sentences) > 256)


class SentenceEmbedding(_SentenceTransformerTool):
    name = "sentence-embedding"
    task = "feature-extraction"
    description = "Turn a text into a vector (unit length) that captures its meaning, for search and clustering."
    inputs = {"text": Input(ArtifactKind.TEXT, "the text to embed")}
    outputs = {"embedding": Output(ArtifactKind.JSON, "{dimensions, vector}: the unit-length embedding")}

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        text = inputs["text"].strip()
        if not text:
            raise InvalidInputError("sentence-embedding: the text is empty")
        vector = self.embed(model, [text])[0]
        return {"embedding": {"dimensions": int(vector.shape[0]), "vector": [round(float(v), 6) for v in vector]}}


class SentenceSimilarity(_SentenceTransformerTool):
    name = "sentence-similarity"
    task = "sentence-similarity"
    description = (
        "Score how close in meaning a source sentence is to each of several other sentences (cosine similarity, "
        "-1 to 1); the candidates are given one per line."
    )
    inputs = {
        "source": Input(ArtifactKind.TEXT, "the sentence to compare"),
        "sentences": Input(ArtifactKind.TEXT, "the candidate sentences, one per line"),
    }
    outputs = {
        "scores": Output(ArtifactKind.JSON, "list of {sentence, score} in the candidates' order"),
        "best": Output(ArtifactKind.TEXT, "the candidate closest in meaning"),
    }
    params = {"min_score": Param(float, -1.0, "leave out candidates scoring below this", minimum=-1.0, maximum=1.0)}

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        source = inputs["source"].strip()
        candidates = [line.strip() for line in inputs["sentences"].splitlines() if line.strip()]
        if not source:
            raise InvalidInputError("sentence-similarity: the source sentence is empty")
        if not candidates:
            raise InvalidInputError("sentence-similarity: no candidate sentences (give them one per line)")
        if len(candidates) > MAX_SENTENCES:
            raise InvalidInputError(f"sentence-similarity: {len(candidates):,} candidates, over the limit of {MAX_SENTENCES:,}")
        vectors = self.embed(model, [source, *candidates])
        similarities = vectors[1:] @ vectors[0]
        scores = [
            {"sentence": sentence, "score": round(float(score), 4)}
            for sentence, score in zip(candidates, similarities, strict=True)
            if score >= params["min_score"]
        ]
        best = int(np.argmax(similarities))
        return {"scores": scores, "best": OutputValue(candidates[best], {"score": round(float(similarities[best]), 4)})}
