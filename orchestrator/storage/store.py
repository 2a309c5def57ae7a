"""The artifact store: content-addressed blobs plus an index of rows.

Where they live is a back end's business (:mod:`orchestrator.backends`): by default, under ``root``::

    index.sqlite            one row per artifact (id, kind, mime, size, sha256, metadata, session, task)
                            plus a lineage table (child -> parents)
    blobs/ab/abcdef...      the bytes, named by their sha256, read-only once written
    tmp/                    in-flight writes; a file appears under blobs/ only by an atomic rename

or blobs in S3-compatible object storage and the index in PostgreSQL, shared by every host.

Safety properties the tests hold us to:

* every input is validated (:func:`orchestrator.storage.codecs.inspect`) before anything is written, so a bad
  input changes nothing;
* a crash mid-write leaves at most a temp file (removed at next open once its writer is dead) or an
  unreferenced blob, never an index row pointing at partial bytes: the blob is written (atomically)
  before its row, on every back end;
* ids are checked against a strict pattern before use and blob paths come from our own index, so no
  id can reach outside the store;
* every read takes ``session=``: given, another session's artifact is reported as not found (one
  stored without a session is shared by all); ``None`` is owner-level access, for the local owner
  only (the CLI's ``artifacts`` commands, scripts on this machine). Code acting for someone else
  passes that caller's session, as :class:`~orchestrator.agent.Session` does;
* the database back end makes concurrent writers from threads and processes (and hosts) safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..backends.protocols import BlobMissingError, BlobStore, Database
from ..backends.sqlite import LocalBlobStore, SqliteDatabase
from ..errors import ArtifactNotFoundError, InvalidInputError
from . import codecs
from .artifacts import Artifact, ArtifactKind, check_artifact_id, new_artifact_id
from .atomic_files import partial_path
from .codecs import EXTENSION_KINDS, MediaLimits, check_output_file

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    mime TEXT NOT NULL,
    size {bigint} NOT NULL,
    sha256 TEXT NOT NULL,
    metadata TEXT NOT NULL,
    session TEXT,
    task TEXT,
    created_at {real} NOT NULL{order}
)""",
    """CREATE TABLE IF NOT EXISTS lineage (
    child TEXT NOT NULL REFERENCES artifacts(id),
    parent TEXT NOT NULL REFERENCES artifacts(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (child, parent)
)""",
    "CREATE INDEX IF NOT EXISTS artifacts_session ON artifacts(session, created_at)",
    "CREATE INDEX IF NOT EXISTS artifacts_sha256 ON artifacts(sha256)",
    "CREATE INDEX IF NOT EXISTS lineage_parent ON lineage(parent)",
)
_COLUMNS = "id, kind, mime, size, sha256, metadata, session, task, created_at"

_EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp", "image/bmp": ".bmp",
    "image/tiff": ".tiff", "audio/wav": ".wav", "audio/flac": ".flac", "audio/ogg": ".ogg", "audio/mpeg": ".mp3",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "video/webm": ".webm", "video/x-msvideo": ".avi",
    "application/json": ".json", "text/csv": ".csv", "application/x-npy": ".npy",
    codecs.DETECTIONS_MIME: ".json", codecs.MASKS_MIME: ".npz", codecs.TIME_SERIES_JSON_MIME: ".json",
}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def extension_for(mime: str) -> str:
    return ".txt" if mime.startswith("text/plain") else _EXTENSIONS.get(mime, ".bin")


