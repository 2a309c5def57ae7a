"""Runs and workflows over HTTP, in LangGraph's thread/run vocabulary.

    POST /v1/threads                                  a new thread (conversation)
    GET  /v1/threads, /v1/threads/{thread_id}
    POST /v1/threads/{thread_id}/runs                 start a run in the background -> the run
    POST /v1/threads/{thread_id}/runs/stream          start a run, its events as server-sent events
    POST /v1/threads/{thread_id}/runs/wait            start a run, answer when it ends (or waits)
    GET  /v1/threads/{thread_id}/runs                 the thread's runs, newest first
    GET  /v1/threads/{thread_id}/runs/{run_id}        the run: status, answer, outputs, pending approvals
    GET  /v1/threads/{thread_id}/runs/{run_id}/stream join a run: every event so far, then live ones
    POST /v1/threads/{thread_id}/runs/{run_id}/cancel
    POST /v1/threads/{thread_id}/runs/{run_id}/resume {"command": {"resume": true | false | {task: bool}}}
                                                      answers an interrupt (approval) as LangGraph's
                                                      Command(resume=...); with no command it continues a
                                                      cancelled or crashed run
    GET  /v1/threads/{thread_id}/runs/{run_id}/plan   the plan (or workflow) and each task's record
    GET  /v1/threads/{thread_id}/runs/{run_id}/lineage every output's ancestors (artifact ids, nearest first)
    GET  /v1/workflows                                the shipped workflows this server's tools can run

A run's body: ``{"assistant_id": "agent", "input": {"message": ..., "files": [file ids]}, "plan": {...}}``
(a plan's arguments may name the caller's file ids: the run gets a copy of each and the plan uses it)
or ``{"assistant_id": "workflow:<shipped name>" | "workflow", "workflow_yaml": "...", "input": {name: value}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..execution.journal import new_run_id
from .errors import ApiError
from .inputs import (TurnInput, agent_turn, check_named_artifacts, check_plan_artifacts, file_ids_in, file_part,
                     workflow_bindings, workflow_turn)
from .state import Caller, ServerState
from .tenancy import thread_session

SHIPPED_WORKFLOWS = Path(__file__).resolve().parents[2] / "graphs"
MAX_WORKFLOW_CHARS = 64 * 1024


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thread_id: str | None = Field(default=None, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assistant_id: str = Field(default="agent", max_length=100)
    input: dict[str, Any] = Field(default_factory=dict)
    plan: dict[str, Any] | None = None
    workflow_yaml: str | None = Field(default=None, max_length=MAX_WORKFLOW_CHARS)


class ResumeCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resume: Any = None


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: ResumeCommand | None = None


def shipped_workflows(state: ServerState) -> dict[str, Any]:
    """name -> Workflow, for the shipped workflows whose tools this server has."""
    from ..workflows.definition import Workflow

    found = {}
    for path in sorted(SHIPPED_WORKFLOWS.glob("*.yaml")):
        try:
            workflow = Workflow.load(path, state.orchestrator.registry)
        except Exception:  # needs tools this server does not register
            continue
        found[workflow.name] = workflow
    return found


def run_json(state: ServerState, who: Caller, thread_id: str, run_id: str) -> dict[str, Any]:
    """A run as the API shows it; outputs are the caller's files too, so a client can download them."""
    from .openai_chat import answer_text

    result = state.orchestrator.result(run_id, session=thread_session(who.tenant, thread_id))
    record = state.orchestrator.journal.get_run(run_id)
    files = [state.publish_artifact(who, a) for a in result.artifacts]
    channel = state.runs.channel(run_id)
    status = result.status
    if channel is not None and not channel.done and status not in ("awaiting_approval",):
        status = "running"
    from .state import file_reference

    return {"run_id": run_id, "thread_id": thread_id, "status": status, "created_at": record.created_at,
            "updated_at": record.updated_at, "request": record.request, "answer": answer_text(result),
            "error": result.error, "failures": list(result.failures),
            "artifacts": [a.id for a in result.artifacts], "files": [file_reference(f) for f in files],
            "outputs": result.outputs, "pending_approval": list(result.pending_approval),
            "tasks": {t: r.to_json() for t, r in result.tasks.items()}}


