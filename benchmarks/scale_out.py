"""Scale-out: the same batch of runs on the thread pool, on Ray with one node and on Ray with two nodes.

Workload: ``--runs`` runs, each ``--width`` stub-wait tasks of ``--seconds`` in parallel and a join that
takes their outputs (so the figure measures the engine, not the cores: the tasks sleep). Every
configuration has the same capacity per machine: the thread pool runs ``--slots`` tasks at once, and
each Ray node holds one actor per expert that runs ``--slots`` tasks at once, so two nodes have twice
the capacity of one. Runs are driven by ``--drivers`` threads at once through the real executor,
journal and store (the embedded SQLite + local blobs: every node here shares this machine's disk).

Printed per configuration: runs/s, the speed-up over one Ray node, and lost or duplicated artifacts
(every task's output must exist, be readable, and be the only artifact its task made). Then the
per-task overhead: ``--probes`` tasks of 0 s, one at a time, submit to outcome, p50 and p90, on the
thread pool and on Ray. Targets: Ray per-task overhead under 10 ms at p50; two nodes at least 1.8x
one node; zero lost or duplicated artifacts.

    python benchmarks/scale_out.py --quick     # under 10 minutes; starts and stops its own local cluster
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.backends.locations import RunnerSettings  # noqa: E402
from orchestrator.config import Settings  # noqa: E402
from orchestrator.execution.executor import ExecutionPolicy, PlanExecutor  # noqa: E402
from orchestrator.execution.journal import RunJournal, new_run_id  # noqa: E402
from orchestrator.execution.runner import LocalTaskRunner, TaskSpec  # noqa: E402
from orchestrator.planning.plan import Plan, validate_plan  # noqa: E402
from orchestrator.storage.store import ArtifactStore  # noqa: E402
from orchestrator.tooling.registry import ToolRegistry  # noqa: E402
from orchestrator.tooling.stub_tools import STUB_TOOLS  # noqa: E402

SESSION = "bench"


def plan_of(width: int, seconds: float) -> dict:
    fan = [{"id": f"w{i}", "tool": "stub-wait", "args": {"label": f"w{i}", "seconds": seconds}} for i in range(width)]
    join_args = {"label": "join", "seconds": seconds}
    join_args.update({name: f"<w{i}>" for i, name in enumerate("abcd"[:width])})
    return {"tasks": [*fan, {"id": "join", "tool": "stub-wait", "args": join_args}]}


def run_batch(runner, journal: RunJournal, store: ArtifactStore, registry: ToolRegistry, args) -> dict:
    validated = validate_plan(Plan.from_json(plan_of(args.width, args.seconds)), registry)
    executor = PlanExecutor(runner, journal, store, policy=ExecutionPolicy())

    def one(_: int) -> tuple[str, dict]:
        run_id = new_run_id()
        journal.create_run(run_id, SESSION, "bench", [])
        return run_id, executor.execute(run_id, SESSION, validated)

    # A warm-up run per configuration: actors start and models load before the clock does.
    one(0)
    started = time.perf_counter()
    with ThreadPoolExecutor(args.drivers) as pool:
        results = list(pool.map(one, range(args.runs)))
    elapsed = time.perf_counter() - started
    made = Counter(a.task for a in store.list(session=SESSION, limit=1_000_000))
    lost = duplicated = failed = 0
    for run_id, tasks in results:
        for task_id, result in tasks.items():
            if result.status != "done":
                failed += 1
                continue
            for artifact_id in result.outputs.values():
                try:
                    store.read_bytes(artifact_id, session=SESSION)
                except Exception:  # noqa: BLE001 - counted
                    lost += 1
            duplicated += max(0, made[f"{run_id}/{task_id}"] - 1)
    return {"seconds": elapsed, "runs_per_s": args.runs / elapsed, "lost": lost, "duplicated": duplicated,
            "failed": failed}


def probe_overhead(runner, probes: int) -> list[float]:
    """Submit-to-outcome of 0 s tasks, one at a time, in ms."""
    spec = lambda i: TaskSpec(new_run_id(), f"p{i}", "stub-wait", {"seconds": 0.0, "label": "probe"}, SESSION)  # noqa: E731
    for i in range(5):  # warm
        runner.submit(spec(i)).result()
    times = []
    for i in range(probes):
        started = time.perf_counter()
        outcome = runner.submit(spec(i)).result()
        times.append((time.perf_counter() - started) * 1000)
        assert outcome.ok, outcome.error
    return times


def state(root: Path) -> tuple[Settings, RunJournal, ArtifactStore]:
    settings = Settings.from_dict({"home": str(root), "offline": True, "memory_budget": "1GiB"})
    return settings, RunJournal(root / "runs.sqlite"), ArtifactStore(settings.store_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller batch (under 10 minutes here)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--width", type=int, default=4, choices=range(1, 5))
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--drivers", type=int, default=None)
    parser.add_argument("--probes", type=int, default=None)
    args = parser.parse_args()
    # A batch ends with joins waiting for their fan-outs, one task length in which capacity idles whatever the
    # engine: the batch must be long enough for that tail not to decide the ratio between one and two nodes.
    args.runs = args.runs or (24 if args.quick else 64)
    args.drivers = args.drivers or 4 * args.slots // args.width + 4
    args.probes = args.probes or (30 if args.quick else 100)
    if not (1 <= args.runs <= 1000 and 0 <= args.seconds <= 10 and 1 <= args.slots <= 64 and 1 <= args.drivers <= 64):
        parser.error("runs 1-1000, seconds 0-10, slots 1-64, drivers 1-64")
    registry = ToolRegistry(STUB_TOOLS)
    rows: dict[str, dict] = {}
    overhead: dict[str, list[float]] = {}
    work = Path(tempfile.mkdtemp(prefix="anymoda-scale-"))
    print(f"{args.runs} runs of {args.width} x {args.seconds:g} s tasks + a join; {args.slots} tasks at once per "
          f"machine; {args.drivers} driver threads", flush=True)

    settings, journal, store = state(work / "pool")
    runner = LocalTaskRunner(registry, store, settings=settings, max_workers=args.slots)
    rows["thread pool"] = run_batch(runner, journal, store, registry, args)
    overhead["thread pool"] = probe_overhead(runner, args.probes)
    runner.shutdown()

    import ray

    from orchestrator.distributed.local_cluster import LocalRayCluster
    from orchestrator.distributed.ray_runner import RayTaskRunner

    python_path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    with LocalRayCluster(num_cpus=1, env={"PYTHONPATH": python_path}) as cluster:
        cluster.start_head()
        ray.init(address=cluster.address, namespace="anymoda-bench", log_to_driver=False)
        try:
            cluster.wait_for_nodes(1)
            for nodes in (1, 2):
                if nodes == 2:
                    cluster.add_worker()
                    cluster.wait_for_nodes(2)
                settings, journal, store = state(work / f"ray{nodes}")
                runner = RayTaskRunner(registry, settings, runner=RunnerSettings(
                    kind="ray", address=cluster.address, replicas_per_node=1, slots=args.slots, namespace="anymoda-bench"))
                label = f"ray, {nodes} node{'s' if nodes > 1 else ''}"
                rows[label] = run_batch(runner, journal, store, registry, args)
                used = {node for node in runner.placements.values()}
                rows[label]["nodes used"] = len(used)
                if nodes == 1:
                    overhead["ray"] = probe_overhead(runner, args.probes)
                runner.shutdown()
        finally:
            ray.shutdown()

    one_node = rows["ray, 1 node"]["runs_per_s"]
    print(f"\n{'configuration':<16} {'seconds':>8} {'runs/s':>8} {'vs 1 node':>10} {'lost':>5} {'dup':>5} {'failed':>7}")
    for label, row in rows.items():
        print(f"{label:<16} {row['seconds']:8.2f} {row['runs_per_s']:8.2f} {row['runs_per_s'] / one_node:9.2f}x "
              f"{row['lost']:5d} {row['duplicated']:5d} {row['failed']:7d}")
    pool_p50 = statistics.median(overhead["thread pool"])
    ray_p50 = statistics.median(overhead["ray"])
    print(f"\nper-task round trip of a 0 s task (submit -> outcome, {args.probes} one at a time):")
    for label, times in overhead.items():
        q = statistics.quantiles(times, n=10)
        print(f"  {label:<12} p50 {statistics.median(times):6.2f} ms   p90 {q[-1]:6.2f} ms")
    print(f"  Ray overhead over the thread pool at p50: {ray_p50 - pool_p50:.2f} ms (target < 10 ms)")
    speedup = rows["ray, 2 nodes"]["runs_per_s"] / one_node
    lost = sum(r["lost"] + r["duplicated"] + r["failed"] for r in rows.values())
    verdicts = [("Ray per-task overhead < 10 ms at p50", ray_p50 - pool_p50 < 10),
                ("two nodes >= 1.8x one node", speedup >= 1.8), ("zero lost, duplicated or failed", lost == 0)]
    for name, ok in verdicts:
        print(f"  {'PASS' if ok else 'MISS'}  {name}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
