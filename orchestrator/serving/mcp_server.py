"""``anymoda mcp``: the tools, the whole agent and the shipped workflows over the Model Context Protocol,
with the official ``mcp`` SDK (its low-level server: tool schemas here are built from anymoda's tool cards).

Each registry tool is an MCP tool whose arguments are the tool's own: a media input takes a ``data:``
URL (base64) or the id of an artifact an earlier call returned; a text input takes text. Results come
back as MCP content blocks: images as image blocks, sounds as audio blocks, text as text, anything else
(boxes, masks, JSON) as its JSON text; ``structured_content`` maps each output to its artifact id.
``anymoda-agent`` runs a request through the planner; ``workflow-<name>`` runs a shipped workflow.

Everything an MCP client does lands in one thread of its tenant (``mcp`` unless the agent tool is given
a ``conversation``), so artifact ids from earlier calls can be passed to later ones. Over stdio the
tenant is the local user's (``--tenant``); over streamable HTTP every request carries an API key
(``Authorization: Bearer``) and acts for that key's tenant, with the same isolation as ``anymoda serve``.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..errors import AnymodaError
from .auth import KeyStore, check_tenant_name
from .errors import ApiError
from .media_input import check_media, decode_data_url
from .tenancy import NotFound, Tenancy, thread_session

AGENT_TOOL = "anymoda-agent"
WORKFLOW_PREFIX = "workflow-"
MCP_THREAD = "mcp"
MAX_INPUT_BYTES = 40 * 1024 * 1024
MAX_BLOCK_BYTES = 16 * 1024 * 1024  # larger outputs are named by id only


def media_argument_schema(kind: ArtifactKind, description: str) -> dict[str, Any]:
    if kind is ArtifactKind.TEXT:
        return {"type": "string", "description": description}
    if kind is ArtifactKind.JSON:
        return {"description": description}
    return {"type": "string", "description": f"{description}: a data: URL (data:<mime>;base64,...) or the id of a "
                                             f"{kind.value} artifact an earlier call returned ({kind.value}-<16 hex>)"}


class AnymodaMCP:
    """The MCP handlers over one Orchestrator; ``tenant_of(ctx)`` says whom a request acts for."""

    def __init__(self, orchestrator: Any, local_tenant: str | None, keys: KeyStore | None = None):
        self.orchestrator = orchestrator
        self.local_tenant = check_tenant_name(local_tenant) if local_tenant else None
        self.keys = keys
        self.tenancy = Tenancy(orchestrator.settings.home)

    # ------------------------------------------------------------------ catalogue

    def workflows(self) -> dict[str, Any]:
        from .threads import SHIPPED_WORKFLOWS
        from ..workflows.definition import Workflow

        found = {}
        for path in sorted(SHIPPED_WORKFLOWS.glob("*.yaml")):
            try:
                workflow = Workflow.load(path, self.orchestrator.registry)
            except Exception:  # needs tools this registry lacks
                continue
            found[WORKFLOW_PREFIX + workflow.name] = workflow
        return found

    def tool_list(self) -> list[Any]:
        import mcp_types as types

        tools = []
        for tool in self.orchestrator.registry:
            card = tool.card()
            properties = {name: media_argument_schema(spec.kind, spec.description) for name, spec in tool.inputs.items()}
            properties.update({name: spec.json_schema() for name, spec in tool.params.items()})
            tools.append(types.Tool(name=card["name"], description=card["description"], input_schema={
                "type": "object", "properties": properties,
                "required": [n for n, s in tool.inputs.items() if s.required], "additionalProperties": False}))
        tools.append(types.Tool(name=AGENT_TOOL, description=(
            "Answer a request with anymoda's tools: it plans which expert models to run, runs them and answers, "
            "with any images or sounds it made. Earlier outputs of the same conversation can be referred to."),
            input_schema={"type": "object", "properties": {
                "request": {"type": "string", "description": "what you want, in words"},
                "files": {"type": "array", "maxItems": 16, "items": {"type": "string"},
                          "description": "media as data: URLs, or artifact ids from earlier calls"},
                "conversation": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                                 "description": "a conversation id: turns with the same one remember each other"}},
                "required": ["request"], "additionalProperties": False}))
        for name, workflow in self.workflows().items():
            properties = {n: media_argument_schema(i.kind, i.description or n) for n, i in workflow.inputs.items()}
            tools.append(types.Tool(name=name, description=workflow.description or f"the {workflow.name} workflow",
                                    input_schema={"type": "object", "properties": properties,
                                                  "required": [n for n, i in workflow.inputs.items() if i.required],
                                                  "additionalProperties": False}))
        return tools

    # ------------------------------------------------------------------ calls

    def tenant_of(self, ctx: Any) -> str:
        request = getattr(ctx, "request", None)
        if request is None or self.keys is None:
            if self.local_tenant is None:
                raise ApiError(401, "this MCP server needs an API key", "authentication_error")
            return self.local_tenant
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        key = self.keys.authenticate(secret.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ApiError(401, "invalid or revoked API key", "authentication_error")
        return key.tenant

    def call(self, tenant: str, name: str, arguments: dict[str, Any]) -> Any:
        """Run one MCP tool call for ``tenant`` (blocking: the caller runs it in a worker thread)."""
        try:
            if name == AGENT_TOOL:
                return self._agent(tenant, arguments)
            workflows = self.workflows() if name.startswith(WORKFLOW_PREFIX) else {}
            if name in workflows:
                return self._workflow(tenant, workflows[name], arguments)
            if name in self.orchestrator.registry:
                return self._tool(tenant, name, arguments)
            return _error(f"no tool {name[:80]!r}")
        except (AnymodaError, ApiError, NotFound, ValueError) as exc:
            return _error(getattr(exc, "message", None) or str(exc))

    def _session(self, tenant: str, thread: str) -> str:
        self.tenancy.ensure_thread(tenant, self.tenancy.check_thread_id(thread), {"source": "mcp"})
        return thread_session(tenant, thread)

    def _artifact(self, value: Any, kind: ArtifactKind, session: str, where: str) -> Artifact:
        """A media argument as an artifact of ``session``: a data URL is validated like any upload."""
        store = self.orchestrator.store
        if is_artifact_id(value):
            try:
                artifact = store.get(value, session=session)
            except Exception:
                raise NotFound("artifact", value) from None
            if artifact.session != session:
                raise NotFound("artifact", value)
            return artifact
        if kind is ArtifactKind.TEXT and isinstance(value, str):
            return store.put_value(kind, value, session=session, metadata={"name": where})
        if kind is ArtifactKind.JSON:
            return store.put_value(kind, value, session=session, metadata={"name": where})
        if not isinstance(value, str) or not value.startswith("data:"):
            raise ApiError(400, f"{where} takes a data: URL or an artifact id")
        data, mime = decode_data_url(value, where, MAX_INPUT_BYTES)
        from .media_input import kind_of_mime

        part = check_media(data, where, kind_of_mime(mime) or (kind if kind is not ArtifactKind.JSON else None),
                           store.limits)
        if kind not in (ArtifactKind.TEXT, ArtifactKind.JSON) and part.kind is not kind:
            raise ApiError(400, f"{where} must be {kind.value}, got {part.kind.value}")
        return store.put(part.kind, part.data, metadata={"name": where}, session=session)

    def _tool(self, tenant: str, name: str, arguments: dict[str, Any]) -> Any:
        tool = self.orchestrator.registry.get(name)
        session = self._session(tenant, MCP_THREAD)
        args: dict[str, Any] = {}
        for key, value in arguments.items():
            spec = tool.inputs.get(key)
            args[key] = self._artifact(value, spec.kind, session, key).id if spec is not None else value
        plan = {"tasks": [{"id": "t1", "tool": name, "args": args}]}
        result = self.orchestrator.run(f"run {name}", plan=plan, session=session)
        return self._result(result, result.tasks.get("t1"))

    def _agent(self, tenant: str, arguments: dict[str, Any]) -> Any:
        request = arguments.get("request")
        files = arguments.get("files") or []
        if not isinstance(request, str) or not isinstance(files, list) or len(files) > 16:
            return _error("anymoda-agent takes 'request' (text) and at most 16 'files'")
        session = self._session(tenant, str(arguments.get("conversation") or MCP_THREAD))
        inputs = [self._artifact(f, _kind_of_argument(f), session, f"file {i}") for i, f in enumerate(files)]
        return self._result(self.orchestrator.run(request, files=inputs, session=session), None)

    def _workflow(self, tenant: str, workflow: Any, arguments: dict[str, Any]) -> Any:
        session = self._session(tenant, MCP_THREAD)
        unknown = set(arguments) - set(workflow.inputs)
        if unknown:
            return _error(f"{workflow.name} has no input(s) {', '.join(sorted(unknown))}")
        inputs = {n: self._artifact(v, workflow.inputs[n].kind, session, n) for n, v in arguments.items()}
        return self._result(self.orchestrator.run_workflow(workflow, inputs, session=session), None)

    def _result(self, result: Any, task: Any) -> Any:
        import mcp_types as types

        store = self.orchestrator.store
        if result.pending_approval:
            return _error("the run waits for an approval, which MCP cannot give; use anymoda serve's runs API "
                          f"(run {result.run_id})")
        if result.error or result.status == "failed":
            return _error(result.error or "; ".join(result.failures) or "the run failed")
        outputs = dict(task.outputs) if task is not None else {}
        delivered = [store.get(a, session=result.session) for a in (outputs.values() if outputs else
                                                                   [a.id for a in result.artifacts])]
        blocks: list[Any] = [types.TextContent(text=result.answer or ", ".join(a.describe() for a in delivered))]
        for artifact in delivered:
            if artifact.size > MAX_BLOCK_BYTES:
                blocks.append(types.TextContent(text=f"{artifact.describe()} (too large to send inline)"))
                continue
            data = store.read_bytes(artifact.id, session=result.session)
            if artifact.kind is ArtifactKind.IMAGE:
                blocks.append(types.ImageContent(data=base64.b64encode(data).decode("ascii"), mime_type=artifact.mime))
            elif artifact.kind is ArtifactKind.AUDIO:
                blocks.append(types.AudioContent(data=base64.b64encode(data).decode("ascii"), mime_type=artifact.mime))
            elif artifact.kind is ArtifactKind.TEXT:
                blocks.append(types.TextContent(text=data.decode("utf-8", "replace")))
            else:
                blocks.append(types.TextContent(text=f"{artifact.describe()}: {data[:20_000].decode('utf-8', 'replace')}"
                                                if artifact.mime.endswith("json") else artifact.describe()))
        structured = {"run": result.run_id, "status": result.status,
                      "artifacts": outputs or {a.id: a.kind.value for a in delivered}}
        return types.CallToolResult(content=blocks, structured_content=structured, is_error=False)

    # ------------------------------------------------------------------ the SDK's server

    def server(self) -> Any:
        import anyio
        import mcp_types as types
        from mcp.server.lowlevel import Server

        async def list_tools(ctx: Any, params: Any) -> Any:
            self.tenant_of(ctx)
            return types.ListToolsResult(tools=await anyio.to_thread.run_sync(self.tool_list))

        async def call_tool(ctx: Any, params: Any) -> Any:
            try:
                tenant = self.tenant_of(ctx)
            except ApiError as exc:
                return _error(exc.message)
            return await anyio.to_thread.run_sync(self.call, tenant, params.name, dict(params.arguments or {}))

        return Server("anymoda", version="1", instructions=(
            "anymoda's expert-model tools (vision, speech, audio, time series, generation), the agent that plans "
            "with them (anymoda-agent), and its workflows. Media goes in as data: URLs and comes back as image "
            "and audio blocks; pass an artifact id from one call to the next."),
            on_list_tools=list_tools, on_call_tool=call_tool)


def _kind_of_argument(value: Any) -> ArtifactKind:
    if is_artifact_id(value):
        return ArtifactKind(value.rsplit("-", 1)[0])
    if isinstance(value, str) and value.startswith("data:"):
        from .media_input import kind_of_mime

        mime = value[5:].split(";", 1)[0]
        return kind_of_mime(mime) or ArtifactKind.IMAGE
    raise ApiError(400, "files take data: URLs or artifact ids")


def _error(message: str) -> Any:
    import mcp_types as types

    return types.CallToolResult(content=[types.TextContent(text=" ".join(str(message).split())[:1000])], is_error=True)


def run_mcp(args: argparse.Namespace) -> int:
    import anyio

    from .cli import build_orchestrator

    orchestrator = build_orchestrator(args.orchestrator, args.approve_before)
    if args.transport == "stdio":
        from mcp.server.stdio import stdio_server

        handlers = AnymodaMCP(orchestrator, args.tenant)
        server = handlers.server()

        async def serve_stdio() -> None:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())

        anyio.run(serve_stdio)
        return 0
    import uvicorn

    handlers = AnymodaMCP(orchestrator, None, KeyStore(orchestrator.settings.home))
    app = handlers.server().streamable_http_app(streamable_http_path="/mcp", host=args.host, stateless_http=True)
    print(f"anymoda MCP (streamable HTTP) on http://{args.host}:{args.port}/mcp; every request needs "
          "'Authorization: Bearer <key>' (anymoda keys create)", flush=True)
    uvicorn.run(RequireKey(app, handlers.keys), host=args.host, port=args.port, log_level="warning")
    return 0


class RequireKey:
    """Refuses a request without a live API key before the MCP transport sees it (401, one JSON line)."""

    def __init__(self, app: Any, keys: KeyStore):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or self.keys.authenticate(secret.strip()) is None:
                body = json.dumps({"error": {"message": "missing, invalid or revoked API key", "type":
                                             "authentication_error", "code": None}}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
