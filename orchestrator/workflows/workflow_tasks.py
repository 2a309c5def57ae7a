"""A workflow as the executor's task graph: conditions, fan-out, gathered lists and named outputs.

The executor (:mod:`orchestrator.execution.executor`) asks the graph which tasks exist, what each depends on and
with which arguments it runs, always given the results so far. That is where a workflow differs from
a plan: a ``for_each`` node becomes one task per item (``describe[0]``, ``describe[1]``, ...) once its
list exists, and a node whose ``when`` condition comes out false is skipped (with everything that needs
its outputs) instead of run. Everything else — dependency-driven starts, retries, timeouts, the journal
that makes a run resumable — is the executor's, shared with the agent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InvalidInputError
from ..execution.executor import Skip, TaskResult
from ..planning.plan import validate_plan
from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..storage.media import Detections, Masks
from ..storage.store import ArtifactStore
from ..tooling.registry import ToolRegistry
from .conditions import evaluate_condition
from .definition import (
    EMBEDDED_REFERENCE,
    ITEM,
    Condition,
    Reference,
    Template,
    Workflow,
    WorkflowNode,
)

MAX_ITEMS = 256  # a fan-out larger than this is refused rather than flooding the runner
MIN_CROP_PIXELS = 4


def item_task(node: str, index: int) -> str:
    return f"{node}[{index}]"


class WorkflowTaskGraph:
    """The :class:`~orchestrator.execution.executor.TaskGraph` of one workflow run (see the module docstring).

    ``bindings`` maps every input name to an artifact id of this ``session`` (see
    :func:`bind_inputs`)."""

    def __init__(self, workflow: Workflow, registry: ToolRegistry, store: ArtifactStore, session: str, run_id: str,
                 bindings: dict[str, str]):
        self.workflow = workflow
        self.registry = registry
        self.store = store
        self.session = session
        self.run_id = run_id
        self.bindings = bindings
        plan, _ = workflow.as_plan(registry)
        validated = validate_plan(plan, registry)
        self.order = validated.order
        self.node_dependencies = validated.dependencies
        self.output_names = {key: ref.output for key, ref in validated.references.items()}  # (node, argument) -> output
        self._items: dict[str, list[Any]] = {}  # fan-out node -> its items (artifact ids or literals)
        self._expansion_errors: dict[str, Exception] = {}

    # ------------------------------------------------------------------ TaskGraph

    def task_ids(self, results: dict[str, TaskResult]) -> Sequence[str]:
        ids: list[str] = []
        for name in self.order:
            node = self.workflow.nodes[name]
            if node.for_each is None:
                ids.append(name)
                continue
            items = self._expand(node, results)
            ids.extend(item_task(name, i) for i in range(len(items))) if items else ids.append(name)
        return ids

    def tool(self, task_id: str) -> str:
        return self.workflow.nodes[self._node_of(task_id)].tool

    def model(self, task_id: str) -> str | None:
        return self.workflow.nodes[self._node_of(task_id)].model

    def dependencies(self, task_id: str) -> list[str]:
        name, index = self._split(task_id)
        node = self.workflow.nodes[name]
        found: list[str] = []
        for dependency in self.node_dependencies[name]:
            dependency_node = self.workflow.nodes[dependency]
            items = self._items.get(dependency)
            if dependency_node.for_each is None or not items:
                found.append(dependency)  # an unexpanded fan-out is one task until its list exists
            elif index is not None and node.for_each.mode == "each" and node.for_each.source.name == dependency:
                found.append(item_task(dependency, index))  # map after map: item i waits for item i only
            else:
                found.extend(item_task(dependency, i) for i in range(len(items)))
        return found

    def arguments(self, task_id: str, results: dict[str, TaskResult]) -> dict[str, Any] | Skip:
        name, index = self._split(task_id)
        node = self.workflow.nodes[name]
        if node.for_each is not None and index is None:
            if name in self._expansion_errors:
                raise self._expansion_errors[name]
            return Skip(f"{node.for_each.describe()} found nothing to iterate")
        item = self._item(node, index, results) if index is not None else None
        if node.when is not None and not self._condition_holds(node, node.when, results, item):
            return Skip(f"its condition '{node.when.text}' is false")
        arguments: dict[str, Any] = {}
        for argument, value in node.args.items():
            if isinstance(value, Reference):
                arguments[argument] = self._resolve(node, argument, value, results, item, index)
            elif isinstance(value, Template):
                arguments[argument] = self._fill(value, results, item, index)
            else:
                arguments[argument] = value
        return arguments

    # ------------------------------------------------------------------ outputs

    def outputs(self, results: dict[str, TaskResult]) -> dict[str, str | list[str] | None]:
        """Each named output's artifact id (a list for a fan-out node); None where its node did not run."""
        found: dict[str, str | list[str] | None] = {}
        for name, output in self.workflow.outputs.items():
            reference = output.source
            if reference.name in self.bindings:
                found[name] = self.bindings[reference.name]
                continue
            node = self.workflow.nodes[reference.name]
            output_name = self._output_name(reference)
            if node.for_each is not None:
                items = self._items.get(node.name) or []
                found[name] = [results[item_task(node.name, i)].outputs[output_name]
                               for i in range(len(items)) if _done(results, item_task(node.name, i))]
            else:
                found[name] = results[node.name].outputs[output_name] if _done(results, node.name) else None
        return found

    # ------------------------------------------------------------------ internals

    def _split(self, task_id: str) -> tuple[str, int | None]:
        if task_id.endswith("]") and "[" in task_id:
            name, _, index = task_id[:-1].partition("[")
            return name, int(index)
        return task_id, None

    def _node_of(self, task_id: str) -> str:
        return self._split(task_id)[0]

    def _output_name(self, reference: Reference, wanted: ArtifactKind | None = None) -> str:
        if reference.output is not None:
            return reference.output
        tool = self.registry.get(self.workflow.nodes[reference.name].tool)
        matching = [n for n, spec in tool.outputs.items() if wanted is None or spec.kind is wanted]
        return matching[0] if len(matching) == 1 else next(iter(tool.outputs))

    def _resolve(self, node: WorkflowNode, argument: str, reference: Reference, results: dict[str, TaskResult],
                 item: Any, index: int | None) -> Any:
        if reference.name == ITEM:
            return item
        if reference.name in self.bindings:
            return self.bindings[reference.name]
        source = self.workflow.nodes[reference.name]
        output = self.output_names.get((node.name, argument)) or self._output_name(reference)
        if source.for_each is None:
            return results[source.name].outputs[output]
        # A whole fan-out's texts, gathered into one input, one line per item.
        texts = [self.store.load(results[item_task(source.name, i)].outputs[output], session=self.session)
                 for i in range(len(self._items[source.name]))]
        return "\n".join(str(t) for t in texts)

    def _value(self, reference: Reference, results: dict[str, TaskResult], item: Any) -> Any:
        """A referenced artifact as a condition or a template sees it."""
        if reference.name == ITEM:
            return _plain(self.store.load(item, session=self.session)) if _is_id(item) else item
        if reference.name in self.bindings:
            return _plain(self.store.load(self.bindings[reference.name], session=self.session))
        source = self.workflow.nodes[reference.name]
        output = self._output_name(reference)
        if source.for_each is None:
            return _plain(self.store.load(results[source.name].outputs[output], session=self.session))
        return [_plain(self.store.load(results[item_task(source.name, i)].outputs[output], session=self.session))
                for i in range(len(self._items[source.name])) if _done(results, item_task(source.name, i))]

    def _fill(self, template: Template, results: dict[str, TaskResult], item: Any, index: int | None) -> str:
        def replace(match) -> str:
            value = self._value(Reference(match["name"], match["output"]), results, item)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return "\n".join(value)
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

        return EMBEDDED_REFERENCE.sub(replace, template.text)

    def _condition_holds(self, node: WorkflowNode, condition: Condition, results: dict[str, TaskResult],
                         item: Any) -> bool:
        return evaluate_condition(condition, [self._value(r, results, item) for r in condition.references],
                                  f"node {node.name!r}")

    def _expand(self, node: WorkflowNode, results: dict[str, TaskResult]) -> list[Any]:
        """The node's items, once everything they come from exists; [] before that or when there are none."""
        if node.name in self._items:
            return self._items[node.name]
        if node.name in self._expansion_errors:
            return []
        fan_out = node.for_each
        sources = [fan_out.source] + ([fan_out.image] if fan_out.image is not None else [])
        if fan_out.mode == "each":
            upstream = self._items.get(fan_out.source.name)
            if upstream is None:
                return []
            items = [None] * len(upstream)  # item i is output i of the upstream fan-out, known once it is done
        else:
            if not all(r.name in self.bindings or _done(results, r.name) for r in sources):
                return []
            try:
                items = self._items_of(node, results)
            except Exception as exc:  # noqa: BLE001 - reported as the node's failure by arguments()
                self._expansion_errors[node.name] = exc
                return []
        if len(items) > MAX_ITEMS:
            self._expansion_errors[node.name] = InvalidInputError(
                f"node {node.name!r}: {fan_out.describe()} gave {len(items)} items, over the limit of {MAX_ITEMS}")
            return []
        self._items[node.name] = items
        return items

    def _item(self, node: WorkflowNode, index: int, results: dict[str, TaskResult]) -> Any:
        if node.for_each.mode == "each":  # item i of a map after a map: output i of the upstream fan-out
            source = node.for_each.source
            return results[item_task(source.name, index)].outputs[self._output_name(source)]
        return self._items[node.name][index]

    def _artifact_of(self, reference: Reference, results: dict[str, TaskResult]) -> str:
        if reference.name in self.bindings:
            return self.bindings[reference.name]
        return results[reference.name].outputs[self._output_name(reference)]

    def _items_of(self, node: WorkflowNode, results: dict[str, TaskResult]) -> list[Any]:
        fan_out = node.for_each
        source_id = self._artifact_of(fan_out.source, results)
        value = self.store.load(source_id, session=self.session)
        if fan_out.mode == "lines":
            return [line.strip() for line in str(value).splitlines() if line.strip()]
        if fan_out.mode == "items":
            if not isinstance(value, list):
                raise InvalidInputError(f"node {node.name!r}: {fan_out.source} is {type(value).__name__}, not a list")
            return list(value)
        image_id = self._artifact_of(fan_out.image, results)
        return self._crops(node, value, image_id, source_id)

    def _crops(self, node: WorkflowNode, detections: Detections, image_id: str, detections_id: str) -> list[str]:
        image: Image.Image = self.store.load(image_id, session=self.session)
        crops = []
        for i, (box, label, score) in enumerate(zip(detections.boxes, detections.labels, detections.scores)):
            x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
            x1, y1 = min(image.width, int(round(box[2]))), min(image.height, int(round(box[3])))
            if x1 - x0 < MIN_CROP_PIXELS or y1 - y0 < MIN_CROP_PIXELS:
                continue  # a box outside the image or a sliver: nothing to look at
            crop = self.store.put_value(ArtifactKind.IMAGE, image.crop((x0, y0, x1, y1)), session=self.session,
                                        task=f"{self.run_id}/{node.name}", parents=[image_id, detections_id],
                                        metadata={"name": f"{node.name}-crop-{i}.png", "label": label,
                                                  "score": score, "box": [x0, y0, x1, y1]})
            crops.append(crop.id)
        return crops


