"""The FastAPI application: ``create_app(state)``; ``anymoda serve`` runs it under uvicorn.

Blocking work (SQLite, the store, codecs, the Orchestrator) never runs on the event loop: plain
``def`` routes run in Starlette's thread pool, async routes hand their blocking parts to it
(``run_in_threadpool``), and runs are driven by the run pool (``runs.py``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AnymodaError, ArtifactNotFoundError, InvalidInputError, ToolUnavailableError
from .errors import ApiError
from .limits import BODY_EXCEEDED, BodySizeLimit, body_too_large_message, retry_after
from .media_input import PayloadTooLarge
from .state import MODEL_ID, Caller, ServerState
from .tenancy import NotFound

PUBLIC_PATHS = ("/health", "/", "/favicon.ico")  # the page itself holds no data; it asks for a key
JSON_TYPES = ("application/json",)


def create_app(state: ServerState) -> FastAPI:
    # No documentation routes: every route but /health needs a key.
    app = FastAPI(title="anymoda", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.anymoda = state

    # ------------------------------------------------------------------ errors: one JSON line, never a traceback

    def reply(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError):
        return reply(exc)

    @app.exception_handler(NotFound)
    async def on_not_found(request: Request, exc: NotFound):
        return reply(ApiError(404, str(exc), "not_found_error"))

    @app.exception_handler(PayloadTooLarge)
    async def on_too_large(request: Request, exc: PayloadTooLarge):
        return reply(ApiError(413, str(exc), "request_too_large"))

    @app.exception_handler(ArtifactNotFoundError)
    async def on_artifact_missing(request: Request, exc: ArtifactNotFoundError):
        return reply(ApiError(404, str(exc), "not_found_error"))

    @app.exception_handler(InvalidInputError)
    async def on_invalid(request: Request, exc: InvalidInputError):
        return reply(ApiError(400, str(exc), "invalid_request_error"))

    @app.exception_handler(AnymodaError)
    async def on_anymoda(request: Request, exc: AnymodaError):
        from ..execution.journal import RunBusyError

        if isinstance(exc, RunBusyError):
            return reply(ApiError(409, str(exc), "conflict"))
        if isinstance(exc, ToolUnavailableError):  # the request is fine; this server lacks the part (an extra, weights)
            return reply(ApiError(501, str(exc), "not_implemented_error"))
        return reply(ApiError(422, str(exc), "unprocessable_error"))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        return reply(ApiError(400, describe_validation(exc.errors()), "invalid_request_error"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return reply(ApiError(exc.status_code, message, kind, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception):
        import logging

        logging.getLogger("anymoda.serve").exception("unhandled error on %s %s", request.method, request.url.path)
        return reply(ApiError(500, f"internal error ({type(exc).__name__}); the server log has the details", "server_error"))

    # ------------------------------------------------------------------ metrics, body bound

    @app.middleware("http")
    async def measure(request: Request, call_next):
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        state.metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                              time.perf_counter() - began)
        return response

    app.add_middleware(BodySizeLimit, max_bytes=state.limits.max_body_bytes)

    # ------------------------------------------------------------------ routes

    caller = authenticator(state)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": MODEL_ID}

    @app.get("/metrics")
    def metrics(who: Caller = Depends(caller)) -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(state.runs.active(), state.runs.slots.total()),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models(who: Caller = Depends(caller)) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(state)]}

    @app.get("/v1/models/{model_id}")
    def model(model_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        if model_id != MODEL_ID:
            raise ApiError(404, f"no model {model_id!r}; this server serves {MODEL_ID!r}", "not_found_error", "model_not_found")
        return model_card(state)

    @app.get("/v1/tools")
    def tools(who: Caller = Depends(caller)) -> dict[str, Any]:
        return {"object": "list", "data": [tool_entry(t) for t in state.orchestrator.registry]}

    @app.get("/v1/artifacts/{artifact_id}")
    def artifact(artifact_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        found = state.tenancy.check_artifact(who.tenant, artifact_id, state.store)
        return artifact_json(found)

    @app.get("/v1/artifacts/{artifact_id}/content")
    def artifact_content(artifact_id: str, who: Caller = Depends(caller)) -> Response:
        found = state.tenancy.check_artifact(who.tenant, artifact_id, state.store)
        return Response(state.store.read_bytes(found.id, session=found.session), media_type=found.mime,
                        headers={"Content-Disposition": f'attachment; filename="{download_name(found)}"'})

    @app.get("/v1/artifacts/{artifact_id}/preview")
    def artifact_preview(artifact_id: str, who: Caller = Depends(caller)) -> Response:
        """A picture of an artifact that is not one: boxes or masks drawn over their image, a series plotted,
        a sound's spectrogram (what ``anymoda render`` draws)."""
        found = state.tenancy.check_artifact(who.tenant, artifact_id, state.store)
        return Response(preview_png(state, found), media_type="image/png")

    from .files import add_file_routes
    from .openai_chat import add_chat_routes
    from .threads import add_thread_routes
    from .web import add_web_routes

    add_file_routes(app, state, caller)
    add_chat_routes(app, state, caller)
    add_thread_routes(app, state, caller)
    add_web_routes(app)
    return app


