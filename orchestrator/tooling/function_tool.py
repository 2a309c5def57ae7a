"""Tools written as plain functions: ``@tool`` reads inputs, params and the output from the signature.

    from orchestrator import tool

    @tool
    def word_count(text: str, *, lowercase: bool = False) -> dict:
        \"\"\"Count how often each word occurs in a text.

        Args:
            text: the text to count words in
            lowercase: count "The" and "the" as one word
        Returns:
            word -> count
        \"\"\"
        words = text.lower().split() if lowercase else text.split()
        return {w: words.count(w) for w in set(words)}

The result is a :class:`~orchestrator.tooling.tool.WeightlessTool` subclass named ``word-count``: it registers,
plans, validates, pools and reports like a class-form tool (``ToolRegistry([word_count])``, or a plugin's entry
point). The rules, so that what the planner is shown is exactly what the function takes:

- an argument without a default, or one whose annotation is a media type, is an **input** (an artifact): ``str`` is
  text, ``PIL.Image.Image`` an image, ``AudioClip``, ``TimeSeries``, ``Detections``, ``Masks``, and ``dict`` / ``list``
  JSON; ``X | None = None`` makes it optional;
- an argument with a default and a plain type (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``) is a
  **param**: checked and bounded before the function runs (``params={"n": Param(int, 3, "...", minimum=1)}``
  overrides the derived one, e.g. to add bounds);
- the return annotation gives the one **output** (named ``output=``, default ``result``), or ``outputs={name:
  Output(...)}`` declares several, returned as a dict;
- every input and param needs a description (the docstring's ``Args:`` section, Google style): the planner
  chooses tools by what they say.

A definition that breaks a rule raises :class:`ToolDefinitionError` when the module is imported, naming the function
and the argument, never later at run time.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import AnymodaError
from ..storage.artifacts import ArtifactKind
from ..storage.media import AudioClip, Detections, Masks, TimeSeries
from .tool import Input, Output, Param, WeightlessTool

TOOL_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SCALAR_TYPES = (int, float, bool, str)


class ToolDefinitionError(AnymodaError, TypeError):
    """A function cannot become a tool as written; the message names the function and what to change."""


def tool(function: Callable | None = None, *, name: str | None = None, task: str = "function",
         description: str | None = None, output: str = "result", outputs: dict[str, Output] | None = None,
         params: dict[str, Param] | None = None, phrasings: tuple[str, ...] = (), thread_safe: bool = True):
    """Make a tool class from ``function`` (see the module docstring); usable bare (``@tool``) or with options."""

    def build(func: Callable) -> type[WeightlessTool]:
        return _tool_class(func, name=name, task=task, description=description, output=output, outputs=outputs,
                           params=params or {}, phrasings=tuple(phrasings), thread_safe=thread_safe)

    return build(function) if function is not None else build


def _tool_class(func: Callable, *, name: str | None, task: str, description: str | None, output: str,
                outputs: dict[str, Output] | None, params: dict[str, Param], phrasings: tuple[str, ...],
                thread_safe: bool) -> type[WeightlessTool]:
    where = f"@tool {func.__qualname__}"
    if not callable(func) or inspect.isclass(func):
        raise ToolDefinitionError(f"{where}: @tool takes a function")
    tool_name = name or func.__name__.strip("_").replace("_", "-").lower()
    if not TOOL_NAME.match(tool_name):
        raise ToolDefinitionError(f"{where}: the tool name {tool_name!r} must be lowercase words joined by '-'")
    summary, argument_docs, returns_doc = _docstring(func)
    description = (description or summary).strip()
    if not description:
        raise ToolDefinitionError(f"{where}: give the tool a docstring (or description=): the planner picks tools by it")
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # an annotation naming something not importable here
        raise ToolDefinitionError(f"{where}: its annotations cannot be read ({exc})") from None

    tool_inputs: dict[str, Input] = {}
    tool_params: dict[str, Param] = {}
    for argument in inspect.signature(func).parameters.values():
        if argument.kind in (argument.VAR_POSITIONAL, argument.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *{argument.name} cannot be planned; name every argument")
        if argument.name in params:
            tool_params[argument.name] = params[argument.name]
            continue
        about = argument_docs.get(argument.name, "")
        if not about:
            raise ToolDefinitionError(f"{where}: describe argument {argument.name!r} in the docstring's Args: section")
        if argument.name not in hints:
            raise ToolDefinitionError(f"{where}: annotate argument {argument.name!r} with its type")
        kind, _, scalar = _classify(hints[argument.name])
        has_default = argument.default is not inspect.Parameter.empty
        if not has_default:
            if kind is None:
                raise ToolDefinitionError(
                    f"{where}: argument {argument.name!r} is {hints[argument.name]!r}: an input must be text, an image, "
                    f"audio, a time series, detections, masks or JSON; a setting needs a default")
            tool_inputs[argument.name] = Input(kind, about)
        elif scalar is None and kind is not None:  # media or JSON with a default: an optional input
            if argument.default is not None:
                raise ToolDefinitionError(f"{where}: argument {argument.name!r}: an optional input defaults to None")
            tool_inputs[argument.name] = Input(kind, about, required=False)
        elif scalar is not None:
            tool_params[argument.name] = _param(where, argument.name, scalar, argument.default, about)
        else:
            raise ToolDefinitionError(f"{where}: argument {argument.name!r}: a setting must be int, float, bool, str "
                                      f"or a Literal of them, with a default of that type")
    unknown = set(params) - set(tool_inputs) - set(tool_params)
    if unknown:
        raise ToolDefinitionError(f"{where}: params= names {sorted(unknown)}, which the function does not take")
    if not tool_inputs:
        raise ToolDefinitionError(f"{where}: a tool takes at least one input (an argument without a default)")

    if outputs is None:
        if "return" not in hints:
            raise ToolDefinitionError(f"{where}: annotate the return type (or declare outputs=)")
        kind, _, _ = _classify(hints["return"])
        if kind is None:
            raise ToolDefinitionError(f"{where}: the return type {hints['return']!r} is not an artifact kind")
        outputs = {output: Output(kind, returns_doc or f"what {tool_name} returns")}
        single_output: str | None = output
    else:
        if not outputs or not all(isinstance(spec, Output) for spec in outputs.values()):
            raise ToolDefinitionError(f"{where}: outputs= maps output names to Output(kind, description)")
        single_output = None

    def build_method(self) -> Callable:
        return func

    def run(self, method: Callable, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        value = method(**inputs, **params)
        if single_output is not None:
            return {single_output: value}
        if not isinstance(value, dict) or set(value) != set(self.outputs):
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ToolDefinitionError(f"tool {self.name!r} must return a dict with {sorted(self.outputs)}, got {got}")
        return value

    def packaged_weights(self) -> dict[str, Any]:
        # The function's file, or this module's for a function typed into the interpreter or `python -c`.
        source = inspect.getsourcefile(func)
        located = Path(source) if source and Path(source).is_file() else Path(__file__)
        return {self.default_model: lambda: located}

    namespace = {
        "name": tool_name, "task": task, "description": description, "inputs": tool_inputs, "outputs": dict(outputs),
        "params": tool_params, "phrasings": phrasings, "thread_safe": thread_safe,
        "default_model": f"{tool_name}-function", "function": staticmethod(func),
        "build_method": build_method, "run": run, "packaged_weights": packaged_weights,
        "__doc__": func.__doc__, "__module__": func.__module__, "__qualname__": func.__qualname__,
    }
    # Named like the function and placed where it was, so the class pickles by reference (process and Ray runners).
    return types.new_class(func.__name__, (WeightlessTool,), {}, lambda ns: ns.update(namespace))


def _classify(annotation: Any) -> tuple[ArtifactKind | None, bool, Any]:
    """(artifact kind or None, whether None is allowed, the scalar type or Literal choices or None)."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return None, optional, None
        annotation = members[0]
        origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        return None, optional, tuple(typing.get_args(annotation))
    if annotation is str:
        return ArtifactKind.TEXT, optional, str
    if annotation in SCALAR_TYPES:  # without a default, a number or flag is a JSON input (a literal in a plan)
        return ArtifactKind.JSON, optional, annotation
    base = origin or annotation
    if base in (dict, list):
        return ArtifactKind.JSON, optional, None
    for media_type, kind in ((AudioClip, ArtifactKind.AUDIO), (TimeSeries, ArtifactKind.TIME_SERIES),
                             (Detections, ArtifactKind.DETECTIONS), (Masks, ArtifactKind.MASKS)):
        if annotation is media_type:
            return kind, optional, None
    if _is_pil_image(annotation):
        return ArtifactKind.IMAGE, optional, None
    return None, optional, None