def _done(results: dict[str, TaskResult], task_id: str) -> bool:
    return task_id in results and results[task_id].status == "done"


def _is_id(value: Any) -> bool:
    return is_artifact_id(value)


def _plain(value: Any) -> Any:
    """What a condition sees: text, JSON, a list of boxes or mask labels; other media are just present."""
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    if isinstance(value, Detections):
        return [{"label": l, "score": s, "box": list(b)} for b, l, s in zip(value.boxes, value.labels, value.scores)]
    if isinstance(value, Masks):
        return list(value.labels)
    return True


def bind_inputs(workflow: Workflow, values: dict[str, Any], store: ArtifactStore, session: str) -> dict[str, str]:
    """Every input of ``workflow`` as an artifact id of ``session``, from what the caller gave.

    A value may be a stored artifact or its id, a file path (for media inputs), a literal (text or JSON
    for text and json inputs), or an in-memory value (a PIL image, an AudioClip, a TimeSeries). Unknown
    names, missing inputs and values of the wrong kind are refused before anything is stored."""
    unknown = set(values) - set(workflow.inputs)
    if unknown:
        known = ", ".join(f"{n} ({i.kind.value})" for n, i in workflow.inputs.items()) or "none"
        raise InvalidInputError(f"workflow {workflow.name!r} has no input(s) {', '.join(sorted(unknown))}; its inputs: {known}")
    missing = [i for n, i in workflow.inputs.items() if n not in values and i.required]
    if missing:
        raise InvalidInputError(f"workflow {workflow.name!r} needs " + ", ".join(
            f"input {i.name!r} ({i.kind.value})" for i in missing))
    bindings: dict[str, str] = {}
    for name, spec in workflow.inputs.items():
        value = values.get(name, spec.default)
        where = f"workflow input {name!r} ({spec.kind.value})"
        if isinstance(value, Artifact) or is_artifact_id(value):
            artifact = store.get(value.id if isinstance(value, Artifact) else value, session=session)
        elif spec.kind in (ArtifactKind.TEXT, ArtifactKind.JSON) and not isinstance(value, Path):
            if spec.kind is ArtifactKind.TEXT and not isinstance(value, str):
                raise InvalidInputError(f"{where} takes text, got {type(value).__name__}")
            artifact = store.put_value(spec.kind, value, session=session, metadata={"name": name, "literal": True})
        elif isinstance(value, (str, Path)):
            try:
                artifact = store.ingest_file(value, spec.kind, session=session)
            except InvalidInputError as exc:
                message = str(exc)
                raise InvalidInputError(message if Path(value).name in message else f"{where}, {Path(value).name}: {message}") from None
        else:
            artifact = store.put_value(spec.kind, value, session=session, metadata={"name": name})
        if artifact.kind is not spec.kind:
            raise InvalidInputError(f"{where}: {artifact.id} is {artifact.kind.value}")
        bindings[name] = artifact.id
    return bindings
