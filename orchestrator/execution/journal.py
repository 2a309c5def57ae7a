"""The run journal: what each run was asked, planned, did and answered: one SQLite file beside the store
by default, or tables in the PostgreSQL database every front end shares (:mod:`orchestrator.backends`).

The journal is the durable record of task outcomes. The executor writes a task's row the moment the
task finishes, so a run killed in the middle (``kill -9``) is resumed without re-running what
finished: LangGraph's checkpoint holds the run's state between graph nodes, the journal holds what
happened inside the execute node. It also serves ``anymoda runs show`` (the plan, each task's
status, timings, inputs, outputs, error, why a tool could not run here, the earlier call of a
repaired task) and a session's history (its runs in order, each with its answer kept as a text
artifact, ``answer_id``).

An agent run ends ``done`` (every task done, or declined by a person), ``partial`` (some task failed
or could not run here, and something else was done), ``failed`` (nothing could be done, or the run
itself failed: no plan) or ``cancelled``.

One process drives a run at a time. The driver holds the run's *lease* (a row of ``leases``: owner
pid and host, a random token, a heartbeat renewed from a background thread every quarter of
``Settings.run_lease_s``); a second driver (``anymoda runs resume`` while the run is live elsewhere) is
refused with :class:`RunBusyError` naming the owner, and may take the run over only once the heartbeat
is older than the lease (or at once when the owner is a process of this host that no longer exists,
so ``kill -9`` does not make a run wait). A driver that stalled past its lease and was taken over
finds out at its next journal write (every write of a leased run checks the token in the same
statement) or task start, and stops with :class:`LeaseLostError` instead of running anything twice.

Everything stored here is ids, names and short texts; artifact bytes stay in the
:class:`~orchestrator.storage.store.ArtifactStore`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..backends.protocols import Database, Executor
from ..backends.sqlite import SqliteDatabase
from ..backends.sqlite import pid_alive as _pid_alive
from ..errors import AnymodaError, InvalidInputError, shown

_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    request TEXT NOT NULL,
    inputs TEXT NOT NULL,          -- JSON list of input artifact ids
    status TEXT NOT NULL,          -- planning | running | awaiting_approval | done | partial | failed | cancelled
    plan TEXT,                     -- JSON plan once planned
    answer TEXT,
    answer_artifacts TEXT,         -- JSON list of artifact ids the answer delivers
    error TEXT,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL{order}
)""", "CREATE INDEX IF NOT EXISTS runs_session ON runs(session, created_at)", """
CREATE TABLE IF NOT EXISTS tasks (
    run TEXT NOT NULL REFERENCES runs(id),
    task TEXT NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,          -- running | done | failed | unavailable | skipped | cancelled | awaiting_approval
    attempts INTEGER NOT NULL,
    arguments TEXT NOT NULL,       -- JSON: the call as run, references resolved to artifact ids
    outputs TEXT NOT NULL,         -- JSON: output name -> artifact id
    model TEXT,
    error TEXT,
    started_at {real},
    finished_at {real}{order},
    PRIMARY KEY (run, task)
)""", """
CREATE TABLE IF NOT EXISTS leases (
    run TEXT PRIMARY KEY,
    token TEXT NOT NULL,           -- the holder's random id: a takeover changes it, which fences the old holder out
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    acquired_at {real} NOT NULL,
    heartbeat_at {real} NOT NULL
)""", """
CREATE TABLE IF NOT EXISTS session_summaries (
    session TEXT PRIMARY KEY,
    summary TEXT NOT NULL,
    through_run TEXT NOT NULL,     -- the last run folded into the summary
    updated_at {real} NOT NULL
)""", """
CREATE TABLE IF NOT EXISTS cancel_requests (
    run TEXT PRIMARY KEY,          -- a run some process asked to stop; its driver, wherever it runs, polls this
    requested_at {real} NOT NULL,
    requested_by TEXT NOT NULL     -- pid@host, for messages
)""")

_RUN_COLUMNS = ("id, session, request, inputs, status, plan, answer, answer_artifacts, error, created_at, updated_at, "
                "answer_id")