def _is_pil_image(annotation: Any) -> bool:
    image_module = sys.modules.get("PIL.Image")  # a function annotated with Image.Image has imported it already
    return image_module is not None and isinstance(annotation, type) and issubclass(annotation, image_module.Image)


def _param(where: str, name: str, scalar: Any, default: Any, about: str) -> Param:
    if isinstance(scalar, tuple):  # Literal choices
        kinds = {type(choice) for choice in scalar}
        if len(kinds) != 1 or not kinds <= set(SCALAR_TYPES) or default not in scalar:
            raise ToolDefinitionError(f"{where}: argument {name!r}: a Literal of one plain type, its default among them")
        return Param(kinds.pop(), default, about, choices=scalar)
    if default is not None and not (isinstance(default, scalar) and not (scalar is int and isinstance(default, bool))):
        raise ToolDefinitionError(f"{where}: argument {name!r} defaults to {default!r}, which is not {scalar.__name__}")
    return Param(scalar, default, about, nullable=default is None)


def _docstring(func: Callable) -> tuple[str, dict[str, str], str]:
    """The summary (text before ``Args:``), each argument's description, and the ``Returns:`` text."""
    text = inspect.getdoc(func) or ""
    sections = re.split(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):\s*$", text, flags=re.MULTILINE)
    summary = " ".join(sections[0].split())
    arguments: dict[str, str] = {}
    returns = ""
    for title, body in zip(sections[1::2], sections[2::2], strict=True):
        if title == "Returns":
            returns = " ".join(body.split())
        if title not in ("Args", "Arguments", "Parameters"):
            continue
        lines = [line for line in body.splitlines() if line.strip()]
        indent = min((len(line) - len(line.lstrip()) for line in lines), default=0)
        current = None
        for line in lines:
            entry = re.match(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line.strip())
            if entry and len(line) - len(line.lstrip()) == indent:  # "name: text" or "name (type): text"
                current = entry[1].lstrip("*")
                arguments[current] = entry[2].strip()
            elif current is not None:  # a wrapped description continues, indented deeper
                arguments[current] = f"{arguments[current]} {line.strip()}".strip()
    return summary, arguments, returns
