"""Pipelines built in Python: the same workflows as the YAML files, written as code.

Step by step, each step fed by the one before (a missing input is taken from the previous step's
output of the kind it needs, or from the pipeline's input of that kind):

    remix = Pipeline("remix").input("image", "image").then("image-captioning").then("text-to-image")
    result = remix.run(image="cat.png")                 # result.outputs["image"] is the new picture

With names, several inputs, conditions and fan-out:

    p = Pipeline("describe-objects")
    image = p.input("image", "image")
    found = p.add("detect", "object-detection", image=image)
    each = p.add("describe", "image-captioning", for_each=found.crops(of=image), image=p.item)
    p.add("speak", "text-to-speech", text=each.caption, when="count($detect.detections) > 0")

Or as a plain function whose parameters are the inputs (annotated with their kinds):

    @pipeline_function
    def voice_question(image: "image", question: "audio"):
        heard = step("speech-recognition", audio=question)
        answer = step("visual-question-answering", image=image, question=heard.text)
        return {"answer": answer.answer, "spoken": step("text-to-speech", text=answer.answer).audio}

Every form builds a :class:`~orchestrator.workflows.workflow.Workflow`, validated by the same rules and run by
the same engine as a workflow file; ``to_yaml()`` writes the file.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, shown
from ..storage.artifacts import ArtifactKind
from ..tooling.registry import ToolRegistry
from .conditions import parse_condition
from .definition import (
    ITEM,
    FanOut,
    Reference,
    Workflow,
    WorkflowInput,
    WorkflowNode,
    WorkflowOutput,
    parse_value,
)


@dataclass(frozen=True)
class Handle:
    """A value flowing through a pipeline: an input, a node's output, or the fan-out item."""

    pipeline: Pipeline
    name: str
    output: str | None = None

    @property
    def reference(self) -> Reference:
        return Reference(self.name, self.output)

    def crops(self, *, of: Handle) -> FanOut:
        """Iterate the boxes of this detections output as crops of ``of`` (for ``for_each``)."""
        return FanOut("crops", self._single("crops").reference, of.reference)

    def items(self) -> FanOut:
        return FanOut("items", self._single("items").reference)

    def lines(self) -> FanOut:
        return FanOut("lines", self._single("lines").reference)

    def _single(self, what: str) -> Handle:
        if self.output is None and self.name in self.pipeline._nodes:
            return self.pipeline._only_output(self, what)
        return self


class NodeHandle(Handle):
    """A node: ``node.caption`` (or ``node["caption"]``) is its output of that name."""

    def __getattr__(self, output: str) -> Handle:
        if output.startswith("_"):
            raise AttributeError(output)
        return self[output]

    def __getitem__(self, output: str) -> Handle:
        tool = self.pipeline.registry.get(self.pipeline._nodes[self.name].tool)
        if output not in tool.outputs:
            raise InvalidInputError(f"node {self.name!r} ({tool.name}) has no output {output!r}; "
                                    f"its outputs: {', '.join(tool.outputs)}")
        return Handle(self.pipeline, self.name, output)


