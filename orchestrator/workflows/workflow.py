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
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInputError, shown
from ..planning.plan import (
    TASK_ID,
    Plan,
    PlanError,
    PlanTask,
    parse_reference,
    validate_plan,
)
from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..tooling.registry import ToolRegistry

ITEM = "item"
REFERENCE = re.compile(r"^\$(?P<name>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?$")
EMBEDDED_REFERENCE = re.compile(r"\{\$(?P<name>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?\}")
FAN_OUT_MODES = ("crops", "items", "lines", "each")
CONDITION_FUNCTIONS = ("count", "len", "lower", "upper", "strip", "float", "int")
MAX_NODES = 64
# Limits on what a workflow file may make us do. A file is written by someone else as often as not
# (shared, downloaded); YAML anchors let 600 bytes stand for gigabytes, and Python's parser and PyYAML's
# composer recurse, so each is bounded before anything looks at the values.
MAX_FILE_BYTES = 1_000_000
MAX_YAML_VALUES = 100_000  # values after every alias is expanded (the shipped workflows have ~100)
MAX_YAML_CHARS = 2_000_000  # characters of text after every alias is expanded
MAX_YAML_DEPTH = 48
MAX_CONDITION_CHARS = 500
MAX_CONDITION_DEPTH = 24
MAX_NAME_CHARS = 100
MAX_PROBLEM_CHARS = 300
MAX_PROBLEMS = 40
_ARGUMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
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


# ---------------------------------------------------------------------------------- YAML with lines


class _Mapping(dict):
    """A YAML mapping that remembers where it and each of its keys stand in the file."""

    line: int = 0
    key_lines: dict[str, int]


class _Refused(yaml.composer.ComposerError):
    """Valid YAML that this loader will not expand (too big, too deep, an alias inside itself)."""


class _LineLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting as it composes: what the document would be with every alias
    expanded (values, characters) and how deep it nests, refused at the alias or value that goes over
    a limit, before anything is constructed (construction shares an anchor's value among its aliases,
    but everything after it — messages, JSON, the run's state — would expand them)."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (values, characters) once composed
        self._values = self._characters = self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # raises for an undefined alias
            size = self._expanded.get(id(node))
            alias = f"alias *{event.anchor[:40]}" + ("…" if len(event.anchor) > 40 else "")
            if size is None:  # its anchor's value is still being composed: the alias is inside it
                raise _Refused(None, None, f"{alias} is used inside the value it names, which would never end",
                               event.start_mark)
            self._count(*size, event.start_mark, alias)
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(None, None, f"values nested more than {MAX_YAML_DEPTH} deep", event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.ScalarNode):
            size = (1, len(node.value))
            self._count(*size, event.start_mark, "this value")
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else [c for pair in node.value for c in pair]
            inside = [self._expanded[id(child)] for child in children]
            size = (1 + sum(v for v, _ in inside), sum(c for _, c in inside))
            self._count(1, 0, event.start_mark, "this value")
        self._expanded[id(node)] = size
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:  # 2021-13-45 as a date, an int of 5000 digits
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value ({exc})",
                                                    node.start_mark) from None

    def _count(self, values: int, characters: int, mark: Any, what: str) -> None:
        self._values += values
        self._characters += characters
        if self._values > MAX_YAML_VALUES or self._characters > MAX_YAML_CHARS:
            limit = (f"{MAX_YAML_VALUES} values" if self._values > MAX_YAML_VALUES
                     else f"{MAX_YAML_CHARS} characters of text")
            raise _Refused(None, None, f"{what} takes the workflow past {limit} once every alias is expanded "
                                       "(anchors and aliases repeat values; a workflow needs far fewer)", mark)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(None, None, f"keys must be names, got {shown(key)}",
                                                    key_node.start_mark)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"{shown(key)} is given twice", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(mapping: Any, key: str | None = None, fallback: int = 1) -> int:
    if isinstance(mapping, _Mapping):
        return mapping.key_lines.get(key, mapping.line) if key is not None else mapping.line
    return fallback


