"""Workflow files: fixed, reviewed graphs of tool calls, written in YAML and run without a planner.

    name: grounded-segmentation
    description: Find the named objects, segment each with SAM, draw the masks.
    inputs:
      image: {kind: image}
      objects: {kind: text, default: "a dog"}
    nodes:
      detect:
        tool: open-vocabulary-detection
        args: {image: $image, labels: $objects}
      segment:
        tool: segment-anything
        when: count($detect.detections) > 0        # runs only if the detector found something
        args: {image: $image, boxes: $detect.detections}
      describe:
        tool: image-captioning
        for_each: {crops: $detect.detections, of: $image}   # once per detected box
        args: {image: $item}
    outputs:
      overlay: $segment.overlay
      captions: $describe.caption                  # a list: one per crop

A string argument starting with ``$`` refers to an input (``$image``), a node's output
(``$detect.detections``, or ``$detect`` when the node has one output of the kind needed) or the
current item of a fan-out (``$item``); ``$$`` starts a literal ``$``. A text argument may embed
references in braces: ``"Objects: {$detect.summary}"``. A node referring to a fan-out node's text
output without iterating it gets the texts joined, one per line.

:meth:`Workflow.validate` type-checks the whole file against the tool registry through the same
:func:`~orchestrator.planning.plan.validate_plan` the planner's plans go through, so a workflow and a plan
mean the same thing; every problem is reported as ``file:line: message``.

This module is the data model (a workflow and its parts). Beside it: reading files (:mod:`.loading`), the type
check (:mod:`.validation`), writing and saving plans as workflows (:mod:`.serialisation`), the ``when`` language
(:mod:`.conditions`) and the executor's view of a run (:mod:`.workflow_tasks`).
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, shown
from ..planning.plan import Plan, PlanTask
from ..storage.artifacts import Artifact, ArtifactKind
from ..tooling.registry import ToolRegistry

ITEM = "item"
REFERENCE = re.compile(r"^\$(?P<name>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?$")
EMBEDDED_REFERENCE = re.compile(r"\{\$(?P<name>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?\}")
FAN_OUT_MODES = ("crops", "items", "lines", "each")
MAX_NODES = 64
MAX_PROBLEM_CHARS = 300
MAX_PROBLEMS = 40


def bounded(message: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    """A message cut to ``limit`` characters (with an ellipsis and its full length) where it is longer."""
    return message if len(message) <= limit else f"{message[:limit]}… ({len(message)} characters in all)"


def safe_filename(name: str, fallback: str = "workflow", limit: int = 48) -> str:
    """``name`` (a workflow's, an output's: from a file someone else wrote) as one file name in the
    current folder: no separators, no '..', no leading dot or dash, no control characters, and short
    enough (``limit`` characters, at most 4 bytes each) for a 255-byte file name with its extension."""
    text = unicodedata.normalize("NFKC", str(name))
    text = re.sub(r"[^\w .-]+", "-", text)  # \w: letters and digits of any script, and '_'
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"-{2,}", "-", re.sub(r" {2,}", " ", text)).strip(" .-_")[:limit].rstrip(" .-")
    return text or fallback


@dataclass(frozen=True)
class Reference:
    """``$name`` or ``$name.output``: an input, a node's output, or the current fan-out item."""

    name: str
    output: str | None = None

    def __str__(self) -> str:
        return f"${self.name}" + (f".{self.output}" if self.output else "")


@dataclass(frozen=True)
class Template:
    """A text with ``{$ref}`` parts filled in at run time."""

    text: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class WorkflowInput:
    name: str
    kind: ArtifactKind
    description: str = ""
    default: Any = None  # text and json inputs only
    line: int = 0

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class FanOut:
    """Run a node once per item: ``crops`` of detections over an image, ``items`` of a JSON list,
    ``lines`` of a text, or ``each`` output of another fan-out node (map after map)."""

    mode: str
    source: Reference
    image: Reference | None = None  # crops only: the image the boxes refer to

    def describe(self) -> str:
        if self.mode == "crops":
            return f"for each crop of {self.source} over {self.image}"
        return {"items": "for each item of {}", "lines": "for each line of {}", "each": "for each {}"}[self.mode].format(
            self.source)


@dataclass(frozen=True)
class Condition:
    """A ``when`` expression: parsed once, evaluated over the referenced values at run time."""

    text: str
    tree: ast.Expression
    references: tuple[Reference, ...]  # in the order the placeholders __r0, __r1, ... name them


@dataclass(frozen=True)
class WorkflowNode:
    name: str
    tool: str
    args: dict[str, Any]  # literals, Reference, Template
    when: Condition | None = None
    for_each: FanOut | None = None
    model: str | None = None
    description: str = ""
    line: int = 0
    arg_lines: dict[str, int] = field(default_factory=dict)
    tool_line: int = 0

    def references(self) -> list[Reference]:
        found = []
        for value in self.args.values():
            if isinstance(value, Reference):
                found.append(value)
            elif isinstance(value, Template):
                found.extend(value.references)
        if self.when is not None:
            found.extend(self.when.references)
        if self.for_each is not None:
            found.append(self.for_each.source)
            if self.for_each.image is not None:
                found.append(self.for_each.image)
        return found


