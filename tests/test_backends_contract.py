"""The artifact store and run journal hold the same guarantees on every back end: the embedded
SQLite + local folder, and PostgreSQL + S3-compatible object storage (real servers on loopback)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import ArtifactNotFoundError, ConfigError, InvalidInputError
from orchestrator.execution.journal import LeaseLostError, RunBusyError, RunJournal, new_run_id
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.store import ArtifactStore

from shared_servers import new_bucket, new_database, postgres_server, require_extra, s3_server

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000"
                        "00030101001860e20f0000000049454e44ae426082")
BACKENDS = ["sqlite+local", "postgres+s3"]


@pytest.fixture(scope="module")
def servers():
    require_extra()
    with postgres_server() as admin_url, s3_server() as s3_env:
        saved = {k: os.environ.get(k) for k in s3_env}
        os.environ.update(s3_env)
        try:
            yield {"postgres": admin_url, "bucket": new_bucket(s3_env), **s3_env}
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class State:
    """How to open (and reopen, from another process) one back end's store and journal."""

    def __init__(self, backend: str, tmp_path: Path, servers: dict | None):
        self.backend = backend
        self.tmp_path = tmp_path
        if backend == "postgres+s3":
            self.database_url = new_database(servers["postgres"])
            self.store_url = f"s3://{servers['bucket']}/contract-{secrets.token_hex(4)}"

    def store(self) -> ArtifactStore:
        if self.backend == "sqlite+local":
            return ArtifactStore(self.tmp_path / "store")
        from orchestrator.backends.postgres import PostgresDatabase
        from orchestrator.backends.s3_blobs import S3BlobStore

        return ArtifactStore(blobs=S3BlobStore(self.store_url, self.tmp_path / "cache"),
                             database=PostgresDatabase(self.database_url))

    def journal(self) -> RunJournal:
        if self.backend == "sqlite+local":
            return RunJournal(self.tmp_path / "runs.sqlite")
        from orchestrator.backends.postgres import PostgresDatabase

        return RunJournal(database=PostgresDatabase(self.database_url))


    def checkpointer(self):
        if self.backend == "sqlite+local":
            from orchestrator.backends.sqlite import SqliteState

            return SqliteState(self.tmp_path / "home").checkpointer()
        from orchestrator.backends.postgres import postgres_checkpointer

        return postgres_checkpointer(self.database_url)


@pytest.fixture(params=BACKENDS)
def state(request, tmp_path):
    servers = request.getfixturevalue("servers") if request.param != "sqlite+local" else None
    return State(request.param, tmp_path, servers)


@pytest.fixture
def store(state):
    store = state.store()
    yield store
    store.close()


@pytest.fixture
def journal(state):
    journal = state.journal()
    yield journal
    journal.close()


def all_rows_readable(store: ArtifactStore) -> int:
    """Every indexed artifact's bytes are there and match their digest; returns how many rows."""
    rows = store.list(limit=100_000)
    for artifact in rows:
        assert hashlib.sha256(store.read_bytes(artifact.id)).hexdigest() == artifact.sha256
    return len(rows)


# ------------------------------------------------------------------------------------------ store


def test_put_get_round_trip_and_content_addressing(store):
    first = store.put_value("text", "hello", session="s1", task="run-x/t1")
    again = store.put_value("text", "hello", session="s1")
    assert first.id != again.id and first.sha256 == again.sha256 == hashlib.sha256(b"hello").hexdigest()
    got = store.get(first.id, session="s1")
    assert (got.kind, got.size, got.session, got.task) == (ArtifactKind.TEXT, 5, "s1", "run-x/t1")
    assert store.load(first.id, session="s1") == "hello"
    assert sum(1 for digest, _ in store.blobs.ages() if digest == first.sha256) == 1  # one blob for both rows
    assert store.count() == 2
    assert store.blob_path(first.id).read_bytes() == b"hello"


def test_validation_happens_before_anything_is_written(store):
    blobs_before = {digest for digest, _ in store.blobs.ages()}
    with pytest.raises(InvalidInputError):
        store.put("image", b"\x89PNG\r\n\x1a\n but not really a png")
    with pytest.raises(InvalidInputError):
        store.put("text", b"ok", metadata={"bad": float("nan")})
    with pytest.raises(ArtifactNotFoundError):
        store.put("text", b"orphan child", parents=["text-0123456789abcdef"])
    assert store.count() == 0
    assert {digest for digest, _ in store.blobs.ages()} == blobs_before
    image = store.put("image", PNG_1x1)
    assert image.metadata["width"] == 1 and image.mime == "image/png"


