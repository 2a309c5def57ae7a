"""Type-checking a workflow against the tool registry: references resolve, and the workflow read as a plan passes
the same :func:`~orchestrator.planning.plan.validate_plan` the planner's plans go through (so a workflow and a plan
mean the same thing); then what a plan cannot express (fan-out sources, gathered lists, template parts, condition
values). Every problem is reported with its line."""

from __future__ import annotations

import re

from ..planning.plan import PlanError, validate_plan
from ..storage.artifacts import ArtifactKind
from ..tooling.registry import ToolRegistry
from .definition import (
    ITEM,
    Reference,
    Template,
    Workflow,
    WorkflowError,
    WorkflowNode,
    WorkflowProblem,
)


def validate_workflow(workflow: Workflow, registry: ToolRegistry, *, earlier: list[WorkflowProblem] = ()) -> None:
    """Type-check against ``registry``; raise :class:`WorkflowError` listing every problem with its line
    (with ``earlier`` ones, found while reading the file)."""
    problems: list[WorkflowProblem] = list(earlier)
    names = set(workflow.inputs)
    for node in workflow.nodes.values():
        if node.name in names:
            problems.append(WorkflowProblem(node.line, f"node {node.name!r} has the name of an input; names must be unique"))
    fan_outs = {n.name for n in workflow.nodes.values() if n.for_each is not None}

    unresolved: set[tuple[str, str]] = set()  # (node, argument) whose reference names nothing
    for node in workflow.nodes.values():
        for argument, value in node.args.items():
            parts = [value] if isinstance(value, Reference) else value.references if isinstance(value, Template) else []
            for reference in parts:
                message = _reference_problem(workflow, reference, node)
                if message:
                    unresolved.add((node.name, argument))
                    problems.append(WorkflowProblem(node.arg_lines.get(argument, node.line),
                                                    f"node {node.name!r}, argument {argument!r}: {message}"))
        extra = [*(node.when.references if node.when else ()),
                 *((node.for_each.source, node.for_each.image) if node.for_each else ())]
        for reference in filter(None, extra):
            message = _reference_problem(workflow, reference, node)
            if message:
                problems.append(WorkflowProblem(node.line, f"node {node.name!r}: {message}"))
    for output in workflow.outputs.values():
        message = _reference_problem(workflow, output.source, None)
        if message:
            problems.append(WorkflowProblem(output.line, f"output {output.name!r}: {message}"))

    resolvable = len(problems) == len(earlier)
    plan, virtual = workflow.as_plan(registry, leave_out=unresolved)
    try:
        validate_plan(plan, registry)
    except PlanError as exc:
        for p in exc.problems:
            if (p.task, p.argument) in unresolved:
                continue  # already reported as a reference to nothing
            node = workflow.nodes.get(p.task) if p.task else None
            line = node.arg_lines.get(p.argument, node.line) if node and p.argument else (
                (node.tool_line or node.line) if node else _line_of_cycle(workflow, p.message))
            where = f"node {p.task!r}" + (f", argument {p.argument!r}" if p.argument else "") if p.task else "workflow"
            problems.append(WorkflowProblem(line, f"{where}: {_readable(p.message, virtual)}"))
    if resolvable:  # the checks below need every reference to resolve
        problems += _check_dataflow(workflow, registry, fan_outs)
    if problems:
        raise WorkflowError(workflow.source, problems)


def _reference_problem(workflow: Workflow, reference: Reference, node: WorkflowNode | None) -> str | None:
    if reference.name == ITEM:
        if node is None or node.for_each is None:
            return "$item exists only inside a node with for_each"
        return f"$item has no output {reference.output!r}" if reference.output else None
    if reference.name in workflow.inputs:
        return f"input ${reference.name} has no outputs; write ${reference.name}" if reference.output else None
    if reference.name in workflow.nodes:
        if node is not None and reference.name == node.name:
            return f"{reference} refers to the node itself"
        return None
    others = [n for n in workflow.nodes if node is None or n != node.name]
    known = ", ".join(f"${n}" for n in [*workflow.inputs, *others]) or "none"
    return f"{reference} is neither an input nor a node (known: {known})"


