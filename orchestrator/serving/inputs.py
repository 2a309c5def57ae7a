"""What a request brings into a run, resolved for its tenant: message text, media parts, file ids,
artifact ids named in text or in a plan, workflow inputs.

Nothing here reads a server-side path: media comes as bytes (base64, data URLs, uploads), as the
tenant's own file ids, or from an http(s) host the operator allowed. Every id is checked against the
caller's tenant (and, for artifacts, the conversation) before the run starts; anything else answers
404 exactly as an id that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..execution.compose import ARTIFACT_ID_IN_TEXT
from ..execution.events import Event
from ..execution.journal import check_session_id
from .errors import ApiError
from .media_input import (AUDIO_FORMATS, MediaPart, PayloadTooLarge, check_media, decode_base64, decode_data_url,
                          fetch_url, kind_of_mime, safe_filename, store_parts)
from .state import Caller, ServerState
from .tenancy import FILE_ID, NotFound, thread_session

MAX_TEXT_CHARS = 20_000


@dataclass
class TurnInput:
    text: str = ""
    parts: list[MediaPart] = field(default_factory=list)
    file_ids: list[str | None] = field(default_factory=list)  # beside parts: the file each came from, if any

    @property
    def media_bytes(self) -> int:
        return sum(len(p.data) for p in self.parts)


def file_part(state: ServerState, caller: Caller, file_id: Any) -> MediaPart:
    """The caller's uploaded (or produced) file as media to copy into a conversation."""
    record = state.tenancy.file(caller.tenant, file_id)
    data = state.store.read_bytes(record.artifact, session=record.session)
    return MediaPart(data, ArtifactKind(record.kind), record.filename)


def parse_message_content(state: ServerState, caller: Caller, content: Any) -> TurnInput:
    """An OpenAI message's content (a string, or a list of parts) as text plus validated media.

    Parts: ``text``; ``image_url`` (a data URL, one of the caller's file ids, or an allowed http(s)
    URL); ``input_audio`` (base64 ``data`` and a ``format``); ``file`` (``file_id``, or ``file_data``
    as a data URL with a ``filename``). Blocking (decodes and inspects media): call it off the loop."""
    turn = TurnInput()
    budget = state.limits.upload_bytes(caller.key)
    if isinstance(content, str):
        turn.text = content
        return _checked(turn)
    if not isinstance(content, list):
        raise ApiError(400, "a message's content must be a string or a list of content parts")
    if len(content) > state.limits.max_message_parts:
        raise ApiError(400, f"a message may have at most {state.limits.max_message_parts} content parts, not {len(content)}")
    texts: list[str] = []
    for index, part in enumerate(content):
        where = f"content part {index}"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(400, f"{where} must be an object with a 'type'")
        kind = part["type"]
        left = budget - turn.media_bytes
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where} (text) needs a 'text' string")
            texts.append(part["text"])
        elif kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            if not isinstance(url, str) or not url:
                raise ApiError(400, f"{where} (image_url) needs image_url.url")
            turn.parts.append(_media_from_url(state, caller, url, f"{where} (image_url)", ArtifactKind.IMAGE, left, index))
        elif kind == "input_audio":
            spec = part.get("input_audio")
            if not isinstance(spec, dict):
                raise ApiError(400, f"{where} (input_audio) needs input_audio.data and input_audio.format")
            audio_format = str(spec.get("format", "")).lower()
            if audio_format not in AUDIO_FORMATS:
                raise ApiError(400, f"{where}: input_audio.format must be one of {', '.join(AUDIO_FORMATS)}")
            data = decode_base64(spec.get("data"), f"{where} (input_audio.data)", left)
            turn.parts.append(check_media(data, f"audio-{index}.{audio_format}", ArtifactKind.AUDIO, state.store.limits))
        elif kind == "file":
            spec = part.get("file")
            if not isinstance(spec, dict):
                raise ApiError(400, f"{where} (file) needs file.file_id or file.file_data")
            if spec.get("file_id") is not None:
                media = file_part(state, caller, spec["file_id"])
                if len(media.data) > left:
                    raise PayloadTooLarge(f"{where}: the files of this message are over the upload limit of {budget:,} bytes")
                turn.parts.append(media)
            elif isinstance(spec.get("file_data"), str):
                data, mime = decode_data_url(spec["file_data"], f"{where} (file.file_data)", left)
                name = safe_filename(spec.get("filename"), f"file-{index}")
                turn.parts.append(check_media(data, name, kind_of_mime(mime), state.store.limits))
            else:
                raise ApiError(400, f"{where} (file) needs file.file_id or file.file_data")
        else:
            raise ApiError(400, f"{where} has the unsupported type {kind[:40]!r} (text, image_url, input_audio or file)")
    turn.text = "\n".join(t for t in texts if t.strip())
    return _checked(turn)


def _checked(turn: TurnInput) -> TurnInput:
    if len(turn.text) > MAX_TEXT_CHARS:
        raise ApiError(400, f"the message text is {len(turn.text):,} characters, over {MAX_TEXT_CHARS:,}; send a "
                            "document as a file")
    return turn


