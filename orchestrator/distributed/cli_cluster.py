"""``anymoda cluster status`` (nodes, expert actors, warm models, queue depth of the configured Ray cluster) and
``anymoda cluster stop-experts``."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_cluster(args: argparse.Namespace) -> int:
    from ..backends.locations import RunnerSettings
    from ..config import current_settings

    settings = current_settings()
    runner = settings.runner or RunnerSettings(kind="ray")
    overrides = {k: v for k, v in (("address", args.address), ("namespace", args.namespace)) if v}
    runner = RunnerSettings.parse({"kind": "ray", "address": runner.address, "namespace": runner.namespace, **overrides},
                                  "command line")
    from .cluster_status import cluster_status, format_status
    from .ray_runner import connect

    connect(runner.address, runner.namespace)
    if args.action == "stop-experts":
        from .cluster_status import stop_experts

        stopped = stop_experts(runner.namespace)
        sys.stdout.write(f"stopped {len(stopped)} expert actor(s) in namespace {runner.namespace!r}\n")
        return 0
    status = cluster_status(runner.namespace)
    sys.stdout.write((json.dumps(status, indent=2) if args.json else format_status(status)) + "\n")
    return 0


def add_cluster_commands(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser("cluster", help="the Ray cluster the [runner] config points at")
    actions = cluster.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="nodes, expert actors, which models are warm where, queue depth")
    status.add_argument("--address", help="the cluster (default: runner.address in the config, else auto)")
    status.add_argument("--namespace", help="the namespace of the expert actors (default: runner.namespace)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    stop = actions.add_parser("stop-experts", help="end the expert actors (shared ones outlive their front ends)")
    stop.add_argument("--address", help="the cluster (default: runner.address in the config, else auto)")
    stop.add_argument("--namespace", help="the namespace of the expert actors (default: runner.namespace)")
    stop.set_defaults(json=False)
    cluster.set_defaults(handler=cmd_cluster)
