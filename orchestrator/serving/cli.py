"""``anymoda serve``, ``anymoda keys create|list|revoke`` and ``anymoda mcp``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from ..config import current_settings, parse_size
from ..errors import ConfigError, InvalidInputError
from . import MCP_EXTRA_MODULES, missing_serve_modules, serve_extra_hint


def add_serving_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve the agent over HTTP: OpenAI-compatible API, runs, web chat page")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    _server_options(serve)
    serve.add_argument("--workers", type=int, default=8, help="runs driven at once across all keys (default 8)")
    serve.add_argument("--max-body", default="64MiB", help="largest request body (default 64MiB)")
    serve.add_argument("--max-upload", default="40MiB", help="default per-key limit on media per request (default 40MiB)")
    serve.add_argument("--rate", type=int, default=600, help="default per-key requests per minute (default 600)")
    serve.add_argument("--concurrent-runs", type=int, default=4, help="default per-key runs at once (default 4)")
    serve.add_argument("--allow-url-host", action="append", default=[], metavar="HOST",
                       help="a host whose http(s) URLs messages may name for media (repeatable; default: none)")
    serve.set_defaults(handler=cmd_serve)

    keys = commands.add_parser("keys", help="create, list or revoke the server's API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key for a tenant; it is printed once and stored hashed")
    create.add_argument("--tenant", required=True, help="who the key acts for: 1-32 of a-z 0-9 _ -")
    create.add_argument("--max-upload", help="this key's media limit per request, e.g. 10MiB")
    create.add_argument("--rate", type=int, help="this key's requests per minute")
    create.add_argument("--concurrent-runs", type=int, help="this key's runs at once")
    listing = actions.add_parser("list", help="every key (never the secrets)")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a key by its id (key_...); refused from the next request on")
    revoke.add_argument("key_id")
    keys.set_defaults(handler=cmd_keys)

    mcp = commands.add_parser("mcp", help="serve the tools, the agent and the workflows over the Model Context Protocol")
    mcp.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                     help="stdio (default; for desktop clients) or streamable HTTP")
    mcp.add_argument("--host", default="127.0.0.1")
    mcp.add_argument("--port", type=int, default=8001)
    mcp.add_argument("--tenant", default="mcp", help="the tenant whose namespace the MCP session's runs use (default mcp)")
    _server_options(mcp)
    mcp.set_defaults(handler=cmd_mcp)


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orchestrator", metavar="MODULE:FUNCTION",
                        help="build the Orchestrator with FUNCTION(settings) from MODULE instead of the default one "
                             "(custom tools, planner or policy)")
    parser.add_argument("--approve-before", action="append", default=[], metavar="TOOL",
                        help="runs wait for an approval before this tool (repeatable)")


def build_orchestrator(spec: str | None, approve_before: list[str]):
    from ..agent import Orchestrator

    settings = current_settings()
    if not spec:
        return Orchestrator(settings=settings, approve_before=approve_before)
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise InvalidInputError(f"--orchestrator takes MODULE:FUNCTION, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"--orchestrator {spec}: {exc}") from None
    orchestrator = factory(settings)
    if approve_before:
        import dataclasses

        unknown = [t for t in approve_before if t not in orchestrator.registry]
        if unknown:
            raise InvalidInputError(f"--approve-before names unknown tool(s): {', '.join(unknown)}")
        orchestrator.policy = dataclasses.replace(orchestrator.policy, approve_before=orchestrator.policy.approve_before
                                                  | frozenset(approve_before))
    return orchestrator


def build_state(args: argparse.Namespace, orchestrator: Any = None):
    from .auth import KeyStore
    from .limits import RunSlots, ServeLimits
    from .runs import RunManager
    from .state import ServerState
    from .tenancy import Tenancy

    # Each worker is a thread that may hold a run's models: more than a few hundred is a typo, not a plan.
    for name, most in (("workers", 256), ("rate", 1_000_000), ("concurrent_runs", 10_000)):
        if not 1 <= getattr(args, name) <= most:
            raise ConfigError(f"--{name.replace('_', '-')} must be from 1 to {most:,}, got {getattr(args, name):,}")
    limits = ServeLimits(max_body_bytes=parse_size(args.max_body, "--max-body"),
                         max_upload_bytes=parse_size(args.max_upload, "--max-upload"),
                         requests_per_minute=args.rate, max_concurrent_runs=args.concurrent_runs)
    orchestrator = orchestrator or build_orchestrator(args.orchestrator, args.approve_before)
    home = orchestrator.settings.home
    slots = RunSlots()
    state = ServerState(orchestrator, KeyStore(home), Tenancy(home), limits,
                        RunManager(args.workers, slots), frozenset(h.lower() for h in args.allow_url_host))
    state.runs.on_finish = state.metrics.run_finished
    return state


def cmd_serve(args: argparse.Namespace) -> int:
    missing = missing_serve_modules()
    if missing:
        print(f"error: {serve_extra_hint(missing)}", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    import uvicorn

    from .app import create_app

    state = build_state(args)
    app = create_app(state)
    print(f"anymoda serving on http://{args.host}:{args.port} (home {state.orchestrator.settings.home}); "
          "make a key with: anymoda keys create --tenant NAME", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        state.runs.shutdown()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .auth import KeyLimits, KeyStore

    store = KeyStore(current_settings().home)
    if args.action == "create":
        upload = parse_size(args.max_upload, "--max-upload") if args.max_upload else None
        key, secret = store.create(args.tenant, KeyLimits(upload, args.rate, args.concurrent_runs))
        print(secret)
        print(f"key {key.id} for tenant {key.tenant}: shown once, stored hashed; use it as 'Authorization: Bearer <key>'",
              file=sys.stderr)
        return 0
    if args.action == "list":
        keys = store.list(args.tenant)
        if args.json:
            print(json.dumps([k.to_json() for k in keys], indent=2))
            return 0
        if not keys:
            print("no keys (anymoda keys create --tenant NAME makes one)")
        for key in keys:
            limits = ", ".join(f"{name} {value}" for name, value in (
                ("upload", key.limits.max_upload_bytes), ("rate/min", key.limits.requests_per_minute),
                ("runs", key.limits.max_concurrent_runs)) if value is not None) or "server defaults"
            print(f"{key.id}  tenant {key.tenant:<16} {'active ' if key.active else 'revoked'}  {limits}")
        return 0
    key = store.revoke(args.key_id)
    print(f"revoked {key.id} (tenant {key.tenant})")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    missing = missing_serve_modules(MCP_EXTRA_MODULES)
    if missing:
        print(f"error: {serve_extra_hint(missing)}", file=sys.stderr)
        return 2
    from .mcp_server import run_mcp

    return run_mcp(args)
