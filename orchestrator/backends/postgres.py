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
    """A PostgreSQL database reached by URL, through a bounded pool of autocommit connections per process
    (a Ray actor runs many threads: one connection each would soon exhaust the server's ``max_connections``)."""

    dialect = "postgresql"
    greatest = "GREATEST"
    order_column = "seq"
    errors: tuple[type[BaseException], ...] = (psycopg.Error, ConnectionError)

    def __init__(self, url: str, *, max_connections: int = 8, connect_timeout_s: float = 10.0):
        if not 1 <= max_connections <= 256:
            raise ValueError("max_connections must be from 1 to 256")
        self.url = url
        self.location = shown_database(url)
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._pool: Any = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _connections(self) -> Any:
        # A pool's threads and sockets do not survive a fork: a child process opens its own.
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self.max_connections, open=False, name="anymoda",
                    timeout=self.connect_timeout_s * 3,
                    kwargs={"autocommit": True, "connect_timeout": max(1, int(self.connect_timeout_s)),
                            "application_name": "anymoda"})
                try:
                    self._pool.open(wait=True, timeout=self.connect_timeout_s)
                except Exception as exc:  # noqa: BLE001 - PoolTimeout hides the server's reason; say where
                    self._pool = None
                    raise ConnectionError(f"cannot reach the database {self.location}: {type(exc).__name__}: "
                                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
                self._pool_pid = os.getpid()
            return self._pool

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            with self._connections().connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConnectionError(f"the database {self.location} failed: {first}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        with self._connection() as conn:
            return _InTransaction(conn).execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.transaction() as tx:
            tx.executemany(sql, rows)

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[_InTransaction]:
        with self._connection() as conn, conn.transaction():
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
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()


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