# ---------------------------------------------------------------------------------- the workflow


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

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, path: str | Path, registry: ToolRegistry | None = None) -> Workflow:
        """Read and validate a workflow file (against ``registry``, the default one if None)."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"workflow file {shown(str(path))} does not exist or is not a regular file")
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InvalidInputError(f"workflow file {shown(str(path))} cannot be read ({exc.strerror})") from None
        if len(data) > MAX_FILE_BYTES:
            raise WorkflowError(str(path), [WorkflowProblem(1, f"over {MAX_FILE_BYTES} bytes; a workflow file is "
                                                               "a few kilobytes")])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkflowError(str(path), [WorkflowProblem(1, f"not UTF-8 text ({exc.reason})")]) from None
        return cls.loads(text, source=str(path), registry=registry)

    @classmethod
    def loads(cls, text: str, *, source: str = "<workflow>", registry: ToolRegistry | None = None,
              check: bool = True) -> Workflow:
        if len(text) > MAX_FILE_BYTES:
            raise WorkflowError(source, [WorkflowProblem(1, f"over {MAX_FILE_BYTES} characters; a workflow is a few "
                                                            "thousand")])
        try:
            data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            prefix = "" if isinstance(exc, _Refused) else "not valid YAML: "
            raise WorkflowError(source, [WorkflowProblem(line, f"{prefix}{exc.problem or exc.context}")]) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control characters)
            line = text[:exc.position].count("\n") + 1 if isinstance(exc.position, int) else 1
            character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else shown(exc.character)
            raise WorkflowError(source, [WorkflowProblem(line, f"not valid YAML: the character {character} is not "
                                                               "allowed")]) from None
        except yaml.YAMLError as exc:
            raise WorkflowError(source, [WorkflowProblem(1, f"not valid YAML: {exc}")]) from None
        except RecursionError:  # the composer's depth limit should come first; this is the backstop
            raise WorkflowError(source, [WorkflowProblem(1, "not valid YAML: nested too deeply")]) from None
        workflow, problems = cls._build(data, source)
        if check:
            workflow.validate(registry or ToolRegistry.default(), earlier=problems)
        elif problems:
            raise WorkflowError(source, problems)
        return workflow

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<workflow>") -> Workflow:
        """Build from parsed YAML/JSON, checking structure (not tools: see :meth:`validate`)."""
        workflow, problems = cls._build(data, source)
        if problems:
            raise WorkflowError(source, problems)
        return workflow

    @classmethod
    def _build(cls, data: Any, source: str) -> tuple[Workflow, list[WorkflowProblem]]:
        """The workflow with every well-formed part, and what was malformed (reported with the type check)."""
        problems: list[WorkflowProblem] = []

        def problem(line: int, message: str) -> None:
            problems.append(WorkflowProblem(line, message))

        if not isinstance(data, dict):
            raise WorkflowError(source, [WorkflowProblem(1, "a workflow is a mapping with name, inputs, nodes, outputs")])
        unknown = set(data) - {"name", "description", "inputs", "nodes", "outputs"}
        for key in sorted(unknown):
            problem(_line(data, key), f"unknown key {shown(key)} (a workflow has name, description, inputs, nodes, "
                                      "outputs)")
        name = data.get("name", Path(source).stem if source != "<workflow>" else "workflow")
        if not isinstance(name, str) or not name.strip():
            problem(_line(data, "name"), "'name' must be a non-empty text")
            name = "workflow"
        elif len(name.strip()) > MAX_NAME_CHARS or any(unicodedata.category(c)[0] == "C" for c in name.strip()):
            problem(_line(data, "name"), f"'name' must be one line of at most {MAX_NAME_CHARS} characters, without "
                                         f"control characters, got {shown(name)}")
            name = "workflow"
        description = data.get("description", "") or ""
        if not isinstance(description, str):
            problem(_line(data, "description"), "'description' must be text")
            description = ""

        inputs = _parse_inputs(data.get("inputs", {}), data, problem)
        nodes = _parse_nodes(data.get("nodes"), data, problem)
        outputs = _parse_outputs(data.get("outputs", {}), data, problem)
        return cls(name.strip(), inputs=inputs, nodes=nodes, outputs=outputs, description=description.strip(),
                   source=source), problems

    # ------------------------------------------------------------------ checking

    def validate(self, registry: ToolRegistry, *, earlier: list[WorkflowProblem] = ()) -> None:
        """Type-check against ``registry``; raise :class:`WorkflowError` listing every problem with its line
        (with ``earlier`` ones, found while reading the file)."""
        problems: list[WorkflowProblem] = list(earlier)
        names = set(self.inputs)
        for node in self.nodes.values():
            if node.name in names:
                problems.append(WorkflowProblem(node.line, f"node {node.name!r} has the name of an input; names must be unique"))
        fan_outs = {n.name for n in self.nodes.values() if n.for_each is not None}

        unresolved: set[tuple[str, str]] = set()  # (node, argument) whose reference names nothing
        for node in self.nodes.values():
            for argument, value in node.args.items():
                parts = [value] if isinstance(value, Reference) else value.references if isinstance(value, Template) else []
                for reference in parts:
                    message = self._reference_problem(reference, node)
                    if message:
                        unresolved.add((node.name, argument))
                        problems.append(WorkflowProblem(node.arg_lines.get(argument, node.line),
                                                        f"node {node.name!r}, argument {argument!r}: {message}"))
            extra = [*(node.when.references if node.when else ()),
                     *((node.for_each.source, node.for_each.image) if node.for_each else ())]
            for reference in filter(None, extra):
                message = self._reference_problem(reference, node)
                if message:
                    problems.append(WorkflowProblem(node.line, f"node {node.name!r}: {message}"))
        for output in self.outputs.values():
            message = self._reference_problem(output.source, None)
            if message:
                problems.append(WorkflowProblem(output.line, f"output {output.name!r}: {message}"))

        resolvable = len(problems) == len(earlier)
        plan, virtual = self.as_plan(registry, leave_out=unresolved)
        try:
            validate_plan(plan, registry)
        except PlanError as exc:
            for p in exc.problems:
                if (p.task, p.argument) in unresolved:
                    continue  # already reported as a reference to nothing
                node = self.nodes.get(p.task) if p.task else None
                line = node.arg_lines.get(p.argument, node.line) if node and p.argument else (
                    (node.tool_line or node.line) if node else self._line_of_cycle(p.message))
                where = f"node {p.task!r}" + (f", argument {p.argument!r}" if p.argument else "") if p.task else "workflow"
                problems.append(WorkflowProblem(line, f"{where}: {self._readable(p.message, virtual)}"))
        if resolvable:  # the checks below need every reference to resolve
            problems += self._check_dataflow(registry, fan_outs)
        if problems:
            raise WorkflowError(self.source, problems)

    def _reference_problem(self, reference: Reference, node: WorkflowNode | None) -> str | None:
        if reference.name == ITEM:
            if node is None or node.for_each is None:
                return "$item exists only inside a node with for_each"
            return f"$item has no output {reference.output!r}" if reference.output else None
        if reference.name in self.inputs:
            return f"input ${reference.name} has no outputs; write ${reference.name}" if reference.output else None
        if reference.name in self.nodes:
            if node is not None and reference.name == node.name:
                return f"{reference} refers to the node itself"
            return None
        others = [n for n in self.nodes if node is None or n != node.name]
        known = ", ".join(f"${n}" for n in [*self.inputs, *others]) or "none"
        return f"{reference} is neither an input nor a node (known: {known})"

    def _line_of_cycle(self, message: str) -> int:
        for name, node in self.nodes.items():
            if re.search(rf"(^|[\s:>]){re.escape(name)}($|[\s-])", message):
                return node.line
        return 1

    @staticmethod
    def _readable(message: str, virtual: dict[str, str]) -> str:
        for artifact_id, name in virtual.items():
            message = message.replace(artifact_id, name)
        return re.sub(r"<([A-Za-z][A-Za-z0-9_-]*)((?:\.[a-z][a-z0-9_]*)?)>", r"$\1\2", message)

    def _check_dataflow(self, registry: ToolRegistry, fan_outs: set[str]) -> list[WorkflowProblem]:
        """What a plan cannot express: fan-out sources, gathered lists, template parts, condition values."""
        problems = []
        known = {n.name for n in self.nodes.values() if n.tool in registry}
        for node in self.nodes.values():
            if node.name not in known or any(r.name in self.nodes and r.name not in known for r in node.references()):
                continue  # its unknown tool (or a source's) is reported already
            tool = registry.get(node.tool)
            for argument, value in node.args.items():
                line = node.arg_lines.get(argument, node.line)
                if isinstance(value, Reference) and value.name in fan_outs and value.name != ITEM:
                    kind = self.kind_of(value, registry, tool.inputs[argument].kind if argument in tool.inputs else None)
                    if kind is not ArtifactKind.TEXT:
                        problems.append(WorkflowProblem(line, f"node {node.name!r}, argument {argument!r}: {value} is a "
                                                              f"list (one per item of {value.name}); only text lists can be "
                                                              f"joined into one input — iterate it with for_each: {value}"))
                if isinstance(value, Template):
                    if argument not in tool.inputs or tool.inputs[argument].kind is not ArtifactKind.TEXT:
                        problems.append(WorkflowProblem(line, f"node {node.name!r}, argument {argument!r}: "
                                                              "{$...} parts are for text inputs only"))
                    for part in value.references:
                        if part.name == ITEM and node.for_each is not None and node.for_each.mode == "items":
                            continue  # a JSON list's items are literals, written as they are
                        kind = self.kind_of(part, registry, item_of=node)
                        if kind not in (ArtifactKind.TEXT, ArtifactKind.JSON):
                            problems.append(WorkflowProblem(line, f"node {node.name!r}, argument {argument!r}: {{{part}}} "
                                                                  f"is {kind.value if kind else 'ambiguous'}; only text and "
                                                                  "json can be written into a text"))
            if node.for_each is not None:
                problems += self._check_fan_out(node, registry, fan_outs)
            if node.when is not None:
                for part in node.when.references:
                    if part.name != ITEM and self.kind_of(part, registry) is None:
                        problems.append(WorkflowProblem(node.line, f"node {node.name!r}: the condition's {part} is ambiguous; "
                                                                   "name the output, e.g. $node.output"))
        for output in self.outputs.values():
            if output.source.name in self.nodes and output.source.name not in known:
                continue
            if self.kind_of(output.source, registry) is None:
                problems.append(WorkflowProblem(output.line, f"output {output.name!r}: {output.source} has several "
                                                             "outputs; name one, e.g. $node.output"))
        return problems

    def _check_fan_out(self, node: WorkflowNode, registry: ToolRegistry, fan_outs: set[str]) -> list[WorkflowProblem]:
        fan_out, problems = node.for_each, []
        where = f"node {node.name!r}, for_each"
        if fan_out.source.name == ITEM:
            return [WorkflowProblem(node.line, f"{where}: cannot iterate $item")]
        kind = self.kind_of(fan_out.source, registry)
        expected = {"crops": ArtifactKind.DETECTIONS, "items": ArtifactKind.JSON, "lines": ArtifactKind.TEXT}.get(fan_out.mode)
        if fan_out.mode == "each":
            if fan_out.source.name not in fan_outs:
                problems.append(WorkflowProblem(node.line, f"{where}: {fan_out.source} is not a fan-out node's output; "
                                                           "use crops/items/lines to iterate a single artifact"))
        elif kind is not expected:
            problems.append(WorkflowProblem(node.line, f"{where}: {fan_out.mode} needs {expected.value}, but "
                                                       f"{fan_out.source} is {kind.value if kind else 'ambiguous'}"))
        if fan_out.mode == "crops" and self.kind_of(fan_out.image, registry) is not ArtifactKind.IMAGE:
            problems.append(WorkflowProblem(node.line, f"{where}: crops are cut from an image; 'of: {fan_out.image}' "
                                                       "is not one"))
        if fan_out.mode != "each" and fan_out.source.name in fan_outs:
            problems.append(WorkflowProblem(node.line, f"{where}: {fan_out.source} is itself a list; iterate it with "
                                                       f"'for_each: {fan_out.source}'"))
        if not any(isinstance(v, Reference) and v.name == ITEM for v in node.args.values()):
            problems.append(WorkflowProblem(node.line, f"{where}: no argument takes $item, so every run would be the same"))
        return problems

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

    # ------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        def value(v: Any) -> Any:
            if isinstance(v, Reference):
                return str(v)
            if isinstance(v, Template):
                return v.text
            if isinstance(v, str) and v.startswith("$"):
                return "$" + v
            return v

        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["inputs"] = {n: ({"kind": i.kind.value} | ({"description": i.description} if i.description else {})
                              | ({"default": i.default} if i.default is not None else {})) for n, i in self.inputs.items()}
        nodes = {}
        for node in self.nodes.values():
            entry: dict[str, Any] = {"tool": node.tool}
            if node.description:
                entry["description"] = node.description
            if node.model:
                entry["model"] = node.model
            if node.for_each is not None:
                f = node.for_each
                entry["for_each"] = str(f.source) if f.mode == "each" else (
                    {"crops": str(f.source), "of": str(f.image)} if f.mode == "crops" else {f.mode: str(f.source)})
            if node.when is not None:
                entry["when"] = node.when.text
            entry["args"] = {k: value(v) for k, v in node.args.items()}
            nodes[node.name] = entry
        data["nodes"] = nodes
        data["outputs"] = {n: str(o.source) for n, o in self.outputs.items()}
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.part")
        temporary.write_text(self.to_yaml(), encoding="utf-8")
        temporary.replace(path)
        return path

    @classmethod
    def from_plan(cls, plan: Plan | dict[str, Any], inputs: Iterable[Artifact], registry: ToolRegistry, *,
                  name: str = "saved-plan", description: str = "", outputs: Iterable[str] | None = None) -> Workflow:
        """A planner's plan as a workflow: its input artifacts become named inputs, tasks become nodes, and
        the outputs nothing else consumed become the workflow's outputs (or the task ids in ``outputs``)."""
        plan = plan if isinstance(plan, Plan) else Plan.from_json(plan)
        validated = validate_plan(plan, registry)
        names: dict[str, str] = {}
        workflow_inputs = []
        for artifact in inputs:
            stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(str(artifact.metadata.get("name", artifact.kind.value))).stem)
            stem = stem.strip("_") or artifact.kind.value
            stem = stem if stem[0].isalpha() else f"{artifact.kind.value}_{stem}"
            candidate, n = stem[:32], 2
            while candidate in names.values() or candidate in {t.id for t in plan.tasks}:
                candidate, n = f"{stem[:29]}_{n}", n + 1
            names[artifact.id] = candidate
            workflow_inputs.append(WorkflowInput(candidate, artifact.kind, f"was {artifact.metadata.get('name', artifact.id)}"))
        nodes, consumed = [], set()
        for task in plan.tasks:
            args: dict[str, Any] = {}
            for argument, value in task.args.items():
                reference = parse_reference(value)
                if (task.id, argument) in validated.references:
                    target = validated.references[(task.id, argument)]
                    args[argument] = Reference(target.task, target.output)
                    consumed.add((target.task, target.output))
                elif reference is not None:
                    args[argument] = Reference(*reference)
                elif is_artifact_id(value):
                    if value not in names:
                        raise InvalidInputError(f"task {task.id!r} uses {value}, which is not among the plan's inputs")
                    args[argument] = Reference(names[value])
                else:
                    args[argument] = value
            nodes.append(WorkflowNode(task.id, task.tool, args))
        chosen = list(outputs) if outputs is not None else None
        workflow_outputs = []
        for task in plan.tasks:
            if chosen is not None and task.id not in chosen:
                continue
            for output in registry.get(task.tool).outputs:
                if chosen is not None or (task.id, output) not in consumed:
                    workflow_outputs.append(WorkflowOutput(f"{task.id}_{output}", Reference(task.id, output)))
        workflow = cls(name, inputs=workflow_inputs, nodes=nodes, outputs=workflow_outputs, description=description)
        workflow.validate(registry)
        return workflow

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


