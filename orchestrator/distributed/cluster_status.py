"""``anymoda cluster status``: the Ray cluster's nodes, the expert actors on them, which models each
holds warm, and how many tasks wait in their queues. Read from Ray's control store (named actors,
node table) and from the actors themselves, so it needs neither the dashboard nor the driver that
started the actors."""

from __future__ import annotations

from typing import Any

from ..backends import missing_extra
from ..errors import ConfigError

try:
    import ray
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    raise missing_extra("anymoda cluster status") from exc

STATUS_TIMEOUT_S = 5.0


def cluster_status(namespace: str = "anymoda") -> dict[str, Any]:
    """``{"nodes": [...], "actors": [...], "queue_depth": n}`` of the cluster this process has joined."""
    from .ray_runner import ACTOR_PREFIX

    if not ray.is_initialized():
        raise ConfigError("not connected to a Ray cluster")
    nodes = [{"id": n["NodeID"], "address": n.get("NodeManagerAddress", "?"), "alive": bool(n.get("Alive")),
              "head": "node:__internal_head__" in n.get("Resources", {}),
              "cpus": n.get("Resources", {}).get("CPU", 0), "gpus": n.get("Resources", {}).get("GPU", 0),
              "memory": int(n.get("Resources", {}).get("memory", 0))} for n in ray.nodes()]
    named = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == namespace and a.get("name", "").startswith(ACTOR_PREFIX + ":")]
    pending = {}
    for actor in named:
        try:
            pending[actor["name"]] = ray.get_actor(actor["name"], namespace=namespace).status.remote()
        except ValueError:  # gone between listing and asking
            continue
    actors = []
    for name, ref in pending.items():
        try:
            actors.append({"name": name, **ray.get(ref, timeout=STATUS_TIMEOUT_S)})
        except Exception as exc:  # noqa: BLE001 - a dead or busy actor is shown as such, not a crash
            actors.append({"name": name, "tool": name.split(":")[1], "node": "?", "error": type(exc).__name__,
                           "waiting": 0, "running": 0, "finished": 0, "warm": [], "loads": 0})
    actors.sort(key=lambda a: (a["tool"], a["node"], a["name"]))
    return {"nodes": nodes, "actors": actors, "queue_depth": sum(a.get("waiting", 0) for a in actors),
            "running": sum(a.get("running", 0) for a in actors)}


def stop_experts(namespace: str = "anymoda") -> list[str]:
    """End every expert actor in ``namespace`` (shared ones outlive their front ends); returns their names."""
    from .ray_runner import ACTOR_PREFIX

    stopped = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") == namespace and actor.get("name", "").startswith(ACTOR_PREFIX + ":"):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)
            except ValueError:  # gone meanwhile
                continue
            stopped.append(actor["name"])
    return stopped


def format_status(status: dict[str, Any]) -> str:
    lines = [f"{sum(n['alive'] for n in status['nodes'])} of {len(status['nodes'])} nodes alive; "
             f"{len(status['actors'])} expert actors; {status['running']} tasks running, "
             f"{status['queue_depth']} queued"]
    for node in status["nodes"]:
        role = "head" if node["head"] else "worker"
        lines.append(f"  node {node['id'][:12]} {node['address']} {role} {'alive' if node['alive'] else 'DEAD'} "
                     f"cpus={node['cpus']:g} gpus={node['gpus']:g} memory={node['memory'] / 2**30:.1f}GiB")
        for actor in (a for a in status["actors"] if a["node"] == node["id"]):
            warm = ", ".join(actor["warm"]) or "nothing loaded"
            lines.append(f"    {actor['tool']}: running {actor['running']}, queued {actor['waiting']}, "
                         f"done {actor['finished']}; warm: {warm}")
    for actor in (a for a in status["actors"] if a["node"] == "?"):
        lines.append(f"  {actor['name']}: not answering ({actor.get('error')})")
    return "\n".join(lines)
