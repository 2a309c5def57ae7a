"""What the planner shows an LLM besides the request: worked examples and, for big registries, a tool shortlist.

Both are chosen by meaning: texts are embedded with the packaged all-MiniLM-L6-v2 (through the
``sentence-embedding`` tool, so the model is shared with it in the pool), or, where that model is
not installed, with a lexical embedding (hashed word and word-pair counts) that needs nothing.

* Demos: a pool of worked requests with their plans (``data/planner_demos.jsonl``, written for this
  project, none taken from an evaluation set). The ``k`` closest to the request are shown, most
  similar last (nearest the request), keeping only demos whose tools all exist in the registry and
  preferring demos whose inputs have the kinds the request brings.
* Shortlist: when the registry has more tools than fit a small model's prompt, the tools closest in
  meaning to the request, plus every tool that accepts a kind of attached input, in registry order.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..storage.artifacts import ArtifactKind
from ..storage.atomic_files import partial_path
from ..storage.jsonl import read_json_lines
from ..tooling.registry import builtin_tool
from ..tooling.tool import Tool
from .plan_syntax import CompactSyntax, PlanInput

Embedder = Callable[[Sequence[str]], np.ndarray]  # texts -> unit vectors, one row each

DATA = Path(__file__).resolve().parents[1] / "data"  # package data lives at the package root
# Hand-written demos, then those composed by scripts/make_planner_demos.py from per-tool phrasings.
DEMO_FILES = (DATA / "planner_demos.jsonl", DATA / "planner_demos_generated.jsonl")
_WORD = re.compile(r"[a-z0-9]+")


def lexical_embedder(dimensions: int = 2048) -> Embedder:
    """Hashed counts of words and word pairs, unit length: similarity by shared wording."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in words + [a + " " + b for a, b in pairwise(words)]:
                bucket = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=4).digest(), "little")
                matrix[row, bucket % dimensions] += 1.0
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-9)

    return embed


def minilm_embedder() -> Embedder | None:
    """The packaged MiniLM through the built-in sentence-embedding tool; None where it cannot run here."""
    tool_class = builtin_tool("sentence-embedding")
    if tool_class is None:
        return None
    tool = tool_class()
    if not tool.available().ok:
        return None

    def embed(texts: Sequence[str]) -> np.ndarray:
        with tool.loaded_model() as model:
            return np.asarray(tool.embed(model, list(texts)), dtype=np.float32)

    embed.cache_key = f"{tool.model_id}@{tool.resolve().path}"  # type: ignore[attr-defined]  # vectors on disk are reusable
    return embed


def default_embedder() -> Embedder:
    return minilm_embedder() or lexical_embedder()


@dataclass(frozen=True)
class Demo:
    request: str
    files: tuple[tuple[str, ArtifactKind], ...]
    plan: str  # in the compact syntax, with the files' names as input handles
    tools: tuple[str, ...]

    def inputs(self) -> list[PlanInput]:
        return [PlanInput(name, f"{kind.value}-{index:016x}", kind) for index, (name, kind) in enumerate(self.files)]


_PLAN_TOOL = re.compile(r"^t\d+\s*=\s*([A-Za-z0-9_-]+)\(", re.MULTILINE)


def load_demos(*paths: str | Path) -> list[Demo]:
    """Read demo files (JSONL: request, files [{name, kind}], plan); a bad line is refused with its number."""
    demos: list[Demo] = []
    for path in paths or DEMO_FILES:
        if Path(path).is_file() or paths:
            demos += _load_demo_file(Path(path))
    return demos


def _load_demo_file(path: Path) -> list[Demo]:
    demos = []
    syntax = CompactSyntax()
    for _lineno, where, data in read_json_lines(path):
        try:
            request, plan = data["request"], data["plan"]
            files = tuple((f["name"], ArtifactKind.parse(f["kind"])) for f in data.get("files", []))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{where}: a demo needs request, plan and files [{{name, kind}}] ({exc})") from None
        if not isinstance(request, str) or not isinstance(plan, str):
            raise InvalidInputError(f"{where}: request and plan must be text")
        demo = Demo(request, files, plan, tuple(_PLAN_TOOL.findall(plan)))
        try:
            syntax.parse(plan, demo.inputs())
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: the demo's plan does not parse: {exc}") from None
        demos.append(demo)
    return demos


class DemoSelector:
    """Picks the demos closest to a request; demo embeddings are computed once, on first use."""

    def __init__(self, demos: Sequence[Demo], embedder: Embedder | None = None):
        self.demos = list(demos)
        self._embedder = embedder
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def select(self, request: str, input_kinds: Sequence[ArtifactKind], known_tools: set[str], k: int) -> list[Demo]:
        usable = [i for i, d in enumerate(self.demos) if set(d.tools) <= known_tools]
        if k <= 0 or not usable:
            return []
        with self._lock:
            if self._vectors is None:
                self._vectors = cached_vectors(self.embedder, [d.request for d in self.demos], "planner-demos")
        query = self.embedder([request])[0]
        wanted = set(input_kinds)
        scores = {}
        for index in usable:
            kinds = {kind for _, kind in self.demos[index].files}
            # The same kinds of input make a demo far more useful: it shows how to name them.
            scores[index] = float(self._vectors[index] @ query) + 0.05 * (kinds == wanted)
        best = sorted(usable, key=lambda i: -scores[i])[:k]
        return [self.demos[i] for i in reversed(best)]


