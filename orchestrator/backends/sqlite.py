"""The embedded back end: blobs in a local folder, rows in SQLite files (the default, one machine).

Blob layout under the store's root::

    blobs/ab/abcdef...      the bytes, named by their sha256, read-only once written
    tmp/                    in-flight writes; a file appears under blobs/ only by an atomic rename

SQLite in WAL mode with a busy timeout, one connection per thread and per process, makes concurrent
writers from threads and processes safe.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .protocols import BlobMissingError


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def enable_wal(conn: sqlite3.Connection, attempts: int = 200) -> None:
    """Switch the index to write-ahead logging, which lets readers and one writer work at once.

    The switch needs the database to itself and SQLite does not apply its busy timeout to it, so
    processes opening a new store together would get 'database is locked'; the mode persists in
    the file, so once any of them has switched it the others find it done.
    """
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.002 * attempt)


class LocalBlobStore:
    """Blobs as read-only files under ``root/blobs``, written through ``root/tmp`` and an atomic rename."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self._blobs / digest[:2] / digest

    def contains(self, digest: str, size: int) -> bool:
        final = self.path(digest)
        if final.is_file() and final.stat().st_size == size:
            # It may be an old unreferenced blob that collect_garbage is about to remove: a fresh mtime
            # puts it back inside the grace period.
            try:
                os.utime(final)
                return True
            except FileNotFoundError:
                return False  # collected meanwhile: write it again
        return False

    def write(self, digest: str, data: bytes) -> None:
        final = self.path(digest)
        final.parent.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix=f"{os.getpid()}-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o444)
            os.replace(tmp_name, final)  # atomic: readers see all of the blob or none of it
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobMissingError(digest) from None

    def local_path(self, digest: str) -> Path:
        return self.path(digest)

    def ages(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for blob in self._blobs.glob("??/*"):
            try:
                yield blob.name, now - blob.stat().st_mtime
            except FileNotFoundError:
                continue

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def remove_stale_uploads(self) -> None:
        for tmp in self._tmp.glob("*.part"):
            pid = tmp.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)


class SqliteDatabase:
    """One SQLite file (WAL), a connection per thread and per process."""

    dialect = "sqlite"
    greatest = "MAX"
    order_column = "rowid"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.location = str(self.path)
        self._local = threading.local()
        # Writers of one process queue on a lock: contending for SQLite's own write lock instead makes
        # its busy handler sleep (1, 2, 5, ... 100 ms), which measured up to 120 ms per write with 5
        # concurrent tasks. Other processes still meet the busy timeout.
        self._write_lock = threading.RLock()

    def connection(self) -> sqlite3.Connection:
        # sqlite3 connections must not cross threads, nor survive a fork.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.connection().execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.connection().executemany(sql, rows)

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes SQLite's write lock at once, which already serialises every writer of
        # the file, so a named lock needs nothing more.
        conn = self.connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def migrate(self, component: str, statements: Sequence[str], added_columns: dict[str, dict[str, str]] | None = None) -> None:
        script = ";\n".join(s.format(real="REAL", bigint="INTEGER", order="") for s in statements) + ";"
        conn = self.connection()
        conn.executescript(script)  # executescript manages its own transaction
        for table, columns in (added_columns or {}).items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in present:
                    try:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class SqliteState:
    """The embedded default: everything under the settings' home, as before there were back ends."""

    def __init__(self, home: str | os.PathLike[str], store_dir: str | os.PathLike[str] | None = None):
        self.home = Path(home).expanduser()
        self.store_dir = Path(store_dir).expanduser() if store_dir is not None else self.home / "artifacts"

    def blobs(self) -> LocalBlobStore:
        return LocalBlobStore(self.store_dir)

    def index_database(self) -> SqliteDatabase:
        return SqliteDatabase(Path(self.store_dir).expanduser().resolve() / "index.sqlite")

    def journal_database(self) -> SqliteDatabase:
        return SqliteDatabase(self.home / "runs.sqlite")

    def checkpointer(self) -> Any:
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = self.home / "checkpoints.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False, timeout=60.0)
        # Not a bare PRAGMA: two threads (or processes) first using a fresh home switch the file at
        # once, and SQLite answers one of them 'database is locked' without waiting (see enable_wal).
        enable_wal(connection)
        return SqliteSaver(connection)