# ---------------------------------------------------------------------------------- parsing parts


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


def parse_condition(text: str) -> Condition:
    """``count($detect.detections) > 0 and $classify.label != "cat"``: a small, safe expression language.

    Everything that can be known without the values is checked here, so that a condition that
    validates can only fail at run time on what the values turn out to be (a text where a number was
    expected), never on how it is written."""
    if len(text) > MAX_CONDITION_CHARS:
        raise ValueError(f"condition {shown(text)} is longer than {MAX_CONDITION_CHARS} characters")
    references: list[Reference] = []

    def placeholder(match: re.Match) -> str:
        references.append(Reference(match["name"], match["output"]))
        return f"__r{len(references) - 1}"

    source = re.sub(r"\$(?P<name>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?", placeholder, text)
    if "$" in source:
        raise ValueError(f"condition {shown(text)}: a '$' that starts no reference")
    try:
        with warnings.catch_warnings():  # '1jand' or 'x is 1' would print Python's SyntaxWarning on stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"condition {shown(text)} is not an expression ({exc.msg})") from None
    except (RecursionError, MemoryError):  # CPython's parser gives up on deep nesting in these ways too
        raise ValueError(f"condition {shown(text)} nests more than {MAX_CONDITION_DEPTH} deep") from None
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq, ast.NotEq,
               ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Name, ast.Load, ast.Constant, ast.Call,
               ast.Subscript)
    # Iteratively, with depths: the evaluator recurses, so depth is what must be bounded.
    callees = {id(item.func) for item in ast.walk(tree) if isinstance(item, ast.Call)}
    placeholders: list[int] = []
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_CONDITION_DEPTH:
            raise ValueError(f"condition {shown(text)} nests more than {MAX_CONDITION_DEPTH} deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(item))
        if not isinstance(item, allowed):
            raise ValueError(f"condition {shown(text)} uses {type(item).__name__}, which conditions do not allow "
                             "(allowed: comparisons, and/or/not, in, [index], " + ", ".join(CONDITION_FUNCTIONS) + ")")
        if isinstance(item, ast.Name):
            if item.id in CONDITION_FUNCTIONS and id(item) not in callees:
                raise ValueError(f"condition {shown(text)}: {item.id} is a function; call it on a value, like "
                                 f"{item.id}($node.output)")
            number = re.fullmatch(r"__r(\d{1,4})", item.id)
            if number is not None and int(number[1]) < len(references) and id(item) not in callees:
                placeholders.append(int(number[1]))
            elif item.id not in CONDITION_FUNCTIONS or id(item) not in callees:
                raise ValueError(f"condition {shown(text)}: unknown name {shown(item.id)}; references start with '$'")
        if isinstance(item, ast.Call) and (not isinstance(item.func, ast.Name) or item.func.id not in CONDITION_FUNCTIONS
                                           or len(item.args) != 1 or item.keywords):
            raise ValueError(f"condition {shown(text)}: only one-argument calls of {', '.join(CONDITION_FUNCTIONS)}")
        if isinstance(item, ast.Subscript) and not isinstance(item.slice, (ast.Constant, ast.UnaryOp)):
            raise ValueError(f"condition {shown(text)}: an index must be a constant, like [0] or ['label']")
        if isinstance(item, ast.Constant) and not isinstance(item.value, (str, int, float, bool, type(None))):
            raise ValueError(f"condition {shown(text)}: constants are numbers, texts, True/False, None")
    # Each reference became one placeholder name; any other count means a placeholder was typed in
    # (``__r0 == 1``) or a reference was written inside quotes, where it would be a literal text.
    if sorted(placeholders) != list(range(len(references))):
        if len(placeholders) < len(references):
            raise ValueError(f"condition {shown(text)}: a $reference inside quotes is not a value; write it unquoted")
        raise ValueError(f"condition {shown(text)}: names like __r0 are not allowed; references start with '$'")
    return Condition(text, tree, tuple(references))


def _parse_inputs(raw: Any, parent: Any, problem) -> list[WorkflowInput]:
    if raw is None or raw == {}:
        return []
    if not isinstance(raw, dict):
        problem(_line(parent, "inputs"), "'inputs' maps names to kinds, e.g. image: {kind: image}")
        return []
    inputs = []
    for name, spec in raw.items():
        line = _line(raw, name)
        if not TASK_ID.match(name) or name == ITEM:
            problem(line, f"input name {shown(name)}: letters, digits, '_' or '-', starting with a letter, at most 32 "
                          "(and not 'item')")
            continue
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            problem(line, f"input {name!r}: give its kind, e.g. {name}: image or {name}: {{kind: image}}")
            continue
        extra = set(spec) - {"kind", "description", "default"}
        if extra:
            problem(line, f"input {name!r}: unknown key(s) {', '.join(shown(k) for k in sorted(extra)[:5])} "
                          "(kind, description, default)")
        if not isinstance(spec.get("kind", ""), str):
            problem(line, f"input {name!r}: 'kind' is a kind's name, like image or text, got {shown(spec['kind'])}")
            continue
        try:
            kind = ArtifactKind.parse(spec.get("kind", ""))
        except InvalidInputError as exc:
            problem(line, f"input {name!r}: {exc}")
            continue
        description = spec.get("description", "") or ""
        if not isinstance(description, str):
            problem(line, f"input {name!r}: 'description' must be text, got {shown(description)}")
            description = ""
        default = spec.get("default")
        if default is not None and kind is ArtifactKind.TEXT and not isinstance(default, str):
            problem(line, f"input {name!r}: a text input's default must be text")
        elif default is not None and kind not in (ArtifactKind.TEXT, ArtifactKind.JSON):
            problem(line, f"input {name!r}: only text and json inputs can have a default; a {kind.value} comes from a file")
        inputs.append(WorkflowInput(name, kind, description, default, line))
    return inputs


def _parse_nodes(raw: Any, parent: Any, problem) -> list[WorkflowNode]:
    if not isinstance(raw, dict) or not raw:
        problem(_line(parent, "nodes"), "'nodes' must map node names to {tool, args}; a workflow needs at least one")
        return []
    if len(raw) > MAX_NODES:
        problem(_line(parent, "nodes"), f"a workflow may have at most {MAX_NODES} nodes, this one has {len(raw)}")
    nodes = []
    for name, spec in raw.items():
        line = _line(raw, name)
        if not TASK_ID.match(name) or name == ITEM:
            problem(line, f"node name {shown(name)}: letters, digits, '_' or '-', starting with a letter, at most 32 "
                          "(and not 'item')")
            continue
        if not isinstance(spec, dict):
            problem(line, f"node {name!r} must be a mapping with 'tool' and 'args'")
            continue
        extra = set(spec) - {"tool", "args", "when", "for_each", "model", "description"}
        for key in sorted(extra):
            problem(_line(spec, key, line), f"node {name!r}: unknown key {shown(key)} (tool, args, when, for_each, "
                                            "model, description)")
        tool = spec.get("tool")
        if not isinstance(tool, str) or not tool.strip():
            problem(line, f"node {name!r} needs 'tool: <tool name>'")
            continue
        if len(tool.strip()) > MAX_NAME_CHARS or "\n" in tool.strip():
            problem(_line(spec, "tool", line), f"node {name!r}: {shown(tool)} is not a tool name (anymoda tools lists "
                                               "them)")
            continue
        raw_args = spec.get("args", {}) or {}
        if not isinstance(raw_args, dict):
            problem(_line(spec, "args", line), f"node {name!r}: 'args' maps argument names to values")
            raw_args = {}
        args, arg_lines = {}, {}
        for argument, value in raw_args.items():
            if not _ARGUMENT_NAME.match(argument):
                problem(_line(raw_args, argument, line), f"node {name!r}: {shown(argument)} is not an argument name "
                                                         "(letters, digits and '_')")
                continue
            arg_lines[argument] = _line(raw_args, argument, line)
            try:
                args[argument] = parse_value(value)
            except ValueError as exc:
                problem(arg_lines[argument], f"node {name!r}, argument {argument!r}: {exc}")
        when = None
        if spec.get("when") is not None:
            if not isinstance(spec["when"], str):
                problem(_line(spec, "when", line), f"node {name!r}: 'when' is an expression in quotes, e.g. "
                                                   "\"count($detect.detections) > 0\"")
            else:
                try:
                    when = parse_condition(spec["when"])
                except ValueError as exc:
                    problem(_line(spec, "when", line), f"node {name!r}: {exc}")
        for_each = None
        if spec.get("for_each") is not None:
            try:
                for_each = _parse_fan_out(spec["for_each"])
            except ValueError as exc:
                problem(_line(spec, "for_each", line), f"node {name!r}, for_each: {exc}")
        model = spec.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > 1000):
            problem(_line(spec, "model", line), f"node {name!r}: 'model' is a model id or path, got {shown(model)}")
            model = None
        description = spec.get("description", "") or ""
        if not isinstance(description, str):
            problem(_line(spec, "description", line), f"node {name!r}: 'description' must be text, got "
                                                      f"{shown(description)}")
            description = ""
        nodes.append(WorkflowNode(name, tool.strip(), args, when, for_each, model, description, line, arg_lines,
                                  _line(spec, "tool", line)))
    return nodes