def add_thread_routes(app: FastAPI, state: ServerState, caller) -> None:
    from .app import read_json

    tenancy = state.tenancy

    @app.post("/v1/threads")
    async def create_thread(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
        has_body = bool(request.headers.get("content-length", "0") not in ("", "0"))
        body = await read_json(request, ThreadCreate) if has_body else ThreadCreate()
        if len(json.dumps(body.metadata)) > 4096:
            raise ApiError(400, "metadata is over 4096 characters of JSON")

        def make():
            if body.thread_id is None:
                return tenancy.new_thread(who.tenant, body.metadata)
            return tenancy.ensure_thread(who.tenant, tenancy.check_thread_id(body.thread_id), body.metadata)

        return (await run_in_threadpool(make)).to_json()

    @app.get("/v1/threads")
    def list_threads(who: Caller = Depends(caller), limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return [t.to_json() for t in tenancy.threads(who.tenant, limit)]

    @app.get("/v1/threads/{thread_id}")
    def get_thread(thread_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        return tenancy.thread(who.tenant, thread_id).to_json()

    @app.get("/v1/workflows")
    def workflows(who: Caller = Depends(caller)) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": f"workflow:{name}", "name": name, "description": w.description,
                                            "inputs": {n: {"kind": i.kind.value, "required": i.required}
                                                       for n, i in w.inputs.items()}}
                                           for name, w in shipped_workflows(state).items()]}

    async def start(request: Request, thread_id: str, who: Caller):
        body: RunCreate = await read_json(request, RunCreate)

        def prepare():
            tenancy.thread(who.tenant, thread_id)
            run_id = new_run_id()
            if body.assistant_id == "agent":
                message = body.input.get("message", "")
                files = body.input.get("files", [])
                if set(body.input) - {"message", "files"}:
                    raise ApiError(400, "an agent run's input has 'message' and 'files' (file ids) only")
                if not isinstance(message, str) or not isinstance(files, list) or len(files) > state.limits.max_message_parts:
                    raise ApiError(400, f"input.message must be text and input.files a list of at most "
                                        f"{state.limits.max_message_parts} file ids")
                if body.plan is not None:  # a plan may name the caller's files; the run gets its own copies
                    files = list(dict.fromkeys([*files, *file_ids_in(body.plan)]))
                    check_plan_artifacts(state, who, thread_id, body.plan)
                turn = TurnInput(message, [file_part(state, who, f) for f in files], list(files))
                check_named_artifacts(state, who, thread_id, message)
                return run_id, agent_turn(state, who, thread_id, turn, run_id, body.plan)
            if body.assistant_id.startswith("workflow"):
                workflow = load_requested_workflow(state, body)
                literal, media = workflow_bindings(state, who, thread_id, workflow, body.input)
                return run_id, workflow_turn(state, who, thread_id, workflow, literal, media, run_id)
            raise ApiError(404, f"no assistant {body.assistant_id[:80]!r}; use 'agent' or 'workflow:<name>'",
                           "not_found_error")

        run_id, events = await run_in_threadpool(prepare)
        channel = await state.runs.start(run_id, who.tenant, who.key.id, state.limits.concurrent_runs(who.key), events)
        await run_in_threadpool(tenancy.ensure_thread, who.tenant, thread_id)  # updated_at: the thread is the newest
        return run_id, channel

    @app.post("/v1/threads/{thread_id}/runs")
    async def create_run(thread_id: str, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
        run_id, _ = await start(request, thread_id, who)
        return {"run_id": run_id, "thread_id": thread_id, "status": "running"}

    @app.post("/v1/threads/{thread_id}/runs/stream")
    async def create_run_stream(thread_id: str, request: Request, who: Caller = Depends(caller)):
        run_id, channel = await start(request, thread_id, who)
        return sse(channel, {"run_id": run_id, "thread_id": thread_id})

    @app.post("/v1/threads/{thread_id}/runs/wait")
    async def create_run_wait(thread_id: str, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
        run_id, channel = await start(request, thread_id, who)
        async for _ in channel.follow():
            pass
        return await run_in_threadpool(run_json, state, who, thread_id, run_id)

    @app.get("/v1/threads/{thread_id}/runs")
    def list_runs(thread_id: str, who: Caller = Depends(caller), limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
        tenancy.thread(who.tenant, thread_id)
        records = state.orchestrator.journal.runs(session=thread_session(who.tenant, thread_id), limit=limit)
        records.reverse()  # newest first, as LangGraph lists a thread's runs
        return [{"run_id": r.id, "thread_id": thread_id, "status": r.status, "request": r.request,
                 "created_at": r.created_at, "updated_at": r.updated_at} for r in records]

    def owned(who: Caller, thread_id: str, run_id: str):
        tenancy.thread(who.tenant, thread_id)
        return tenancy.check_run(who.tenant, run_id, state.orchestrator.journal, thread_id)

    @app.get("/v1/threads/{thread_id}/runs/{run_id}")
    def get_run(thread_id: str, run_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        owned(who, thread_id, run_id)
        return run_json(state, who, thread_id, run_id)

    @app.get("/v1/threads/{thread_id}/runs/{run_id}/stream")
    async def join_run(thread_id: str, run_id: str, who: Caller = Depends(caller)):
        await run_in_threadpool(owned, who, thread_id, run_id)
        channel = state.runs.channel(run_id)
        if channel is None:  # run by another process, or long ago: its outcome is all there is to send
            result = await run_in_threadpool(run_json, state, who, thread_id, run_id)
            return sse(None, {"run_id": run_id, "thread_id": thread_id}, final=result)
        return sse(channel, {"run_id": run_id, "thread_id": thread_id})

    @app.post("/v1/threads/{thread_id}/runs/{run_id}/cancel")
    def cancel(thread_id: str, run_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        owned(who, thread_id, run_id)
        state.orchestrator.cancel(run_id)
        return {"run_id": run_id, "thread_id": thread_id, "cancel_requested": True}

    @app.post("/v1/threads/{thread_id}/runs/{run_id}/resume")
    async def resume(thread_id: str, run_id: str, request: Request, who: Caller = Depends(caller)):
        has_body = request.headers.get("content-length", "0") not in ("", "0")
        body = await read_json(request, ResumeRequest) if has_body else ResumeRequest()
        await run_in_threadpool(owned, who, thread_id, run_id)
        decision = body.command.resume if body.command is not None else None
        if decision is not None and not isinstance(decision, (bool, dict)):
            raise ApiError(400, "command.resume is true, false, or {task id: true|false}")

        def events():
            return state.orchestrator.resume_stream(run_id, approve=decision)

        stream = request.query_params.get("stream") in ("1", "true")
        channel = await state.runs.start(run_id, who.tenant, who.key.id, state.limits.concurrent_runs(who.key), events)
        if stream:
            return sse(channel, {"run_id": run_id, "thread_id": thread_id})
        async for _ in channel.follow():
            pass
        return await run_in_threadpool(run_json, state, who, thread_id, run_id)

    @app.get("/v1/threads/{thread_id}/runs/{run_id}/plan")
    def plan(thread_id: str, run_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        record = owned(who, thread_id, run_id)
        return {"run_id": run_id, "thread_id": thread_id, "plan": record.plan,
                "tasks": [{"task": t.task, "tool": t.tool, "status": t.status, "attempts": t.attempts,
                           "seconds": t.seconds, "outputs": t.outputs, "error": t.error, "model": t.model}
                          for t in record.tasks]}

    @app.get("/v1/threads/{thread_id}/runs/{run_id}/lineage")
    def lineage(thread_id: str, run_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        record = owned(who, thread_id, run_id)
        session = thread_session(who.tenant, thread_id)
        made = [a for a in state.store.list(session=session, limit=100_000) if (a.task or "").startswith(run_id + "/")]
        return {"run_id": run_id, "thread_id": thread_id, "inputs": list(record.inputs),
                "artifacts": [{"id": a.id, "kind": a.kind.value, "task": a.task.split("/", 1)[1],
                               "parents": list(a.parents),
                               "ancestors": [p.id for p in state.store.ancestors(a.id, session=session)]}
                              for a in made]}


def load_requested_workflow(state: ServerState, body: RunCreate):
    from ..workflows.definition import Workflow

    if body.assistant_id == "workflow":
        if not body.workflow_yaml:
            raise ApiError(400, "assistant 'workflow' needs workflow_yaml (the workflow's text)")
        return Workflow.loads(body.workflow_yaml, source="workflow_yaml", registry=state.orchestrator.registry)
    name = body.assistant_id.removeprefix("workflow:")
    shipped = shipped_workflows(state)
    if name not in shipped:
        raise ApiError(404, f"no workflow {name[:80]!r}; GET /v1/workflows lists them", "not_found_error")
    return shipped[name]


def sse(channel, opening: dict[str, Any], final: dict[str, Any] | None = None) -> StreamingResponse:
    """Server-sent events: ``event: metadata`` first (LangGraph's opening), then one ``event: <type>`` per
    run event with the event as JSON, and ``event: end``."""

    async def frames():
        yield f"event: metadata\ndata: {json.dumps(opening)}\n\n"
        if channel is not None:
            async for event in channel.follow():
                yield f"event: {event['type']}\ndata: {json.dumps(event, default=str)}\n\n"
        if final is not None:
            yield f"event: run\ndata: {json.dumps(final, default=str)}\n\n"
        yield "event: end\ndata: null\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
