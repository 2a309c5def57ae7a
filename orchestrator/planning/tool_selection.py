"""Which tools a request asks for, in order: a trained clause classifier and a kind-feasible search.

A 0.5B planner picks tools poorly from a list of thirty but follows a tool sequence well (TinyAgent's
"Tool RAG": retrieve the tools first, let the grammar allow only those). The request is cut into
clauses (:func:`~orchestrator.planning.planner_retrieval.request_clauses`); each clause gets a probability
for every tool and for "no tool" (``_none``: "I have a photo of my kitchen"). The probabilities come
from a softmax head over MiniLM sentence embeddings, trained by ``anymoda train planner`` on
phrasings written for this project (``data/tool_phrases.json``) set in request-like frames; no
evaluation data is used. Where MiniLM cannot run, or no trained head is there, the nearest phrasing
by similarity stands in.

The sequence is then chosen as a whole, not clause by clause: a tool is only possible where its
required inputs can be fed by the request's attached kinds or an earlier tool's outputs ("enhance
its quality" with only a recording attached is speech enhancement, not image enhancement), and the
most probable feasible sequence wins (beam search).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..storage.artifacts import ArtifactKind
from ..tooling.tool import Tool
from .planner_retrieval import NO_TOOL, PHRASES_FILE, Embedder, request_clauses

DATA = Path(__file__).resolve().parents[1] / "data"  # package data lives at the package root
HEAD_FILE = DATA / "tool_selector.npz"
HEAD_FORMAT = 1
# Request-like frames around a phrasing: clauses arrive as "please X", "then X", "I'd like you to X".
FRAMES = ("{p}", "please {p}", "I want to {p}", "I'd like you to {p}", "can you {p}", "then {p}", "finally, {p}",
          "I need to {p}", "help me {p}", "after that, {p}", "and {p}", "could you {p} for me", "I would like to {p}",
          "first {p}", "{p} please")


# Clauses that set the scene ("I have a photo of my kitchen", "After that", "From the output of the
# detector") rarely ask for a tool themselves; their tool probabilities are scaled down by this factor.
_CONTEXT = re.compile(
    r"^\W*(?:i\s*(?:have|'ve|had|got|took|recorded|attached|am|'m)\b|there\s+(?:is|are)\b|th(?:is|ese)\s+(?:is|are)\b"
    r"|it\s+(?:is|has|contains|shows|consists)\b|here\s+(?:is|are)\b|my\s+\w+\s+(?:is|are|has)\b"
    r"|(?:after|from|once|when|using|based\s+on|with)\b(?!.*\b(?:please|can\s+you|could\s+you)\b))",
    re.IGNORECASE)
CONTEXT_FACTOR = 0.3
# A tool asked for twice in one request is rare; a second, non-adjacent use must be clearly asked for.
REPEAT_FACTOR = 0.2
# What an attached file is (planning/attachment_traits.py) changes what a request about it means: a question about
# a receipt is a question about its text, one about a voicemail a question about what was said. Tools that
# look at the wrong thing are scaled down, and what they lose goes to the file's reader, as does the share of
# question-answering tools that cannot read this file.
TRAIT_FACTORS = {
    "document": {"image-captioning": 0.2, "image-classification": 0.2, "object-detection": 0.2,
                 "open-vocabulary-detection": 0.2, "visual-question-answering": 0.2, "image-editing": 0.2,
                 "image-to-image": 0.2},
    "speech": {"audio-classification": 0.2, "voice-activity-detection": 0.3},
}
QUESTION_TOOLS = ("document-question-answering", "visual-question-answering", "question-answering")
_QUESTION = re.compile(r"\?|^\W*(?:what|which|who|whom|whose|when|where|why|how|is|are|was|were|did|does|do|can|could)\b",
                       re.IGNORECASE)


_WHOLE_TEXT = re.compile(r"\b(?:text|words|wording|transcribe|extract|ocr|type\s+(?:it|this|that)\s+out)\b"
                         r"|^\W*(?:please\s+)?read\s+(?:it|this|that|everything|all)\b", re.IGNORECASE)


# Asking to hear the answer ("read the message to me out loud") asks for speech, whichever clause says it.
_ALOUD = re.compile(r"\b(?:out\s+loud|aloud|read\s+(?:it|this|that|them)\s+(?:to\s+me|back)|speak\s+(?:it|this|that)"
                    r"|as\s+(?:audio|speech|a\s+voice\s+(?:note|message)))\b", re.IGNORECASE)
SPEECH_TOOL = "text-to-speech"


def trait_reader(trait: str, clause: str) -> str | None:
    """The tool that reads a file with this trait for this clause: a document's whole text comes from OCR,
    anything asked about it from document QA; anything about speech from speech recognition."""
    if trait == "document":
        return "ocr" if _WHOLE_TEXT.search(clause) else "document-question-answering"
    if trait == "speech":
        return "speech-recognition"
    return None


# A quoted text of three or more characters ('...', "...", or typographic quotes); the group that matched holds it.
QUOTED = re.compile(r"'([^']{3,})'|\"([^\"]{3,})\"|\u2018([^\u2019]{3,})\u2019|\u201c([^\u201d]{3,})\u201d")


def quoted_texts(text: str) -> list[str]:
    """The quoted texts in ``text``, in order, without their quotes."""
    return [next(group for group in match.groups() if group) for match in QUOTED.finditer(text)]


def embedding_text(clause: str) -> str:
    """What is embedded for a clause: quoted texts become '...' (a long quoted paragraph otherwise
    outweighs the few words that say what to do with it)."""
    return QUOTED.sub("'...'", clause).strip()


def training_examples(phrases_file: Path = PHRASES_FILE, labels: Sequence[str] | None = None,
                      frames: Sequence[str] = FRAMES) -> list[tuple[str, str]]:
    """(clause, label) pairs: every phrasing in every frame; ``labels`` limits the tools (``_none`` always kept)."""
    phrases = json.loads(phrases_file.read_text(encoding="utf-8"))
    examples = []
    for label, texts in phrases.items():
        if label.startswith("_") and label != NO_TOOL:
            continue
        if labels is not None and label != NO_TOOL and label not in labels:
            continue
        for text in texts:
            # Context clauses ("I have a photo") keep their own shape: framing them as asks would teach the
            # head that "please I have a photo" asks for something.
            for frame in (frames[:1] if label == NO_TOOL else frames):
                examples.append((frame.format(p=text), label))
    return examples


@dataclass
class SelectorHead:
    """A softmax layer over sentence embeddings: ``weights`` (labels x dims), ``bias`` (labels)."""

    labels: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    data_digest: str = ""  # of the training examples, so a stale head is noticed
    # The phrasings themselves (unframed), for a nearest-phrasing vote beside the softmax.
    phrase_vectors: np.ndarray | None = None
    phrase_labels: tuple[str, ...] = ()

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        phrases = self.phrase_vectors if self.phrase_vectors is not None else np.zeros((0, self.weights.shape[1]))
        np.savez(temporary, format=np.array(HEAD_FORMAT), labels=np.array(self.labels), weights=self.weights.astype(np.float32),
                 bias=self.bias.astype(np.float32), data_digest=np.array(self.data_digest),
                 phrase_vectors=phrases.astype(np.float16), phrase_labels=np.array(self.phrase_labels, dtype=str))
        temporary.replace(path)  # atomic: a cut-off save never leaves half a head behind

    @classmethod
    def load(cls, path: Path) -> SelectorHead:
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != HEAD_FORMAT:
                    raise InvalidInputError(f"{path}: tool selector format {int(data['format'])}, expected {HEAD_FORMAT}")
                phrases = data["phrase_vectors"].astype(np.float32) if "phrase_vectors" in data else None
                return cls(tuple(str(x) for x in data["labels"]), data["weights"], data["bias"], str(data["data_digest"]),
                           phrases if phrases is not None and len(phrases) else None,
                           tuple(str(x) for x in data["phrase_labels"]) if "phrase_labels" in data else ())
        except (OSError, KeyError, ValueError) as exc:
            raise InvalidInputError(f"{path}: not a tool selector head ({exc})") from None


def examples_digest(examples: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(examples)).encode()).hexdigest()[:16]


def train_head(vectors: np.ndarray, labels: Sequence[str], *, epochs: int = 400, learning_rate: float = 0.05,
               weight_decay: float = 1e-4, seed: int = 0, progress: Callable[[int, int, float], None] | None = None,
               start: SelectorHead | None = None) -> SelectorHead:
    """Full-batch Adam on the cross-entropy (seconds for thousands of clauses); ``start`` resumes."""
    names = tuple(sorted(set(labels)))
    index = {name: i for i, name in enumerate(names)}
    target = np.array([index[label] for label in labels])
    rng = np.random.default_rng(seed)
    if start is not None and start.labels == names:
        weights, bias = start.weights.astype(np.float64), start.bias.astype(np.float64)
    else:
        weights = rng.normal(0, 0.01, (len(names), vectors.shape[1]))
        bias = np.zeros(len(names))
    # Classes are unevenly represented (a tool with 20 phrasings against one with 5): weight them equally.
    counts = np.bincount(target, minlength=len(names)).astype(np.float64)
    sample_weight = (len(target) / (len(names) * counts))[target]
    m = [np.zeros_like(weights), np.zeros_like(bias)]
    v = [np.zeros_like(weights), np.zeros_like(bias)]
    beta1, beta2 = 0.9, 0.999
    for epoch in range(1, epochs + 1):
        logits = vectors @ weights.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        loss = float(-(sample_weight * np.log(probs[np.arange(len(target)), target] + 1e-12)).sum() / sample_weight.sum())
        grad = probs
        grad[np.arange(len(target)), target] -= 1.0
        grad *= (sample_weight / sample_weight.sum())[:, None]
        grads = [grad.T @ vectors + weight_decay * weights, grad.sum(axis=0)]
        for i, (param, g) in enumerate(zip((weights, bias), grads, strict=True)):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            step = learning_rate * (m[i] / (1 - beta1 ** epoch)) / (np.sqrt(v[i] / (1 - beta2 ** epoch)) + 1e-8)
            param -= step
        if progress is not None:
            progress(epoch, epochs, loss)
    return SelectorHead(names, weights.astype(np.float32), bias.astype(np.float32))


def required_kinds(tool: type[Tool]) -> tuple[set[ArtifactKind], bool]:
    """The non-text kinds a tool must be fed, and whether it takes one of several alternatives instead."""
    required = {spec.kind for spec in tool.inputs.values() if spec.required}
    if not required:  # alternatives (a table as text, rows or an image): any one will do
        return {spec.kind for spec in tool.inputs.values()}, True
    return required, False


# Tools that work on a body of text (summarise it, translate it, tag it, compare it) rather than write from a
# prompt: they need a text to exist (quoted in the request, attached, or made by an earlier step). "Can you
# help me analyze it" over a photo is not a summary of anything.
TEXT_BODY_TASKS = frozenset({"summarization", "translation", "token-classification", "question-answering",
                             "sentence-similarity", "feature-extraction", "text-classification"})
_PASSAGE = re.compile(r":\s*\S+(?:\s+\S+){3,}")


def has_text_body(request: str) -> bool:
    """Whether the request carries a text to work on: something quoted, or a passage after a colon."""
    return bool(QUOTED.search(request) or _PASSAGE.search(request))


def feasible(tool: type[Tool], available: set[ArtifactKind]) -> bool:
    if getattr(tool, "task", None) in TEXT_BODY_TASKS and ArtifactKind.TEXT not in available:
        return False
    kinds, alternatives = required_kinds(tool)
    kinds_needed = {k for k in kinds if k is not ArtifactKind.TEXT}
    if alternatives:
        return ArtifactKind.TEXT in kinds or bool(kinds & available)
    return kinds_needed <= available


@dataclass(frozen=True)
class Selection:
    tools: tuple[str, ...]
    clauses: tuple[str, ...]
    labels: tuple[str, ...]  # one per clause, _none included
    confidence: float  # the chosen sequence's mean per-clause probability


def nearest_phrasing(vectors: np.ndarray, bank: np.ndarray, bank_labels: Sequence[str], labels: Sequence[str],
                     temperature: float) -> np.ndarray:
    """Per label, the best similarity to any of its phrasings, sharpened into probabilities."""
    similarity = vectors @ bank.T
    best = np.full((len(vectors), len(labels)), -1.0)
    column = {name: i for i, name in enumerate(labels)}
    for j, label in enumerate(bank_labels):
        if label in column:
            best[:, column[label]] = np.maximum(best[:, column[label]], similarity[:, j])
    logits = best / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


class ToolSelector:
    """Clause probabilities (trained head, else nearest phrasing) and the kind-feasible best sequence."""

    def __init__(self, tools: Sequence[type[Tool]], embedder: Embedder, *, head: SelectorHead | None = None,
                 phrases_file: Path = PHRASES_FILE, beam_width: int = 16, temperature: float = 0.05,
                 nearest_weight: float = 0.5):
        self.tools = {tool.name: tool for tool in tools}
        self.temperature = temperature
        self.nearest_weight = nearest_weight
        self.embedder = embedder
        self.beam_width = beam_width
        self.head = head
        # Tools the trained head never saw (plugins) are known by their phrasings and description, and
        # chosen by the nearest-phrasing vote alone.
        self._extra_labels: tuple[str, ...] = ()
        self._extra_vectors: np.ndarray | None = None
        if self.head is not None:
            from .plan_syntax import first_sentence

            unseen = [tool for tool in tools if tool.name not in self.head.labels]
            texts = [(text, tool.name) for tool in unseen for text in (*tool.phrasings, first_sentence(tool.description))]
            if texts:
                self._extra_labels = tuple(label for _, label in texts)
                self._extra_vectors = embedder([embedding_text(text) for text, _ in texts])
        if self.head is None:
            # No trained head for these embeddings: the nearest phrasing decides, sharpened into probabilities.
            # Tools without phrasings (plugins) are known by their description.
            from .plan_syntax import first_sentence

            bank = [(text, label) for text, label in training_examples(phrases_file, list(self.tools), frames=FRAMES[:1])
                    if label == NO_TOOL or label in self.tools]
            phrased = {label for _, label in bank}
            bank += [(first_sentence(tool.description), tool.name) for tool in tools if tool.name not in phrased]
            self._bank_labels = [label for _, label in bank]
            self._bank = embedder([embedding_text(text) for text, _ in bank])
            self._label_names = tuple(sorted(set(self._bank_labels)))

    @property
    def labels(self) -> tuple[str, ...]:
        if self.head is None:
            return self._label_names
        return self.head.labels + tuple(dict.fromkeys(self._extra_labels))

    def clause_probabilities(self, clauses: Sequence[str]) -> np.ndarray:
        vectors = self.embedder([embedding_text(c) for c in clauses])
        if self.head is not None:
            known = len(self.head.labels)
            probs = np.zeros((len(vectors), len(self.labels)))
            probs[:, :known] = self.head.probabilities(vectors)
            bank = [v for v in (self.head.phrase_vectors, self._extra_vectors) if v is not None]
            if bank:
                # The softmax generalises over wording; the nearest phrasing is sharp where a phrasing fits
                # almost word for word. Their mean was measured better than either alone. A plugin has no
                # softmax column: its nearest-phrasing share counts in full.
                nearest = nearest_phrasing(vectors, np.vstack(bank),
                                           (*self.head.phrase_labels, *self._extra_labels) if self.head.phrase_vectors
                                           is not None else self._extra_labels, self.labels, self.temperature)
                probs[:, :known] = (1 - self.nearest_weight) * probs[:, :known] + self.nearest_weight * nearest[:, :known]
                probs[:, known:] = nearest[:, known:]
        else:
            probs = nearest_phrasing(vectors, self._bank, self._bank_labels, self._label_names, self.temperature)
        # Tools the head knows but this registry lacks cannot be chosen.
        keep = np.array([label == NO_TOOL or label in self.tools for label in self.labels])
        probs = probs * keep
        return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)

    def select(self, request: str, input_kinds: Sequence[ArtifactKind] = (),
               new_kinds: Sequence[ArtifactKind] = (), traits: Collection[str] = ()) -> Selection:
        """The tools, in order. ``new_kinds``: the kinds of files that came with this request; one that no
        chosen tool reads means a step is missing ("read me the total out loud" with a receipt attached
        asks to read the receipt first), so the tool most probably meant for it is put first. ``traits``:
        what those files are (see TRAIT_FACTORS)."""
        clauses = request_clauses(request)
        if not clauses:
            return Selection((), (), (), 0.0)
        probs = self.clause_probabilities(clauses)
        labels = self.labels
        none = labels.index(NO_TOOL) if NO_TOOL in labels else None
        for row, clause in zip(probs, clauses, strict=True):
            if none is not None and _CONTEXT.match(clause):
                row *= CONTEXT_FACTOR
                row[none] += 1.0 - row.sum()
            for trait in traits:
                self._apply_trait(row, trait, clause)
        # Beam over clauses: (log probability, chosen labels, kinds available so far).
        # A page of text or a recording of speech will be read into a text: text tools can work on it.
        readable = bool(set(traits) & {"document", "speech"})
        start = set(input_kinds) | ({ArtifactKind.TEXT} if has_text_body(request) or readable else set())
        beams: list[tuple[float, tuple[str, ...], frozenset[ArtifactKind]]] = [(0.0, (), frozenset(start))]
        for row in probs:
            candidates = []
            for score, chosen, available in beams:
                last_tool = next((c for c in reversed(chosen) if c != NO_TOOL), None)
                for j in np.argsort(-row)[:8]:
                    label, p = labels[j], float(row[j])
                    if p <= 1e-6:
                        continue
                    if label != NO_TOOL:
                        tool = self.tools[label]
                        # The same tool twice in a row is one step said twice ("transcribe it, write it down").
                        if not feasible(tool, set(available)) or label == last_tool:
                            continue
                        grown = available | {spec.kind for spec in tool.outputs.values()}
                        if label in chosen:
                            p *= REPEAT_FACTOR
                    else:
                        grown = available
                    candidates.append((score + math.log(p), chosen + (label,), frozenset(grown)))
            if not candidates:
                candidates = [(score + math.log(1e-6), chosen + (NO_TOOL,), available) for score, chosen, available in beams]
            beams = sorted(candidates, key=lambda c: -c[0])[: self.beam_width]
        score, chosen, _ = beams[0]
        tools = tuple(label for label in chosen if label != NO_TOOL)
        media = [kind for kind in dict.fromkeys(new_kinds) if kind is not ArtifactKind.TEXT]
        for kind in media:
            if any(kind in {spec.kind for spec in self.tools[t].inputs.values()} for t in tools):
                continue
            readers = [j for j, label in enumerate(labels) if label != NO_TOOL and label not in tools
                       and kind in {spec.kind for spec in self.tools[label].inputs.values()}
                       and feasible(self.tools[label], set(input_kinds) | {ArtifactKind.TEXT})]
            # A document whose first chosen tool works on text (a plugin that parses receipts) is read by OCR.
            wants_text = bool(tools) and (self.tools[tools[0]].task in TEXT_BODY_TASKS or any(
                spec.required and spec.kind is ArtifactKind.TEXT and name not in ("question", "prompt", "instruction")
                for name, spec in self.tools[tools[0]].inputs.items()))
            known = [labels.index(name) for trait in traits
                     if (name := "ocr" if trait == "document" and wants_text else trait_reader(trait, clauses[0])) in labels
                     and labels.index(name) in readers]
            if known:
                tools = (labels[known[0]],) + tools
            elif readers:
                best = max(readers, key=lambda j: float(probs[:, j].max()))
                tools = (labels[best],) + tools
        if _ALOUD.search(request) and SPEECH_TOOL in self.tools and SPEECH_TOOL not in tools:
            tools = tools + (SPEECH_TOOL,)
        return Selection(tools, tuple(clauses), chosen, math.exp(score / len(chosen)))

    def _apply_trait(self, row: np.ndarray, trait: str, clause: str) -> None:
        reader = trait_reader(trait, clause)
        if reader not in self.labels or reader not in self.tools:
            return
        factors = TRAIT_FACTORS.get(trait, {})
        moved = 0.0
        for j, label in enumerate(self.labels):
            if label in factors:
                kept = row[j] * factors[label]
                moved += row[j] - kept
                row[j] = kept
            elif label in QUESTION_TOOLS and label != reader and reader != "ocr":
                moved += row[j]  # the question is about this file, so the tool that reads it answers
                row[j] = 0.0
        row[self.labels.index(reader)] += moved

    def hint(self, request: str, input_kinds: Sequence[ArtifactKind] = (),
             new_kinds: Sequence[ArtifactKind] = (), traits: Collection[str] = ()) -> list[str]:
        return list(self.select(request, input_kinds, new_kinds, traits).tools)


def load_head(path: Path = HEAD_FILE) -> SelectorHead | None:
    return SelectorHead.load(path) if path.is_file() else None


@dataclass(frozen=True)
class TrainingReport:
    examples: int
    labels: int
    loss: float
    train_accuracy: float
    heldout_accuracy: float | None
    seconds: float
    path: Path


def train_tool_selector(embedder: Embedder, out: Path = HEAD_FILE, *, phrases_file: Path = PHRASES_FILE,
                        epochs: int = 400, heldout_fraction: float = 0.15, seed: int = 0, cache_dir: Path | None = None,
                        progress: Callable[[str, int, int, float], None] | None = None) -> TrainingReport:
    """Embed the framed phrasings (cached on disk by content, so a rerun resumes after the slow part),
    train the head, report accuracy on a held-out share of *phrasings* (all frames of a held-out
    phrasing are held out together), then retrain on everything and save."""
    started = time.perf_counter()
    examples = training_examples(phrases_file)
    digest = examples_digest(examples)
    texts = [embedding_text(text) for text, _ in examples]
    vectors = _cached_embeddings(embedder, texts, cache_dir, digest, progress)
    labels = [label for _, label in examples]
    rng = np.random.default_rng(seed)
    base = {}
    for i, (text, label) in enumerate(examples):
        key = (label, _unframe(text))
        base.setdefault(key, []).append(i)
    keys = sorted(base)
    held = {keys[i] for i in rng.permutation(len(keys))[: int(len(keys) * heldout_fraction)]}
    test_rows = [i for key in held for i in base[key]]
    train_rows = [i for key in keys if key not in held for i in base[key]]
    heldout_accuracy = None
    if test_rows:
        trial = train_head(vectors[train_rows], [labels[i] for i in train_rows], epochs=epochs, seed=seed,
                           progress=(lambda e, n, loss: progress("held-out check", e, n, loss)) if progress else None)
        predicted = trial.probabilities(vectors[test_rows]).argmax(axis=1)
        heldout_accuracy = float(np.mean([trial.labels[p] == labels[i] for p, i in zip(predicted, test_rows, strict=True)]))
    head = train_head(vectors, labels, epochs=epochs, seed=seed,
                      progress=(lambda e, n, loss: progress("training", e, n, loss)) if progress else None)
    head.data_digest = digest
    unframed = set(training_examples(phrases_file, frames=FRAMES[:1]))
    plain = [i for i, example in enumerate(examples) if example in unframed]
    head.phrase_vectors = vectors[plain]
    head.phrase_labels = tuple(labels[i] for i in plain)
    probs = head.probabilities(vectors)
    train_accuracy = float(np.mean([head.labels[p] == label for p, label in zip(probs.argmax(axis=1), labels, strict=True)]))
    loss = float(-np.mean(np.log(probs[np.arange(len(labels)), [head.labels.index(x) for x in labels]] + 1e-12)))
    head.save(out)
    return TrainingReport(len(examples), len(head.labels), loss, train_accuracy, heldout_accuracy,
                          time.perf_counter() - started, out)


def _unframe(text: str) -> str:
    for frame in sorted(FRAMES, key=len, reverse=True):
        prefix, _, suffix = frame.partition("{p}")
        if text.startswith(prefix) and text.endswith(suffix) and len(text) > len(prefix) + len(suffix):
            return text[len(prefix): len(text) - len(suffix)]
    return text


def _cached_embeddings(embedder: Embedder, texts: list[str], cache_dir: Path | None, digest: str,
                       progress: Callable[[str, int, int, float], None] | None) -> np.ndarray:
    """Embeddings of ``texts``, reusing every row a previous run embedded (by text), so an edit to
    the phrasings re-embeds only what changed and an interrupted run resumes where it stopped."""
    path = cache_dir / "tool-selector-embeddings.npz" if cache_dir is not None else None
    known: dict[str, np.ndarray] = {}
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                known = dict(zip((str(t) for t in data["texts"]), data["vectors"], strict=True))
        except (OSError, KeyError, ValueError):
            known = {}  # a damaged cache is only a slower run
    missing = [text for text in dict.fromkeys(texts) if text not in known]
    batch = 256
    for start in range(0, len(missing), batch):
        chunk = missing[start:start + batch]
        known.update(zip(chunk, embedder(chunk), strict=True))
        if progress is not None:
            progress("embedding", min(start + batch, len(missing)), len(missing), 0.0)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp.npz")
            np.savez(temporary, texts=np.array(list(known)), vectors=np.vstack(list(known.values())).astype(np.float32))
            temporary.replace(path)
    return np.vstack([known[text] for text in texts]).astype(np.float32)