def _parse_fan_out(raw: Any) -> FanOut:
    if isinstance(raw, str):
        value = parse_value(raw)
        if not isinstance(value, Reference):
            raise ValueError(f"{shown(raw)} is not a reference like $node.output")
        return FanOut("each", value)
    if not isinstance(raw, dict):
        raise ValueError("write $node.output (each output of a fan-out node), {crops: $detections, of: $image}, "
                         "{items: $json_list} or {lines: $text}")
    modes = [m for m in ("crops", "items", "lines") if m in raw]
    extra = set(raw) - {"crops", "items", "lines", "of"}
    if len(modes) != 1 or extra:
        raise ValueError("give exactly one of crops, items, lines (and 'of' with crops)")
    mode = modes[0]
    source = parse_value(raw[mode])
    if not isinstance(source, Reference):
        raise ValueError(f"{mode}: {shown(raw[mode])} is not a reference")
    image = None
    if mode == "crops":
        image = parse_value(raw.get("of"))
        if not isinstance(image, Reference):
            raise ValueError("crops need 'of: $image', the image the boxes were found in")
    elif "of" in raw:
        raise ValueError("'of' goes with crops only")
    return FanOut(mode, source, image)


def _parse_outputs(raw: Any, parent: Any, problem) -> list[WorkflowOutput]:
    if raw is None or raw == {}:
        return []
    if not isinstance(raw, dict):
        problem(_line(parent, "outputs"), "'outputs' maps names to references, e.g. answer: $vqa.answer")
        return []
    outputs = []
    for name, value in raw.items():
        line = _line(raw, name)
        if not TASK_ID.match(name):
            problem(line, f"output name {shown(name)}: letters, digits, '_' or '-', starting with a letter, at most 32")
            continue
        try:
            reference = parse_value(value)
        except ValueError as exc:
            problem(line, f"output {name!r}: {exc}")
            continue
        if not isinstance(reference, Reference):
            problem(line, f"output {name!r} must be a reference like $node.output, got {shown(value)}")
            continue
        outputs.append(WorkflowOutput(name, reference, line))
    return outputs
