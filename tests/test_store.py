"""The artifact store: atomic writes, id safety, concurrency, lineage, sessions, integrity and garbage collection."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import orchestrator.storage.store as store_module
from orchestrator.errors import ArtifactNotFoundError, InvalidInputError
from orchestrator.storage.store import ArtifactStore

REPO = Path(__file__).resolve().parents[1]


def blob_files(store: ArtifactStore) -> set[str]:
    return {p.name for p in (store.root / "blobs").glob("??/*")}


def temp_files(store: ArtifactStore) -> list[Path]:
    return sorted((store.root / "tmp").iterdir())


def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- basics


def test_put_get_read_round_trip_and_dedup(store: ArtifactStore):
    first = store.put("text", "héllo wörld".encode(), metadata={"name": "greeting.txt"}, session="s", task="t1")
    second = store.put("text", "héllo wörld".encode())

    assert first.id != second.id and first.id.startswith("text-")
    assert first.sha256 == second.sha256 == sha("héllo wörld".encode())
    assert blob_files(store) == {first.sha256}  # identical content is stored once
    record = store.get(first.id)
    assert (record.kind.value, record.size, record.session, record.task) == ("text", len("héllo wörld".encode()), "s", "t1")
    assert record.metadata["name"] == "greeting.txt" and record.metadata["chars"] == 11
    assert store.read_bytes(first.id) == "héllo wörld".encode()
    assert store.load(second.id) == "héllo wörld"
    assert store.count() == 2
    assert store.blob_path(first.id).stat().st_mode & 0o222 == 0  # blobs are read-only
    assert temp_files(store) == []


# --------------------------------------------------------------------------- atomicity


def test_failed_rename_leaves_no_partial_artifact(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch):
    store.put("text", b"already here")
    before_blobs, before_count = blob_files(store), store.count()

    def failing_replace(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(store_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.put("text", b"new content " * 1000)
    monkeypatch.undo()

    assert store.count() == before_count
    assert blob_files(store) == before_blobs
    assert temp_files(store) == []
    artifact = store.put("text", b"new content " * 1000)  # still usable, and the content is whole
    assert store.read_bytes(artifact.id) == b"new content " * 1000


def test_failed_write_part_way_leaves_no_partial_artifact(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch):
    store.put("text", b"already here")
    before_blobs, before_count = blob_files(store), store.count()
    real_fdopen = os.fdopen
    written: list[int] = []

    class DiskFullHandle:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, data):
            half = len(data) // 2
            self.handle.write(data[:half])
            self.handle.flush()
            written.append(half)
            raise OSError(28, "No space left on device (simulated)")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(store_module.os, "fdopen", lambda fd, mode: DiskFullHandle(real_fdopen(fd, mode)))
    data = b"0123456789" * 50_000
    with pytest.raises(OSError, match="No space left"):
        store.put("text", data)
    monkeypatch.undo()

    assert written == [len(data) // 2]  # the write really was cut part-way
    assert store.count() == before_count
    assert blob_files(store) == before_blobs
    assert temp_files(store) == []
    artifact = store.put("text", data)
    assert store.read_bytes(artifact.id) == data


_SLOW_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import orchestrator.storage.store as store_module

    root, marker = sys.argv[1], Path(sys.argv[2])
    real_fdopen = os.fdopen

    class HalfThenHang:
        def __init__(self, handle):
            self.handle = handle
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)
        def write(self, data):
            half = len(data) // 2
            self.handle.write(data[:half])
            self.handle.flush()
            os.fsync(self.handle.fileno())
            marker.with_suffix(".tmp").write_text(str(half))
            os.replace(marker.with_suffix(".tmp"), marker)  # the parent never sees it half-written
            time.sleep(120)  # killed here
            self.handle.write(data[half:])
        def __getattr__(self, name):
            return getattr(self.handle, name)

    store_module.os.fdopen = lambda fd, mode: HalfThenHang(real_fdopen(fd, mode))
    store = store_module.ArtifactStore(root)
    store.put("text", b"x" * 8_000_000)
    """
)


def test_writer_killed_mid_write_leaves_no_partial_artifact(tmp_path: Path):
    root = tmp_path / "store"
    store = ArtifactStore(root)
    kept = store.put("text", b"written before the crash")
    before_blobs, before_count = blob_files(store), store.count()
    marker = tmp_path / "half-written"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(root), str(marker)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, f"writer exited early: {child.stderr.read().decode()}"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        partial = temp_files(store)
        assert len(partial) == 1 and partial[0].name.startswith(f"{child.pid}-")
        assert partial[0].stat().st_size == int(marker.read_text()) == 4_000_000

        ArtifactStore(root).close()  # opening while the writer lives must not delete its temp file
        assert temp_files(store) == partial
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()  # reaped: its pid is really gone
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    reopened = ArtifactStore(root)
    assert temp_files(reopened) == []
    assert reopened.count() == before_count
    assert blob_files(reopened) == before_blobs
    assert reopened.read_bytes(kept.id) == b"written before the crash"
    assert reopened.put("text", b"after the crash").size == len(b"after the crash")


