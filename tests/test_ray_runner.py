"""The Ray runner on a real two-node cluster on this machine (``ray start --head`` and a second
``ray start --address``, each its own process group): tasks of one run land on both nodes, experts
stay warm in their actors, progress reaches the driver, cancel reaches Ray, and a run whose worker
node is killed mid-run finishes with every task that had finished kept. The shared state is the
real PostgreSQL + S3-compatible servers, so the workers and the driver agree only through them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.agent import Orchestrator
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.execution.compose import Composer
from orchestrator.tooling.registry import ToolRegistry

from shared_servers import new_bucket, new_database, postgres_server, require_extra, s3_server

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
import ray_stub_tools  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster():
    require_extra()
    pytest.importorskip("ray", reason="the 'ray' extra is not installed")
    import ray

    from orchestrator.distributed.local_cluster import LocalRayCluster

    with postgres_server() as admin_url, s3_server() as s3_env:
        saved = {k: os.environ.get(k) for k in s3_env}
        os.environ.update(s3_env)
        python_path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
        local = LocalRayCluster(num_cpus=1, env={**s3_env, "PYTHONPATH": python_path})
        try:
            local.start_head()
            worker = local.add_worker()
            ray.init(address=local.address, namespace="anymoda-test", log_to_driver=False)
            local.wait_for_nodes(2)
            yield {"cluster": local, "worker": worker, "postgres": admin_url, "bucket": new_bucket(s3_env)}
        finally:
            ray.shutdown()
            local.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def settings(cluster, tmp_path):
    values = {"home": str(tmp_path / "home"), "offline": True, "memory_budget": "1GiB",
              "store": f"s3://{cluster['bucket']}/ray-{tmp_path.name[-12:].lower().replace('_', '-')}",
              "database": new_database(cluster["postgres"]),
              "runner": {"kind": "ray", "address": cluster["cluster"].address, "replicas_per_node": 1, "slots": 4}}
    return Settings.from_dict(values)


def orchestrator(settings: Settings) -> Orchestrator:
    return Orchestrator(settings=settings, registry=ToolRegistry(ray_stub_tools.TOOLS), planner=None,
                        composer=Composer(None))


def wait(task_id: str, label: str, seconds: float = 0.0, **args) -> dict:
    return {"id": task_id, "tool": "stub-wait", "args": {"label": label, "seconds": seconds, **args}}


def test_config_chooses_the_ray_runner_and_a_dag_lands_on_both_nodes(settings):
    from orchestrator.distributed.ray_runner import RayTaskRunner

    orch = orchestrator(settings)
    try:
        assert orch.runner.kind == "ray" and isinstance(orch.runner.runner, RayTaskRunner)
        fan = [wait(f"w{i}", f"part {i}", 0.6) for i in range(8)]
        join = {"id": "join", "tool": "stub-wait", "args": {"label": "all", "a": "<w0>", "b": "<w5>"}}
        paint = {"id": "paint", "tool": "stub-paint", "args": {"text": "<w1>"}}
        result = orch.run("fan out", plan={"tasks": [*fan, join, paint]})
        assert result.status == "done", (result.error, result.failures)
        placements = orch.runner.placements
        nodes = {placements[f"{result.run_id}/{t}"] for t in result.tasks}
        assert len(nodes) == 2, placements  # both nodes ran tasks of this one run
        assert orch.store.load(result.tasks["join"].outputs["text"], session=result.session) == "all | part 0 | part 5"
        assert result.first("image") is not None
        # Written by the workers, read by the driver: only the shared Postgres + S3 state connects them.
        for task in result.tasks.values():
            for artifact_id in task.outputs.values():
                assert orch.store.read_bytes(artifact_id, session=result.session)
    finally:
        orch.runner.shutdown()


def test_experts_stay_warm_and_progress_reaches_the_driver(settings):
    import ray

    from orchestrator.distributed.cluster_status import cluster_status

    orch = orchestrator(settings)
    try:
        events = list(orch.stream("steps", plan={"tasks": [{"id": "s", "tool": "stub-steps", "args": {"steps": 4}}]}))
        progress = [e.data["done"] for e in events if e.type == "task_progress"]
        assert progress == [1, 2, 3, 4]
        for _ in range(3):
            orch.run("again", plan={"tasks": [{"id": "s", "tool": "stub-steps", "args": {"steps": 1}}]})
        status = cluster_status(orch.settings.runner.namespace if orch.settings.runner else "anymoda")
        steps = [a for a in status["actors"] if a["tool"] == "stub-steps"]
        assert steps and all(a["loads"] <= 1 for a in steps)  # loaded at most once per actor, however many runs
        assert sum(a["finished"] for a in steps) == 4
        assert any(a["warm"] for a in steps)
        assert {n["id"] for n in status["nodes"] if n["alive"]} >= {a["node"] for a in steps}
        # The same from another process, through the CLI (it joins the cluster the way a user would).
        shown = subprocess.run([sys.executable, "-m", "orchestrator.cli", "cluster", "status", "--json",
                                "--address", settings.runner.address], capture_output=True, text=True, timeout=120,
                               cwd=REPO, env={**os.environ, "ANYMODA_HOME": str(settings.home)})
        assert shown.returncode == 0, shown.stderr[-2000:]
        from_cli = json.loads(shown.stdout)
        assert sum(n["alive"] for n in from_cli["nodes"]) == 2
        assert [a for a in from_cli["actors"] if a["tool"] == "stub-steps" and a["warm"]]
        assert from_cli["queue_depth"] == 0
    finally:
        orch.runner.shutdown()
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if "stub-steps" in a["name"]]


def test_placement_follows_each_tools_resources(settings):
    from orchestrator.backends.locations import ExpertResources
    from orchestrator.distributed.cluster_status import cluster_status

    runner = dataclasses.replace(settings.runner, resources={
        "stub-paint": ExpertResources(num_gpus=1),            # no node here has a GPU
        "stub-wait": ExpertResources(num_cpus=0.5, memory=64 * 2**20)})
    orch = orchestrator(dataclasses.replace(settings, runner=runner))
    try:
        result = orch.run("r", plan={"tasks": [wait("w", "red"), {"id": "p", "tool": "stub-paint", "args": {"text": "<w>"}}]})
        assert result.tasks["w"].status == "done"
        assert result.tasks["p"].status in ("failed", "unavailable")
        assert "no live node of the Ray cluster can hold stub-paint" in result.tasks["p"].error
        assert "(it needs num_cpus=0, num_gpus=1)" in result.tasks["p"].error
        waits = [a for a in cluster_status(runner.namespace)["actors"] if a["tool"] == "stub-wait"]
        assert waits and all(a["pool_budget"] == 64 * 2**20 for a in waits)  # Ray's reservation is the pool's budget
    finally:
        orch.runner.shutdown()


def test_shared_experts_serve_every_front_end_and_outlive_them(settings):
    import ray

    from orchestrator.distributed.cluster_status import cluster_status

    runner = dataclasses.replace(settings.runner, shared_experts=True, namespace="anymoda-shared")
    shared = dataclasses.replace(settings, runner=runner)
    first, second = orchestrator(shared), orchestrator(shared)
    steps = {"tasks": [{"id": "s", "tool": "stub-steps", "args": {"steps": 3}}]}
    try:
        assert first.run("first", plan=steps).status == "done"
        first.runner.shutdown()  # the first front end leaves; its experts stay for the others
        events = list(second.stream("second", plan=steps))
        assert [e.data["done"] for e in events if e.type == "task_progress"] == [1, 2, 3]  # to the second front end
        actors = [a for a in cluster_status("anymoda-shared")["actors"] if a["tool"] == "stub-steps"]
        nodes = sum(1 for n in ray.nodes() if n["Alive"])
        assert len(actors) == nodes  # one per node, shared: not one set per front end
        assert sum(a["finished"] for a in actors) == 2 and sum(a["loads"] for a in actors) <= 2
        second.runner.shutdown()
        assert len([a for a in cluster_status("anymoda-shared")["actors"] if a["tool"] == "stub-steps"]) == nodes
    finally:
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "cluster", "stop-experts", "--address",
                               settings.runner.address, "--namespace", "anymoda-shared"], capture_output=True,
                              text=True, timeout=120, cwd=REPO, env={**os.environ, "ANYMODA_HOME": str(settings.home)})
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr[-2000:]
    deadline = time.monotonic() + 30
    while cluster_status("anymoda-shared")["actors"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not cluster_status("anymoda-shared")["actors"]


def test_cancel_reaches_the_cluster(settings):
    orch = orchestrator(settings)
    events = []
    try:
        worker = threading.Thread(target=lambda: events.extend(orch.stream("slow", plan={"tasks": [
            wait(f"slow{i}", "never", 30) for i in range(2)]})))
        worker.start()
        deadline = time.monotonic() + 60
        while not any(e.type == "task_started" for e in events) and time.monotonic() < deadline:
            time.sleep(0.05)
        run_id = events[0].run
        time.sleep(0.5)
        started = time.monotonic()
        orch.cancel(run_id)
        worker.join(30)
        assert not worker.is_alive() and time.monotonic() - started < 10
        assert orch.journal.get_run(run_id).status == "cancelled"
    finally:
        orch.runner.shutdown()


def test_a_worker_node_killed_mid_run_the_run_finishes_and_keeps_finished_tasks(cluster, settings):
    import ray

    local = cluster["cluster"]
    worker_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"])
    settings = dataclasses.replace(settings, runner=dataclasses.replace(settings.runner, replicas_per_node=2))
    orch = orchestrator(settings)
    quick = [wait(f"q{i}", f"quick {i}", 0.1) for i in range(4)]
    slow = [wait(f"s{i}", f"slow {i}", 4.0, a=f"<q{i % 4}>") for i in range(6)]
    plan = {"tasks": [*quick, *slow, {"id": "end", "tool": "stub-wait", "args": {"label": "end", "a": "<s0>", "b": "<s5>"}}]}
    killed_at = None
    events = []
    try:
        for event in orch.stream("survive", plan=plan):
            events.append(event)
            started_slow = {e.task for e in events if e.type == "task_started" and e.task.startswith("s")}
            if killed_at is None and len(started_slow) == 6:
                time.sleep(1.0)  # the slow tasks are running on both nodes
                tracked = orch.runner._tracked
                on_worker = [t for t in started_slow
                             if tracked and any(tr.replica.node == worker_node for tr in tracked.values())]
                assert on_worker, "no slow task was running on the worker node"
                local.kill(cluster["worker"])
                killed_at = time.monotonic()
        run_id = events[0].run
        result = orch.result(run_id)
        assert result.status == "done", (result.error, result.failures)
        assert killed_at is not None
        # Every quick task finished before the kill and was kept: run once, never again.
        for task in quick:
            assert result.tasks[task["id"]].attempts == 1
        retried = [t for t, r in result.tasks.items() if r.attempts > 1]
        assert retried and all(t.startswith("s") for t in retried)
        assert any(e.type == "task_retry" and "lost" in (e.data.get("error") or "") for e in events)
        # After the kill everything ran on the head; each task's outputs are exactly one artifact each.
        head = next(n["NodeID"] for n in ray.nodes() if n["Alive"])
        assert all(orch.runner.placements[f"{run_id}/{t}"] == head for t in retried)
        outputs = Counter(a.task for a in orch.store.list(session=result.session, limit=10_000))
        finished_ids = {r.outputs["text"] for r in result.tasks.values()}
        assert len(finished_ids) == len(result.tasks)
        for artifact_id in finished_ids:
            assert orch.store.read_bytes(artifact_id, session=result.session)
        assert all(outputs[f"{run_id}/{q['id']}"] == 1 for q in quick)
    finally:
        orch.runner.shutdown()


def test_the_ray_runner_without_a_cluster_is_a_one_line_error(tmp_path, monkeypatch):
    from orchestrator.distributed import ray_runner

    monkeypatch.setattr(ray_runner.ray, "is_initialized", lambda: False)

    def refuse(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.\nmore detail")

    monkeypatch.setattr(ray_runner.ray, "init", refuse)
    settings = Settings.from_dict({"home": str(tmp_path), "runner": {"kind": "ray", "address": "127.0.0.1:1"}})
    orch = orchestrator(settings)  # built without the cluster: showing or cancelling runs does not need it
    result = orch.run("r", plan={"tasks": [wait("t", "x")]})
    assert result.status == "failed"
    assert result.error.startswith("cannot join the Ray cluster at runner.address = '127.0.0.1:1'")
    assert "\n" not in result.error
    with pytest.raises(ConfigError, match="cannot join"):
        orch.runner.submit(None)


def test_choosing_ray_without_the_extra_names_the_extra(tmp_path):
    script = ("import sys; sys.modules['ray'] = None\n"
              "from orchestrator.config import Settings\n"
              "from orchestrator.distributed import build_runner\n"
              "from orchestrator.tooling.registry import ToolRegistry\n"
              "from orchestrator.errors import ConfigError\n"
              f"settings = Settings.from_dict({{'home': {str(tmp_path)!r}, 'runner': {{'kind': 'ray'}}}})\n"
              "try:\n    build_runner(settings, ToolRegistry(), None)\nexcept ConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'ray' extra" in done.stdout and 'pip install -e ".[ray]"' in done.stdout and done.stdout.count("\n") == 1


def test_a_node_that_joins_gets_replicas_and_a_lost_task_follows_the_runs_retry_policy(cluster, settings):
    """Runs after the kill above: a fresh worker joins; with one attempt allowed, the tasks lost with it fail
    (reported as lost) while the head's finish: the run's retry policy, not Ray, decides."""
    import ray

    from orchestrator.execution.executor import ExecutionPolicy, RetryPolicy

    local = cluster["cluster"]
    joined = local.add_worker()
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    local.wait_for_nodes(alive + 1)
    new_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"])
    orch = Orchestrator(settings=settings, registry=ToolRegistry(ray_stub_tools.TOOLS), planner=None,
                        composer=Composer(None), policy=ExecutionPolicy(retry=RetryPolicy(attempts=1)))
    events = []
    try:
        for event in orch.stream("once", plan={"tasks": [wait(f"s{i}", f"slow {i}", 4.0) for i in range(4)]}):
            events.append(event)
            if sum(e.type == "task_started" for e in events) == 4 and joined.poll() is None:
                time.sleep(1.0)
                on_new = [t for t in orch.runner._tracked.values() if t.replica.node == new_node]
                assert on_new, orch.runner.replicas()  # the joined node got replicas and work
                local.kill(joined)
        result = orch.result(events[0].run)
        lost = [t for t, r in result.tasks.items() if r.status == "failed"]
        assert result.status == "partial" and lost, result.tasks
        assert all("lost" in result.tasks[t].error and result.tasks[t].attempts == 1 for t in lost)
        assert all(r.status == "done" for t, r in result.tasks.items() if t not in lost)
    finally:
        orch.runner.shutdown()