def cached_vectors(embedder: Embedder, texts: list[str], name: str) -> np.ndarray:
    """``embedder(texts)``, kept in the cache folder for an embedder that names its weights (``cache_key``):
    the demo pool's ~2,500 requests took 5-7 s to embed at every start of a process."""
    key = getattr(embedder, "cache_key", None)
    if key is None:
        return embedder(texts)
    from ..config import current_settings

    digest = hashlib.sha256(json.dumps([key, texts]).encode("utf-8")).hexdigest()[:16]
    path = current_settings().cache_dir / f"{name}-{digest}.npy"
    try:
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape[0] == len(texts):
            return vectors
    except (OSError, ValueError):
        pass  # not there yet, or damaged: embed again
    vectors = embedder(texts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = partial_path(path, ".npy")  # np.save would add .npy to any other name
        np.save(temporary, vectors)
        temporary.replace(path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass  # a read-only cache only costs the next start the same seconds
    return vectors


def shortlist_tools(request: str, tools: Sequence[type[Tool]], input_kinds: Sequence[ArtifactKind],
                    embedder: Embedder, size: int) -> list[type[Tool]]:
    """The ``size`` tools closest in meaning to the request, plus those that take an attached kind."""
    if len(tools) <= size:
        return list(tools)
    texts = [f"{tool.name}: {tool.description}" for tool in tools]
    vectors = embedder(texts + [request])
    similarity = vectors[:-1] @ vectors[-1]
    chosen = {int(i) for i in np.argsort(-similarity)[:size]}
    kinds = set(input_kinds)
    chosen |= {i for i, tool in enumerate(tools) if kinds & {spec.kind for spec in tool.inputs.values()}}
    return [tool for i, tool in enumerate(tools) if i in chosen]


PHRASES_FILE = DATA / "tool_phrases.json"
NO_TOOL = "_none"
# Clause boundaries of a request: sentences, and "then" / "after that" / ", and <verb>" joins.
_ACTION = (r"generate|create|convert|classify|translate|summari[sz]e|detect|segment|estimate|answer|extract|edit|modify|"
           r"compare|identify|transcribe|read|make|turn|enhance|describe|tell|find|produce|provide|perform|apply|change|"
           r"remove|reduce|improve|analy[sz]e|get|give|draw|determine|predict|recogni[sz]e|tag|check|understand")
_CLAUSES = re.compile(
    r"(?:[.;!?]\s+|,\s*(?:and\s+)?(?:then\s+)?|\s+and\s+then\s+|\s+then\s+|\s+after\s+that,?\s+|\s+finally,?\s+"
    rf"|\s+and\s+(?=(?:{_ACTION})\b)"
    # "I have a scan of a letter and I'd like to know ...": the scene, then the ask.
    r"|,?\s+and\s+(?=(?:i\s+(?:would|want|need|also|'d)|i'd|need|want|would\s+like)\b))", re.IGNORECASE)


def request_clauses(request: str) -> list[str]:
    """The request cut where one step ends and the next begins (quoted text is kept whole)."""
    quoted: list[str] = []

    def hide(match: re.Match) -> str:
        quoted.append(match.group(0))
        return f"QUOTE{len(quoted) - 1}"

    masked = re.sub(r"'[^']{3,}'|\"[^\"]{3,}\"", hide, request)
    clauses = [c.strip() for c in _CLAUSES.split(masked) if c and len(c.split()) >= 2]
    split: list[str] = []
    for clause in clauses:
        # "tell me the total out loud" asks for two steps: find the answer, then speak it.
        match = _ASK_ALOUD.match(clause) or _SAY_ALOUD_WHAT.match(clause)
        split += [match["ask"], "say it out loud"] if match else [clause]
    return [re.sub(r"QUOTE(\d+)", lambda m: quoted[int(m.group(1))], c) for c in split]


# "could you say out loud how much the sun cream cost": the same two steps, the question after the verb.
_SAY_ALOUD_WHAT = re.compile(r"^.*?\b(?:say|tell\s+me|read)\s+(?:out\s+loud|aloud)\s+(?P<ask>(?:how|what|which|who|when|where|"
                             r"whether|if)\b.+?)[.!?]?$", re.IGNORECASE)
_ASK_ALOUD = re.compile(r"^(?P<ask>(?:tell|give|show|read|say)\s+(?:me|us)\b.+?)\s+(?:out\s+loud|aloud)[.!?]?$", re.IGNORECASE)
