"""Run one tool on artifacts: resolve and type-check inputs, run, store outputs with lineage.

This is the single place where a tool call meets the artifact store; the CLI, the pipelines and the
executor all call :func:`run_tool`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import AnymodaError, InvalidInputError, ToolExecutionError
from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..storage.store import ArtifactStore
from .tool import OutputValue, Tool, check_value


@dataclass(frozen=True)
class ToolRun:
    tool: str
    model: str
    outputs: dict[str, Artifact]
    values: dict[str, Any]
    seconds: float


def resolve_inputs(
    tool: Tool, arguments: dict[str, Any], store: ArtifactStore, *, session: str | None, task: str | None
) -> tuple[dict[str, Artifact], dict[str, Any]]:
    """Split arguments into input artifacts (stored first if given as literals) and params."""
    unknown = set(arguments) - set(tool.inputs) - set(tool.params)
    if unknown:
        raise InvalidInputError(
            f"tool {tool.name!r} has no argument(s) {', '.join(sorted(unknown))}; "
            f"inputs: {', '.join(tool.inputs) or 'none'}; params: {', '.join(tool.params) or 'none'}"
        )
    artifacts: dict[str, Artifact] = {}
    for name, spec in tool.inputs.items():
        if name not in arguments or arguments[name] is None:
            if spec.required:
                raise InvalidInputError(f"tool {tool.name!r} needs the input {name!r} ({spec.kind.value})")
            continue
        value = arguments[name]
        where = f"tool {tool.name!r}: input {name!r}"
        if isinstance(value, Artifact):
            artifact = store.get(value.id, session=session)
        elif is_artifact_id(value):
            artifact = store.get(value, session=session)
        elif spec.kind in (ArtifactKind.TEXT, ArtifactKind.JSON) or not isinstance(value, str):
            # A literal (a sentence, a PIL image from Python code): store it so lineage is complete.
            check_value(spec.kind, value, where)
            artifact = store.put_value(spec.kind, value, session=session, task=task, metadata={"literal": True})
        else:
            raise InvalidInputError(
                f"{where} takes a {spec.kind.value} artifact id (like '{spec.kind.value}-0123456789abcdef'), got {value!r}"
            )
        if artifact.kind is not spec.kind:
            raise InvalidInputError(f"{where} takes {spec.kind.value}, but {artifact.id} is {artifact.kind.value}")
        artifacts[name] = artifact
    params = tool.check_params({k: v for k, v in arguments.items() if k in tool.params})
    return artifacts, params


def run_tool(
    tool: Tool,
    arguments: dict[str, Any],
    *,
    store: ArtifactStore,
    session: str | None = None,
    task: str | None = None,
) -> ToolRun:
    """Run ``tool`` on artifact ids / literals and store what it produces."""
    artifacts, params = resolve_inputs(tool, arguments, store, session=session, task=task)
    values = {name: store.decode(artifact) for name, artifact in artifacts.items()}
    tool.validate(values, params)
    started = time.perf_counter()
    try:
        with tool.loaded_model() as model:
            produced = tool.run(model, values, params)
    except AnymodaError:
        raise
    except Exception as exc:
        raise ToolExecutionError(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - started

    missing = set(tool.outputs) - set(produced)
    extra = set(produced) - set(tool.outputs)
    if missing or extra:
        raise ToolExecutionError(
            f"tool {tool.name!r} broke its contract: missing outputs {sorted(missing)}, undeclared outputs {sorted(extra)}"
        )
    source = tool.resolve()
    base_metadata = {"tool": tool.name, "model": source.model_id, "params": params, "seconds": round(seconds, 4)}
    parents = [artifact.id for artifact in artifacts.values()]
    outputs: dict[str, Artifact] = {}
    plain: dict[str, Any] = {}
    for name, spec in tool.outputs.items():
        item = produced[name]
        value, extra_metadata = (item.value, item.metadata) if isinstance(item, OutputValue) else (item, {})
        check_value(spec.kind, value, f"tool {tool.name!r}: output {name!r}")
        outputs[name] = store.put_value(
            spec.kind, value, session=session, task=task, parents=parents,
            metadata={**base_metadata, "output": name, **extra_metadata},
        )
        plain[name] = value
    return ToolRun(tool.name, source.model_id, outputs, plain, seconds)