class Pipeline:
    """A workflow under construction; see the module docstring."""

    def __init__(self, name: str, description: str = "", *, registry: ToolRegistry | None = None):
        self.name = name
        self.description = description
        self.registry = registry or ToolRegistry.default()
        self._inputs: dict[str, WorkflowInput] = {}
        self._nodes: dict[str, WorkflowNode] = {}
        self._outputs: dict[str, WorkflowOutput] = {}
        self.item = Handle(self, ITEM)

    # ------------------------------------------------------------------ building

    def input(self, name: str, kind: ArtifactKind | str, *, default: Any = None, description: str = "") -> Pipeline:
        """Declare an input (returns the pipeline, for chaining; ``self[name]`` is its handle)."""
        self._inputs[name] = WorkflowInput(name, ArtifactKind.parse(kind), description, default)
        return self

    def __getitem__(self, name: str) -> Handle:
        if name in self._inputs:
            return Handle(self, name)
        if name in self._nodes:
            return NodeHandle(self, name)
        raise InvalidInputError(f"pipeline {self.name!r} has no input or node {name!r}")

    def add(self, name: str, tool: str, *, when: str | None = None, for_each: FanOut | Handle | None = None,
            model: str | None = None, **args: Any) -> NodeHandle:
        """Add a node calling ``tool``; arguments are handles, ``$references`` or literals."""
        if name in self._nodes or name in self._inputs:
            raise InvalidInputError(f"pipeline {self.name!r} already has {name!r}")
        fan_out = for_each if isinstance(for_each, FanOut) or for_each is None else FanOut("each", for_each.reference)
        try:
            condition = parse_condition(when) if when else None
        except ValueError as exc:  # the same words a workflow file gets, as the error every caller catches
            raise InvalidInputError(f"node {name!r}: {exc}") from None
        node = WorkflowNode(name, tool, {k: self._value(v) for k, v in args.items()}, condition, fan_out, model)
        self._nodes[name] = node
        return NodeHandle(self, name)

    def then(self, tool: str, *, name: str | None = None, **args: Any) -> Pipeline:
        """Add a step after the last one; required inputs not given come from the step before (or the
        pipeline's inputs), by kind. The last step's outputs are the pipeline's unless outputs are named."""
        spec = self.registry.get(tool)
        previous = list(self._nodes)[-1] if self._nodes else None
        for argument, needed in spec.inputs.items():
            if argument in args or not needed.required:
                continue
            args[argument] = self._feeding(needed.kind, previous, tool, argument)
        self.add(name or self._fresh_name(tool), tool, **args)
        return self

    def output(self, name: str, value: Handle | str) -> Pipeline:
        try:
            reference = value.reference if isinstance(value, Handle) else parse_value(value)
        except ValueError as exc:
            raise InvalidInputError(f"output {name!r}: {exc}") from None
        if not isinstance(reference, Reference):
            raise InvalidInputError(f"output {name!r} must be a handle or a $reference, got {shown(value)}")
        self._outputs[name] = WorkflowOutput(name, reference)
        return self

    # ------------------------------------------------------------------ using

    def to_workflow(self) -> Workflow:
        outputs = list(self._outputs.values())
        if not outputs and self._nodes:  # the last step's outputs, as .then() chains expect
            last = list(self._nodes.values())[-1]
            outputs = [WorkflowOutput(o, Reference(last.name, o)) for o in self.registry.get(last.tool).outputs]
        workflow = Workflow(self.name, inputs=self._inputs.values(), nodes=self._nodes.values(), outputs=outputs,
                            description=self.description, source=f"pipeline {self.name!r}")
        workflow.validate(self.registry)
        return workflow

    def to_yaml(self) -> str:
        return self.to_workflow().to_yaml()

    def save(self, path: str | Path) -> Path:
        return self.to_workflow().save(path)

    def run(self, orchestrator: Any = None, *, session: str | None = None, **inputs: Any):
        """Run on ``inputs`` (name=file path, artifact, literal or value); returns the RunResult."""
        if orchestrator is None:
            from ..agent import Orchestrator

            orchestrator = Orchestrator(registry=self.registry, planner=None, composer=None)
        return orchestrator.run_workflow(self.to_workflow(), inputs, session=session)

    # ------------------------------------------------------------------ internals

    def _value(self, value: Any) -> Any:
        if isinstance(value, NodeHandle):
            return value.reference  # "$node": its one output of the kind the argument needs
        if isinstance(value, Handle):
            if value.pipeline is not self:
                raise InvalidInputError("a handle from another pipeline was passed in")
            return value.reference
        try:
            return parse_value(value)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def _feeding(self, kind: ArtifactKind, previous: str | None, tool: str, argument: str) -> Reference:
        if previous is not None:
            source = self.registry.get(self._nodes[previous].tool)
            matching = [n for n, o in source.outputs.items() if o.kind is kind]
            if matching:
                return Reference(previous, matching[0])
        inputs = [n for n, i in self._inputs.items() if i.kind is kind]
        if len(inputs) == 1:
            return Reference(inputs[0])
        raise InvalidInputError(f"step {tool!r} needs {argument!r} ({kind.value}) and nothing before it gives exactly one "
                                f"{kind.value}; pass {argument}=... explicitly")

    def _fresh_name(self, tool: str) -> str:
        base = tool.replace("-", "_")[:28]
        name, n = base, 2
        while name in self._nodes or name in self._inputs:
            name, n = f"{base}_{n}", n + 1
        return name

    def _only_output(self, node: Handle, what: str) -> Handle:
        tool = self.registry.get(self._nodes[node.name].tool)
        wanted = {"crops": ArtifactKind.DETECTIONS, "items": ArtifactKind.JSON, "lines": ArtifactKind.TEXT}[what]
        matching = [n for n, o in tool.outputs.items() if o.kind is wanted]
        if len(matching) != 1:
            raise InvalidInputError(f"node {node.name!r} has {len(matching)} {wanted.value} outputs; name one")
        return Handle(self, node.name, matching[0])


