"""PostgreSQL for the rows every front end and worker shares: the artifact index, the run journal and
LangGraph's checkpoints (``langgraph-checkpoint-postgres``). Needs the ``ray`` extra (psycopg 3).

Tables are created on first use, under a transaction-scoped advisory lock, so processes starting
together against an empty database do not race ``CREATE TABLE`` (PostgreSQL can fail one of two
concurrent ``CREATE TABLE IF NOT EXISTS`` of the same name). Statements outside a transaction
commit on their own, as with SQLite's autocommit, so the store's "blob first, then row" and the
journal's fenced single-statement writes mean the same here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .locations import shown_database

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    from . import missing_extra

    raise missing_extra("a postgresql:// database") from exc

_MIGRATION_LOCK = 0x616E796D6F6461  # 'anymoda': one key for every component's migration


def _placeholders(sql: str) -> str:
    # The shared SQL uses SQLite's '?'; psycopg wants '%s' (and a literal '%' doubled).
    return sql.replace("%", "%%").replace("?", "%s")


@dataclass
class _Result:
    """A statement's rows, fetched at once so the connection is free for the next statement."""

    rowcount: int
    rows: list[tuple] = field(default_factory=list)

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return list(self.rows)

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)


class _InTransaction:
    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        with self.conn.cursor() as cursor:
            cursor.execute(_placeholders(sql), tuple(params))
            rows = cursor.fetchall() if cursor.description else []
            return _Result(cursor.rowcount, rows)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(_placeholders(sql), rows)


class PostgresDatabase:
    """A PostgreSQL database reached by URL; a connection per thread and per process (autocommit)."""

    dialect = "postgresql"
    greatest = "GREATEST"
    order_column = "seq"
    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0):
        self.url = url
        self.location = shown_database(url)
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        self._connections: list[Any] = []
        self._connections_lock = threading.Lock()

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken or self._local.pid != os.getpid():
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)),
                                       application_name="anymoda")
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConnectionError(f"cannot reach the database {self.location}: {first}") from None
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        return _InTransaction(self.connection()).execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.transaction() as tx:
            tx.executemany(sql, rows)

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[_InTransaction]:
        conn = self.connection()
        with conn.transaction():
            tx = _InTransaction(conn)
            if lock is not None:
                tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (lock,))
            yield tx

    def migrate(self, component: str, statements: Sequence[str], added_columns: dict[str, dict[str, str]] | None = None) -> None:
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            for statement in statements:
                tx.execute(statement.format(real="DOUBLE PRECISION", bigint="BIGINT", order=", seq BIGSERIAL"))
            for table, columns in (added_columns or {}).items():
                for column, kind in columns.items():
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._local = threading.local()


def postgres_checkpointer(url: str) -> Any:
    """LangGraph's PostgresSaver over a small pool; its tables are created on first use."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(url, min_size=1, max_size=8, open=True,
                          kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    saver = PostgresSaver(pool)
    # setup() runs its own migrations; two processes running them at once on an empty database can
    # collide on CREATE TABLE, so they queue on the same lock as ours (held on a connection of its own).
    with pool.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            saver.setup()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return saver