def _media_from_url(state: ServerState, caller: Caller, url: str, where: str, kind: ArtifactKind, budget: int,
                    index: int) -> MediaPart:
    if url.startswith("data:"):
        data, mime = decode_data_url(url, where, budget)
        declared = kind_of_mime(mime) or kind
        return check_media(data, f"{declared.value}-{index}", declared, state.store.limits)
    if FILE_ID.fullmatch(url):
        media = file_part(state, caller, url)
        if len(media.data) > budget:
            raise PayloadTooLarge(f"{where}: the files of this message are over the upload limit")
        return media
    data, mime = fetch_url(url, state.allowed_url_hosts, where, budget)
    return check_media(data, safe_filename(url.rsplit("/", 1)[-1].split("?", 1)[0], f"{kind.value}-{index}"),
                       kind_of_mime(mime) or kind, state.store.limits)


def check_named_artifacts(state: ServerState, caller: Caller, thread_id: str, text: str) -> None:
    """Artifact ids a message names must be of its own conversation; any other is a missing id (404)."""
    session = thread_session(caller.tenant, thread_id)
    for artifact_id in dict.fromkeys(ARTIFACT_ID_IN_TEXT.findall(text)):
        _own_artifact(state, session, artifact_id)


def check_plan_artifacts(state: ServerState, caller: Caller, thread_id: str, plan: Any) -> None:
    """Every artifact id a given plan mentions, anywhere in it, is of this conversation (404 otherwise)."""
    session = thread_session(caller.tenant, thread_id)
    text = json.dumps(plan)
    for artifact_id in dict.fromkeys(ARTIFACT_ID_IN_TEXT.findall(text)):
        _own_artifact(state, session, artifact_id)


def _own_artifact(state: ServerState, session: str, artifact_id: str) -> Artifact:
    try:
        artifact = state.store.get(artifact_id, session=session)
    except Exception:
        raise NotFound("artifact", artifact_id) from None
    if artifact.session != session:  # stored without a session: the local owner's, not a tenant's
        raise NotFound("artifact", artifact_id)
    return artifact


def agent_turn(state: ServerState, caller: Caller, thread_id: str, turn: TurnInput, run_id: str,
               plan: dict[str, Any] | None = None):
    """The event generator of one agent turn in the caller's thread (run it in a worker)."""
    session = check_session_id(thread_session(caller.tenant, thread_id))

    def events() -> Iterator[Event]:
        artifacts = store_parts(state.store, turn.parts, session)
        copies = {f: a.id for f, a in zip(turn.file_ids, artifacts) if f is not None}
        given = substitute_ids(plan, copies) if plan is not None else None
        yield from state.orchestrator.stream(turn.text, files=artifacts, session=session, run_id=run_id, plan=given)

    return events


def file_ids_in(value: Any) -> list[str]:
    """File ids a plan names as whole string values (each becomes the run's copy of that file)."""
    found: list[str] = []
    if isinstance(value, str) and FILE_ID.fullmatch(value):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            found += file_ids_in(item)
    elif isinstance(value, list):
        for item in value:
            found += file_ids_in(item)
    return list(dict.fromkeys(found))


def substitute_ids(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: substitute_ids(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_ids(v, mapping) for v in value]
    return value


def workflow_bindings(state: ServerState, caller: Caller, thread_id: str, workflow: Any,
                      values: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, MediaPart]]]:
    """A workflow's inputs from a request: file ids become media to copy in, this thread's artifact ids stay,
    text and JSON inputs take literals. A media input left to a default is refused: a default may be a path
    on this machine, which a request must never make the server read."""
    if not isinstance(values, dict):
        raise ApiError(400, "'input' of a workflow run maps input names to values")
    session = thread_session(caller.tenant, thread_id)
    literal: dict[str, Any] = {}
    media: list[tuple[str, MediaPart]] = []
    for name, spec in workflow.inputs.items():
        if name not in values:
            if spec.kind not in (ArtifactKind.TEXT, ArtifactKind.JSON) and (spec.required or spec.default is not None):
                raise ApiError(400, f"workflow input {name!r} ({spec.kind.value}) must be given, as a file id")
            continue
        value = values[name]
        if isinstance(value, str) and FILE_ID.fullmatch(value):
            media.append((name, file_part(state, caller, value)))
        elif is_artifact_id(value):
            literal[name] = _own_artifact(state, session, value)
        elif spec.kind in (ArtifactKind.TEXT, ArtifactKind.JSON):
            literal[name] = value
        else:
            raise ApiError(400, f"workflow input {name!r} ({spec.kind.value}) takes a file id (upload it to /v1/files)")
    unknown = set(values) - set(workflow.inputs)
    for name in unknown:  # bind_inputs names them all in its own message
        literal[name] = values[name]
    return literal, media


def workflow_turn(state: ServerState, caller: Caller, thread_id: str, workflow: Any, literal: dict[str, Any],
                  media: list[tuple[str, MediaPart]], run_id: str):
    session = check_session_id(thread_session(caller.tenant, thread_id))

    def events() -> Iterator[Event]:
        stored = store_parts(state.store, [m for _, m in media], session)
        inputs = {**literal, **{name: artifact for (name, _), artifact in zip(media, stored)}}
        yield from state.orchestrator.stream_workflow(workflow, inputs, session=session, run_id=run_id)

    return events