# --------------------------------------------------------------------------- ids and paths

BAD_IDS = [
    "../../etc/passwd",
    "image-../../x",
    "image-0123456789abcdeg",
    "image-0123456789abcde",
    "image-0123456789abcdef0",
    "image-0123456789ABCDEF",
    "picture-0123456789abcdef",
    "/etc/passwd",
    "/tmp/image-0123456789abcdef",
    "image-0123456789abcdef/../../x",
    "image-0123456789abcde\x00",
    "image-01234567\x0089abcdef",
    "image-0123456789abcdef\x00.png",
    "image-01234567\n89abcdef",
    "image-0123456789abcdef\nimage-0123456789abcdef",
    "image-0123456789abcdef\n",
    "",
    " image-0123456789abcdef",
    None,
    42,
    b"image-0123456789abcdef",
]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_malformed_and_traversal_ids_are_rejected(tmp_path: Path, bad_id):
    store = ArtifactStore(tmp_path / "a" / "b" / "store")
    good = store.put("text", b"some text")
    victim = tmp_path / "etc" / "passwd"
    victim.parent.mkdir()
    victim.write_text("root:x:0:0")
    outside = tmp_path / "out"

    def snapshot():
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if store.root not in p.parents}

    before, blobs, count = snapshot(), blob_files(store), store.count()
    calls = [
        lambda: store.get(bad_id),
        lambda: store.get(bad_id, session="s"),
        lambda: store.read_bytes(bad_id),
        lambda: store.load(bad_id),
        lambda: store.blob_path(bad_id),
        lambda: store.export(bad_id, outside),
        lambda: store.ancestors(bad_id),
        lambda: store.put("text", b"child", parents=[good.id, bad_id]),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="not a valid artifact id"):
            call()
    assert store.exists(bad_id) is False
    assert snapshot() == before
    assert not outside.exists()
    assert victim.read_text() == "root:x:0:0"
    assert store.count() == count and blob_files(store) == blobs