def test_sessions_are_isolated(store):
    mine = store.put_value("text", "mine", session="alice")
    theirs = store.put_value("text", "theirs", session="bob")
    shared = store.put_value("text", "everyone's")
    assert store.exists(mine.id, session="alice") and not store.exists(mine.id, session="bob")
    with pytest.raises(ArtifactNotFoundError, match="session 'bob'"):
        store.read_bytes(mine.id, session="bob")
    assert store.exists(shared.id, session="bob")
    assert [a.id for a in store.list(session="alice")] == [mine.id]
    assert [a.id for a in store.list(session="bob")] == [theirs.id]
    with pytest.raises(ArtifactNotFoundError):  # bob cannot derive from alice's artifact
        store.put_value("text", "stolen", session="bob", parents=[mine.id])
    assert store.count() == 3


def test_lineage_nearest_first_and_hidden_across_sessions(store):
    root = store.put_value("text", "root")
    middle = store.put_value("text", "middle", session="alice", parents=[root.id])
    leaf = store.put_value("text", "leaf", session="alice", parents=[middle.id])
    assert store.get(leaf.id, session="alice").parents == (middle.id,)
    assert [a.id for a in store.ancestors(leaf.id, session="alice")] == [middle.id, root.id]
    both = store.put_value("text", "both", session="alice", parents=[root.id, middle.id])
    assert store.get(both.id, session="alice").parents == (root.id, middle.id)  # in the order given
    summary = store.put_value("text", "summary", parents=[middle.id])  # sessionless, derived from alice's
    assert [a.id for a in store.ancestors(summary.id, session="bob")] == [root.id]
    assert [a.id for a in store.ancestors(summary.id)] == [middle.id, root.id]


def test_list_order_newest_and_limits(store):
    made = [store.put_value("text", f"n{i}", session="s").id for i in range(5)]
    assert [a.id for a in store.list(session="s")] == made
    assert [a.id for a in store.list(session="s", limit=2, newest=True)] == made[-2:]
    assert [a.id for a in store.list(session="s", kind="image")] == []


def test_corrupted_or_missing_bytes_are_reported(store, tmp_path):
    artifact = store.put_value("text", "precious")
    store.blobs.write(artifact.sha256, b"tampered")
    with pytest.raises(InvalidInputError, match="corrupted"):
        store.read_bytes(artifact.id)
    store.blobs.delete(artifact.sha256)
    with pytest.raises(InvalidInputError, match="missing"):
        store.read_bytes(artifact.id)


def test_collect_garbage_removes_orphans_and_keeps_referenced_blobs(store):
    kept = store.put_value("text", "kept")
    orphan = store._write_blob(b"blob written, row never inserted (a crash)")
    assert store.collect_garbage(grace_seconds=3600) == 0  # young: another writer may be about to index it
    assert store.collect_garbage(grace_seconds=0) == 1
    assert orphan not in {digest for digest, _ in store.blobs.ages()}
    assert store.read_bytes(kept.id) == b"kept"


def test_an_old_blob_stored_again_is_made_young_so_garbage_collection_spares_it(store, monkeypatch):
    import sys
    import types

    data = b"same content as a new upload"
    orphan = store._write_blob(data)  # left long ago by a crash between blob and row
    if hasattr(store.blobs, "path"):  # a local file: it can simply be aged
        past = time.time() - 7200
        os.utime(store.blobs.path(orphan), (past, past))
        assert dict(store.blobs.ages())[orphan] > 7000
        reused = store.put("text", data)  # another writer stores the same bytes
    else:
        # An hour later, as far as the blob store can tell. Object stores keep no writable mtime, so making the
        # blob young means rewriting it: its LastModified must move.
        client, key = store.blobs._client, store.blobs._key(orphan)
        before = client.head_object(Bucket=store.blobs.place.bucket, Key=key)["LastModified"]
        time.sleep(1.1)  # LastModified has one-second resolution
        module = sys.modules[type(store.blobs).__module__]
        monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: time.time() + 3600))
        assert dict(store.blobs.ages())[orphan] > 3500
        reused = store.put("text", data)
        monkeypatch.undo()
        assert client.head_object(Bucket=store.blobs.place.bucket, Key=key)["LastModified"] > before
    assert reused.sha256 == orphan
    assert dict(store.blobs.ages())[orphan] < 60
    assert store.collect_garbage(grace_seconds=1800) == 0
    assert store.read_bytes(reused.id) == data


def test_export_writes_the_bytes(store, tmp_path):
    artifact = store.put_value("text", "out")
    target = store.export(artifact.id, f"{tmp_path}/exported/")
    assert target.read_bytes() == b"out" and target.name == f"{artifact.id}.txt"


