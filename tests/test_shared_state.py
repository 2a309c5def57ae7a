"""Two front-end processes with separate homes share one PostgreSQL + S3-compatible state (real servers
on loopback): a run one of them started is resumed, and shown, by the other (after an approval stop
and after a kill -9 mid-run), and two tenants' sessions stay isolated in the shared store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from shared_servers import new_bucket, new_database, postgres_server, require_extra, s3_server

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CHILD = TESTS / "shared_state_child.py"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def servers():
    require_extra()
    with postgres_server() as admin_url, s3_server() as s3_env:
        yield {"postgres": admin_url, "bucket": new_bucket(s3_env), "env": s3_env}


@pytest.fixture
def front_ends(servers, tmp_path):
    """Two homes (two machines, as far as anymoda can tell) with the same shared-state config."""
    database = new_database(servers["postgres"])
    store = f"s3://{servers['bucket']}/{tmp_path.name[-20:].lower().replace('_', '-')}"
    homes = []
    for name in ("front-a", "front-b"):
        home = tmp_path / name
        home.mkdir()
        (home / "config.toml").write_text(f'store = "{store}"\ndatabase = "{database}"\noffline = true\n'
                                          'memory_budget = "1GiB"\n')
        homes.append(home)
    return homes, servers["env"]


def env_for(home: Path, s3_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **s3_env, "ANYMODA_HOME": str(home), "ANYMODA_CONFIG": str(home / "config.toml"),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def child(home: Path, s3_env: dict, command: str, argument: dict) -> dict:
    done = subprocess.run([sys.executable, str(CHILD), command, json.dumps(argument)], env=env_for(home, s3_env),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait(task_id: str, label: str, seconds: float = 0.0, **args) -> dict:
    return {"id": task_id, "tool": "stub-wait", "args": {"label": label, "seconds": seconds, **args}}


PLAN = {"tasks": [wait("colour", "red"), {"id": "paint", "tool": "stub-paint", "args": {"text": "<colour>"}},
                  wait("note", "hello")]}


def test_a_run_waiting_for_approval_in_one_front_end_is_resumed_and_shown_by_the_other(front_ends):
    (home_a, home_b), s3_env = front_ends
    started = child(home_a, s3_env, "run", {"request": "paint", "plan": PLAN, "approve_before": ["stub-paint"]})
    run_id = started["run"]
    assert started["status"] == "awaiting_approval" and "approval_needed" in started["events"]

    resumed = child(home_b, s3_env, "resume", {"run": run_id, "approve": True, "approve_before": ["stub-paint"]})
    assert resumed["status"] == "done", resumed
    assert resumed["tasks"]["colour"]["attempts"] == 1 and resumed["tasks"]["paint"]["status"] == "done"

    # Shown by the first front end's CLI, from its own home: the same run, as the second one finished it. Its
    # config names a Ray cluster that is not there: showing a run must not need one.
    shown = subprocess.run([sys.executable, "-m", "orchestrator.cli", "runs", "show", run_id, "--json"],
                           env={**env_for(home_a, s3_env), "ANYMODA_RUNNER": "ray", "ANYMODA_RAY_ADDRESS": "127.0.0.1:1"},
                           capture_output=True, text=True, timeout=180, cwd=REPO)
    assert shown.returncode == 0, shown.stderr[-3000:]
    record = json.loads(shown.stdout)
    assert record["status"] == "done"
    image_id = resumed["tasks"]["paint"]["outputs"]["image"]
    assert image_id in json.dumps(record)
    # Neither home holds the state: no SQLite files, no local blobs.
    for home in (home_a, home_b):
        assert not list(home.glob("*.sqlite")) and not list(home.glob("artifacts/blobs/*/*"))


def test_a_run_killed_mid_way_in_one_front_end_is_resumed_by_the_other_without_rerunning(front_ends):
    (home_a, home_b), s3_env = front_ends
    plan = {"tasks": [wait("one", "one", 0.1), wait("two", "two", 0.1),
                      wait("slow", "slow", 5, a="<one>"), wait("four", "four", 0.1, a="<slow>", b="<two>")]}
    process = subprocess.Popen([sys.executable, str(CHILD), "run", json.dumps({"request": "crash", "plan": plan})],
                               env=env_for(home_a, s3_env), stdout=subprocess.PIPE, text=True)
    run_id, started = None, set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, "the first front end ended early"
        event = json.loads(line)
        run_id = run_id or event.get("run")
        if event.get("event") == "task_started":
            started.add(event["task"])
        if "slow" in started:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()

    resumed = child(home_b, s3_env, "resume", {"run": run_id})
    assert resumed["status"] == "done", resumed
    tasks = resumed["tasks"]
    assert tasks["one"]["resumed"] and tasks["two"]["resumed"]  # finished before the kill: kept, not re-run
    assert not tasks["slow"]["resumed"] and tasks["four"]["status"] == "done"

    from orchestrator.config import Settings
    from orchestrator.execution.state import open_store

    os.environ.update(s3_env)
    store = open_store(Settings.load(home_b / "config.toml", env={"ANYMODA_HOME": str(home_b)}))
    made = Counter(a.task for a in store.list(session=run_id, limit=1000))
    assert made[f"{run_id}/one"] == made[f"{run_id}/two"] == made[f"{run_id}/four"] == 1
    assert store.load(tasks["four"]["outputs"]["text"], session=run_id) == "four | slow | one | two"


def test_two_tenants_sessions_stay_isolated_in_the_shared_store(front_ends):
    (home_a, home_b), s3_env = front_ends
    alice = child(home_a, s3_env, "session-put", {"session": "tenant-alice", "text": "alice's secret"})["id"]
    bob = child(home_b, s3_env, "session-put", {"session": "tenant-bob", "text": "bob's note"})["id"]
    alice_run = child(home_a, s3_env, "run", {"request": "r", "plan": {"tasks": [wait("t", "alice's run")]},
                                              "session": "tenant-alice"})["run"]

    as_bob = child(home_b, s3_env, "session-read", {"session": "tenant-bob", "ids": [alice, bob], "runs": [alice_run]})
    assert as_bob["found"] == {alice: "error: ArtifactNotFoundError", bob: "bob's note"}
    assert as_bob["listed"] == [bob] and as_bob["history"] == []
    assert as_bob["runs"][alice_run].startswith("error")

    as_alice = child(home_b, s3_env, "session-read", {"session": "tenant-alice", "ids": [alice, bob], "runs": [alice_run]})
    assert as_alice["found"] == {alice: "alice's secret", bob: "error: ArtifactNotFoundError"}
    assert alice in as_alice["listed"] and bob not in as_alice["listed"]
    assert as_alice["runs"][alice_run] == "done" and as_alice["history"] == [alice_run]


def test_a_run_driven_by_one_front_end_is_cancelled_from_the_other_and_resumed_there(front_ends):
    (home_a, home_b), s3_env = front_ends
    plan = {"tasks": [wait("quick", "quick", 0.1), wait("slow1", "slow", 4, a="<quick>"), wait("slow2", "slow", 4)]}
    process = subprocess.Popen([sys.executable, str(CHILD), "run", json.dumps({"request": "cancel me", "plan": plan})],
                               env=env_for(home_a, s3_env), stdout=subprocess.PIPE, text=True)
    run_id, started = None, set()
    try:
        while "slow1" not in started:
            event = json.loads(process.stdout.readline())
            run_id = run_id or event.get("run")
            if event.get("event") == "task_started":
                started.add(event["task"])
        asked = time.monotonic()
        cancelled = subprocess.run([sys.executable, "-m", "orchestrator.cli", "runs", "cancel", run_id],
                                   env=env_for(home_b, s3_env), capture_output=True, text=True, timeout=120, cwd=REPO)
        assert cancelled.returncode == 0, cancelled.stderr[-2000:]
        assert "asked the process driving" in cancelled.stdout
        events = [json.loads(line) for line in process.stdout]
        assert events[-1]["status"] == "cancelled", events[-1]
        assert "task_cancelled" in events[-1]["events"]
    finally:
        process.wait(60)
    assert time.monotonic() - asked < 30

    resumed = child(home_b, s3_env, "resume", {"run": run_id})
    assert resumed["status"] == "done", resumed
    assert resumed["tasks"]["quick"]["resumed"] and resumed["tasks"]["slow1"]["status"] == "done"