def test_export_to_directory_and_to_file(store: ArtifactStore, tmp_path: Path):
    image = store.put("image", png_bytes())
    text = store.put("text", b"exported words")
    folder = tmp_path / "exports"
    folder.mkdir()

    image_path = store.export(image.id, folder)
    text_path = store.export(text.id, folder)
    assert image_path == folder / f"{image.id}.png"
    assert text_path == folder / f"{text.id}.txt"
    assert image_path.read_bytes() == store.read_bytes(image.id)
    assert text_path.read_text() == "exported words"

    named = store.export(image.id, tmp_path / "new" / "nested" / "photo.png")
    assert named == tmp_path / "new" / "nested" / "photo.png" and named.read_bytes() == png_bytes()
    named.write_bytes(b"the copy is the caller's to change")  # exporting must not hand out the blob itself
    assert store.read_bytes(image.id) == png_bytes()

    with pytest.raises(ArtifactNotFoundError):
        store.export("image-0123456789abcdef", folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([image_path.name, text_path.name])


# --------------------------------------------------------------------------- concurrency


def _content(worker: int, i: int) -> bytes:
    # Every third item is shared by all workers, so concurrent writers race to store the same blob.
    return f"shared item {i % 5}".encode() if i % 3 == 0 else f"worker {worker} item {i}".encode()


def _process_writer(root: str, worker: int, count: int, barrier, results: str) -> None:
    barrier.wait(timeout=60)
    store = ArtifactStore(root)
    written = []
    for i in range(count):
        kind = "json" if i % 4 == 1 else "text"
        data = json.dumps({"w": worker, "i": i}).encode() if kind == "json" else _content(worker, i)
        artifact = store.put(kind, data, session=f"worker-{worker}")
        written.append([artifact.id, sha(data), data.decode()])
    Path(results).write_text(json.dumps(written))


def _check_written(store: ArtifactStore, written: list[list[str]], expected_total: int) -> None:
    ids = [item[0] for item in written]
    assert len(ids) == len(set(ids)) == expected_total
    assert store.count() == expected_total
    assert {a.id for a in store.list(limit=10_000)} == set(ids)
    for artifact_id, digest, text in written:
        data = store.read_bytes(artifact_id)  # checks the sha256 of what is on disk
        assert data == text.encode() and store.get(artifact_id).sha256 == digest == sha(data)
    assert blob_files(store) == {item[1] for item in written}
    assert temp_files(store) == []


def test_concurrent_writes_from_four_processes_lose_nothing(tmp_path: Path):
    root = tmp_path / "store"  # created by the workers themselves, all at once
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [
        context.Process(target=_process_writer, args=(str(root), w, 25, barrier, str(tmp_path / f"w{w}.json")))
        for w in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]

    written = [item for w in range(4) for item in json.loads((tmp_path / f"w{w}.json").read_text())]
    store = ArtifactStore(root)
    _check_written(store, written, 100)
    shared = [item for item in written if item[2].startswith("shared")]
    shared_items = [i for i in range(25) if i % 3 == 0 and i % 4 != 1]
    assert len(shared) == 4 * len(shared_items)
    assert len({item[1] for item in shared}) == len({i % 5 for i in shared_items})  # one blob each, across processes
    assert len(store.list(session="worker-2", limit=10_000)) == 25


def test_concurrent_writes_from_eight_threads_lose_nothing(store: ArtifactStore):
    barrier = threading.Barrier(8)
    written: list[list[str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(25):
                data = _content(worker, i)
                artifact = store.put("text", data)
                with lock:
                    written.append([artifact.id, sha(data), data.decode()])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    _check_written(store, written, 200)


# --------------------------------------------------------------------------- lineage and sessions


def test_lineage_parents_in_order_and_ancestors_nearest_first(store: ArtifactStore):
    a = store.put("text", b"a")
    b = store.put("text", b"b")
    c = store.put("text", b"c", parents=[b.id, a.id, b.id])  # repeated parents are kept once, in order
    d = store.put("text", b"d", parents=[c.id])
    e = store.put("json", b"{}", parents=[d.id, a.id])

    assert c.parents == (b.id, a.id) and store.get(c.id).parents == (b.id, a.id)
    assert store.get(e.id).parents == (d.id, a.id)
    assert store.get(a.id).parents == ()

    chain = [x.id for x in store.ancestors(e.id)]
    assert len(chain) == len(set(chain)) == 4
    assert set(chain[:2]) == {d.id, a.id}  # depth 1 (a is also reachable at depth 3: nearest wins)
    assert chain[2:] == [c.id, b.id]
    assert [x.id for x in store.ancestors(c.id)] == sorted([a.id, b.id])
    assert store.ancestors(a.id) == []


def test_missing_parent_is_refused_and_nothing_is_stored(store: ArtifactStore):
    a = store.put("text", b"a")
    before_blobs, before_count = blob_files(store), store.count()
    with pytest.raises(ArtifactNotFoundError, match="text-0123456789abcdef"):
        store.put("text", b"orphan", parents=[a.id, "text-0123456789abcdef"])
    assert store.count() == before_count and blob_files(store) == before_blobs


def test_sessions_are_isolated(store: ArtifactStore):
    mine = store.put("text", b"mine", session="alice")
    theirs = store.put("text", b"theirs", session="bob")
    shared = store.put("text", b"shared")  # no session: visible to every session

    assert store.get(mine.id, session="alice").id == mine.id
    for call in (store.get, store.read_bytes, store.load, store.blob_path, store.ancestors):
        with pytest.raises(ArtifactNotFoundError, match="bob"):
            call(mine.id, session="bob")
    with pytest.raises(ArtifactNotFoundError):
        store.export(mine.id, store.root.parent, session="bob")
    assert store.exists(mine.id, session="alice") and not store.exists(mine.id, session="bob")
    assert store.exists(shared.id, session="bob") and store.read_bytes(shared.id, session="bob") == b"shared"
    assert store.get(mine.id).session == "alice"  # no session given: the caller sees everything

    assert [a.id for a in store.list(session="alice")] == [mine.id]
    assert [a.id for a in store.list(session="bob")] == [theirs.id]
    assert {a.id for a in store.list()} == {mine.id, theirs.id, shared.id}
    store.put("json", b"[1]", session="alice")
    assert [a.kind.value for a in store.list(session="alice", kind="json")] == ["json"]


def test_parent_from_another_session_is_refused(store: ArtifactStore):
    alice = store.put("text", b"alice's note", session="alice")
    before_blobs, before_count = blob_files(store), store.count()
    with pytest.raises(ArtifactNotFoundError, match=alice.id):
        store.put("text", b"bob's summary", session="bob", parents=[alice.id])
    assert store.count() == before_count and blob_files(store) == before_blobs

    child = store.put("text", b"alice's summary", session="alice", parents=[alice.id])
    assert child.parents == (alice.id,)


def test_ancestors_hide_other_sessions(store: ArtifactStore):
    private = store.put("text", b"alice's secret", session="alice", metadata={"name": "diary.txt"})
    public = store.put("text", b"derived without a session", parents=[private.id])
    assert [a.id for a in store.ancestors(public.id, session="alice")] == [private.id]
    assert [a.id for a in store.ancestors(public.id)] == [private.id]
    assert store.ancestors(public.id, session="bob") == []


# --------------------------------------------------------------------------- integrity


def test_read_bytes_detects_corruption_on_disk(store: ArtifactStore):
    artifact = store.put("image", png_bytes())
    path = store.blob_path(artifact.id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.chmod(0o644)
    path.write_bytes(bytes(data))

    with pytest.raises(InvalidInputError, match=rf"{artifact.id}.*corrupted on disk"):
        store.read_bytes(artifact.id)
    with pytest.raises(InvalidInputError, match="corrupted"):
        store.load(artifact.id)


def test_read_bytes_reports_a_missing_blob(store: ArtifactStore):
    artifact = store.put("text", b"soon gone")
    store.blob_path(artifact.id).unlink()
    with pytest.raises(InvalidInputError, match=rf"{artifact.id}.*missing"):
        store.read_bytes(artifact.id)


def test_corrupted_blob_is_repaired_by_storing_the_content_again(store: ArtifactStore):
    first = store.put("text", b"repair me")
    path = store.blob_path(first.id)
    path.chmod(0o644)
    path.write_bytes(b"broken")  # different size: not mistaken for the stored content
    second = store.put("text", b"repair me")
    assert store.read_bytes(first.id) == store.read_bytes(second.id) == b"repair me"


# --------------------------------------------------------------------------- garbage collection


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_collect_garbage_removes_only_old_unreferenced_blobs(store: ArtifactStore):
    kept = store.put("text", b"referenced and old")
    _age(store.blob_path(kept.id), 7200)
    old_orphan = store._blob_path(store._write_blob(b"left by a crash long ago"))  # blob written, row never inserted
    _age(old_orphan, 7200)
    new_orphan = store._blob_path(store._write_blob(b"another process is about to index this"))

    assert store.collect_garbage(grace_seconds=3600) == 1
    assert not old_orphan.exists()
    assert new_orphan.exists()
    assert store.read_bytes(kept.id) == b"referenced and old"
    assert store.collect_garbage(grace_seconds=3600) == 0

    assert store.collect_garbage(grace_seconds=0) == 1
    assert not new_orphan.exists()
    assert blob_files(store) == {kept.sha256}
    assert store.read_bytes(kept.id) == b"referenced and old"


def test_collect_garbage_spares_an_old_blob_reused_while_it_runs(store: ArtifactStore):
    old_orphan = store._blob_path(store._write_blob(b"same content as a new upload"))
    _age(old_orphan, 7200)
    reused: list[str] = []

    class Blobs(type(store._blobs)):
        def glob(self, pattern):
            # Another writer stores the same content after the collector read the index, before it scans.
            if not reused:
                reused.append(store.put("text", b"same content as a new upload").id)
            return super().glob(pattern)

    store._blobs = Blobs(store._blobs)
    assert store.collect_garbage(grace_seconds=3600) == 0
    assert store.read_bytes(reused[0]) == b"same content as a new upload"


def _open_new_store_and_write(root: str, barrier) -> None:
    barrier.wait()  # all processes open the brand-new store at the same moment
    ArtifactStore(root).put_value("text", f"written by {os.getpid()}")


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path):
    # Switching a new index to WAL needs the database to itself, and SQLite's busy timeout does not
    # cover that: without retries, most of the processes racing to open it died with "database is locked".
    context = multiprocessing.get_context("fork")
    for round_ in range(5):
        root = tmp_path / f"store-{round_}"
        barrier = context.Barrier(8)
        processes = [context.Process(target=_open_new_store_and_write, args=(str(root), barrier)) for _ in range(8)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0] * 8
        assert ArtifactStore(root).count() == 8


def test_list_gives_the_first_or_the_latest_artifacts_in_order(store: ArtifactStore):
    ids = [store.put_value("text", f"note {i}").id for i in range(6)]
    assert [a.id for a in store.list(limit=3)] == ids[:3]
    assert [a.id for a in store.list(limit=3, newest=True)] == ids[3:]
