"""The one obvious entry point: :class:`Orchestrator` runs requests, :class:`Session` keeps a conversation.

    orch = Orchestrator()
    result = orch.run("Read the receipt and tell me the total out loud", files=["receipt.png"])
    print(result.answer, [a.id for a in result.artifacts])

    chat = orch.session("thread-1")
    chat.send("Describe this photo", files=["beach.jpg"])
    chat.send("Now read that out loud")          # "that" is the previous turn's output

    for event in orch.stream("Transcribe this", files=["talk.wav"]):   # plan, tasks, answer tokens
        print(event.type, event.task, event.data)

Every run has an id (``run-<16 hex>``); it is the LangGraph thread id of its checkpoints and the key
of its journal entry, so ``orch.resume(run_id)`` continues a run that crashed, was cancelled or waits
for an approval, from this process or another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DEFAULT, PartDefault, Settings, current_settings
from .errors import AnymodaError, InvalidInputError, shown_names
from .execution.compose import ARTIFACT_ID_IN_TEXT, Composer
from .execution.events import Event
from .execution.executor import ExecutionPolicy, PlanExecutor, TaskResult
from .execution.journal import (
    FINISHED_RUN_STATUSES,
    LeaseLostError,
    RunJournal,
    RunRecord,
    check_run_id,
    check_session_id,
    new_run_id,
)
from .execution.recovery import Unavailable
from .execution.runner import TaskRunner
from .planning.plan import Plan
from .planning.token_budget import check_request_size, estimate_tokens
from .storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from .storage.store import ArtifactStore
from .tooling.registry import ToolRegistry

if TYPE_CHECKING:
    from .planning.planner import Planner

DEFAULT_SESSION = "default"
RECENT_TURNS = 4  # turns shown verbatim to the planner and composer; older ones are summarised
MAX_CONTEXT_ARTIFACTS = 6


@dataclass(frozen=True)
class RunResult:
    run_id: str
    session: str
    # done | partial (some task failed or could not run here; something else was done) | failed |
    # cancelled | awaiting_approval | running
    status: str
    answer: str
    artifacts: tuple[Artifact, ...]
    plan: dict[str, Any] | None
    tasks: dict[str, TaskResult]
    error: str | None = None
    pending_approval: tuple[dict[str, Any], ...] = ()
    failures: tuple[str, ...] = ()
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)  # a workflow's named outputs: id, [ids] or None
    unavailable: tuple[Unavailable, ...] = ()  # tasks whose tool cannot run here: what it needs, how to fetch it
    composed_by: str | None = None  # who wrote the answer: the LLM backend's name, 'template', 'plan' or 'history'
    fallback_reason: str | None = None  # why the template wrote it instead of the LLM (None when the LLM did)
    answer_id: str | None = None  # the answer as a text artifact of the session

    @property
    def ok(self) -> bool:
        return self.status == "done" and not self.failures

    def first(self, kind: ArtifactKind | str) -> Artifact | None:
        kind = ArtifactKind.parse(kind)
        return next((a for a in self.artifacts if a.kind is kind), None)

    def to_json(self) -> dict[str, Any]:
        """What ``anymoda run --json`` prints (and an HTTP API would return)."""
        return {"run": self.run_id, "session": self.session, "status": self.status, "answer": self.answer,
                "artifacts": [a.to_dict() for a in self.artifacts], "failures": list(self.failures),
                "unavailable": [u.to_json() for u in self.unavailable], "error": self.error,
                "composed_by": self.composed_by, "fallback_reason": self.fallback_reason, "answer_id": self.answer_id,
                "tasks": {t: r.to_json() for t, r in self.tasks.items()},
                "pending_approval": list(self.pending_approval), "outputs": dict(self.outputs)}


class Orchestrator:
    """Plans, runs and answers requests; see the module docstring.

    Every part can be passed in (``planner``, ``composer``, ``runner``, ``store``, ...); what is not
    is built from ``settings``: the local planner LLM (the packaged Qwen2.5-Coder-0.5B unless
    configured), the same model composing answers, a thread-pool runner, and the store, journal and
    checkpoints under the settings' home. ``planner=None`` runs only plans given explicitly and workflows;
    ``composer=None`` writes answers from a template, without an LLM.
    """

    def __init__(self, *, settings: Settings | None = None, registry: ToolRegistry | None = None,
                 store: ArtifactStore | None = None, planner: Planner | None | PartDefault = DEFAULT,
                 composer: Composer | None | PartDefault = DEFAULT,
                 runner: TaskRunner | None = None, policy: ExecutionPolicy | None = None,
                 journal: RunJournal | None = None, checkpointer: Any = None, approve_before: Iterable[str] = ()):
        self.settings = settings or current_settings()
        self.registry = registry or ToolRegistry.default()
        from .execution.state import open_journal, open_store

        # The settings' store and database pick the back end: files under the home, or shared Postgres + S3.
        self.store = store or open_store(self.settings)
        self.journal = journal or open_journal(self.settings)
        unknown = [name for name in approve_before if name not in self.registry]
        if unknown:
            raise InvalidInputError(f"approve_before names unknown tool(s): {shown_names(unknown)}")
        policy = policy or ExecutionPolicy()
        if approve_before:
            policy = dataclasses.replace(policy, approve_before=policy.approve_before | frozenset(approve_before))
        self.policy = policy
        if runner is None:
            from .distributed import build_runner

            runner = build_runner(self.settings, self.registry, self.store)
        self.runner = runner
        self._planner_spec = planner
        self._planner = None if planner is DEFAULT else planner
        self._composer = None if composer is DEFAULT else (composer or self._new_composer(None))
        self._checkpointer = checkpointer
        self._graph = None
        self._workflow_graph = None
        self._cancel_events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ parts, built on first use

    @property
    def planner(self):
        with self._lock:
            if self._planner is None and self._planner_spec is DEFAULT:
                from .native.chat import planner_perception
                from .planning.attachment_traits import attachment_traits
                from .planning.planner import Planner, llm_backend

                # The planner sees every tool, runnable here or not: a tool that cannot run is reported as
                # unavailable (with how to fetch it) rather than silently replaced by one that can.
                # [planner] in the config picks the LLM: the packaged Qwen by default, any causal LM, or an endpoint.
                self._planner = Planner(llm_backend(self.settings.planner, self.settings), self.registry, store=self.store,
                                        settings=self.settings,
                                        perception=planner_perception(self.settings, self.store),
                                        traits=attachment_traits(self.settings, self.store))
            return self._planner

    @property
    def composer(self) -> Composer:
        if self._composer is None:
            if self.settings.composer is not None:  # [composer] configured apart from the planner
                from .planning.planner import llm_backend

                self._composer = self._new_composer(llm_backend(self.settings.composer, self.settings))
            else:
                planner = self.planner
                self._composer = self._new_composer(planner.backend if planner is not None else None)
        return self._composer

    def _new_composer(self, backend: Any) -> Composer:
        return Composer(backend, max_results_tokens=self.settings.limits.max_results_tokens)

    @property
    def graph(self):
        with self._lock:
            if self._graph is not None:
                return self._graph
        from graphs.agent import AgentParts, build_agent_graph

        parts = AgentParts(self.registry, self.store, self.journal, self.planner,
                           PlanExecutor(self.runner, self.journal, self.store, policy=self.policy), self.composer,
                           self._cancel_events, settings=self.settings)
        checkpointer = self.checkpointer
        with self._lock:
            if self._graph is None:
                self._graph = build_agent_graph(parts).compile(checkpointer=checkpointer)
            return self._graph

    @property
    def workflow_graph(self):
        """The graph workflow runs go through (no planner, no composer: their answer is their outputs)."""
        from graphs.workflow import WorkflowParts, build_workflow_graph

        with self._lock:
            if self._workflow_graph is not None:
                return self._workflow_graph
        parts = WorkflowParts(self.registry, self.store, self.journal,
                              PlanExecutor(self.runner, self.journal, self.store, policy=self.policy), self._cancel_events)
        checkpointer = self.checkpointer
        with self._lock:
            if self._workflow_graph is None:
                self._workflow_graph = build_workflow_graph(parts).compile(checkpointer=checkpointer)
            return self._workflow_graph

    @property
    def checkpointer(self):
        """LangGraph's checkpoints for both graphs: SQLite under the home, or the configured PostgreSQL
        database, unless one was passed in."""
        with self._lock:
            if self._checkpointer is None:
                from .execution.state import open_checkpointer

                self._checkpointer = open_checkpointer(self.settings)
            return self._checkpointer

    # ------------------------------------------------------------------ inputs

    def ingest(self, files: Iterable[str | os.PathLike[str] | Artifact], session: str) -> list[Artifact]:
        """Files (paths), stored artifacts or their ids, as artifacts of ``session``, in their order. The paths
        are stored all or none (:meth:`ArtifactStore.ingest_files`): a refused file leaves nothing of the others."""
        files = list(files)
        known = {i: self.store.get(item.id if isinstance(item, Artifact) else item, session=session)
                 for i, item in enumerate(files)
                 if isinstance(item, Artifact) or (isinstance(item, str) and is_artifact_id(item))}
        stored = iter(self.store.ingest_files([item for i, item in enumerate(files) if i not in known], session=session))
        return [known[i] if i in known else next(stored) for i in range(len(files))]

    # ------------------------------------------------------------------ running

    def stream(self, request: str, *, files: Iterable[Any] = (), session: str | None = None,
               plan: Plan | dict[str, Any] | None = None, run_id: str | None = None) -> Iterator[Event]:
        """Start a run and yield its events until it finishes or waits for an approval.

        Without ``session`` the run is a conversation of its own (its session id is its run id);
        give one (or use :meth:`session`) for turns that build on each other."""
        run_id = run_id or new_run_id()
        session = check_session_id(session if session is not None else run_id)
        if not isinstance(request, str) or (not request.strip() and plan is None):
            raise InvalidInputError("the request is empty")
        check_request_size(request, self.settings.limits.max_request_tokens)
        inputs = self.ingest(files, session)
        history, context = self.session_context(session, request)
        state: dict[str, Any] = {"run": run_id, "session": session, "request": request.strip(),
                                 "inputs": [a.id for a in inputs], "context": [a for a in context if a not in
                                                                              {i.id for i in inputs}],
                                 "history": history, "approvals": {}}
        if plan is not None:
            state["plan"] = (plan if isinstance(plan, Plan) else Plan.from_json(plan)).to_json()
        self.journal.create_run(run_id, session, state["request"], state["inputs"])
        yield Event("run_started", run_id, data={"session": session, "request": state["request"],
                                                  "inputs": state["inputs"], "context": state["context"]})
        yield from self._drive(run_id, state)

    def run(self, request: str, *, files: Iterable[Any] = (), session: str | None = None,
            plan: Plan | dict[str, Any] | None = None, approve: Any = None) -> RunResult:
        """Run to the end. ``approve`` answers approval requests: a bool, or a callable taking the
        waiting tasks and returning a decision; None leaves the run waiting (resume it later)."""
        events = self.stream(request, files=files, session=session, plan=plan)
        return self._finish(events, approve)

    def resume(self, run_id: str, *, approve: Any = None) -> RunResult:
        """Continue a run that crashed, was cancelled, or waits for an approval (``approve``: the decision)."""
        return self._finish(self.resume_stream(run_id, approve=approve), approve)

    def resume_stream(self, run_id: str, *, approve: Any = None) -> Iterator[Event]:
        record = self.journal.get_run(check_run_id(run_id))
        # Refused while another live process drives the run (before touching its state); see _drive.
        self.journal.check_not_driven(run_id, self.settings.run_lease_s)
        graph = self._graph_of(record)
        config = self._config(run_id)
        snapshot = graph.get_state(config)
        if snapshot.values and not snapshot.next and record.status == "cancelled":
            # A cancelled run went on to answer with what it had, so its graph has ended; continuing it
            # means running execute again (the journal keeps the tasks that finished) as if the node
            # before it had just completed, and answering anew.
            self._cancel_events.pop(run_id, None)
            self.journal.clear_cancel(run_id)
            if graph is self.graph:
                graph.update_state(config, None, as_node="validate")
            else:
                graph.update_state(config, {"results": {}}, as_node="__start__")
            self.journal.update_run(run_id, status="running")
            yield from self._drive(run_id, None, graph)
            return
        if snapshot.values and not snapshot.next:
            yield from self._final_events(run_id)
            return
        if snapshot.interrupts:
            if approve is None:
                yield Event("run_interrupted", run_id, data={"waiting": snapshot.interrupts[0].value["tasks"]})
                return
            from langgraph.types import Command

            from graphs.agent import normalise_decision

            waiting = snapshot.interrupts[0].value["tasks"]
            decision = approve(waiting) if callable(approve) else approve
            normalise_decision(decision, [t["id"] for t in waiting])  # refuse a malformed answer before resuming
            yield from self._drive(run_id, Command(resume=decision), graph)
            return
        self._cancel_events.pop(run_id, None)
        self.journal.clear_cancel(run_id)
        if not snapshot.values:  # the process died before the graph's first checkpoint
            if graph is self.graph:
                history, context = self.session_context(record.session, record.request)
                start = {"run": run_id, "session": record.session, "request": record.request,
                         "inputs": list(record.inputs), "context": context, "history": history, "approvals": {}}
            else:
                start = {"run": run_id, "session": record.session, "workflow": record.plan["workflow"],
                         "bindings": record.plan["bindings"], "approvals": {}}
            self.journal.update_run(run_id, status="running")
            yield from self._drive(run_id, start, graph)
            return
        self.journal.update_run(run_id, status="running")
        yield from self._drive(run_id, None, graph)

    def cancel(self, run_id: str) -> None:
        """Stop a running run: running tasks are abandoned, nothing new starts; resume() continues it."""
        self._cancel_events.setdefault(check_run_id(run_id), threading.Event()).set()
        # Through the journal too: the run may be driven by another process or host sharing it.
        self.journal.request_cancel(run_id)

    def result(self, run_id: str, *, session: str | None = None) -> RunResult:
        """What a run has produced so far (finished or not).

        Owner-level: without ``session`` any run of any session is read, as the local owner (the CLI,
        a script on this machine) may. Anything acting for someone else (the HTTP server in serving/) must
        go through that caller's :class:`Session` (``session.result(run_id)``), which passes its id
        here, so a run of another session is reported as not found."""
        record = self.journal.get_run(check_run_id(run_id), session=session)
        graph = self._graph_of(record)
        snapshot = graph.get_state(self._config(run_id))
        values = snapshot.values or {}
        tasks = {t: TaskResult.from_json(r) for t, r in (values.get("results") or {}).items()}
        if not tasks:  # interrupted inside execute: the journal knows more than the last checkpoint
            tasks = {t.task: TaskResult(t.tool, t.status, t.outputs, t.error, t.attempts, t.seconds or 0.0, t.model,
                                        unavailable=t.detail.get("unavailable"), repairs=list(t.detail.get("repairs", [])))
                     for t in record.tasks}
        pending = tuple(snapshot.interrupts[0].value["tasks"]) if snapshot.interrupts else ()
        status = "awaiting_approval" if pending else record.status
        composed_by = fallback_reason = None
        if graph is self.graph:
            answer = values.get("answer") or {}
            text, delivered, failures = answer.get("text", ""), answer.get("artifacts", []), answer.get("failures", [])
            composed_by, fallback_reason = answer.get("composed_by"), answer.get("fallback_reason")
            error = values.get("error") or record.error
        else:
            text, delivered = record.answer or "", list(record.answer_artifacts)
            failures = [f"{t} ({r.tool}): {r.error}" for t, r in tasks.items() if r.status == "failed"]
            error = values.get("error") or (record.error if record.status == "failed" and not failures else None)
        artifacts = tuple(self.store.get(a, session=record.session) for a in delivered
                          if self.store.exists(a, session=record.session))
        unavailable = tuple(Unavailable.from_json(r.unavailable) for r in tasks.values() if r.unavailable)
        return RunResult(run_id, record.session, status, text, artifacts, record.plan, tasks, error, pending,
                         tuple(failures), dict(values.get("outputs") or {}), unavailable, composed_by, fallback_reason,
                         record.answer_id)

    # ------------------------------------------------------------------ workflows

    def stream_workflow(self, workflow: Any, inputs: dict[str, Any] | None = None, *, session: str | None = None,
                        run_id: str | None = None) -> Iterator[Event]:
        """Run a workflow (a :class:`~orchestrator.workflows.workflow.Workflow`, a workflow file's path, or a
        :class:`~orchestrator.workflows.pipeline.Pipeline`) on ``inputs`` (input name -> file path, artifact,
        literal or in-memory value), yielding its events. No planner is involved."""
        from .workflows.workflow_tasks import bind_inputs

        workflow = self.load_workflow(workflow)
        run_id = run_id or new_run_id()
        session = check_session_id(session if session is not None else run_id)
        bindings = bind_inputs(workflow, dict(inputs or {}), self.store, session)
        self.journal.create_run(run_id, session, f"workflow {workflow.name}", list(bindings.values()))
        self.journal.update_run(run_id, status="running", plan={"workflow": workflow.to_dict(), "bindings": bindings})
        yield Event("run_started", run_id, data={"session": session, "request": f"workflow {workflow.name}",
                                                  "inputs": list(bindings.values()), "workflow": workflow.name})
        state = {"run": run_id, "session": session, "workflow": workflow.to_dict(), "bindings": bindings, "approvals": {}}
        yield from self._drive(run_id, state, self.workflow_graph)

    def run_workflow(self, workflow: Any, inputs: dict[str, Any] | None = None, *, session: str | None = None,
                     approve: Any = None, run_id: str | None = None) -> RunResult:
        """Run a workflow to the end; ``result.outputs`` maps its output names to artifact ids."""
        return self._finish(self.stream_workflow(workflow, inputs, session=session, run_id=run_id), approve)

    def load_workflow(self, workflow: Any):
        from .workflows.definition import Workflow

        if isinstance(workflow, (str, os.PathLike)):
            return Workflow.load(workflow, self.registry)
        if hasattr(workflow, "to_workflow"):
            workflow = workflow.to_workflow()
        if not isinstance(workflow, Workflow):
            raise InvalidInputError(
                f"a workflow is a Workflow, a Pipeline or a workflow file's path, not {type(workflow).__name__}")
        workflow.validate(self.registry)
        return workflow

    def _graph_of(self, record: RunRecord):
        return self.workflow_graph if is_workflow_run(record) else self.graph

    # ------------------------------------------------------------------ async

    async def astream(self, request: str, **kwargs: Any) -> AsyncIterator[Event]:
        """:meth:`stream` for asyncio callers: the run works in a thread, the event loop stays free."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                for event in self.stream(request, **kwargs):
                    loop.call_soon_threadsafe(events.put_nowait, event)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                loop.call_soon_threadsafe(events.put_nowait, exc)
            loop.call_soon_threadsafe(events.put_nowait, done)

        worker = loop.run_in_executor(None, work)
        while (item := await events.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
        await worker

    async def arun(self, request: str, **kwargs: Any) -> RunResult:
        run_id = None
        async for event in self.astream(request, **kwargs):
            run_id = run_id or event.run
        return await asyncio.get_running_loop().run_in_executor(None, self.result, run_id)

    # ------------------------------------------------------------------ sessions

    def session(self, thread_id: str = DEFAULT_SESSION) -> Session:
        return Session(self, check_session_id(thread_id))

    def session_context(self, session: str, request: str) -> tuple[str, list[str]]:
        """What earlier turns of ``session`` tell a new one: conversation text, and artifact ids to offer.

        The newest turns are shown as they were, older ones as one line each (a summary kept in the
        journal); the artifacts offered are the newest of each kind from earlier turns, plus any
        artifact the request names by id, so nothing made in a session is out of reach.
        """
        runs = [r for r in self.journal.runs(session=session, limit=1000) if r.status in FINISHED_RUN_STATUSES]
        if not runs:
            return "", self._named_in(request, session)
        older, recent = runs[:-RECENT_TURNS], runs[-RECENT_TURNS:]
        lines = [summary_line(r) for r in older]
        summary = "\n".join(lines[-40:])
        if len(lines) > 40:
            summary = f"({len(lines) - 40} earlier turns not shown; their artifacts remain in the session)\n" + summary
        if older:
            self.journal.set_summary(session, summary, older[-1].id)
        recent_text = "\n".join(
            f"User: {r.request}\nAssistant: {(r.answer or '').strip()[:400]}"
            + (f" [made: {', '.join(r.answer_artifacts)}]" if r.answer_artifacts else "") for r in recent)
        history = fit_history((f"Summary of earlier turns:\n{summary}\n" if summary else "") + recent_text,
                              self.settings.limits.max_history_tokens)
        # The previous turn's answer first ("now say that out loud"), then the newest artifact of each kind.
        # A turn that failed has no answer to build on: at most an "I can't draw that here" (a poem "about it"
        # written from that apology was a refusal), so the answer before it is offered.
        answered = next((r.answer_id for r in reversed(runs) if r.answer_id and r.status != "failed"), None)
        offered: list[str] = [answered] if answered and self.store.exists(answered, session=session) else []
        kinds_seen: set[str] = set()
        for r in reversed(runs):
            for artifact_id in [*r.answer_artifacts, *r.inputs]:
                if not self.store.exists(artifact_id, session=session):
                    continue
                kind = artifact_id.rsplit("-", 1)[0]
                if kind not in kinds_seen and kind != "json":
                    kinds_seen.add(kind)
                    offered.append(artifact_id)
        named = self._named_in(request, session)
        return history, list(dict.fromkeys(named + offered))[:MAX_CONTEXT_ARTIFACTS + len(named)]

    def _named_in(self, request: str, session: str) -> list[str]:
        ids = ARTIFACT_ID_IN_TEXT.findall(request)
        return [a for a in dict.fromkeys(ids) if self.store.exists(a, session=session)]

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _config(run_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": run_id}, "recursion_limit": 200}

    def _drive(self, run_id: str, graph_input: Any, graph: Any = None) -> Iterator[Event]:
        waiting = None
        graph = graph if graph is not None else self.graph
        # One driver per run: the lease (journal.py) refuses a second process with RunBusyError naming
        # the first, and stops this one with LeaseLostError if it stalls and is taken over.
        with self.journal.lease(run_id, self.settings.run_lease_s) as lease, self._cancel_watch(run_id):
            try:
                for mode, payload in graph.stream(graph_input, self._config(run_id), stream_mode=["custom", "updates"]):
                    lease.check()
                    if mode == "custom" and isinstance(payload, Event):
                        yield payload
                    elif mode == "updates" and "__interrupt__" in payload:
                        # Not announced yet: the stream is drained first, so the interrupt is in the checkpoint
                        # (saved in the background) before a caller can react to run_interrupted by resuming,
                        # which reads that checkpoint; announced at once, a quick resume raced the save.
                        waiting = payload["__interrupt__"][0].value["tasks"]
            except LeaseLostError:
                raise  # the run is someone else's now: nothing of it is recorded from here
            except Exception as exc:
                message = str(exc) if isinstance(exc, AnymodaError) else f"{type(exc).__name__}: {exc}"
                self.journal.update_run(run_id, status="failed", error=message)
                yield Event("run_failed", run_id, data={"error": message})
                return
        if waiting is not None:
            yield Event("approval_needed", run_id, data={"tasks": waiting})
            yield Event("run_interrupted", run_id, data={"waiting": waiting})
            return
        yield from self._final_events(run_id)

    @contextlib.contextmanager
    def _cancel_watch(self, run_id: str, every_s: float = 0.25) -> Iterator[None]:
        """While this process drives ``run_id``, turn a cancel asked through the journal (by any process
        or host) into the run's cancel event."""
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(every_s):
                try:
                    if self.journal.cancel_requested(run_id):
                        self._cancel_events.setdefault(run_id, threading.Event()).set()
                        return
                except Exception:  # noqa: BLE001 - a briefly unreachable journal: look again next time
                    continue

        watcher = threading.Thread(target=watch, name=f"anymoda-cancel-{run_id}", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(timeout=5)

    def _final_events(self, run_id: str) -> Iterator[Event]:
        result = self.result(run_id)
        if result.error:
            yield Event("run_failed", run_id, data={"error": result.error})
        else:
            yield Event("run_finished", run_id, data={"status": result.status, "answer": result.answer,
                                                       "artifacts": [a.id for a in result.artifacts],
                                                       "failures": list(result.failures)})

    def _finish(self, events: Iterator[Event], approve: Any) -> RunResult:
        run_id = None
        for event in events:
            run_id = run_id or event.run
            if event.type == "run_interrupted" and approve is not None:
                return self._finish(self.resume_stream(run_id, approve=approve), approve)
        if run_id is None:
            raise AnymodaError("the run produced no events")
        return self.result(run_id)


def is_workflow_run(record: RunRecord) -> bool:
    return isinstance(record.plan, dict) and "workflow" in record.plan


def fit_history(history: str, max_tokens: int) -> str:
    """``history`` cut from its oldest lines until it fits ``max_tokens`` (estimated), saying that it was:
    the newest turns matter most to "say that again" and "what did I just ask"."""
    if estimate_tokens(history) <= max_tokens:
        return history
    lines = history.splitlines()
    note = "(earlier lines of this conversation not shown: over [limits] max_history_tokens)"
    budget = max_tokens - estimate_tokens(note) - 1
    kept: list[str] = []
    for line in reversed(lines):
        cost = estimate_tokens(line) + 1
        if cost > budget:
            break
        kept.append(line)
        budget -= cost
    return "\n".join([note, *reversed(kept)])


def summary_line(record: RunRecord) -> str:
    """One earlier turn in a line: what was asked, what came back, and every artifact it made."""
    answer = " ".join((record.answer or "").split())
    made = f" made {', '.join(record.answer_artifacts)}" if record.answer_artifacts else ""
    return f"- asked {record.request[:120]!r}; answered {answer[:160]!r}{made}"


class Session:
    """A conversation: every turn is a run of the same session, so earlier outputs stay referable.

    Also the session-scoped view of the Orchestrator: its runs, results and artifacts are this
    session's only (another session's are reported as not found). The Orchestrator's own readers
    (``result``, ``store``, ``journal``) are the local owner's and see every session."""

    def __init__(self, orchestrator: Orchestrator, thread_id: str):
        self.orchestrator = orchestrator
        self.id = thread_id

    def send(self, message: str, files: Iterable[Any] = (), *, approve: Any = None) -> RunResult:
        return self.orchestrator.run(message, files=files, session=self.id, approve=approve)

    def stream(self, message: str, files: Iterable[Any] = ()) -> Iterator[Event]:
        return self.orchestrator.stream(message, files=files, session=self.id)

    def history(self) -> list[RunRecord]:
        return self.orchestrator.journal.runs(session=self.id, limit=10_000)

    def artifacts(self, kind: ArtifactKind | str | None = None) -> list[Artifact]:
        """Everything this session holds (inputs and outputs of every turn), oldest first."""
        return self.orchestrator.store.list(session=self.id, kind=kind, limit=100_000)

    def result(self, run_id: str) -> RunResult:
        """A run of this session (another session's is not found)."""
        return self.orchestrator.result(run_id, session=self.id)

    def resume(self, run_id: str, *, approve: Any = None) -> RunResult:
        """Continue a run of this session (an approval decision, or after a crash)."""
        self.orchestrator.journal.get_run(check_run_id(run_id), session=self.id)
        return self.orchestrator.resume(run_id, approve=approve)

    def artifact(self, artifact_id: str) -> Artifact:
        """The record of an artifact this session may see."""
        return self.orchestrator.store.get(artifact_id, session=self.id)

    def load(self, artifact_id: str) -> Any:
        return self.orchestrator.store.load(artifact_id, session=self.id)

    def export(self, artifact_id: str, destination: str | os.PathLike[str]) -> Path:
        return self.orchestrator.store.export(artifact_id, destination, session=self.id)

    def attach(self, files: Sequence[str | os.PathLike[str]]) -> list[Artifact]:
        return self.orchestrator.ingest([Path(f) for f in files], self.id)