def _line_of_cycle(workflow: Workflow, message: str) -> int:
    for name, node in workflow.nodes.items():
        if re.search(rf"(^|[\s:>]){re.escape(name)}($|[\s-])", message):
            return node.line
    return 1


def _readable(message: str, virtual: dict[str, str]) -> str:
    for artifact_id, name in virtual.items():
        message = message.replace(artifact_id, name)
    return re.sub(r"<([A-Za-z][A-Za-z0-9_-]*)((?:\.[a-z][a-z0-9_]*)?)>", r"$\1\2", message)


def _check_dataflow(workflow: Workflow, registry: ToolRegistry, fan_outs: set[str]) -> list[WorkflowProblem]:
    """What a plan cannot express: fan-out sources, gathered lists, template parts, condition values."""
    problems = []
    known = {n.name for n in workflow.nodes.values() if n.tool in registry}
    for node in workflow.nodes.values():
        if node.name not in known or any(r.name in workflow.nodes and r.name not in known for r in node.references()):
            continue  # its unknown tool (or a source's) is reported already
        tool = registry.get(node.tool)
        for argument, value in node.args.items():
            line = node.arg_lines.get(argument, node.line)
            if isinstance(value, Reference) and value.name in fan_outs and value.name != ITEM:
                kind = workflow.kind_of(value, registry, tool.inputs[argument].kind if argument in tool.inputs else None)
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
                    kind = workflow.kind_of(part, registry, item_of=node)
                    if kind not in (ArtifactKind.TEXT, ArtifactKind.JSON):
                        problems.append(WorkflowProblem(line, f"node {node.name!r}, argument {argument!r}: {{{part}}} "
                                                              f"is {kind.value if kind else 'ambiguous'}; only text and "
                                                              "json can be written into a text"))
        if node.for_each is not None:
            problems += _check_fan_out(workflow, node, registry, fan_outs)
        if node.when is not None:
            for part in node.when.references:
                if part.name != ITEM and workflow.kind_of(part, registry) is None:
                    problems.append(WorkflowProblem(node.line, f"node {node.name!r}: the condition's {part} is ambiguous; "
                                                               "name the output, e.g. $node.output"))
    for output in workflow.outputs.values():
        if output.source.name in workflow.nodes and output.source.name not in known:
            continue
        if workflow.kind_of(output.source, registry) is None:
            problems.append(WorkflowProblem(output.line, f"output {output.name!r}: {output.source} has several "
                                                         "outputs; name one, e.g. $node.output"))
    return problems


def _check_fan_out(workflow: Workflow, node: WorkflowNode, registry: ToolRegistry, fan_outs: set[str]) -> list[WorkflowProblem]:
    fan_out, problems = node.for_each, []
    where = f"node {node.name!r}, for_each"
    if fan_out.source.name == ITEM:
        return [WorkflowProblem(node.line, f"{where}: cannot iterate $item")]
    kind = workflow.kind_of(fan_out.source, registry)
    expected = {"crops": ArtifactKind.DETECTIONS, "items": ArtifactKind.JSON, "lines": ArtifactKind.TEXT}.get(fan_out.mode)
    if fan_out.mode == "each":
        if fan_out.source.name not in fan_outs:
            problems.append(WorkflowProblem(node.line, f"{where}: {fan_out.source} is not a fan-out node's output; "
                                                       "use crops/items/lines to iterate a single artifact"))
    elif kind is not expected:
        problems.append(WorkflowProblem(node.line, f"{where}: {fan_out.mode} needs {expected.value}, but "
                                                   f"{fan_out.source} is {kind.value if kind else 'ambiguous'}"))
    if fan_out.mode == "crops" and workflow.kind_of(fan_out.image, registry) is not ArtifactKind.IMAGE:
        problems.append(WorkflowProblem(node.line, f"{where}: crops are cut from an image; 'of: {fan_out.image}' "
                                                   "is not one"))
    if fan_out.mode != "each" and fan_out.source.name in fan_outs:
        problems.append(WorkflowProblem(node.line, f"{where}: {fan_out.source} is itself a list; iterate it with "
                                                   f"'for_each: {fan_out.source}'"))
    if not any(isinstance(v, Reference) and v.name == ITEM for v in node.args.values()):
        problems.append(WorkflowProblem(node.line, f"{where}: no argument takes $item, so every run would be the same"))
    return problems
