"""Scoring for the planning benchmark (``anymoda bench planner``), TaskBench-style.

A planner's output and the gold answer are both reduced to a :class:`Graph`: nodes carrying a
Hugging Face task tag and links ``[source, target]`` meaning "target consumes source's output"
(the shape of the cases in ``benchmarks/planner_dev.jsonl``, the dev cases shipped with the project). Scores
compare tags, never node ids or tool names, so a planner is free to number its tasks as it likes and to pick
any tool of the right task.

Metrics (percentages, 0-100):

* node P/R/F1 over the multiset of task tags of each request; edge P/R/F1 over the multiset of
  (source tag, target tag) pairs. Micro-averaged: true/false positives and false negatives are
  summed over all requests first, then turned into P/R/F1, as TaskBench does.
* exact-graph %: same node multiset and same edge multiset as gold.
* parse % and valid %: flags the caller measured; mean seconds per plan.
* the same figures per structure (single, chain, dag).

Conventions a reader of the figures should know:

* an unparseable prediction counts as an empty graph: every gold node and link is a false
  negative, nothing is a false positive, and it is never exact;
* when there is nothing to find and nothing was predicted (e.g. edges of single-tool requests
  predicted without links), P, R and F1 are 100: perfect agreement, not an undefined 0/0;
* a planned tool that the registry does not know becomes a node with task ``None``, which never
  matches a gold tag (a false positive node, and its links are false positive edges).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, ToolNotFoundError
from ..storage.jsonl import read_json_lines
from ..tooling.registry import ToolRegistry
from .plan import Plan, parse_reference

STRUCTURES = ("single", "chain", "dag")


@dataclass(frozen=True)
class Node:
    id: str
    task: str | None  # Hugging Face task tag; None for a tool nobody knows
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...] = ()
    links: tuple[tuple[str, str], ...] = ()

    def node_tags(self) -> Counter:
        return Counter(node.task for node in self.nodes)

    def edge_tags(self) -> Counter:
        tags = {node.id: node.task for node in self.nodes}
        return Counter((tags[src], tags[dst]) for src, dst in self.links)

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [{"id": n.id, "task": n.task, "args": n.args} for n in self.nodes],
                "links": [[src, dst] for src, dst in self.links]}


@dataclass(frozen=True)
class Case:
    id: str
    request: str
    structure: str
    files: tuple[dict[str, str], ...]
    gold: Graph


@dataclass(frozen=True)
class CaseResult:
    """One case as a planner did it; ``predicted`` is None when its output could not be parsed."""

    case: Case
    predicted: Graph | None
    parsed: bool
    valid: bool
    seconds: float = 0.0


@dataclass(frozen=True)
class Prediction:
    """A saved prediction line, not yet matched to its case."""

    id: str
    graph: Graph | None
    parsed: bool
    valid: bool
    seconds: float


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @classmethod
    def of(cls, predicted: Counter, gold: Counter) -> Counts:
        tp = sum((predicted & gold).values())
        return cls(tp, sum(predicted.values()) - tp, sum(gold.values()) - tp)

    def prf(self) -> tuple[float, float, float]:
        if self.tp + self.fp + self.fn == 0:
            return 100.0, 100.0, 100.0  # nothing to find, nothing invented
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return 100 * precision, 100 * recall, 100 * f1


@dataclass(frozen=True)
class Score:
    cases: int
    parse_pct: float
    valid_pct: float
    node_precision: float
    node_recall: float
    node_f1: float
    edge_precision: float
    edge_recall: float
    edge_f1: float
    exact_pct: float
    mean_seconds: float
    nodes: Counts
    edges: Counts
    by_structure: dict[str, Score] = field(default_factory=dict)


# ---------------------------------------------------------------- reading cases and graphs


def gold_graph(case: Case) -> Graph:
    return case.gold


def _graph_from_json(data: Any, where: str, *, allow_none_task: bool) -> Graph:
    """Parse ``{"nodes": [...], "links": [...]}``; ``where`` prefixes every message (file:line: field)."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: must be an object with 'nodes' and 'links'")
    raw_nodes, raw_links = data.get("nodes"), data.get("links", [])
    if not isinstance(raw_nodes, list):
        raise InvalidInputError(f"{where}.nodes: must be a list of nodes")
    nodes: list[Node] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        at = f"{where}.nodes[{index}]"
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{at}: must be an object with id, task, args")
        node_id, task, args = raw.get("id"), raw.get("task"), raw.get("args", {})
        if not isinstance(node_id, str) or not node_id:
            raise InvalidInputError(f"{at}.id: must be a non-empty string, got {node_id!r}")
        if node_id in seen:
            raise InvalidInputError(f"{at}.id: node id {node_id!r} is used twice")
        if not (isinstance(task, str) and task) and not (allow_none_task and task is None):
            raise InvalidInputError(f"{at}.task: must be a task tag like 'image-to-text', got {task!r}")
        if not isinstance(args, dict):
            raise InvalidInputError(f"{at}.args: must be an object")
        seen.add(node_id)
        nodes.append(Node(node_id, task, dict(args)))
    if not isinstance(raw_links, list):
        raise InvalidInputError(f"{where}.links: must be a list of [source, target] pairs")
    links: list[tuple[str, str]] = []
    for index, raw in enumerate(raw_links):
        at = f"{where}.links[{index}]"
        if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw)):
            raise InvalidInputError(f"{at}: must be a [source, target] pair of node ids, got {raw!r}")
        for end in raw:
            if end not in seen:
                raise InvalidInputError(f"{at}: names unknown node {end!r} (nodes: {', '.join(sorted(seen)) or 'none'})")
        links.append((raw[0], raw[1]))
    return Graph(tuple(nodes), tuple(links))


