"""anymoda as a service: an OpenAI-compatible HTTP API, runs over HTTP, a web chat page and an MCP server.

Everything here sits on top of the public agent API (:class:`~orchestrator.agent.Orchestrator`); nothing
in the agent knows it is being served. The parts:

* ``auth``      API keys (stored as sha256 hashes) and the tenants they belong to;
* ``tenancy``   who owns what: every file, thread (conversation), run and artifact belongs to one tenant,
                and a lookup by another tenant answers exactly like a missing id;
* ``limits``    per-key request rate, upload size and concurrent runs, and the body-size guard;
* ``runs``      runs executing in worker threads (never on the event loop), their events fanned out
                to any number of SSE followers;
* ``app``       the FastAPI application: files, chat completions, threads/runs, tools, metrics, the page;
* ``mcp_server`` the same tools and agent through the Model Context Protocol.

The server's dependencies are the optional extra ``serve`` (``pip install 'anymoda[serve]'``).
"""

from __future__ import annotations

import importlib.util

SERVE_EXTRA_MODULES = ("fastapi", "uvicorn", "multipart")
MCP_EXTRA_MODULES = ("mcp",)


def missing_serve_modules(modules: tuple[str, ...] = SERVE_EXTRA_MODULES) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def serve_extra_hint(missing: list[str]) -> str:
    return (f"the server needs the 'serve' extra ({', '.join(missing)} not installed): "
            "pip install 'anymoda[serve]'")