@dataclass(frozen=True)
class WorkflowOutput:
    name: str
    source: Reference
    line: int = 0


@dataclass(frozen=True)
class WorkflowProblem:
    line: int
    message: str


class WorkflowError(InvalidInputError):
    """A workflow file is invalid; every problem is listed as ``file:line: message``."""

    def __init__(self, source: str, problems: list[WorkflowProblem]):
        self.source = source
        # Every message may quote the file: one line each, bounded here whatever a check forgot to bound.
        self.problems = sorted((WorkflowProblem(p.line, bounded(p.message.replace("\n", " "))) for p in problems),
                               key=lambda p: p.line)
        where = bounded(source, 1000)  # a path the user gave: kept whole unless absurd
        lines = [f"{where}:{p.line}: {p.message}" for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            lines.append(f"{where}: … and {len(self.problems) - MAX_PROBLEMS} more problem(s)")
        super().__init__("\n".join(lines))


def parse_value(value: Any) -> Any:
    """An argument as written: ``$ref`` -> Reference, text with ``{$ref}`` -> Template, ``$$x`` -> ``$x``."""
    if not isinstance(value, str):
        return value
    if value.startswith("$$"):
        return value[1:]
    if value.startswith("$"):
        match = REFERENCE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{shown(value)} is not a reference: write $input, $node, $node.output or $item "
                             "(or $$ for a literal '$')")
        return Reference(match["name"], match["output"])
    parts = tuple(Reference(m["name"], m["output"]) for m in EMBEDDED_REFERENCE.finditer(value))
    return Template(value, parts) if parts else value


