"""OpenAI's files API: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``.

An upload is validated as the CLI validates a file (media_input.check_media) before it is stored, in
the tenant's files session; a message or a run that names the file gets a copy in its own session
(the blob is content-addressed, so a copy costs one index row). Deleting a file removes the tenant's
handle on it: the id answers 404 from then on; runs that used it keep their own copies.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .errors import ApiError
from .limits import BODY_EXCEEDED, body_too_large_message
from .media_input import check_media, kind_of_mime, safe_filename
from .state import Caller, ServerState, file_reference
from .tenancy import files_session

PURPOSE = re.compile(r"^[a-z][a-z_-]{0,31}$")


def add_file_routes(app: FastAPI, state: ServerState, caller) -> None:
    @app.post("/v1/files")
    async def upload(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "multipart/form-data":
            raise ApiError(415, f"upload files as multipart/form-data (fields 'file' and 'purpose'), not "
                                f"{content_type or 'no content type'}", "invalid_request_error", "unsupported_media_type")
        limit = state.limits.upload_bytes(who.key)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:  # the form's own fields are small
            raise ApiError(413, f"the upload is {int(declared):,} bytes, over this key's limit of {limit:,}", "request_too_large")
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
        except ApiError:
            raise
        except Exception as exc:  # the multipart parser's own complaints (malformed, too many parts)
            if BODY_EXCEEDED in request.scope:
                raise ApiError(413, body_too_large_message(request.scope[BODY_EXCEEDED]), "request_too_large") from None
            raise ApiError(400, f"the multipart body cannot be read: {getattr(exc, 'detail', exc)}") from None
        try:
            upload = form.get("file")
            purpose = form.get("purpose", "user_data")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "the form needs a 'file' field holding the file", code="missing_file")
            if not isinstance(purpose, str) or not PURPOSE.fullmatch(purpose):
                raise ApiError(400, "'purpose' must be a short lowercase word such as user_data or vision")
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise ApiError(413, f"the file is over this key's upload limit of {limit:,} bytes", "request_too_large")
            filename = safe_filename(upload.filename, "upload")
            part_type = upload.content_type
        finally:
            await form.close()

        def store() -> dict[str, Any]:
            part = check_media(data, filename, kind_of_mime(part_type), state.store.limits)
            artifact = state.store.put(part.kind, part.data, metadata={"name": part.filename},
                                       session=files_session(who.tenant))
            return state.tenancy.add_file(who.tenant, artifact, part.filename, purpose).to_openai()

        return await run_in_threadpool(store)

    @app.get("/v1/files")
    def listing(who: Caller = Depends(caller), purpose: str | None = None, limit: int = Query(100, ge=1, le=10_000),
                after: str | None = None, order: str = Query("desc", pattern="^(asc|desc)$")) -> dict[str, Any]:
        found = state.tenancy.files(who.tenant, purpose=purpose, limit=limit + 1, after=after, newest_first=order == "desc")
        page = found[:limit]
        return {"object": "list", "data": [f.to_openai() for f in page], "has_more": len(found) > limit,
                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}

    @app.get("/v1/files/{file_id}")
    def one(file_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        return file_reference(state.tenancy.file(who.tenant, file_id))

    @app.get("/v1/files/{file_id}/content")
    def content(file_id: str, who: Caller = Depends(caller)) -> Response:
        record = state.tenancy.file(who.tenant, file_id)
        data = state.store.read_bytes(record.artifact, session=record.session)
        return Response(data, media_type=record.mime,
                        headers={"Content-Disposition": f'attachment; filename="{record.filename}"'})

    @app.delete("/v1/files/{file_id}")
    def delete(file_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        state.tenancy.delete_file(who.tenant, file_id)
        return {"id": file_id, "object": "file", "deleted": True}
