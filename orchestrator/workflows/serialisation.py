"""Writing workflows: a Workflow as plain data and YAML (read back by the loader to the same workflow), saved
atomically; and a planner's plan turned into a workflow file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInputError
from ..planning.plan import Plan, parse_reference, validate_plan
from ..storage.artifacts import Artifact, is_artifact_id
from ..tooling.registry import ToolRegistry
from .definition import (
    Reference,
    Template,
    Workflow,
    WorkflowInput,
    WorkflowNode,
    WorkflowOutput,
)


def workflow_to_dict(workflow: Workflow) -> dict[str, Any]:
    def value(v: Any) -> Any:
        if isinstance(v, Reference):
            return str(v)
        if isinstance(v, Template):
            return v.text
        if isinstance(v, str) and v.startswith("$"):
            return "$" + v
        return v

    data: dict[str, Any] = {"name": workflow.name}
    if workflow.description:
        data["description"] = workflow.description
    data["inputs"] = {n: ({"kind": i.kind.value} | ({"description": i.description} if i.description else {})
                          | ({"default": i.default} if i.default is not None else {})) for n, i in workflow.inputs.items()}
    nodes = {}
    for node in workflow.nodes.values():
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
    data["outputs"] = {n: str(o.source) for n, o in workflow.outputs.items()}
    return data


def workflow_to_yaml(workflow: Workflow) -> str:
    return yaml.safe_dump(workflow.to_dict(), sort_keys=False, allow_unicode=True, width=110)


def save_workflow(workflow: Workflow, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(workflow.to_yaml(), encoding="utf-8")
    temporary.replace(path)
    return path


def workflow_from_plan(plan: Plan | dict[str, Any], inputs: Iterable[Artifact], registry: ToolRegistry, *,
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
    workflow = Workflow(name, inputs=workflow_inputs, nodes=nodes, outputs=workflow_outputs, description=description)
    workflow.validate(registry)
    return workflow
