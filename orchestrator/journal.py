"""The run journal: what each run was asked, planned, did and answered, one SQLite file beside the store.

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

Everything stored here is ids, names and short texts; artifact bytes stay in the
:class:`~orchestrator.store.ArtifactStore`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .store import enable_wal

_SCHEMA = """
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
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_session ON runs(session, created_at);
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
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (run, task)
);
CREATE TABLE IF NOT EXISTS session_summaries (
    session TEXT PRIMARY KEY,
    summary TEXT NOT NULL,
    through_run TEXT NOT NULL,     -- the last run folded into the summary
    updated_at REAL NOT NULL
);
"""

_RUN_COLUMNS = ("id, session, request, inputs, status, plan, answer, answer_artifacts, error, created_at, updated_at, "
                "answer_id")

RUN_ID = re.compile(r"^run-[0-9a-f]{16}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
RUN_STATUSES = ("planning", "running", "awaiting_approval", "done", "partial", "failed", "cancelled")
FINISHED_RUN_STATUSES = ("done", "partial", "failed", "cancelled")
FINISHED_TASK_STATUSES = ("done", "failed", "unavailable", "skipped", "cancelled")
# Columns added after the first release, with their types: added to an older file when it is opened.
_ADDED_COLUMNS = {"runs": {"answer_id": "TEXT"}, "tasks": {"detail": "TEXT"}}


def new_run_id() -> str:
    return f"run-{secrets.token_hex(8)}"


def check_run_id(value: object) -> str:
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise InvalidInputError(f"{value!r} is not a run id (expected 'run-' and 16 hex digits)")
    return value


def check_session_id(value: object) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise InvalidInputError(
            f"{value!r} is not a usable session id: 1-128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
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


class RunJournal:
    """Runs and their tasks in ``path`` (SQLite, WAL): safe from many threads and processes at once."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self._db()
        db.executescript(_SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in present:
                    try:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ runs

    def create_run(self, run_id: str, session: str, request: str, inputs: list[str]) -> None:
        now = time.time()
        self._db().execute(
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
        self._db().execute(f"UPDATE runs SET {assignments}, updated_at = ? WHERE id = ?",
                           (*values.values(), time.time(), check_run_id(run_id)))

    def get_run(self, run_id: str, *, session: str | None = None) -> RunRecord:
        row = self._db().execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (check_run_id(run_id),)).fetchone()
        if row is None or (session is not None and row[1] != session):
            raise InvalidInputError(f"no run {run_id!r}" + (f" in session {session!r}" if session else ""))
        return self._run_from_row(row, self.tasks(run_id))

    def runs(self, *, session: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest ``limit`` runs (of one session, if given), oldest first."""
        query, args = f"SELECT {_RUN_COLUMNS} FROM runs", []
        if session is not None:
            query += " WHERE session = ?"
            args.append(session)
        rows = self._db().execute(query + " ORDER BY created_at DESC, rowid DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [self._run_from_row(row, ()) for row in reversed(rows)]

    @staticmethod
    def _run_from_row(row: tuple, tasks: tuple[TaskRecord, ...] | list[TaskRecord]) -> RunRecord:
        return RunRecord(
            id=row[0], session=row[1], request=row[2], inputs=tuple(json.loads(row[3])), status=row[4],
            plan=json.loads(row[5]) if row[5] else None, answer=row[6],
            answer_artifacts=tuple(json.loads(row[7] or "[]")), error=row[8], created_at=row[9], updated_at=row[10],
            tasks=tuple(tasks), answer_id=row[11] if len(row) > 11 else None,
        )

    # ------------------------------------------------------------------ tasks

    def task_started(self, run_id: str, task_id: str, tool: str, arguments: dict[str, Any], attempt: int) -> None:
        # The tool is updated too (here and in task_finished): a row an earlier plan left under this
        # task id must not name a tool other than the one that ran, or every resume would re-run it.
        # A first attempt starts with no detail; a later one (a retry, a repaired call) keeps the earlier calls.
        self._db().execute(
            "INSERT INTO tasks (run, task, tool, status, attempts, arguments, outputs, model, error, started_at, "
            "finished_at, detail) VALUES (?, ?, ?, 'running', ?, ?, '{}', NULL, NULL, ?, NULL, NULL) "
            "ON CONFLICT(run, task) DO UPDATE SET tool = excluded.tool, status = 'running', attempts = excluded.attempts, "
            "arguments = excluded.arguments, error = NULL, started_at = excluded.started_at, finished_at = NULL, "
            "detail = CASE WHEN excluded.attempts > 1 THEN tasks.detail ELSE NULL END",
            (run_id, task_id, tool, attempt, json.dumps(arguments, default=str), time.time()),
        )

    def task_finished(self, run_id: str, task_id: str, tool: str, status: str, *, attempts: int = 0,
                      outputs: dict[str, str] | None = None, model: str | None = None, error: str | None = None,
                      arguments: dict[str, Any] | None = None, detail: dict[str, Any] | None = None) -> None:
        if status not in FINISHED_TASK_STATUSES + ("awaiting_approval",):
            raise ValueError(f"unknown task status {status!r}")
        now = time.time()
        self._db().execute(
            "INSERT INTO tasks (run, task, tool, status, attempts, arguments, outputs, model, error, started_at, "
            "finished_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) "
            "ON CONFLICT(run, task) DO UPDATE SET tool = excluded.tool, status = excluded.status, "
            "attempts = MAX(tasks.attempts, excluded.attempts), "
            "outputs = excluded.outputs, model = excluded.model, error = excluded.error, finished_at = excluded.finished_at, "
            "detail = COALESCE(excluded.detail, tasks.detail)",
            (run_id, task_id, tool, status, attempts, json.dumps(arguments or {}, default=str), json.dumps(outputs or {}),
             model, error, now, json.dumps(detail, default=str) if detail else None),
        )

    def task_repaired(self, run_id: str, task_id: str, earlier: dict[str, Any]) -> None:
        """Keep a failed call of a task (tool, arguments, error) before its repaired call starts."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def tasks(self, run_id: str) -> list[TaskRecord]:
        rows = self._db().execute(
            "SELECT run, task, tool, status, attempts, arguments, outputs, model, error, started_at, finished_at, detail "
            "FROM tasks WHERE run = ? ORDER BY rowid", (run_id,)).fetchall()
        return [TaskRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), r[7], r[8], r[9], r[10],
                           json.loads(r[11]) if r[11] else {}) for r in rows]

    def forget_unfinished_tasks(self, run_id: str) -> None:
        """Tasks a crash left 'running' (their worker died with the process) are run again on resume."""
        self._db().execute("DELETE FROM tasks WHERE run = ? AND status IN ('running', 'cancelled', 'awaiting_approval')",
                           (run_id,))

    # ------------------------------------------------------------------ session summaries

    def summary(self, session: str) -> tuple[str, str] | None:
        row = self._db().execute("SELECT summary, through_run FROM session_summaries WHERE session = ?", (session,)).fetchone()
        return (row[0], row[1]) if row else None

    def set_summary(self, session: str, summary: str, through_run: str) -> None:
        self._db().execute(
            "INSERT INTO session_summaries VALUES (?, ?, ?, ?) ON CONFLICT(session) DO UPDATE SET "
            "summary = excluded.summary, through_run = excluded.through_run, updated_at = excluded.updated_at",
            (session, summary, through_run, time.time()),
        )
