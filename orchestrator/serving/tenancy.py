"""Who owns what. Every file, thread, run and artifact the server touches belongs to exactly one tenant.

Ownership rides on anymoda's own session isolation (the store and journal refuse another session's
ids): a tenant's conversation (a *thread*) ``T`` runs in the session ``t:<tenant>:<T>``, and the
tenant's uploaded files live in the session ``f:<tenant>``. Tenant names cannot contain ':', so no
tenant's prefix is another's. An artifact is the tenant's when its session carries the tenant's
prefix; one stored without a session (shared by the local owner) is nobody's here, so the server
never hands it out.

Every lookup that fails for another tenant raises :class:`NotFound` with the same message as for an
id that does not exist: a caller cannot tell "not yours" from "not there".
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..storage.artifacts import Artifact, is_artifact_id
from ..errors import InvalidInputError, shown
from ..execution.journal import RUN_ID, RunRecord
from .auth import ServingDatabase, check_tenant_name, serving_database

THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    artifact TEXT NOT NULL,
    session TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    mime TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_tenant ON files(tenant, created_at);
CREATE TABLE IF NOT EXISTS threads (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
"""


class NotFound(LookupError):
    """The id does not exist, or belongs to another tenant: the two are told apart nowhere."""

    def __init__(self, what: str, ident: Any):
        super().__init__(f"no {what} {shown(ident)}")


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    artifact: str
    session: str
    filename: str
    purpose: str
    bytes: int
    mime: str
    kind: str
    created_at: float

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's file object, plus what a multimodal client needs to show it (kind, mime)."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": int(self.created_at),
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "mime_type": self.mime, "kind": self.kind}


@dataclass(frozen=True)
class ThreadRecord:
    tenant: str
    id: str
    created_at: float
    updated_at: float
    metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"thread_id": self.id, "created_at": self.created_at, "updated_at": self.updated_at,
                "metadata": self.metadata}


def thread_session(tenant: str, thread_id: str) -> str:
    return f"t:{tenant}:{thread_id}"


def files_session(tenant: str) -> str:
    return f"f:{tenant}"


def session_tenant(session: str | None) -> str | None:
    """The tenant a session belongs to, or None for one the server did not make."""
    if not session:
        return None
    if session.startswith("f:"):
        return session[2:] or None
    if session.startswith("t:") and session.count(":") >= 2:
        return session.split(":", 2)[1] or None
    return None


def session_thread(session: str) -> str | None:
    return session.split(":", 2)[2] if session.startswith("t:") and session.count(":") >= 2 else None


