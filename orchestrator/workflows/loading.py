"""Reading workflow files: YAML composed with line numbers and bounded with every alias expanded, then built
into a :class:`~orchestrator.workflows.definition.Workflow` part by part, each malformed part reported at its line.

A workflow file is written by someone else as often as not (shared, downloaded); YAML anchors let 600 bytes stand
for gigabytes, and PyYAML's composer recurses, so size, expanded values, characters and depth are all bounded
before anything looks at the values.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInputError, shown
from ..planning.plan import TASK_ID
from ..storage.artifacts import ArtifactKind
from ..tooling.registry import ToolRegistry
from .conditions import parse_condition
from .definition import (
    ITEM,
    MAX_NODES,
    FanOut,
    Reference,
    Workflow,
    WorkflowError,
    WorkflowInput,
    WorkflowNode,
    WorkflowOutput,
    WorkflowProblem,
    parse_value,
)

MAX_FILE_BYTES = 1_000_000
MAX_YAML_VALUES = 100_000  # values after every alias is expanded (the shipped workflows have ~100)
MAX_YAML_CHARS = 2_000_000  # characters of text after every alias is expanded
MAX_YAML_DEPTH = 48
MAX_NAME_CHARS = 100
_ARGUMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


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


def load_workflow(path: str | Path, registry: ToolRegistry | None = None) -> Workflow:
    """Read and validate a workflow file (against ``registry``, the default one if None)."""
    path = Path(path)
    if not os.path.isfile(path):  # False, not OSError, for a name too long to be a path
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
    return loads_workflow(text, source=str(path), registry=registry)


def loads_workflow(text: str, *, source: str = "<workflow>", registry: ToolRegistry | None = None,
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
    workflow, problems = build_workflow(data, source)
    if check:
        workflow.validate(registry or ToolRegistry.default(), earlier=problems)
    elif problems:
        raise WorkflowError(source, problems)
    return workflow


def workflow_from_dict(data: Any, *, source: str = "<workflow>") -> Workflow:
    """Build from parsed YAML/JSON, checking structure (not tools: see :meth:`validate`)."""
    workflow, problems = build_workflow(data, source)
    if problems:
        raise WorkflowError(source, problems)
    return workflow


def build_workflow(data: Any, source: str) -> tuple[Workflow, list[WorkflowProblem]]:
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
    return Workflow(name.strip(), inputs=inputs, nodes=nodes, outputs=outputs, description=description.strip(),
               source=source), problems


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