RUN_ID = re.compile(r"^run-[0-9a-f]{16}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
RUN_STATUSES = ("planning", "running", "awaiting_approval", "done", "partial", "failed", "cancelled")
FINISHED_RUN_STATUSES = ("done", "partial", "failed", "cancelled")
FINISHED_TASK_STATUSES = ("done", "failed", "unavailable", "skipped", "cancelled")
# Columns added after the first release, with their types: added to an older file when it is opened.
_ADDED_COLUMNS = {"runs": {"answer_id": "TEXT"}, "tasks": {"detail": "TEXT"}}


class RunBusyError(AnymodaError):
    """Another live process drives the run (the message names it)."""


class LeaseLostError(AnymodaError):
    """This process stalled past its lease and another one took the run over."""


def _this_host() -> str:
    return socket.gethostname() or "?"


def new_run_id() -> str:
    return f"run-{secrets.token_hex(8)}"


def check_run_id(value: object) -> str:
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise InvalidInputError(f"{shown(value)} is not a run id (expected 'run-' and 16 hex digits)")
    return value


def check_session_id(value: object) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise InvalidInputError(
            f"{shown(value)} is not a usable session id: 1-128 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class TaskRecord:
    run: str
    task: str
    tool: str
    status: str
    attempts: int
    arguments: dict[str, Any]
    outputs: dict[str, str]
    model: str | None
    error: str | None
    started_at: float | None
    finished_at: float | None
    detail: dict[str, Any] = field(default_factory=dict)  # {"unavailable": {...}, "repairs": [earlier calls]}

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class RunRecord:
    id: str
    session: str
    request: str
    inputs: tuple[str, ...]
    status: str
    plan: dict[str, Any] | None
    answer: str | None
    answer_artifacts: tuple[str, ...]
    error: str | None
    created_at: float
    updated_at: float
    tasks: tuple[TaskRecord, ...] = field(default_factory=tuple)
    answer_id: str | None = None  # the answer as a text artifact of the session (offered to later turns)

    def task(self, task_id: str) -> TaskRecord | None:
        return next((t for t in self.tasks if t.task == task_id), None)

    @property
    def unavailable(self) -> list[dict[str, Any]]:
        """Why each task whose tool cannot run here could not (recovery.Unavailable records)."""
        return [t.detail["unavailable"] for t in self.tasks if t.detail.get("unavailable")]


@dataclass(frozen=True)
class Lease:
    """Who drives a run: the row of ``leases``."""

    run: str
    token: str
    pid: int
    host: str
    acquired_at: float
    heartbeat_at: float

    def expired(self, lease_s: float, now: float | None = None) -> bool:
        if (time.time() if now is None else now) - self.heartbeat_at >= lease_s:
            return True
        # Only a process of this host can be asked whether it still exists; elsewhere the heartbeat decides.
        return self.host == _this_host() and not _pid_alive(self.pid)

    def owner(self, now: float | None = None) -> str:
        age = max(0.0, (time.time() if now is None else now) - self.heartbeat_at)
        return f"process {self.pid} on {self.host} (last heartbeat {age:.1f} s ago)"


class RunLease:
    """This process's claim to drive one run; a context manager (see :meth:`RunJournal.lease`).

    While held, a daemon thread renews the heartbeat every ``lease_s / 4``. :meth:`check` is cheap:
    it consults the database only when the last confirmed renewal is older than ``lease_s / 2``
    (the thread was starved, or the whole process was stopped), because from ``lease_s`` on another
    process may have taken the run."""

    def __init__(self, journal: RunJournal, run_id: str, lease_s: float):
        self.journal = journal
        self.run = run_id
        self.lease_s = float(lease_s)
        self.token = secrets.token_hex(8)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._confirmed = 0.0  # time.monotonic() just before the last heartbeat that was written
        self._thread: threading.Thread | None = None
        self._depth = 0
        self._owner_thread = threading.get_ident()

    def __enter__(self) -> RunLease:
        if self._depth == 0:
            self._confirmed = time.monotonic()
            self.journal._claim(self)
            self.journal._held[self.run] = self
            self._thread = threading.Thread(target=self._beat, name=f"anymoda-lease-{self.run}", daemon=True)
            self._thread.start()
        self._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.journal._held.get(self.run) is self:
            del self.journal._held[self.run]
        if not self.lost.is_set():
            self.journal.database.execute("DELETE FROM leases WHERE run = ? AND token = ?", (self.run, self.token))

    def _beat(self) -> None:
        interval = max(0.02, self.lease_s / 4)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except self.journal.database.errors:  # a busy or briefly unreachable database: the next beat tries again
                continue

    def renew(self) -> bool:
        """Write a heartbeat; False (and :attr:`lost` set) when another process holds the run now."""
        if self.lost.is_set():
            return False
        started = time.monotonic()
        cursor = self.journal.database.execute("UPDATE leases SET heartbeat_at = ? WHERE run = ? AND token = ?",
                                            (time.time(), self.run, self.token))
        if cursor.rowcount != 1:
            self.lost.set()
            return False
        self._confirmed = max(self._confirmed, started)
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if this process may no longer drive the run."""
        if not self.lost.is_set() and time.monotonic() - self._confirmed < self.lease_s / 2:
            return
        if not self.renew():
            raise self.journal._lost_error(self.run, self.lease_s)


class RunJournal:
    """Runs and their tasks in ``path`` (SQLite, WAL), or in ``database=`` (any
    :class:`~orchestrator.backends.protocols.Database`): safe from many threads and processes at once."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, database: Database | None = None):
        if (path is None) == (database is None):
            raise ValueError("a RunJournal needs a file path or a database=, not both")
        self.database = database if database is not None else SqliteDatabase(path)
        self.path = getattr(self.database, "path", None)
        self._held: dict[str, RunLease] = {}  # the leases this object holds, by run
        self.database.migrate("journal", _SCHEMA, _ADDED_COLUMNS)

    def close(self) -> None:
        self.database.close()

    # ------------------------------------------------------------------ runs

    def create_run(self, run_id: str, session: str, request: str, inputs: list[str]) -> None:
        now = time.time()
        self.database.execute(
            "INSERT INTO runs (id, session, request, inputs, status, answer_artifacts, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'planning', '[]', ?, ?)",
            (check_run_id(run_id), check_session_id(session), request, json.dumps(inputs), now, now),
        )

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {"status", "plan", "answer", "answer_artifacts", "error", "answer_id"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"run fields {sorted(unknown)} cannot be updated")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"unknown run status {fields['status']!r}")
        values = {k: json.dumps(v) if k in ("plan", "answer_artifacts") and v is not None else v for k, v in fields.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        fence, fence_args = self._fence(check_run_id(run_id))
        cursor = self.database.execute(f"UPDATE runs SET {assignments}, updated_at = ? WHERE id = ? AND {fence}",
                                    (*values.values(), time.time(), run_id, *fence_args))
        self._fenced_out(run_id, cursor.rowcount)

    def get_run(self, run_id: str, *, session: str | None = None) -> RunRecord:
        row = self.database.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (check_run_id(run_id),)).fetchone()
        if row is None or (session is not None and row[1] != session):
            raise InvalidInputError(f"no run {run_id!r}" + (f" in session {session!r}" if session else ""))
        return self._run_from_row(row, self.tasks(run_id))

    def runs(self, *, session: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest ``limit`` runs (of one session, if given), oldest first."""
        query, args = f"SELECT {_RUN_COLUMNS} FROM runs", []
        if session is not None:
            query += " WHERE session = ?"
            args.append(session)
        order = self.database.order_column
        rows = self.database.execute(query + f" ORDER BY created_at DESC, {order} DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [self._run_from_row(row, ()) for row in reversed(rows)]

    @staticmethod
    def _run_from_row(row: tuple, tasks: tuple[TaskRecord, ...] | list[TaskRecord]) -> RunRecord:
        return RunRecord(
            id=row[0], session=row[1], request=row[2], inputs=tuple(json.loads(row[3])), status=row[4],
            plan=json.loads(row[5]) if row[5] else None, answer=row[6],
            answer_artifacts=tuple(json.loads(row[7] or "[]")), error=row[8], created_at=row[9], updated_at=row[10],
            tasks=tuple(tasks), answer_id=row[11] if len(row) > 11 else None,
        )

    # ------------------------------------------------------------------ leases

    def lease(self, run_id: str, lease_s: float) -> RunLease:
        """Claim the right to drive ``run_id`` (``with journal.lease(run, s): ...``); raises
        :class:`RunBusyError` naming the owner while another live process (or thread) holds it.
        Re-entering in the thread that holds it is allowed."""
        held = self._held.get(check_run_id(run_id))
        if held is not None and held._owner_thread == threading.get_ident() and not held.lost.is_set():
            return held
        return RunLease(self, run_id, lease_s)

    def lease_holder(self, run_id: str) -> Lease | None:
        row = self.database.execute("SELECT run, token, pid, host, acquired_at, heartbeat_at FROM leases WHERE run = ?",
                                 (check_run_id(run_id),)).fetchone()
        return Lease(*row) if row else None

    def check_not_driven(self, run_id: str, lease_s: float) -> None:
        """Raise :class:`RunBusyError` if a live driver other than this thread's holds ``run_id``."""
        held = self._held.get(run_id)
        if held is not None and held._owner_thread == threading.get_ident():
            return
        holder = self.lease_holder(run_id)
        if holder is not None and not holder.expired(lease_s):
            raise self._busy_error(holder, lease_s)

    def check_lease(self, run_id: str) -> None:
        """Raise :class:`LeaseLostError` if this object holds ``run_id``'s lease and another process took it."""
        held = self._held.get(run_id)
        if held is not None:
            held.check()

    def _claim(self, lease: RunLease) -> None:
        with self.database.transaction(lock=f"lease:{lease.run}") as db:
            row = db.execute("SELECT run, token, pid, host, acquired_at, heartbeat_at FROM leases WHERE run = ?",
                             (lease.run,)).fetchone()
            now = time.time()
            if row is not None and not Lease(*row).expired(lease.lease_s, now):
                raise self._busy_error(Lease(*row), lease.lease_s)
            db.execute("INSERT INTO leases (run, token, pid, host, acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (run) DO UPDATE SET token = excluded.token, pid = excluded.pid, host = excluded.host, "
                       "acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at",
                       (lease.run, lease.token, os.getpid(), _this_host(), now, now))

    @staticmethod
    def _busy_error(holder: Lease, lease_s: float) -> RunBusyError:
        return RunBusyError(
            f"run {holder.run} is being driven by {holder.owner()}; wait for it to finish or stop that process "
            f"(another may take the run over {lease_s:g} s after the owner's last heartbeat)")

    def _lost_error(self, run_id: str, lease_s: float) -> LeaseLostError:
        holder = self.lease_holder(run_id)
        by = f"by {holder.owner()}" if holder is not None else "(its lease is gone)"
        return LeaseLostError(f"run {run_id} was taken over {by} after this process missed its heartbeat for "
                              f"{lease_s:g} s; this process stopped driving it")

    def _fence(self, run_id: str) -> tuple[str, tuple[Any, ...]]:
        """The SQL condition (and its arguments) under which a write to ``run_id`` may happen: while this
        object holds the run's lease, only if the lease is still this object's, checked in the write itself."""
        held = self._held.get(run_id)
        if held is None:
            return "1 = 1", ()
        return "EXISTS (SELECT 1 FROM leases WHERE run = ? AND token = ?)", (run_id, held.token)

    def _fenced_out(self, run_id: str, rowcount: int) -> None:
        """After a fenced write changed nothing: raise if the reason is a lost lease."""
        held = self._held.get(run_id)
        if held is not None and rowcount == 0 and not held.renew():
            raise self._lost_error(run_id, held.lease_s)

    # ------------------------------------------------------------------ tasks

    def task_started(self, run_id: str, task_id: str, tool: str, arguments: dict[str, Any], attempt: int) -> None:
        # The tool is updated too (here and in task_finished): a row an earlier plan left under this
        # task id must not name a tool other than the one that ran, or every resume would re-run it.
        # A first attempt starts with no detail; a later one (a retry, a repaired call) keeps the earlier calls.
        # INSERT ... SELECT ... WHERE: the lease check and the write are one statement (WHERE also keeps
        # SQLite from reading ON CONFLICT as a join's ON).
        fence, fence_args = self._fence(run_id)
        cursor = self.database.execute(
            "INSERT INTO tasks (run, task, tool, status, attempts, arguments, outputs, model, error, started_at, "
            f"finished_at, detail) SELECT ?, ?, ?, 'running', ?, ?, '{{}}', NULL, NULL, ?, NULL, NULL WHERE {fence} "
            "ON CONFLICT(run, task) DO UPDATE SET tool = excluded.tool, status = 'running', attempts = excluded.attempts, "
            "arguments = excluded.arguments, error = NULL, started_at = excluded.started_at, finished_at = NULL, "
            "detail = CASE WHEN excluded.attempts > 1 THEN tasks.detail ELSE NULL END",
            (run_id, task_id, tool, attempt, json.dumps(arguments, default=str), time.time(), *fence_args),
        )
        self._fenced_out(run_id, cursor.rowcount)

    def task_finished(self, run_id: str, task_id: str, tool: str, status: str, *, attempts: int = 0,
                      outputs: dict[str, str] | None = None, model: str | None = None, error: str | None = None,
                      arguments: dict[str, Any] | None = None, detail: dict[str, Any] | None = None) -> None:
        if status not in FINISHED_TASK_STATUSES + ("awaiting_approval",):
            raise ValueError(f"unknown task status {status!r}")
        now = time.time()
        fence, fence_args = self._fence(run_id)
        cursor = self.database.execute(
            "INSERT INTO tasks (run, task, tool, status, attempts, arguments, outputs, model, error, started_at, "
            f"finished_at, detail) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ? WHERE {fence} "
            "ON CONFLICT(run, task) DO UPDATE SET tool = excluded.tool, status = excluded.status, "
            f"attempts = {self.database.greatest}(tasks.attempts, excluded.attempts), "
            "outputs = excluded.outputs, model = excluded.model, error = excluded.error, finished_at = excluded.finished_at, "
            "detail = COALESCE(excluded.detail, tasks.detail)",
            (run_id, task_id, tool, status, attempts, json.dumps(arguments or {}, default=str), json.dumps(outputs or {}),
             model, error, now, json.dumps(detail, default=str) if detail else None, *fence_args),
        )
        self._fenced_out(run_id, cursor.rowcount)

    def task_repaired(self, run_id: str, task_id: str, earlier: dict[str, Any]) -> None:
        """Keep a failed call of a task (tool, arguments, error) before its repaired call starts."""
        fence, fence_args = self._fence(run_id)
        with self.database.transaction() as db:
            fenced_out = not db.execute(f"SELECT {fence}", fence_args).fetchone()[0]
            if not fenced_out:
                self._record_repair(db, run_id, task_id, earlier)
        if fenced_out:
            self._fenced_out(run_id, 0)

    @staticmethod
    def _record_repair(db: Executor, run_id: str, task_id: str, earlier: dict[str, Any]) -> None:
        row = db.execute("SELECT detail FROM tasks WHERE run = ? AND task = ?", (run_id, task_id)).fetchone()
        detail = json.loads(row[0]) if row and row[0] else {}
        detail.setdefault("repairs", []).append(earlier)
        if row is None:
            db.execute("INSERT INTO tasks (run, task, tool, status, attempts, arguments, outputs, detail) "
                       "VALUES (?, ?, ?, 'failed', ?, ?, ?, ?)",
                       (run_id, task_id, earlier.get("tool", "?"), int(earlier.get("attempts", 1)),
                        json.dumps(earlier.get("arguments", {}), default=str), json.dumps(earlier.get("outputs", {})),
                        json.dumps(detail, default=str)))
        else:
            db.execute("UPDATE tasks SET detail = ? WHERE run = ? AND task = ?",
                       (json.dumps(detail, default=str), run_id, task_id))

    def tasks(self, run_id: str) -> list[TaskRecord]:
        rows = self.database.execute(
            "SELECT run, task, tool, status, attempts, arguments, outputs, model, error, started_at, finished_at, detail "
            f"FROM tasks WHERE run = ? ORDER BY {self.database.order_column}", (run_id,)).fetchall()
        return [TaskRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), r[7], r[8], r[9], r[10],
                           json.loads(r[11]) if r[11] else {}) for r in rows]

    def forget_unfinished_tasks(self, run_id: str) -> None:
        """Tasks a crash left 'running' (their worker died with the process) are run again on resume."""
        fence, fence_args = self._fence(run_id)
        if not self.database.execute(f"SELECT {fence}", fence_args).fetchone()[0]:
            self._fenced_out(run_id, 0)
            return
        self.database.execute("DELETE FROM tasks WHERE run = ? AND status IN ('running', 'cancelled', 'awaiting_approval') "
                           f"AND {fence}", (run_id, *fence_args))

    # ------------------------------------------------------------------ cancelling from anywhere

    def request_cancel(self, run_id: str) -> None:
        """Ask whichever process drives ``run_id`` (on any host sharing this journal) to cancel it."""
        self.database.execute(
            "INSERT INTO cancel_requests (run, requested_at, requested_by) VALUES (?, ?, ?) "
            "ON CONFLICT (run) DO UPDATE SET requested_at = excluded.requested_at, requested_by = excluded.requested_by",
            (check_run_id(run_id), time.time(), f"{os.getpid()}@{_this_host()}"))

    def cancel_requested(self, run_id: str) -> bool:
        return self.database.execute("SELECT 1 FROM cancel_requests WHERE run = ?", (run_id,)).fetchone() is not None

    def clear_cancel(self, run_id: str) -> None:
        self.database.execute("DELETE FROM cancel_requests WHERE run = ?", (run_id,))

    # ------------------------------------------------------------------ session summaries

    def summary(self, session: str) -> tuple[str, str] | None:
        row = self.database.execute("SELECT summary, through_run FROM session_summaries WHERE session = ?", (session,)).fetchone()
        return (row[0], row[1]) if row else None

    def set_summary(self, session: str, summary: str, through_run: str) -> None:
        self.database.execute(
            "INSERT INTO session_summaries VALUES (?, ?, ?, ?) ON CONFLICT(session) DO UPDATE SET "
            "summary = excluded.summary, through_run = excluded.through_run, updated_at = excluded.updated_at",
            (session, summary, through_run, time.time()),
        )