class Tenancy:
    """The server's ownership tables (files, threads) and every "is this the caller's?" check."""

    def __init__(self, home: Path):
        self.database = ServingDatabase(serving_database(home), _SCHEMA)

    # ------------------------------------------------------------------ threads

    @staticmethod
    def check_thread_id(value: object) -> str:
        """A thread id a client chose (in a body): malformed is the client's error, not a missing thread."""
        if not isinstance(value, str) or not THREAD_ID.fullmatch(value):
            raise InvalidInputError(f"a conversation (thread) id is 1-64 letters, digits, '_' and '-', starting with a "
                                    f"letter or digit; got {shown(value)}")
        return value

    def ensure_thread(self, tenant: str, thread_id: str, metadata: dict[str, Any] | None = None) -> ThreadRecord:
        """The tenant's thread, made if new (a conversation id is the client's to choose, inside its tenant)."""
        self.check_thread_id(thread_id)
        now = time.time()
        self.database.write("INSERT INTO threads VALUES (?, ?, ?, ?, ?) ON CONFLICT(tenant, id) DO UPDATE SET "
                            "updated_at = excluded.updated_at",
                            (tenant, thread_id, now, now, json.dumps(metadata or {})))
        return self.thread(tenant, thread_id)

    def new_thread(self, tenant: str, metadata: dict[str, Any] | None = None) -> ThreadRecord:
        return self.ensure_thread(tenant, f"thread-{secrets.token_hex(8)}", metadata)

    def thread(self, tenant: str, thread_id: Any) -> ThreadRecord:
        if not isinstance(thread_id, str) or not THREAD_ID.fullmatch(thread_id):
            raise NotFound("thread", thread_id)
        row = self.database.db().execute("SELECT * FROM threads WHERE tenant = ? AND id = ?", (tenant, thread_id)).fetchone()
        if row is None:
            raise NotFound("thread", thread_id)
        return ThreadRecord(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def threads(self, tenant: str, limit: int = 100) -> list[ThreadRecord]:
        rows = self.database.db().execute("SELECT * FROM threads WHERE tenant = ? ORDER BY updated_at DESC LIMIT ?",
                                          (tenant, limit)).fetchall()
        return [ThreadRecord(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def delete_thread(self, tenant: str, thread_id: str) -> None:
        self.thread(tenant, thread_id)
        self.database.write("DELETE FROM threads WHERE tenant = ? AND id = ?", (tenant, thread_id))

    # ------------------------------------------------------------------ files

    def add_file(self, tenant: str, artifact: Artifact, filename: str, purpose: str) -> FileRecord:
        record = FileRecord(f"file-{secrets.token_hex(12)}", check_tenant_name(tenant), artifact.id, artifact.session or "",
                            filename, purpose, artifact.size, artifact.mime, artifact.kind.value, time.time())
        if session_tenant(record.session) != tenant:
            raise ValueError(f"artifact {artifact.id} is not in a session of tenant {tenant!r}")  # a bug, not input
        self.database.write("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (record.id, tenant, record.artifact, record.session, record.filename, record.purpose,
                             record.bytes, record.mime, record.kind, record.created_at))
        return record

    def file(self, tenant: str, file_id: Any) -> FileRecord:
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            raise NotFound("file", file_id)
        row = self.database.db().execute("SELECT * FROM files WHERE id = ? AND tenant = ?", (file_id, tenant)).fetchone()
        if row is None:
            raise NotFound("file", file_id)
        return FileRecord(*row)

    def file_of_artifact(self, tenant: str, artifact_id: str) -> FileRecord | None:
        row = self.database.db().execute("SELECT * FROM files WHERE artifact = ? AND tenant = ? ORDER BY created_at LIMIT 1",
                                         (artifact_id, tenant)).fetchone()
        return FileRecord(*row) if row else None

    def files(self, tenant: str, *, purpose: str | None = None, limit: int = 100, after: str | None = None,
              newest_first: bool = True) -> list[FileRecord]:
        query, args = "SELECT * FROM files WHERE tenant = ?", [tenant]
        if purpose is not None:
            query += " AND purpose = ?"
            args.append(purpose)
        if after is not None:
            anchor = self.file(tenant, after)
            query += " AND (created_at, id) " + ("< (?, ?)" if newest_first else "> (?, ?)")
            args += [anchor.created_at, anchor.id]
        order = "DESC" if newest_first else "ASC"
        query += f" ORDER BY created_at {order}, id {order} LIMIT ?"
        args.append(limit)
        return [FileRecord(*r) for r in self.database.db().execute(query, args).fetchall()]

    def delete_file(self, tenant: str, file_id: str) -> None:
        self.file(tenant, file_id)
        self.database.write("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant))

    # ------------------------------------------------------------------ runs and artifacts

    @staticmethod
    def owns_session(tenant: str, session: str | None) -> bool:
        return session_tenant(session) == tenant

    def check_run(self, tenant: str, run_id: Any, journal: Any, thread_id: str | None = None) -> RunRecord:
        """The tenant's run (of ``thread_id`` when given); anything else is NotFound."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise NotFound("run", run_id)
        try:
            record = journal.get_run(run_id)
        except Exception:  # the journal says 'no run' with an InvalidInputError
            raise NotFound("run", run_id) from None
        if not self.owns_session(tenant, record.session):
            raise NotFound("run", run_id)
        if thread_id is not None and record.session != thread_session(tenant, thread_id):
            raise NotFound("run", run_id)
        return record

    def check_artifact(self, tenant: str, artifact_id: Any, store: Any) -> Artifact:
        if not is_artifact_id(artifact_id):
            raise NotFound("artifact", artifact_id)
        try:
            artifact = store.get(artifact_id)
        except Exception:
            raise NotFound("artifact", artifact_id) from None
        if not self.owns_session(tenant, artifact.session):
            raise NotFound("artifact", artifact_id)
        return artifact
