"""The workflow graph: execute (<-> approve) -> finish, as a LangGraph ``StateGraph``.

A workflow run is the agent's run without the planner and the composer: the graph is given (a workflow
file, a :class:`~orchestrator.workflows.pipeline.Pipeline`, a saved plan), its inputs are bound to artifacts, and
the answer is the workflow's named outputs. It shares everything else with the agent: the executor, the
run journal (so ``anymoda runs list|show|resume`` see workflow runs too), the SQLite checkpointer keyed
by the run id, approvals through ``interrupt()``, and the events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from orchestrator.execution.events import Event
from orchestrator.execution.executor import PlanExecutor, TaskResult
from orchestrator.execution.journal import RunJournal
from orchestrator.storage.store import ArtifactStore
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.workflows.definition import Workflow
from orchestrator.workflows.workflow_tasks import WorkflowTaskGraph

from .agent import ask_for_approval, execute_tasks


class WorkflowState(TypedDict, total=False):
    run: str
    session: str
    workflow: dict[str, Any]  # Workflow.to_dict()
    bindings: dict[str, str]  # input name -> artifact id
    approvals: dict[str, bool]
    pending_approval: list[str]
    results: dict[str, dict[str, Any]]  # task id -> TaskResult.to_json()
    outputs: dict[str, Any]  # output name -> artifact id, a list of them (fan-out), or None
    error: str


@dataclass
class WorkflowParts:
    registry: ToolRegistry
    store: ArtifactStore
    journal: RunJournal
    executor: PlanExecutor
    cancel_events: dict[str, threading.Event] = field(default_factory=dict)


def task_graph(parts: WorkflowParts, state: WorkflowState) -> WorkflowTaskGraph:
    workflow = Workflow.from_dict(state["workflow"], source=state["workflow"].get("name", "workflow"))
    workflow.validate(parts.registry)  # a tool may have changed since the run started
    return WorkflowTaskGraph(workflow, parts.registry, parts.store, state["session"], state["run"], state["bindings"])


def build_workflow_graph(parts: WorkflowParts) -> StateGraph:
    def emit(event: Event) -> None:
        get_stream_writer()(event)

    def execute(state: WorkflowState) -> dict[str, Any]:
        return execute_tasks(parts, state, task_graph(parts, state), emit)

    def approve(state: WorkflowState) -> dict[str, Any]:
        graph = task_graph(parts, state)
        return ask_for_approval(parts, state, [{"id": t, "tool": graph.tool(t)} for t in state.get("pending_approval", [])])

    def finish(state: WorkflowState) -> dict[str, Any]:
        graph = task_graph(parts, state)
        results = {t: TaskResult.from_json(r) for t, r in state.get("results", {}).items()}
        graph.task_ids(results)  # fan-outs expanded as they were, so outputs can list their items
        outputs = graph.outputs(results)
        failures = [f"{t} ({r.tool}): {r.error}" for t, r in results.items() if r.status == "failed"]
        cancelled = any(r.status == "cancelled" for r in results.values())
        delivered = [a for value in outputs.values() for a in (value if isinstance(value, list) else [value]) if a]
        summary = "; ".join(f"{name}: {_describe(parts.store, value, state['session'])}" for name, value in outputs.items())
        emit(Event("answer", state["run"], data={"text": summary, "artifacts": delivered, "outputs": outputs,
                                                 "failures": failures}))
        parts.journal.update_run(state["run"], status="cancelled" if cancelled else "failed" if failures else "done",
                                 answer=summary, answer_artifacts=delivered, error="; ".join(failures) or None)
        return {"outputs": outputs}

    def after_execute(state: WorkflowState) -> str:
        return "approve" if state.get("pending_approval") else "finish"

    graph = StateGraph(WorkflowState)
    graph.add_node("execute", execute)
    graph.add_node("approve", approve)
    graph.add_node("finish", finish)
    graph.add_edge(START, "execute")
    graph.add_conditional_edges("execute", after_execute, ["approve", "finish"])
    graph.add_edge("approve", "execute")
    graph.add_edge("finish", END)
    return graph


def _describe(store: ArtifactStore, value: Any, session: str) -> str:
    if value is None:
        return "not produced"
    if isinstance(value, list):
        return f"{len(value)} item(s)"
    artifact = store.get(value, session=session)
    if artifact.kind.value == "text":
        text = " ".join(str(store.load(value, session=session)).split())
        return repr(text[:120] + ("..." if len(text) > 120 else ""))
    return value
