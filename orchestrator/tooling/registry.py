"""The tool registry: built-in tools and those other packages add through entry points.

A package adds tools by declaring, in its ``pyproject.toml``::

    [project.entry-points."anymoda.tools"]
    my-tools = "my_package.tools:MY_TOOLS"     # a Tool subclass or a list of them

anymoda's own tools are registered the same way (entry point ``builtin``), so a third-party tool is
found, described and planned over exactly like ours.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any

from ..errors import ToolNotFoundError, shown
from ..storage.artifacts import ArtifactKind
from .tool import TOOL_NAME, Input, Output, Param, Tool

ENTRY_POINT_GROUP = "anymoda.tools"


class ToolRegistry:
    def __init__(self, tools: Iterable[type[Tool]] = ()):
        self._tools: dict[str, type[Tool]] = {}
        self._origins: dict[str, str] = {}
        self.plugin_errors: list[str] = []
        for tool in tools:
            self.register(tool)

    def register(self, tool: type[Tool], origin: str = "builtin") -> type[Tool]:
        check_tool_class(tool)
        if tool.name in self._tools and self._tools[tool.name] is not tool:
            raise ValueError(
                f"two tools are named {tool.name!r}: {self._origins[tool.name]} and {origin}; rename one of them"
            )
        self._tools[tool.name] = tool
        self._origins[tool.name] = origin
        return tool

    def get(self, name: str) -> type[Tool]:
        tool = self._tools.get(name)
        if tool is None:
            close = difflib.get_close_matches(str(name), list(self._tools), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known tools: {', '.join(sorted(self._tools))}"
            raise ToolNotFoundError(f"no tool named {shown(name)}{hint}")
        return tool

    def origin(self, name: str) -> str:
        return self._origins[self.get(name).name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[type[Tool]]:
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def by_task(self, task: str) -> list[type[Tool]]:
        return [tool for tool in self if tool.task == task]

    def cards(self) -> list[dict[str, Any]]:
        return [tool.card() for tool in self]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register every tool advertised under ``group``; a broken plugin is reported, not fatal."""
        for entry_point in entry_points(group=group):
            origin = f"entry point {entry_point.name!r} ({entry_point.value})"
            try:
                loaded = entry_point.load()
                tools = loaded if isinstance(loaded, (list, tuple)) else [loaded]
                for tool in tools:
                    self.register(tool, origin)
            except Exception as exc:  # one bad plugin must not take the others down
                message = f"could not load tools from {origin}: {type(exc).__name__}: {exc}"
                self.plugin_errors.append(message)
                warnings.warn(message, stacklevel=2)

    @classmethod
    def default(cls) -> ToolRegistry:
        """Built-in tools plus every installed plugin."""
        registry = cls()
        registry.load_entry_points()
        if "speech-recognition" not in registry:  # running from a source tree that was never installed
            for tool in builtin_tools():
                registry.register(tool)
        return registry


def builtin_tools() -> list[type[Tool]]:
    """The built-in tools, found as the ``builtin`` entry point names them (or in the source tree when the package
    was never installed). The engine reaches the ``tools`` package only through here."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name="builtin"):
        return list(entry_point.load())
    from tools import BUILTIN_TOOLS

    return list(BUILTIN_TOOLS)


def builtin_tool(name: str, *, required: bool = False) -> type[Tool] | None:
    """One built-in tool's class by its name, for engine parts that use a built-in expert directly (the planner's
    demo retrieval embeds with the built-in MiniLM whatever the run's registry holds; the native path encodes
    with the experts' own front ends). None when there is none, or with ``required`` a ToolNotFoundError."""
    found = next((tool for tool in builtin_tools() if tool.name == name), None)
    if found is None and required:
        raise ToolNotFoundError(f"the built-in tool {name!r} is not installed (the `tools` package of anymoda)")
    return found


def check_tool_class(tool: Any) -> None:
    """Refuse malformed tool classes at registration rather than at first use."""
    if not (isinstance(tool, type) and issubclass(tool, Tool)):
        raise TypeError(f"{tool!r} is not a Tool subclass")
    label = getattr(tool, "__qualname__", repr(tool))
    for attribute in ("name", "task", "description", "inputs", "outputs", "default_model"):
        if not getattr(tool, attribute, None):
            raise TypeError(f"tool class {label} does not set {attribute!r}")
    if not TOOL_NAME.match(tool.name):
        raise TypeError(f"tool name {tool.name!r} must be lowercase words joined by '-'")
    for name, spec in tool.inputs.items():
        if not isinstance(spec, Input) or not isinstance(spec.kind, ArtifactKind):
            raise TypeError(f"tool {tool.name!r}: input {name!r} must be an Input with an ArtifactKind")
    for name, spec in tool.outputs.items():
        if not isinstance(spec, Output) or not isinstance(spec.kind, ArtifactKind):
            raise TypeError(f"tool {tool.name!r}: output {name!r} must be an Output with an ArtifactKind")
    for name, spec in tool.params.items():
        if not isinstance(spec, Param):
            raise TypeError(f"tool {tool.name!r}: param {name!r} must be a Param")
        spec.check(f"tool {tool.name!r}", name, spec.default)  # a default outside its own bounds is a bug
    clash = set(tool.inputs) & set(tool.params)
    if clash:
        raise TypeError(f"tool {tool.name!r}: {', '.join(sorted(clash))} is both an input and a param")