def prediction_graph(data: Any, where: str = "prediction") -> Graph:
    """A predicted graph in the gold format; node tasks may be null (a tool with no known task)."""
    return _graph_from_json(data, where, allow_none_task=True)


def infer_structure(graph: Graph) -> str:
    """single, chain (one path through every node) or dag, for case files that leave it out."""
    if len(graph.nodes) <= 1:
        return "single"
    outgoing = Counter(src for src, _ in graph.links)
    incoming = Counter(dst for _, dst in graph.links)
    path = (len(set(graph.links)) == len(graph.nodes) - 1
            and max(outgoing.values(), default=0) <= 1 and max(incoming.values(), default=0) <= 1)
    return "chain" if path else "dag"


def load_cases(path: str | Path) -> list[Case]:
    """Read a JSONL case file; a malformed line is refused with its line number and field."""
    path = Path(path)
    cases: list[Case] = []
    ids: dict[str, int] = {}
    for lineno, where, data in read_json_lines(path):
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: a case must be a JSON object")
        case_id = data.get("id", str(lineno))  # a line number still identifies a case with no id
        if not isinstance(case_id, str) or not case_id:
            raise InvalidInputError(f"{where}: field 'id' must be a non-empty string")
        if case_id in ids:
            raise InvalidInputError(f"{where}: field 'id': {case_id!r} was already used on line {ids[case_id]}")
        ids[case_id] = lineno
        request = data.get("request")
        if not isinstance(request, str) or not request.strip():
            raise InvalidInputError(f"{where}: field 'request' is missing or not text")
        if "gold" not in data:
            raise InvalidInputError(f"{where}: field 'gold' is missing")
        gold = _graph_from_json(data["gold"], f"{where}: field 'gold'", allow_none_task=False)
        files = data.get("files", [])
        if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("kind"), str) for f in files):
            raise InvalidInputError(f"{where}: field 'files' must be a list of {{\"name\", \"kind\"}} objects")
        structure = data.get("structure") or infer_structure(gold)
        if structure not in STRUCTURES:
            raise InvalidInputError(f"{where}: field 'structure' is {structure!r}; expected one of {', '.join(STRUCTURES)}")
        cases.append(Case(case_id, request, structure, tuple(dict(f) for f in files), gold))
    return cases


# ---------------------------------------------------------------- plans to graphs


def registry_tool_task(registry: ToolRegistry) -> Callable[[str], str | None]:
    """Tool name -> its task tag, None for a tool the registry does not have."""
    def tool_task(name: str) -> str | None:
        try:
            return registry.get(name).task
        except ToolNotFoundError:
            return None
    return tool_task