def test_threads_write_concurrently_without_loss(store):
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(10):
                store.put_value("text", f"w{worker}-{i}", session=f"s{worker % 2}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert store.count() == 60 and all_rows_readable(store) == 60
    assert len({a.id for a in store.list(limit=1000)}) == 60


def _put_forever(state: State, ready) -> None:
    store = state.store()
    ready.set()
    i = 0
    while True:
        store.put_value("text", f"crash test {os.getpid()} {i} " + "x" * (i % 5000), session="crash")
        i += 1


def test_a_writer_killed_mid_put_never_leaves_a_row_without_its_bytes(state):
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        ready = context.Event()
        child = context.Process(target=_put_forever, args=(state, ready))
        child.start()
        assert ready.wait(60)
        time.sleep(0.4 + 0.3 * round_)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    store = state.store()
    assert all_rows_readable(store) > 0
    store.close()


# ------------------------------------------------------------------------------------------ journal


def test_runs_round_trip_in_order_and_by_session(journal):
    first, second, other = new_run_id(), new_run_id(), new_run_id()
    journal.create_run(first, "alice", "describe", ["image-0123456789abcdef"])
    journal.create_run(second, "alice", "then read it", [])
    journal.create_run(other, "bob", "bob's", [])
    journal.update_run(first, status="done", plan={"tasks": []}, answer="a cat", answer_artifacts=["text-0123456789abcdef"])
    record = journal.get_run(first, session="alice")
    assert (record.status, record.plan, record.answer, record.answer_artifacts) == ("done", {"tasks": []}, "a cat",
                                                                                    ("text-0123456789abcdef",))
    assert record.inputs == ("image-0123456789abcdef",)
    assert [r.id for r in journal.runs(session="alice")] == [first, second]
    assert [r.id for r in journal.runs(limit=2)] == [second, other]
    with pytest.raises(InvalidInputError, match="no run"):
        journal.get_run(first, session="bob")
    with pytest.raises(ValueError):
        journal.update_run(first, status="exploded")


def test_tasks_record_attempts_outputs_and_repairs(journal):
    run = new_run_id()
    journal.create_run(run, "s", "r", [])
    journal.task_started(run, "t1", "stub-wait", {"seconds": 0}, 1)
    journal.task_started(run, "t2", "stub-wait", {}, 1)
    journal.task_started(run, "t1", "stub-wait", {"seconds": 0}, 2)
    journal.task_finished(run, "t1", "stub-wait", "done", attempts=1, outputs={"text": "text-0123456789abcdef"},
                          model="wait")
    journal.task_repaired(run, "t2", {"tool": "stub-wait", "arguments": {}, "error": "bad"})
    tasks = journal.tasks(run)
    assert [t.task for t in tasks] == ["t1", "t2"]
    assert (tasks[0].status, tasks[0].attempts, tasks[0].outputs) == ("done", 2, {"text": "text-0123456789abcdef"})
    assert tasks[1].detail["repairs"][0]["error"] == "bad"
    journal.forget_unfinished_tasks(run)
    assert [t.task for t in journal.tasks(run)] == ["t1"]  # t2 was left running


def test_session_summaries(journal):
    assert journal.summary("s") is None
    journal.set_summary("s", "one", "run-0000000000000001")
    journal.set_summary("s", "two", "run-0000000000000002")
    assert journal.summary("s") == ("two", "run-0000000000000002")


def test_a_second_driver_is_refused_and_a_stalled_one_is_fenced_out(state):
    first, second = state.journal(), state.journal()
    run = new_run_id()
    first.create_run(run, "s", "r", [])
    lease = first.lease(run, 0.6)
    lease.__enter__()
    with pytest.raises(RunBusyError, match="being driven by process"):
        with second.lease(run, 0.6):
            pass
    lease._stop.set()  # the first driver stalls: its heartbeat stops
    lease._thread.join()
    time.sleep(0.8)
    with second.lease(run, 0.6):
        second.task_started(run, "t1", "stub-wait", {}, 1)
        with pytest.raises(LeaseLostError, match="taken over"):
            first.task_finished(run, "t1", "stub-wait", "done", attempts=1)
        with pytest.raises(LeaseLostError):
            first.update_run(run, status="done")
    assert second.tasks(run)[0].status == "running" and second.get_run(run).status == "planning"
    first.close()
    second.close()


def _open_journal(state: State, barrier) -> None:
    barrier.wait()
    journal = state.journal()
    journal.create_run(new_run_id(), "race", "r", [])


def test_processes_creating_the_tables_at_once_all_succeed(state):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    children = [context.Process(target=_open_journal, args=(state, barrier)) for _ in range(4)]
    [c.start() for c in children]
    [c.join(60) for c in children]
    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    assert len(state.journal().runs(session="race")) == 4


# ------------------------------------------------------------------------------------------ checkpoints


def test_a_graph_interrupted_under_one_checkpointer_resumes_under_another(state):
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    class Count(TypedDict):
        n: int

    def ask(values: Count) -> Count:
        return {"n": values["n"] + interrupt("how many more?")}

    builder = StateGraph(Count)
    builder.add_node("step", lambda values: {"n": values["n"] + 1})
    builder.add_node("ask", ask)
    builder.add_edge(START, "step")
    builder.add_edge("step", "ask")
    builder.add_edge("ask", END)
    config = {"configurable": {"thread_id": new_run_id()}}
    builder.compile(checkpointer=state.checkpointer()).invoke({"n": 1}, config)
    # Another process (here: another checkpointer object, its own connections) picks the thread up.
    later = builder.compile(checkpointer=state.checkpointer())
    snapshot = later.get_state(config)
    assert snapshot.values == {"n": 2} and snapshot.next == ("ask",)
    assert later.invoke(Command(resume=10), config) == {"n": 12}
    assert not later.get_state(config).next


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("values, words", [
    ({"store": "s3://Bad_Bucket/x"}, "bucket name"),
    ({"store": "s3://bucket/../x"}, "prefix"),
    ({"store": "s3://user:key@bucket/x"}, "without credentials"),
    ({"store": "https://example.com/x"}, "folder or s3://"),
    ({"database": "mysql://db/x"}, "postgresql://"),
    ({"database": "postgresql://:5432/x"}, "must name a host"),
    ({"database": "postgresql://db:99999/x"}, "port"),
    ({"database": "postgresql://u:secret@db/"}, "must end in /DATABASE"),
    ({"runner": {"kind": "spark"}}, "runner.kind"),
    ({"runner": {"kind": "ray", "address": "ray://host"}}, "runner.address"),
    ({"runner": {"slots": 0}}, "runner.slots"),
    ({"runner": {"replicas_per_node": 1.5}}, "whole number"),
    ({"runner": {"resources": {"big": {"num_gpus": -1}}}}, "num_gpus"),
    ({"runner": {"resources": {"big": {"disks": 1}}}}, "keys must be among"),
])
def test_bad_shared_state_settings_are_one_line_errors(values, words):
    from orchestrator.config import Settings

    with pytest.raises(ConfigError) as caught:
        Settings.from_dict(values)
    message = str(caught.value)
    assert words in message and "\n" not in message and "secret" not in message


def test_shared_state_settings_are_read_from_file_and_environment(tmp_path):
    from orchestrator.config import Settings

    config = tmp_path / "config.toml"
    config.write_text('store = "s3://anymoda-art/prod/"\ndatabase = "postgresql://anymoda@db:5432/anymoda"\n'
                      '[runner]\nkind = "ray"\naddress = "ray://head:10001"\n'
                      '[runner.resources.big-model]\nnum_gpus = 1\nmemory = "8GiB"\n')
    settings = Settings.load(config, env={"ANYMODA_HOME": str(tmp_path)})
    assert settings.store == "s3://anymoda-art/prod/" and settings.database.endswith("@db:5432/anymoda")
    assert settings.runner.kind == "ray" and settings.runner.address == "ray://head:10001"
    assert settings.runner.resources["big-model"].ray_options() == {"num_cpus": 0.0, "num_gpus": 1.0, "memory": 8 * 2**30}
    overridden = Settings.load(config, env={"ANYMODA_HOME": str(tmp_path), "ANYMODA_RUNNER": "local",
                                            "ANYMODA_DATABASE": "postgresql://other/anymoda"})
    assert overridden.runner.kind == "local" and overridden.database == "postgresql://other/anymoda"
    assert Settings.load(env={"ANYMODA_HOME": str(tmp_path / "none")}).store == ""  # the embedded default


@pytest.mark.parametrize("values, module", [({"database": "postgresql://db/anymoda"}, "psycopg"),
                                            ({"store": "s3://anymoda-art/x"}, "boto3")])
def test_shared_state_without_the_extra_names_the_extra(tmp_path, values, module):
    import subprocess
    import sys

    script = (f"import sys; sys.modules[{module!r}] = None\n"
              "from orchestrator.config import Settings\n"
              "from orchestrator.execution.state import open_store\n"
              "from orchestrator.errors import ConfigError\n"
              f"settings = Settings.from_dict({{'home': {str(tmp_path)!r}, **{values!r}}})\n"
              "try:\n    open_store(settings)\nexcept ConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'ray' extra" in done.stdout and done.stdout.count("\n") == 1