class Workflow:
    """A parsed workflow; build one with :meth:`load`, :meth:`loads`, :meth:`from_dict` or :meth:`from_plan`."""

    def __init__(self, name: str, *, inputs: Iterable[WorkflowInput] = (), nodes: Iterable[WorkflowNode] = (),
                 outputs: Iterable[WorkflowOutput] = (), description: str = "", source: str = "<workflow>"):
        self.name = name
        self.description = description
        self.inputs = {i.name: i for i in inputs}
        self.nodes = {n.name: n for n in nodes}
        self.outputs = {o.name: o for o in outputs}
        self.source = source

    # Reading, checking and writing live in their own modules (loading, validation, serialisation), which build
    # and take Workflow objects: they are imported when first used so that this module stays the one they import.

    @classmethod
    def load(cls, path: str | Path, registry: ToolRegistry | None = None) -> Workflow:
        """Read and validate a workflow file (against ``registry``, the default one if None)."""
        from .loading import load_workflow

        return load_workflow(path, registry)

    @classmethod
    def loads(cls, text: str, *, source: str = "<workflow>", registry: ToolRegistry | None = None,
              check: bool = True) -> Workflow:
        """Read workflow YAML; validated against ``registry`` (the default one if None) unless ``check`` is off."""
        from .loading import loads_workflow

        return loads_workflow(text, source=source, registry=registry, check=check)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<workflow>") -> Workflow:
        """Build from parsed YAML/JSON, checking structure (not tools: see :meth:`validate`)."""
        from .loading import workflow_from_dict

        return workflow_from_dict(data, source=source)

    @classmethod
    def from_plan(cls, plan: Plan | dict[str, Any], inputs: Iterable[Artifact], registry: ToolRegistry, *,
                  name: str = "saved-plan", description: str = "", outputs: Iterable[str] | None = None) -> Workflow:
        """A planner's plan as a workflow: its input artifacts become named inputs, tasks become nodes, and
        the outputs nothing else consumed become the workflow's outputs (or the task ids in ``outputs``)."""
        from .serialisation import workflow_from_plan

        return workflow_from_plan(plan, inputs, registry, name=name, description=description, outputs=outputs)

    def validate(self, registry: ToolRegistry, *, earlier: Sequence[WorkflowProblem] = ()) -> None:
        """Type-check against ``registry``; raise :class:`WorkflowError` listing every problem with its line
        (with ``earlier`` ones, found while reading the file)."""
        from .validation import validate_workflow

        validate_workflow(self, registry, earlier=earlier)

    def to_dict(self) -> dict[str, Any]:
        from .serialisation import workflow_to_dict

        return workflow_to_dict(self)

    def to_yaml(self) -> str:
        from .serialisation import workflow_to_yaml

        return workflow_to_yaml(self)

    def save(self, path: str | Path) -> Path:
        from .serialisation import save_workflow

        return save_workflow(self, path)

    # ------------------------------------------------------------------ kinds and the plan view

    def kind_of(self, reference: Reference, registry: ToolRegistry, wanted: ArtifactKind | None = None,
                item_of: WorkflowNode | None = None) -> ArtifactKind | None:
        """The kind a reference carries; None when it is ambiguous (a node with several outputs, no name)."""
        if reference.name == ITEM:
            return self.item_kind(item_of, registry) if item_of is not None else None
        if reference.name in self.inputs:
            return self.inputs[reference.name].kind
        if self.nodes[reference.name].tool not in registry:
            return None  # reported as an unknown tool
        tool = registry.get(self.nodes[reference.name].tool)
        if reference.output is not None:
            spec = tool.outputs.get(reference.output)
            return spec.kind if spec is not None else None
        kinds = [spec.kind for spec in tool.outputs.values()]
        if wanted is not None and kinds.count(wanted) == 1:
            return wanted
        return kinds[0] if len(kinds) == 1 else None

    def item_kind(self, node: WorkflowNode, registry: ToolRegistry) -> ArtifactKind | None:
        fan_out = node.for_each
        if fan_out.mode == "crops":
            return ArtifactKind.IMAGE
        if fan_out.mode == "lines":
            return ArtifactKind.TEXT
        if fan_out.mode == "items":
            return None  # literals: text or json, whatever the argument takes
        return self.kind_of(fan_out.source, registry)

    def as_plan(self, registry: ToolRegistry, leave_out: set[tuple[str, str]] = frozenset()) -> tuple[Plan, dict[str, str]]:
        """The workflow as a plan over virtual inputs (for validation), and which virtual id stands for what;
        ``leave_out`` names (node, argument) pairs to omit (references already found to name nothing)."""
        virtual: dict[str, str] = {}

        def virtual_id(kind: ArtifactKind, label: str) -> str:
            artifact_id = f"{kind.value}-{len(virtual) + 1:016x}"
            virtual[artifact_id] = label
            return artifact_id

        input_ids = {name: virtual_id(spec.kind, f"${name}") for name, spec in self.inputs.items()}
        tasks = []
        for node in self.nodes.values():
            tool = registry.get(node.tool) if node.tool in registry else None
            args: dict[str, Any] = {}
            for argument, value in node.args.items():
                if (node.name, argument) in leave_out:
                    continue
                wanted = tool.inputs[argument].kind if tool is not None and argument in tool.inputs else None
                if isinstance(value, Template):
                    args[argument] = value.text
                elif isinstance(value, Reference) and value.name == ITEM:
                    kind = self.item_kind(node, registry) if tool is not None else None
                    if kind is None:  # a JSON list's items are literals of whatever kind the argument takes
                        args[argument] = "" if wanted is ArtifactKind.TEXT else ({} if wanted is ArtifactKind.JSON else
                                                                               virtual_id(ArtifactKind.JSON, "$item"))
                    else:
                        args[argument] = virtual_id(kind, "$item")
                elif isinstance(value, Reference) and value.name in input_ids:
                    args[argument] = input_ids[value.name]
                elif isinstance(value, Reference):
                    args[argument] = f"<{value.name}" + (f".{value.output}" if value.output else "") + ">"
                else:
                    args[argument] = value
            deps = sorted({r.name for r in node.references() if r.name in self.nodes and r.name != node.name})
            tasks.append(PlanTask(node.name, node.tool, args, tuple(deps)))
        return Plan(tuple(tasks)), virtual

    # ------------------------------------------------------------------ drawing and identity

    def drawing(self) -> tuple[list[Any], list[Any]]:
        """Nodes and edges for :mod:`orchestrator.workflows.graph_drawing` (Mermaid text, PNG)."""
        from .graph_drawing import DrawEdge, DrawNode

        nodes = [DrawNode(f"in:{n}", n, "input", i.kind.value) for n, i in self.inputs.items()]
        nodes += [DrawNode(n.name, n.name, "task", n.tool, condition=f"if {n.when.text}" if n.when else "",
                           fan_out=n.for_each.describe() if n.for_each else "") for n in self.nodes.values()]
        nodes += [DrawNode(f"out:{n}", n, "output", str(o.source)) for n, o in self.outputs.items()]

        def endpoint(reference: Reference) -> str | None:
            if reference.name in self.inputs:
                return f"in:{reference.name}"
            return reference.name if reference.name in self.nodes else None

        edges, seen = [], set()

        def add(source: str | None, target: str, label: str, style: str) -> None:
            if source is not None and (source, target, label, style) not in seen:
                seen.add((source, target, label, style))
                edges.append(DrawEdge(source, target, label, style))

        for node in self.nodes.values():
            if node.for_each is not None:
                add(endpoint(node.for_each.source), node.name, node.for_each.mode, "fan_out")
                if node.for_each.image is not None:
                    add(endpoint(node.for_each.image), node.name, "of", "data")
            for argument, value in node.args.items():
                parts = [value] if isinstance(value, Reference) else value.references if isinstance(value, Template) else []
                for reference in parts:
                    if reference.name != ITEM:
                        add(endpoint(reference), node.name, f"{reference.output or reference.name} -> {argument}", "data")
            for reference in node.when.references if node.when else ():
                add(endpoint(reference), node.name, "when", "condition")
        for name, output in self.outputs.items():
            add(endpoint(output.source), f"out:{name}", output.source.output or "", "data")
        return nodes, edges

    def fingerprint(self) -> str:
        """Changes whenever what the workflow computes changes (used to key batch results)."""
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