def _references(value: Any) -> Iterable[str]:
    reference = parse_reference(value)
    if reference is not None:
        yield reference[0]
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _references(item)


def graph_from_plan(plan: Plan, tool_task: Callable[[str], str | None], *, deps_as_links: bool = False) -> Graph:
    """The graph a plan stands for, in gold terms: task tags for tools, links where outputs are consumed.

    A link comes from a reference (``<t1>``, ``<t1.field>``) in an argument, because the README defines
    a link as consumption of another node's output. A bare ``deps`` entry only orders tasks, it passes
    no data, so by default it is not a link (``deps_as_links=True`` counts it, for planners whose
    dependency list is meant as data flow). References to tasks outside the plan, or to the task
    itself, are dropped: they are validity errors, scored by valid %, not edges. Two arguments that
    take the same task's output make one link, as in gold.
    """
    ids = {task.id for task in plan.tasks}
    nodes = []
    links: dict[tuple[str, str], None] = {}  # ordered set
    for task in plan.tasks:
        nodes.append(Node(task.id, tool_task(task.tool), dict(task.args)))
        sources = list(_references(list(task.args.values())))
        if deps_as_links:
            sources += list(task.deps)
        for source in sources:
            if source in ids and source != task.id:
                links[(source, task.id)] = None
    # a duplicated task id is a validity error; scoring keeps the first so links stay unambiguous
    unique: dict[str, Node] = {}
    for node in nodes:
        unique.setdefault(node.id, node)
    return Graph(tuple(unique.values()), tuple(links))


# ---------------------------------------------------------------- scoring


def case_counts(predicted: Graph | None, gold: Graph) -> tuple[Counts, Counts, bool]:
    """Node counts, edge counts and exactness of one prediction against its gold graph."""
    predicted = predicted or Graph()
    nodes = Counts.of(predicted.node_tags(), gold.node_tags())
    edges = Counts.of(predicted.edge_tags(), gold.edge_tags())
    exact = predicted.node_tags() == gold.node_tags() and predicted.edge_tags() == gold.edge_tags()
    return nodes, edges, exact


def _score(results: Sequence[CaseResult], by_structure: bool) -> Score:
    nodes, edges, exact = Counts(), Counts(), 0
    for result in results:
        # an unparseable output has no graph to credit, whatever a planner put in ``predicted``
        n, e, x = case_counts(result.predicted if result.parsed else None, result.case.gold)
        nodes, edges, exact = nodes + n, edges + e, exact + (x and result.parsed)
    count = len(results)

    def pct(k: int) -> float:
        return 100 * k / count if count else 0.0

    node_p, node_r, node_f = nodes.prf()
    edge_p, edge_r, edge_f = edges.prf()
    groups = {}
    if by_structure:
        for structure in STRUCTURES:
            members = [r for r in results if r.case.structure == structure]
            if members:
                groups[structure] = _score(members, by_structure=False)
    return Score(
        cases=count,
        parse_pct=pct(sum(r.parsed for r in results)),
        valid_pct=pct(sum(r.parsed and r.valid for r in results)),
        node_precision=node_p, node_recall=node_r, node_f1=node_f,
        edge_precision=edge_p, edge_recall=edge_r, edge_f1=edge_f,
        exact_pct=pct(exact),
        mean_seconds=sum(r.seconds for r in results) / count if count else 0.0,
        nodes=nodes, edges=edges, by_structure=groups,
    )


def score(results: Sequence[CaseResult]) -> Score:
    return _score(list(results), by_structure=True)


def format_report(result: Score) -> str:
    lines = [
        f"cases: {result.cases}",
        f"parse %: {result.parse_pct:.1f}",
        f"valid %: {result.valid_pct:.1f}",
        f"node F1: {result.node_f1:.1f} (P {result.node_precision:.1f}, R {result.node_recall:.1f})",
        f"edge F1: {result.edge_f1:.1f} (P {result.edge_precision:.1f}, R {result.edge_recall:.1f})",
        f"exact-graph %: {result.exact_pct:.1f}",
        f"mean seconds per plan: {result.mean_seconds:.2f}",
        "by structure:",
    ]
    for structure, part in result.by_structure.items():
        lines.append(f"  {structure} ({part.cases}): parse {part.parse_pct:.1f}%, valid {part.valid_pct:.1f}%, "
                     f"node F1 {part.node_f1:.1f}, edge F1 {part.edge_f1:.1f}, exact {part.exact_pct:.1f}%, "
                     f"{part.mean_seconds:.2f} s")
    return "\n".join(lines)


