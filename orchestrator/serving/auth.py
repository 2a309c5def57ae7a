"""API keys and tenants.

A key is ``amk_`` + 43 url-safe characters (256 random bits), shown once when it is made. Only its
sha256 is kept, so a copy of the database gives no working key; sha256 rather than a slow password hash
because the key is random and long (nothing to guess), and every request looks it up.

The keys live in ``<home>/serving.sqlite`` beside the tenancy tables (``tenancy.py``): ``anymoda keys``
and a running server share the file, so a key revoked from the command line is refused on the very
next request.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..backends.sqlite import enable_wal
from ..errors import InvalidInputError, shown

KEY_PREFIX = "amk_"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
KEY_ID = re.compile(r"^key_[0-9a-f]{12}$")
_KEY_SHAPE = re.compile(r"^amk_[A-Za-z0-9_-]{43}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL,
    max_upload_bytes INTEGER,
    requests_per_minute INTEGER,
    max_concurrent_runs INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant);
"""


def check_tenant_name(value: object) -> str:
    if not isinstance(value, str) or not TENANT_NAME.fullmatch(value):
        raise InvalidInputError(
            f"tenant name {shown(value)} must be 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    return value


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyLimits:
    """A key's own limits; None means the server's default."""

    max_upload_bytes: int | None = None
    requests_per_minute: int | None = None
    max_concurrent_runs: int | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    created_at: float
    revoked_at: float | None
    limits: KeyLimits

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict:
        return {"id": self.id, "tenant": self.tenant, "created_at": self.created_at, "revoked_at": self.revoked_at,
                "active": self.active, "max_upload_bytes": self.limits.max_upload_bytes,
                "requests_per_minute": self.limits.requests_per_minute,
                "max_concurrent_runs": self.limits.max_concurrent_runs}


def serving_database(home: Path) -> Path:
    return Path(home) / "serving.sqlite"


class ServingDatabase:
    """One SQLite file, one connection per thread (sqlite3 connections must not cross threads)."""

    def __init__(self, path: str | os.PathLike[str], schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self.db().executescript(schema)

    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def write(self, sql: str, args: tuple = ()) -> int:
        with self._write_lock:
            return self.db().execute(sql, args).rowcount


class KeyStore:
    def __init__(self, home: str | os.PathLike[str]):
        self.database = ServingDatabase(serving_database(Path(home)), _SCHEMA)

    def create(self, tenant: str, limits: KeyLimits = KeyLimits()) -> tuple[ApiKey, str]:
        """A new key of ``tenant``: its record and the secret itself (the only time it exists in clear)."""
        check_tenant_name(tenant)
        for name, value in (("max upload bytes", limits.max_upload_bytes), ("requests per minute", limits.requests_per_minute),
                            ("concurrent runs", limits.max_concurrent_runs)):
            # At most 2**53 - 1: a 20-digit --rate overflowed SQLite's integers in a traceback.
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**53):
                raise InvalidInputError(f"{name} must be a whole number from 1 to {2**53 - 1:,}, got {shown(value)}")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(f"key_{secrets.token_hex(6)}", tenant, time.time(), None, limits)
        self.database.write("INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
                            (key.id, tenant, hash_key(secret), key.created_at, limits.max_upload_bytes,
                             limits.requests_per_minute, limits.max_concurrent_runs))
        return key, secret

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, else None (unknown, malformed and revoked alike)."""
        if not isinstance(secret, str) or not _KEY_SHAPE.fullmatch(secret):
            return None
        row = self.database.db().execute("SELECT * FROM api_keys WHERE sha256 = ?", (hash_key(secret),)).fetchone()
        key = _key_from_row(row) if row else None
        return key if key is not None and key.active else None

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        query, args = "SELECT * FROM api_keys", ()
        if tenant is not None:
            query, args = query + " WHERE tenant = ?", (check_tenant_name(tenant),)
        return [_key_from_row(r) for r in self.database.db().execute(query + " ORDER BY created_at", args).fetchall()]

    def revoke(self, key_id: str) -> ApiKey:
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise InvalidInputError(f"{shown(key_id)} is not a key id (key_ and 12 hex digits, as 'anymoda keys list' shows)")
        self.database.write("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id))
        row = self.database.db().execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no key {key_id!r}")
        return _key_from_row(row)


def _key_from_row(row: tuple) -> ApiKey:
    return ApiKey(row[0], row[1], row[3], row[4], KeyLimits(row[5], row[6], row[7]))
