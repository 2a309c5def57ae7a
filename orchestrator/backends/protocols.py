"""The storage interface the artifact store, the run journal and the checkpointer depend on.

Two kinds of state, two protocols:

* :class:`BlobStore` holds artifact bytes, content-addressed by sha256 and immutable once written
  (a local folder, or S3-compatible object storage);
* :class:`Database` holds the rows (artifact index, lineage, runs, tasks, leases) and answers SQL
  written in the portable subset both back ends speak: ``?`` placeholders, ``INSERT ... ON CONFLICT``,
  ``WITH RECURSIVE``. What differs between dialects is named by the database (:attr:`Database.greatest`,
  :attr:`Database.order_column`, the column types in :meth:`Database.migrate`), so the store and the
  journal hold one copy of each query.

A third back end is one module implementing both (or one of them) plus a LangGraph checkpointer;
:func:`orchestrator.backends.open_state` chooses by the settings' ``store`` and ``database``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class BlobMissingError(FileNotFoundError):
    """No blob of that digest in the blob store."""


@runtime_checkable
class BlobStore(Protocol):
    """Immutable bytes named by their sha256 (64 lowercase hex digits, checked by the caller)."""

    location: str  # where the blobs live, for messages: a folder or s3://bucket/prefix

    def contains(self, digest: str, size: int) -> bool:
        """Whether the blob is present with ``size`` bytes; a present one is marked fresh, so a concurrent
        :meth:`remove_unreferenced` (which spares young blobs) keeps it for the row about to point at it."""

    def write(self, digest: str, data: bytes) -> None:
        """Store ``data`` so that readers see all of it or nothing (never partial bytes), durably."""

    def read(self, digest: str) -> bytes:
        """The bytes; :class:`BlobMissingError` when absent."""

    def local_path(self, digest: str) -> Path:
        """A local file holding the bytes (the blob itself, or a verified cached copy), for libraries that
        insist on a path."""

    def ages(self) -> Iterator[tuple[str, float]]:
        """Every stored digest with the seconds since it was last written or marked fresh."""

    def delete(self, digest: str) -> None:
        """Remove a blob (absent is fine)."""

    def remove_stale_uploads(self) -> None:
        """Clear what writers that died mid-write left behind (never a blob)."""


class QueryResult(Protocol):
    rowcount: int

    def fetchone(self) -> tuple | None: ...

    def fetchall(self) -> list[tuple]: ...

    def __iter__(self) -> Iterator[tuple]: ...


class Executor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> QueryResult: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


@runtime_checkable
class Database(Executor, Protocol):
    """Rows shared by every thread (and process, and host, for a server) using the same state.

    Each statement outside :meth:`transaction` commits on its own. Safe to call from any thread and
    after a fork: connections are per thread and per process."""

    dialect: str  # 'sqlite' | 'postgresql'
    location: str  # for messages; never holds a password
    greatest: str  # the SQL function returning the larger of its arguments (MAX in SQLite, GREATEST elsewhere)
    order_column: str  # a column that grows with each insert, for 'in the order they were made'
    errors: tuple[type[BaseException], ...]  # what a busy or briefly unreachable database raises

    def transaction(self, lock: str | None = None) -> AbstractContextManager[Executor]:
        """A transaction, committed on leaving (rolled back on an exception). ``lock`` names a key the
        transaction holds exclusively until it ends, even when no row for it exists yet (two processes
        claiming the same run's lease serialise on it)."""

    def migrate(self, component: str, statements: Sequence[str], added_columns: dict[str, dict[str, str]] | None = None) -> None:
        """Create ``component``'s tables on first use (idempotent, safe when processes race). Statements use
        ``{real}``, ``{bigint}`` and ``{order}`` for what the dialects spell differently; ``added_columns``
        (table -> column -> type) are columns added after a first release, added to older databases."""

    def close(self) -> None: ...


@runtime_checkable
class StateBackend(Protocol):
    """Where one deployment keeps its state: what :class:`~orchestrator.agent.Orchestrator` builds from."""

    def blobs(self) -> BlobStore: ...

    def index_database(self) -> Database: ...  # the artifact index and lineage

    def journal_database(self) -> Database: ...  # runs, tasks, leases, session summaries

    def checkpointer(self) -> Any: ...  # a LangGraph BaseCheckpointSaver