def format_comparison(scores: dict[str, Score]) -> str:
    """Several planners' scores side by side, one metric per line, then one line per structure and planner."""
    labels = list(scores)
    width = max(12, *(len(label) for label in labels))
    rows = [
        ("parse %", lambda s: s.parse_pct), ("valid %", lambda s: s.valid_pct),
        ("node F1", lambda s: s.node_f1), ("edge F1", lambda s: s.edge_f1),
        ("exact-graph %", lambda s: s.exact_pct), ("mean seconds per plan", lambda s: s.mean_seconds),
    ]
    first = next(iter(scores.values()))
    lines = [f"{'cases: ' + str(first.cases):<24}" + "".join(f"{label:>{width + 2}}" for label in labels)]
    for name, value in rows:
        digits = 2 if name.startswith("mean") else 1
        lines.append(f"{name + ':':<24}" + "".join(f"{value(scores[label]):>{width + 2}.{digits}f}" for label in labels))
    lines.append("by structure:")
    for structure in STRUCTURES:
        for label in labels:
            part = scores[label].by_structure.get(structure)
            if part is None:
                continue
            lines.append(f"  {structure} ({part.cases}) {label}: parse {part.parse_pct:.1f}%, valid {part.valid_pct:.1f}%, "
                         f"node F1 {part.node_f1:.1f}, edge F1 {part.edge_f1:.1f}, exact {part.exact_pct:.1f}%, "
                         f"{part.mean_seconds:.2f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------- saved predictions


def save_predictions(path: str | Path, results: Iterable[CaseResult]) -> None:
    """One line per case in the gold format, plus ``parsed``, ``valid`` and ``seconds`` so that
    parse %, valid % and timing can be re-checked too (other scorers ignore the extra keys)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for result in results:
            graph = result.predicted if result.parsed and result.predicted is not None else Graph()
            line = {"id": result.case.id, **graph.to_json(),
                    "parsed": result.parsed, "valid": result.valid, "seconds": round(result.seconds, 4)}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def load_predictions(path: str | Path) -> dict[str, Prediction]:
    """Read saved predictions; a line without ``parsed`` counts as parsed and valid (plain gold format)."""
    path = Path(path)
    predictions: dict[str, Prediction] = {}
    for _lineno, where, data in read_json_lines(path):
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise InvalidInputError(f"{where}: field 'id' is missing")
        if data["id"] in predictions:
            raise InvalidInputError(f"{where}: field 'id': {data['id']!r} appears twice")
        parsed = data.get("parsed", True)
        valid = data.get("valid", True)
        seconds = data.get("seconds", 0.0)
        if not isinstance(parsed, bool) or not isinstance(valid, bool):
            raise InvalidInputError(f"{where}: fields 'parsed' and 'valid' must be true or false")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise InvalidInputError(f"{where}: field 'seconds' must be a number")
        graph = prediction_graph(data, f"{where}: prediction") if parsed else None
        predictions[data["id"]] = Prediction(data["id"], graph, parsed, valid, float(seconds))
    return predictions


def match_predictions(cases: Sequence[Case], predictions: dict[str, Prediction]) -> list[CaseResult]:
    """Pair cases with saved predictions; a case with none counts as unparseable (the planner gave nothing)."""
    known = {case.id for case in cases}
    stray = sorted(set(predictions) - known)
    if stray:
        raise InvalidInputError(f"predictions for cases not in the case file: {', '.join(stray[:5])}"
                                + (f" and {len(stray) - 5} more" if len(stray) > 5 else ""))
    results = []
    for case in cases:
        p = predictions.get(case.id)
        results.append(CaseResult(case, None, False, False, 0.0) if p is None
                       else CaseResult(case, p.graph, p.parsed, p.valid, p.seconds))
    return results