def authenticator(state: ServerState):
    """The dependency every private route takes: a live key (401 otherwise) within its request rate (429)."""

    def caller(request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' (anymoda keys create makes one)",
                           "authentication_error", "missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        key = state.keys.authenticate(secret.strip())
        if key is None:
            raise ApiError(401, "invalid or revoked API key", "authentication_error", "invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        wait = state.rate.take(key.id, state.limits.rate(key))
        if wait > 0:
            raise ApiError(429, f"this key's limit of {state.limits.rate(key)} requests per minute is reached; "
                                f"retry in {retry_after(wait)} s", "rate_limit_exceeded", "rate_limited",
                           headers={"Retry-After": retry_after(wait)})
        return Caller(key)

    return caller


async def read_json(request: Request, model: type[BaseModel] | None = None) -> Any:
    """The body as JSON (415 for another content type, 400 for malformed JSON or a wrong shape)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise ApiError(415, f"send the body as application/json, not {content_type or 'no content type'}",
                       "invalid_request_error", "unsupported_media_type")
    try:
        body = await request.body()
    except Exception:
        if BODY_EXCEEDED in request.scope:
            raise ApiError(413, body_too_large_message(request.scope[BODY_EXCEEDED]), "request_too_large") from None
        raise
    if len(body) > 64 * 1024:  # parsing megabytes of base64 media would stall every other request
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(parse_json, body, model)
    return parse_json(body, model)


def parse_json(body: bytes, model: type[BaseModel] | None) -> Any:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})", "invalid_request_error", "malformed_json") from None
    if model is None:
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, describe_validation(exc.errors()), "invalid_request_error") from None


def describe_validation(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def model_card(state: ServerState) -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": int(state.metrics.started), "owned_by": "anymoda"}


def tool_entry(tool: Any) -> dict[str, Any]:
    """A tool as OpenAI's function shape (name, description, parameters: JSON Schema) plus its typed card."""
    card = tool.card()
    return {"type": "function", "function": {"name": card["name"], "description": card["description"],
                                             "parameters": card["arguments_schema"]},
            "task": card["task"], "inputs": card["inputs"], "outputs": card["outputs"]}


def artifact_json(artifact: Any) -> dict[str, Any]:
    """An artifact as a tenant sees it: no session (that is the server's bookkeeping), its lineage ids."""
    return {"id": artifact.id, "object": "artifact", "kind": artifact.kind.value, "mime_type": artifact.mime,
            "bytes": artifact.size, "sha256": artifact.sha256, "metadata": artifact.metadata, "task": artifact.task,
            "parents": list(artifact.parents), "created_at": artifact.created_at,
            "url": f"/v1/artifacts/{artifact.id}/content"}


def download_name(artifact: Any) -> str:
    from ..storage.store import extension_for
    from .media_input import safe_filename

    return safe_filename(artifact.metadata.get("name"), f"{artifact.id}{extension_for(artifact.mime)}")


def preview_png(state: ServerState, artifact: Any) -> bytes:
    import io

    from ..storage import render
    from ..storage.artifacts import ArtifactKind

    store, session = state.store, artifact.session
    value = store.load(artifact.id, session=session)
    if artifact.kind in (ArtifactKind.DETECTIONS, ArtifactKind.MASKS):
        image = next((a for a in store.ancestors(artifact.id, session=session) if a.kind is ArtifactKind.IMAGE), None)
        if image is None:
            raise ApiError(422, f"{artifact.id} has no image among its ancestors to draw on", "unprocessable_error")
        base = store.load(image.id, session=session)
        picture = (render.draw_detections(base, value) if artifact.kind is ArtifactKind.DETECTIONS
                   else render.overlay_masks(base, value))
    elif artifact.kind is ArtifactKind.TIME_SERIES:
        picture = render.plot_time_series(value, title=artifact.id)
    elif artifact.kind is ArtifactKind.AUDIO:
        picture = render.spectrogram(value, title=artifact.id)
    elif artifact.kind is ArtifactKind.IMAGE:
        picture = value
    else:
        raise ApiError(422, f"{artifact.kind.value} artifacts are read, not drawn; GET /v1/artifacts/{artifact.id}/content",
                       "unprocessable_error")
    buffer = io.BytesIO()
    picture.convert("RGBA" if picture.mode in ("RGBA", "LA", "P") else "RGB").save(buffer, "PNG")
    return buffer.getvalue()
