"""The agent graph: plan -> validate -> execute (<-> approve) -> respond, as a LangGraph ``StateGraph``.

State is small and JSON-able (ids, the plan, task results, the answer): artifacts are referred to by
id only, so checkpoints never hold bytes. Each node is a plain function of the state; the parts they
use (planner, store, executor, composer) come in through :class:`AgentParts`, passed explicitly.

Durability: the checkpointer saves the state after every node (SQLite by default, keyed by the run's
thread id). A crash inside ``execute`` resumes that node; the run journal tells it which tasks had
already finished, so they are not run again. ``approve`` pauses the run with ``interrupt()`` until a
person answers (``Command(resume=...)``), however much later and from whichever process.

Honesty: ``execute`` asks each task's tool whether it can run here before it starts (a task that
cannot is ``unavailable``, its dependants skipped), strips artifact ids from text read aloud, and has
the planner repair once a call that failed on a bad argument (:mod:`orchestrator.execution.recovery`);
``respond`` gives the run an honest status (``done``, ``partial``, ``failed``, ``cancelled``) and
keeps the answer as a text artifact of the session, which later turns are offered as
``previous_answer``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from orchestrator.config import Settings, current_settings
from orchestrator.errors import AnymodaError, InvalidInputError
from orchestrator.execution.compose import Composer
from orchestrator.execution.events import Event
from orchestrator.execution.executor import ExecutionHooks, PlanExecutor, TaskResult
from orchestrator.execution.journal import FINISHED_RUN_STATUSES, RunJournal
from orchestrator.execution.recovery import (
    AgentHooks,
    is_empty_result,
    plan_takes,
    replaced_plan,
    with_stand_ins,
)
from orchestrator.planning.plan import Plan, ValidatedPlan, validate_plan
from orchestrator.planning.planner import Planner
from orchestrator.storage.artifacts import Artifact, ArtifactKind
from orchestrator.storage.store import ArtifactStore
from orchestrator.tooling.registry import ToolRegistry


class AgentState(TypedDict, total=False):
    run: str
    session: str
    request: str
    inputs: list[str]  # artifact ids attached to this request
    context: list[str]  # earlier artifacts of the session the planner may use
    history: str  # what the conversation said before (recent turns and a summary of older ones)
    plan: dict[str, Any]  # Plan.to_json()
    planner: dict[str, Any]  # how the plan came about: syntax, attempts, seconds, hint, dropped tasks
    approvals: dict[str, bool]  # task id -> a person's decision
    pending_approval: list[str]
    results: dict[str, dict[str, Any]]  # task id -> TaskResult.to_json()
    answer: dict[str, Any]  # Answer.to_json()
    error: str


@dataclass
class AgentParts:
    registry: ToolRegistry
    store: ArtifactStore
    journal: RunJournal
    planner: Planner | None
    executor: PlanExecutor
    composer: Composer
    cancel_events: dict[str, threading.Event] = field(default_factory=dict)
    settings: Settings | None = None  # whose models, cache and offline flag decide what runs here
    repair: bool = True  # ask the planner once to repair a call that failed on a bad argument


def _emit(event: Event) -> None:
    get_stream_writer()(event)


def _validated(parts: AgentParts, state: AgentState) -> ValidatedPlan:
    return validate_plan(Plan.from_json(state["plan"]), parts.registry, store=parts.store, session=state["session"])


def build_agent_graph(parts: AgentParts) -> StateGraph:
    """The uncompiled graph; compile it with a checkpointer (see :class:`orchestrator.agent.Orchestrator`)."""

    def plan(state: AgentState) -> dict[str, Any]:
        if state.get("plan") is not None:
            return {}  # the caller gave the plan (a pipeline, a resumed run)
        if parts.planner is None:
            return {"error": "no planner is configured and no plan was given"}
        artifacts = [parts.store.get(a, session=state["session"]) for a in state.get("inputs", [])]
        artifacts += earlier_artifacts(parts.store, state["session"], state.get("context", []))
        try:
            run = state.get("run", "")
            options = {"on_text": lambda piece: _emit(Event("plan_token", run, data={"text": piece}))} \
                if plan_takes(parts.planner, "on_text") else {}
            if plan_takes(parts.planner, "numbers_from"):
                # Numeric settings come from the user's own words in this conversation, never from the answers.
                earlier = [r.request for r in parts.journal.runs(session=state["session"], limit=40)]
                options["numbers_from"] = [*earlier, state["request"]]
            result = parts.planner.plan(state["request"], artifacts=artifacts, session=state["session"],
                                        context=state.get("history", ""), **options)
        except AnymodaError as exc:
            return {"error": f"planning failed: {exc}"}
        info = {"syntax": result.syntax, "attempts": len(result.attempts), "hint": list(result.hint),
                "seconds": round(sum(a.seconds for a in result.attempts), 3),
                "dropped": [t.id for t in result.dropped], "text": result.attempts[-1].text,
                "wired": getattr(result, "wired", False)}
        # A tool that cannot run here keeps its place in the plan (and is reported); a weaker one that can
        # answer part of it runs beside it (recovery.STAND_INS), and the answer says which and how much.
        plan = with_stand_ins(result.plan, parts.registry, parts.settings or current_settings())
        return {"plan": plan.to_json(), "planner": info}

    def validate(state: AgentState) -> dict[str, Any]:
        if state.get("error"):
            return {}
        try:
            validated = _validated(parts, state)
        except InvalidInputError as exc:
            return {"error": str(exc)}
        parts.journal.update_run(state["run"], status="running", plan=state["plan"])
        _emit(Event("plan_ready", state["run"], data={
            "plan": state["plan"], "order": list(validated.order), "planner": state.get("planner", {})}))
        return {}

    def execute(state: AgentState) -> dict[str, Any]:
        if state.get("error"):
            return {}
        validated = _validated(parts, state)
        agent_hooks = AgentHooks(parts.registry, parts.store, state["session"], settings=parts.settings,
                                 planner=parts.planner, request=state["request"], validated=validated, run=state["run"],
                                 history=state.get("history", ""))
        repairs = parts.repair and parts.planner is not None
        hooks = ExecutionHooks(
            unavailable=agent_hooks.unavailable, prepare=agent_hooks.prepare,
            repair=agent_hooks.repair if repairs else None,
            empty=(lambda outputs: is_empty_result(parts.store, state["session"], outputs)) if repairs else None)
        update = execute_tasks(parts, state, validated, _emit, hooks=hooks)
        if agent_hooks.replaced:  # the plan as it ran: a repaired task's call replaces the failed one
            plan = replaced_plan(validated.plan, agent_hooks.replaced).to_json()
            parts.journal.update_run(state["run"], plan=plan)
            update["plan"] = plan
        return update

    def approve(state: AgentState) -> dict[str, Any]:
        tasks = {t["id"]: t for t in state["plan"]["tasks"]}
        return ask_for_approval(parts, state, [{"id": t, "tool": tasks[t]["tool"], "args": tasks[t]["args"]}
                                               for t in state.get("pending_approval", [])])

    def respond(state: AgentState) -> dict[str, Any]:
        run, session = state["run"], state["session"]
        if state.get("error"):
            parts.journal.update_run(run, status="failed", error=state["error"])
            return {}
        validated = _validated(parts, state)
        results = {t: TaskResult.from_json(r) for t, r in state.get("results", {}).items()}
        earlier_turns = [(r.request, r.answer or "") for r in parts.journal.runs(session=session, limit=10_000)
                         if r.id != run and r.status in FINISHED_RUN_STATUSES]
        answer = parts.composer.compose(
            state["request"], validated, results, parts.store, session,
            inputs=[*state.get("inputs", []), *state.get("context", [])], history=state.get("history", ""),
            on_token=lambda piece: _emit(Event("answer_token", run, data={"text": piece})), turns=earlier_turns,
            registry=parts.registry, planned=bool(state.get("planner")))
        answer_id = store_answer(parts.store, session, run, answer.text, answer.artifacts)
        data = answer.to_json()
        if answer_id:
            data["answer_id"] = answer_id
        _emit(Event("answer", run, data=data))
        parts.journal.update_run(run, status=run_status(results), answer=answer.text,
                                 answer_artifacts=list(answer.artifacts), answer_id=answer_id)
        return {"answer": data}

    def after_execute(state: AgentState) -> str:
        return "approve" if state.get("pending_approval") else "respond"

    graph = StateGraph(AgentState)
    graph.add_node("plan", plan)
    graph.add_node("validate", validate)
    graph.add_node("execute", execute)
    graph.add_node("approve", approve)
    graph.add_node("respond", respond)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "validate")
    graph.add_edge("validate", "execute")
    graph.add_conditional_edges("execute", after_execute, ["approve", "respond"])
    graph.add_edge("approve", "execute")
    graph.add_edge("respond", END)
    return graph


def run_status(results: dict[str, TaskResult]) -> str:
    """An agent run's honest status: ``done`` only when nothing failed or was unavailable; ``partial``
    when something failed or could not run here but something else was done; ``failed`` when nothing
    could be done. Tasks a person declined do not count against it."""
    if any(r.status == "cancelled" for r in results.values()):
        return "cancelled"
    if not any(r.status in ("failed", "unavailable") for r in results.values()):
        return "done"
    return "partial" if any(r.status == "done" for r in results.values()) else "failed"


def store_answer(store: ArtifactStore, session: str, run: str, text: str, delivered: tuple[str, ...] | list[str]) -> str | None:
    """The answer as a text artifact of the session (task ``<run>/answer``, lineage to what it delivers),
    so a later turn can use it ("now say that out loud")."""
    if not text.strip():
        return None
    parents = [a for a in delivered if store.exists(a, session=session)]
    artifact = store.put_value(ArtifactKind.TEXT, text, session=session, task=f"{run}/answer", parents=parents,
                               metadata={"tool": "anymoda", "output": "answer", "run": run})
    return artifact.id


def execute_tasks(parts: Any, state: dict[str, Any], graph: Any, emit: Callable[[Event], None], *,
                  hooks: ExecutionHooks | None = None) -> dict[str, Any]:
    """The execute node of both graphs: run ``graph`` (a validated plan or a workflow's task graph) with the
    parts' executor; tasks waiting for a person are listed for the approve node."""
    executor = PlanExecutor(parts.executor.runner, parts.journal, parts.store, policy=parts.executor.policy, emit=emit,
                            hooks=hooks)
    cancel = parts.cancel_events.setdefault(state["run"], threading.Event())
    results = executor.execute(state["run"], state["session"], graph, approvals=state.get("approvals", {}), cancel=cancel)
    pending = [t for t, r in results.items() if r.status == "awaiting_approval"]
    if pending:
        parts.journal.update_run(state["run"], status="awaiting_approval")
    return {"results": {t: r.to_json() for t, r in results.items()}, "pending_approval": pending}


def ask_for_approval(parts: Any, state: dict[str, Any], waiting: list[dict[str, Any]]) -> dict[str, Any]:
    """The approve node of both graphs: pause with ``interrupt()`` until a person decides on ``waiting``."""
    decision = interrupt({"run": state["run"], "tasks": waiting})
    approvals = dict(state.get("approvals", {}))
    approvals.update(normalise_decision(decision, [t["id"] for t in waiting]))
    parts.journal.update_run(state["run"], status="running")
    return {"approvals": approvals, "pending_approval": []}


def earlier_artifacts(store: ArtifactStore, session: str, ids: list[str]) -> list[Artifact]:
    """Earlier turns' artifacts, named for the planner: ``earlier_image`` is the newest image, then
    ``earlier_image_2``...; a name the user gave the file is kept when it has one."""
    counts: dict[str, int] = {}
    named = []
    for artifact_id in ids:
        artifact = store.get(artifact_id, session=session)
        if artifact.metadata.get("output") == "answer" and artifact.metadata.get("tool") == "anymoda":
            # The previous turn's answer, for "now say that out loud".
            named.append(dataclasses.replace(artifact, metadata={**artifact.metadata, "name": PREVIOUS_ANSWER}))
            continue
        if "name" not in artifact.metadata:
            counts[artifact.kind.value] = counts.get(artifact.kind.value, 0) + 1
            n = counts[artifact.kind.value]
            name = f"earlier_{artifact.kind.value}" + (f"_{n}" if n > 1 else "")
            artifact = dataclasses.replace(artifact, metadata={**artifact.metadata, "name": name})
        # Marked (in this in-memory copy only) so the planner knows it was not sent with this request.
        named.append(dataclasses.replace(artifact, metadata={**artifact.metadata, EARLIER_TURN: True}))
    return named


PREVIOUS_ANSWER = "previous_answer"
EARLIER_TURN = "from_earlier_turn"  # metadata key on artifacts offered from earlier turns (see Planner)


def normalise_decision(decision: Any, pending: list[str]) -> dict[str, bool]:
    """A person's answer to an approval request: yes/no for all, or a yes/no per task id."""
    if isinstance(decision, bool):
        return {t: decision for t in pending}
    if isinstance(decision, str) and decision.strip().lower() in ("yes", "y", "approve", "no", "n", "deny"):
        return {t: decision.strip().lower() in ("yes", "y", "approve") for t in pending}
    if isinstance(decision, dict) and all(isinstance(v, bool) for v in decision.values()):
        unknown = set(decision) - set(pending)
        if unknown:
            raise InvalidInputError(f"approval names task(s) {', '.join(sorted(unknown))} that are not awaiting approval; "
                                    f"awaiting: {', '.join(pending)}")
        return {t: bool(decision.get(t, False)) for t in pending}
    raise InvalidInputError("an approval is true/false (or 'yes'/'no') for all waiting tasks, or a map of task id to true/false")


Decision = bool | str | dict[str, bool]
ApprovalCallback = Callable[[list[dict[str, Any]]], Decision]