# ---------------------------------------------------------------------------------- plain functions

_building: contextvars.ContextVar[Pipeline | None] = contextvars.ContextVar("anymoda_pipeline", default=None)


def step(tool: str, *, name: str | None = None, when: str | None = None, for_each: FanOut | Handle | None = None,
         model: str | None = None, **args: Any) -> NodeHandle:
    """Inside a :func:`pipeline_function`: call ``tool``; returns the node, whose attributes are its outputs."""
    pipeline = _building.get()
    if pipeline is None:
        raise InvalidInputError("step() is used inside a function decorated with @pipeline_function")
    return pipeline.add(name or pipeline._fresh_name(tool), tool, when=when, for_each=for_each, model=model, **args)


def item() -> Handle:
    """Inside a :func:`pipeline_function`: the current item of a ``for_each`` step."""
    pipeline = _building.get()
    if pipeline is None:
        raise InvalidInputError("item() is used inside a function decorated with @pipeline_function")
    return pipeline.item


def pipeline_function(function: Callable[..., Any] | None = None, *, name: str | None = None,
                      registry: ToolRegistry | None = None) -> Any:
    """Turn a function of inputs into a :class:`Pipeline`: parameters are inputs (annotated with their kind,
    a default makes a text/json input optional), ``step()`` calls tools, the returned dict names outputs."""

    def build(fn: Callable[..., Any]) -> Pipeline:
        pipeline = Pipeline(name or fn.__name__.replace("_", "-"), inspect.getdoc(fn) or "", registry=registry)
        handles = {}
        for parameter in inspect.signature(fn).parameters.values():
            annotation = parameter.annotation
            if annotation is inspect.Parameter.empty:
                raise InvalidInputError(f"parameter {parameter.name!r} of {fn.__name__} needs its kind as annotation, "
                                        "e.g. image: 'image'")
            if isinstance(annotation, str):  # 'image', or "'image'" / "ArtifactKind.IMAGE" under postponed annotations
                annotation = annotation.strip("'\"").rsplit(".", 1)[-1]
            default = None if parameter.default is inspect.Parameter.empty else parameter.default
            pipeline.input(parameter.name, annotation, default=default)
            handles[parameter.name] = pipeline[parameter.name]
        token = _building.set(pipeline)
        try:
            returned = fn(**handles)
        finally:
            _building.reset(token)
        if isinstance(returned, Handle):
            returned = {"result": returned}
        if not isinstance(returned, dict):
            raise InvalidInputError(f"{fn.__name__} must return a dict of output names to step outputs (or one output)")
        for output_name, value in returned.items():
            pipeline.output(output_name, value)
        return pipeline

    return build(function) if function is not None else build