class ArtifactStore:
    """Artifacts of every session. ``ArtifactStore(root)`` is the embedded store under ``root``; pass
    ``blobs=`` and ``database=`` (see :mod:`orchestrator.backends`) for another back end."""

    def __init__(self, root: str | os.PathLike[str] | None = None, limits: MediaLimits | None = None, *,
                 blobs: BlobStore | None = None, database: Database | None = None):
        if root is None and (blobs is None or database is None):
            raise ValueError("an ArtifactStore needs a root folder, or both blobs= and database=")
        self.root = Path(root).expanduser().resolve() if root is not None else None
        self.limits = limits or MediaLimits()
        self.blobs = blobs if blobs is not None else LocalBlobStore(self.root)
        self.database = database if database is not None else SqliteDatabase(self.root / "index.sqlite")
        self.database.migrate("artifacts", _SCHEMA)
        self.blobs.remove_stale_uploads()

    # The embedded store's blob folder and blob paths, as they were before back ends (tests reach for them).
    @property
    def _blobs(self) -> Path:
        return self.blobs._blobs

    @_blobs.setter
    def _blobs(self, folder: Path) -> None:
        self.blobs._blobs = folder

    def _blob_path(self, digest: str) -> Path:
        return self.blobs.local_path(self._check_digest(digest))

    @property
    def _where(self) -> str:
        return "on disk" if isinstance(self.blobs, LocalBlobStore) else f"in {self.blobs.location}"

    @property
    def location(self) -> str:
        """Where the store lives, for messages (never holds a password)."""
        return f"{self.blobs.location} (index: {self.database.location})"

    def close(self) -> None:
        self.database.close()

    # ------------------------------------------------------------------ writing

    def put(
        self,
        kind: ArtifactKind | str,
        data: bytes,
        *,
        metadata: dict[str, Any] | None = None,
        session: str | None = None,
        task: str | None = None,
        parents: Iterable[str] = (),
    ) -> Artifact:
        """Validate ``data`` as ``kind`` and store it; nothing is written if validation fails."""
        kind = ArtifactKind.parse(kind)
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInputError(f"artifact content must be bytes, got {type(data).__name__}")
        data = bytes(data)
        mime, inspected = codecs.inspect(kind, data, self.limits)
        return self._insert(kind, data, mime, inspected, metadata=metadata, session=session, task=task, parents=parents)

    def _insert(self, kind: ArtifactKind, data: bytes, mime: str, inspected: dict[str, Any], *,
                metadata: dict[str, Any] | None, session: str | None, task: str | None = None,
                parents: Iterable[str] = ()) -> Artifact:
        """Store ``data`` that :func:`codecs.inspect` has passed as ``kind`` (giving ``mime`` and ``inspected``)."""
        parents = tuple(dict.fromkeys(check_artifact_id(p) for p in parents))
        self._check_visible(parents, session)
        merged = {**inspected, **(metadata or {})}
        try:
            metadata_json = json.dumps(merged, ensure_ascii=False, allow_nan=False, default=str)
        except ValueError as exc:
            raise InvalidInputError(f"artifact metadata cannot be stored: {exc}") from None

        digest = self._write_blob(data)  # the bytes first: a crash before the row leaves an unreferenced blob
        created = time.time()
        with self.database.transaction() as db:
            while True:
                artifact_id = new_artifact_id(kind)
                inserted = db.execute(
                    f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (artifact_id, kind.value, mime, len(data), digest, metadata_json, session, task, created),
                )
                if inserted.rowcount == 1:
                    break  # else a 64-bit id collided; draw another
            db.executemany(
                "INSERT INTO lineage VALUES (?, ?, ?)", [(artifact_id, parent, i) for i, parent in enumerate(parents)]
            )
        return Artifact(artifact_id, kind, mime, len(data), digest, merged, session, task, parents, created)

    def put_value(self, kind: ArtifactKind | str, value: Any, **kwargs: Any) -> Artifact:
        """Encode an in-memory value (str, PIL image, AudioClip, ...) and store it."""
        kind = ArtifactKind.parse(kind)
        data, _ = codecs.encode(kind, value)
        return self.put(kind, data, **kwargs)

    def ingest_file(
        self,
        path: str | os.PathLike[str],
        kind: ArtifactKind | str | None = None,
        *,
        session: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Artifact:
        """Store a user's file. Its content decides its kind; an extension that disagrees is an error."""
        return self.ingest_files([path], kind, session=session, metadata=metadata)[0]

    def ingest_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        kind: ArtifactKind | str | None = None,
        *,
        session: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Artifact]:
        """Store a request's files, all or none: every file is read and checked before the first is stored, so a
        bad second file leaves no orphan of the first (each refusal names its file)."""
        checked = []
        for path in paths:
            chosen, data = self._read_user_file(path, kind)
            try:
                mime, inspected = codecs.inspect(chosen, data, self.limits)
            except InvalidInputError as exc:  # which of the request's files it was
                raise InvalidInputError(f"input file {Path(path).name!r}: {exc}") from None
            checked.append((Path(path).name, chosen, data, mime, inspected))
        return [self._insert(chosen, data, mime, inspected, metadata={"name": name, **(metadata or {})}, session=session)
                for name, chosen, data, mime, inspected in checked]

    def _read_user_file(self, path: str | os.PathLike[str], kind: ArtifactKind | str | None) -> tuple[ArtifactKind, bytes]:
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"input file {str(path)!r} does not exist or is not a regular file")
        size = path.stat().st_size
        if size == 0:
            raise InvalidInputError(f"input file {path.name!r} is empty (0 bytes)")
        if size > self.limits.max_bytes:
            raise InvalidInputError(f"input file {path.name!r} is {size:,} bytes, over the limit of {self.limits.max_bytes:,}")
        data = path.read_bytes()
        sniffed, sniffed_mime = codecs.sniff(data)
        claimed = EXTENSION_KINDS.get(path.suffix.lower())
        declared = ArtifactKind.parse(kind) if kind is not None else None
        media = (ArtifactKind.IMAGE, ArtifactKind.AUDIO, ArtifactKind.VIDEO)
        if claimed in media and sniffed != claimed:
            raise InvalidInputError(
                f"input file {path.name!r} has the extension {path.suffix} ({claimed.value}) but its content is "
                f"{codecs.describe_content(data)}"
            )
        if declared is not None and declared in media and sniffed != declared:
            raise InvalidInputError(
                f"input file {path.name!r} was given as {declared.value} but its content is {codecs.describe_content(data)}"
            )
        chosen = declared or claimed or sniffed
        if chosen is None:
            raise InvalidInputError(
                f"cannot tell what kind of input {path.name!r} is ({codecs.describe_content(data)}); name its kind")
        return chosen, data

    def _write_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._check_digest(digest)
        if not self.blobs.contains(digest, len(data)):  # same content already stored: blobs are immutable
            self.blobs.write(digest, data)
        return digest

    @staticmethod
    def _check_digest(digest: str) -> str:
        if not _SHA256.fullmatch(digest):
            raise InvalidInputError(f"corrupt index: {digest!r} is not a sha256 digest")
        return digest

    # ------------------------------------------------------------------ reading

    def get(self, artifact_id: str, *, session: str | None = None) -> Artifact:
        """The record of ``artifact_id``; another session's artifact is reported as not found."""
        artifact_id = check_artifact_id(artifact_id)
        row = self.database.execute(f"SELECT {_COLUMNS} FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        if row is None or (session is not None and row[6] is not None and row[6] != session):
            raise ArtifactNotFoundError(f"no artifact {artifact_id!r}" + (f" in session {session!r}" if session else ""))
        parents = self.database.execute(
            "SELECT parent FROM lineage WHERE child = ? ORDER BY position", (artifact_id,)
        ).fetchall()
        return Artifact(
            id=row[0], kind=ArtifactKind(row[1]), mime=row[2], size=row[3], sha256=row[4], metadata=json.loads(row[5]),
            session=row[6], task=row[7], parents=tuple(p[0] for p in parents), created_at=row[8],
        )

    def _check_visible(self, artifact_ids: tuple[str, ...], session: str | None) -> None:
        """Every id exists and this session may see it (one query, however many ids)."""
        if not artifact_ids:
            return
        marks = ", ".join("?" * len(artifact_ids))
        owners = dict(self.database.execute(f"SELECT id, session FROM artifacts WHERE id IN ({marks})", artifact_ids).fetchall())
        for artifact_id in artifact_ids:
            if artifact_id not in owners or (session is not None and owners[artifact_id] not in (None, session)):
                raise ArtifactNotFoundError(f"no artifact {artifact_id!r}" + (f" in session {session!r}" if session else ""))

    def exists(self, artifact_id: str, *, session: str | None = None) -> bool:
        try:
            self.get(artifact_id, session=session)
        except (ArtifactNotFoundError, InvalidInputError):
            return False
        return True

    def read_bytes(self, artifact_id: str, *, session: str | None = None) -> bytes:
        return self._read_blob(self.get(artifact_id, session=session))

    def _read_blob(self, artifact: Artifact) -> bytes:
        artifact_id = artifact.id
        try:
            data = self.blobs.read(self._check_digest(artifact.sha256))
        except BlobMissingError:
            raise InvalidInputError(f"artifact {artifact_id!r} is missing {self._where} (no blob {artifact.sha256})") from None
        if hashlib.sha256(data).hexdigest() != artifact.sha256:
            raise InvalidInputError(f"artifact {artifact_id!r} is corrupted {self._where} (sha256 mismatch)")
        return data

    def load(self, artifact_id: str, *, session: str | None = None) -> Any:
        """Decode an artifact into the value tools use (str, PIL image, AudioClip, ...)."""
        return self.decode(self.get(artifact_id, session=session))

    def decode(self, artifact: Artifact) -> Any:
        """The value of an artifact whose record the caller already holds (fetched with its session)."""
        return codecs.decode(artifact.kind, self._read_blob(artifact), artifact.mime, self.limits)

    def blob_path(self, artifact_id: str, *, session: str | None = None) -> Path:
        """Where the (read-only) bytes live, for libraries that insist on a file path."""
        return self.blobs.local_path(self._check_digest(self.get(artifact_id, session=session).sha256))

    def export(self, artifact_id: str, destination: str | os.PathLike[str], *, session: str | None = None) -> Path:
        """Copy an artifact out. Into a folder (one that exists, or a name ending in '/', made if missing) it goes
        as ``<id><ext>``; any other destination is the file to write."""
        artifact = self.get(artifact_id, session=session)
        named = os.fspath(destination)
        what = f"cannot export {artifact.id}"
        target = check_output_file(named, what)  # no FIFO, device, /proc... replaced; no name the system refuses
        try:
            if named.endswith(("/", os.sep)) or target.is_dir():  # into the folder (made if missing)
                target = check_output_file(target / f"{artifact.id}{extension_for(artifact.mime)}", what)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = self._read_blob(artifact)
            tmp = partial_path(target, ".part")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as exc:  # a folder where a file is meant, no permission, a full disk
            where = named if len(named) <= 120 else named[:117] + "..."
            raise InvalidInputError(f"cannot export {artifact.id} to {where!r}: {exc.strerror or exc}") from None
        return target

    def list(
        self, *, session: str | None = None, kind: ArtifactKind | str | None = None, limit: int = 1000, newest: bool = False
    ) -> list[Artifact]:
        """Artifacts in the order they were made; ``newest`` takes the last ``limit`` of them instead of the first."""
        query, args = "SELECT id FROM artifacts WHERE 1=1", []
        if session is not None:
            query += " AND session = ?"
            args.append(session)
        if kind is not None:
            query += " AND kind = ?"
            args.append(ArtifactKind.parse(kind).value)
        order = self.database.order_column
        query += f" ORDER BY created_at {'DESC' if newest else 'ASC'}, {order} {'DESC' if newest else 'ASC'} LIMIT ?"
        args.append(int(limit))
        found = [self.get(row[0]) for row in self.database.execute(query, args).fetchall()]
        return found[::-1] if newest else found

    def count(self) -> int:
        return self.database.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0]

    def ancestors(self, artifact_id: str, *, session: str | None = None) -> list[Artifact]:
        """Every artifact this one was derived from, nearest first."""
        self.get(artifact_id, session=session)
        rows = self.database.execute(
            """
            WITH RECURSIVE up(id, depth) AS (
                SELECT parent, 1 FROM lineage WHERE child = ?
                UNION SELECT lineage.parent, up.depth + 1 FROM lineage JOIN up ON lineage.child = up.id
            )
            SELECT id, MIN(depth) FROM up GROUP BY id ORDER BY MIN(depth), id
            """,
            (artifact_id,),
        ).fetchall()
        found = [self.get(row[0]) for row in rows]
        # An artifact without a session may derive from a session's; that session's records stay hidden from others.
        return [a for a in found if session is None or a.session in (None, session)]

    def collect_garbage(self, grace_seconds: float = 3600.0) -> int:
        """Remove blobs no row refers to (left by a crash between rename and insert); returns the count.

        Blobs younger than ``grace_seconds`` are kept: another process may be about to index them.
        """
        referenced = {row[0] for row in self.database.execute("SELECT DISTINCT sha256 FROM artifacts")}
        removed = 0
        for digest, age in list(self.blobs.ages()):
            if digest not in referenced and age > grace_seconds:
                self.blobs.delete(digest)
                removed += 1
        return removed
