"""``POST /v1/chat/completions``, OpenAI's shape, on the agent.

A conversation is an anymoda thread (session): send ``"conversation": "<id>"`` (with the official
client: ``extra_body={"conversation": ...}``) and the server keeps the history, so only the last
message is new and later turns can refer to earlier outputs ("now make it louder"). Without it, each
request starts a new conversation whose id comes back in the response's ``conversation`` field and
the ``X-Anymoda-Conversation`` header; earlier messages in ``messages`` are not replayed (they would
re-run tools), and system messages are not used (the planner has its own instructions).

Output artifacts come back as the caller's files (``anymoda.files``: ids, kinds and download URLs
under ``/v1/files/{id}/content``), and the first audio output also as OpenAI's ``message.audio``
(base64 WAV and the answer as transcript). With ``stream: true`` the answer arrives as text deltas,
and every run event (plan, task started/finished, approvals) as a chunk with no choices and an
``anymoda`` field that the official client ignores.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..execution.journal import new_run_id
from .errors import ApiError
from .inputs import agent_turn, check_named_artifacts, parse_message_content
from .state import MODEL_ID, Caller, ServerState, file_reference
from .tenancy import thread_session

MAX_INLINE_AUDIO_BYTES = 8 * 1024 * 1024


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, ...: accepted, not used by a tool graph
    model: str = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool = False
    conversation: str | None = Field(default=None, max_length=64)
    user: str | None = Field(default=None, max_length=256)


def add_chat_routes(app: FastAPI, state: ServerState, caller) -> None:
    from .app import read_json

    @app.post("/v1/chat/completions")
    async def chat(request: Request, who: Caller = Depends(caller)):
        body: ChatRequest = await read_json(request, ChatRequest)
        if body.model != MODEL_ID:
            raise ApiError(404, f"the model {body.model[:80]!r} does not exist; this server serves {MODEL_ID!r}",
                           "invalid_request_error", "model_not_found")
        last = body.messages[-1]
        if last.role != "user":
            raise ApiError(400, f"the last message must be the user's, not {last.role!r}")

        def prepare():
            turn = parse_message_content(state, who, last.content)
            if body.conversation is not None:
                thread_id = state.tenancy.check_thread_id(body.conversation)
            else:
                thread_id = f"thread-{secrets.token_hex(8)}"
            check_named_artifacts(state, who, thread_id, turn.text)
            return turn, thread_id

        turn, thread_id = await run_in_threadpool(prepare)
        run_id = new_run_id()
        channel = await state.runs.start(run_id, who.tenant, who.key.id, state.limits.concurrent_runs(who.key),
                                         agent_turn(state, who, thread_id, turn, run_id))
        # Recorded once the run has begun, so a refused request leaves no empty conversation behind.
        await run_in_threadpool(state.tenancy.ensure_thread, who.tenant, thread_id, {"source": "chat"})
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        headers = {"X-Anymoda-Conversation": thread_id, "X-Anymoda-Run": run_id}
        if not body.stream:
            async for _ in channel.follow():
                pass
            payload = await run_in_threadpool(completion, state, who, thread_id, run_id, completion_id, created)
            return JSONResponse(payload, headers=headers)
        return StreamingResponse(stream_chunks(state, who, channel, thread_id, run_id, completion_id, created),
                                 media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


def run_outcome(state: ServerState, who: Caller, thread_id: str, run_id: str) -> dict[str, Any]:
    """What a finished (or waiting) run gives back: its answer, status and outputs as the caller's files."""
    result = state.orchestrator.result(run_id, session=thread_session(who.tenant, thread_id))
    files = [state.publish_artifact(who, a) for a in result.artifacts]
    return {"result": result, "files": files}


def extension(thread_id: str, run_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    result = outcome["result"]
    return {"conversation": thread_id, "run": run_id, "status": result.status,
            "files": [file_reference(f) for f in outcome["files"]],
            "artifacts": [a.id for a in result.artifacts], "failures": list(result.failures), "error": result.error,
            "pending_approval": list(result.pending_approval),
            "resume_url": f"/v1/threads/{thread_id}/runs/{run_id}/resume" if result.pending_approval else None}


def answer_text(result: Any) -> str:
    if result.pending_approval:
        names = ", ".join(f"{t.get('id')} ({t.get('tool')})" for t in result.pending_approval)
        return (result.answer + "\n\n" if result.answer else "") + f"Waiting for approval before running: {names}."
    if result.error and not result.answer:
        return f"The request could not be completed: {result.error}"
    return result.answer


def audio_field(state: ServerState, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's ``message.audio`` for the first audio output (WAV only: what the field promises is playable)."""
    result = outcome["result"]
    for record in outcome["files"]:
        if record.kind == "audio" and record.mime == "audio/wav" and record.bytes <= MAX_INLINE_AUDIO_BYTES:
            data = state.store.read_bytes(record.artifact, session=record.session)
            return {"id": record.id, "data": base64.b64encode(data).decode("ascii"),
                    "expires_at": int(time.time()) + 24 * 3600, "transcript": result.answer}
    return None


def completion(state: ServerState, who: Caller, thread_id: str, run_id: str, completion_id: str,
               created: int) -> dict[str, Any]:
    outcome = run_outcome(state, who, thread_id, run_id)
    text = answer_text(outcome["result"])
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    audio = audio_field(state, outcome)
    if audio is not None:
        message["audio"] = audio
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": MODEL_ID,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            # A run's tokens are spread over the planner, the composer and LLM tools and are not counted yet:
            # no usage at all (the field is optional) rather than zeros a client would take for a real count.
            "usage": None,
            "conversation": thread_id, "anymoda": extension(thread_id, run_id, outcome)}


def _chunk(completion_id: str, created: int, choices: list[dict[str, Any]], **extra: Any) -> str:
    payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
               "choices": choices, **extra}
    return f"data: {json.dumps(payload, default=str)}\n\n"


async def stream_chunks(state: ServerState, who: Caller, channel, thread_id: str, run_id: str, completion_id: str,
                        created: int):
    def delta(content: str | None = None, role: str | None = None, finish: str | None = None) -> dict[str, Any]:
        piece: dict[str, Any] = {}
        if role:
            piece["role"] = role
        if content is not None:
            piece["content"] = content
        return {"index": 0, "delta": piece, "finish_reason": finish, "logprobs": None}

    yield _chunk(completion_id, created, [delta(role="assistant", content="")], conversation=thread_id,
                 anymoda={"conversation": thread_id, "run": run_id})
    streamed = False
    async for event in channel.follow():
        if event["type"] == "answer_token":
            streamed = True
            yield _chunk(completion_id, created, [delta(content=str(event["data"].get("text", "")))])
        elif event["type"] != "plan_token":  # the plan's raw text is the planner's business; plan_ready carries it
            yield _chunk(completion_id, created, [], anymoda={"event": event})
    outcome = await run_in_threadpool(run_outcome, state, who, thread_id, run_id)
    text = answer_text(outcome["result"])
    if not streamed and text:
        yield _chunk(completion_id, created, [delta(content=text)])
    elif streamed and outcome["result"].pending_approval:
        yield _chunk(completion_id, created, [delta(content="\n\n" + answer_text(outcome["result"]).rsplit("\n\n", 1)[-1])])
    yield _chunk(completion_id, created, [delta(finish="stop")], conversation=thread_id,
                 anymoda=extension(thread_id, run_id, outcome))
    yield "data: [DONE]\n\n"
