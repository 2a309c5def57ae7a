"""Artifact blobs in S3-compatible object storage (AWS S3, MinIO, Ceph, ...) through boto3.

``store = "s3://bucket/prefix"``; the endpoint, region and credentials come from the usual
environment (``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``), never from the config file, and
nothing here knows which server answers. Objects are named ``<prefix>blobs/ab/<sha256>`` as on disk.

A PUT is atomic (an object is visible whole or not at all), which is what makes "blob first, then
row" hold: a crash leaves at most an unreferenced object, which ``collect_garbage`` removes once it
is older than the grace period. :meth:`S3BlobStore.local_path` keeps a verified copy in a local cache
for libraries that insist on a file path.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .locations import S3Location, parse_s3_url
from .protocols import BlobMissingError

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # pragma: no cover - the extra is installed in CI
    from . import missing_extra

    raise missing_extra("an s3:// store") from exc

_MISSING = ("404", "NoSuchKey", "NotFound")


class S3BlobStore:
    def __init__(self, url: str, cache_dir: str | os.PathLike[str]):
        self.place: S3Location = parse_s3_url(url)
        self.location = self.place.url
        self.cache_dir = Path(cache_dir).expanduser()
        # Bounded retries and timeouts: a task waiting on a dead endpoint fails (transiently) instead of hanging.
        self._client = boto3.session.Session().client(
            "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60))
        self._checked_bucket = False

    def _key(self, digest: str) -> str:
        return f"{self.place.prefix}blobs/{digest[:2]}/{digest}"

    def _fail(self, exc: Exception, doing: str) -> ConnectionError:
        detail = exc.response.get("Error", {}).get("Message", str(exc)) if isinstance(exc, ClientError) else str(exc)
        return ConnectionError(f"object storage {self.location}: cannot {doing}: {detail}")

    def contains(self, digest: str, size: int) -> bool:
        try:
            head = self._client.head_object(Bucket=self.place.bucket, Key=self._key(digest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise self._fail(exc, f"look up blob {digest[:12]}") from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"look up blob {digest[:12]}") from None
        if head.get("ContentLength") != size:
            return False
        # Object stores keep no writable mtime: copying the object onto itself makes it young again, so a
        # collect_garbage running now spares it for the row about to point at it.
        if time.time() - head["LastModified"].timestamp() > 60:
            try:
                self._client.copy_object(Bucket=self.place.bucket, Key=self._key(digest), MetadataDirective="REPLACE",
                                         CopySource={"Bucket": self.place.bucket, "Key": self._key(digest)},
                                         Metadata={"touched": str(int(time.time()))})
            except (ClientError, BotoCoreError):
                return False  # write it again instead
        return True

    def write(self, digest: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.place.bucket, Key=self._key(digest), Body=data,
                                    ContentMD5=_md5_b64(data))  # the server checks the bytes it got
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"write blob {digest[:12]}") from None

    def read(self, digest: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.place.bucket, Key=self._key(digest))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise BlobMissingError(digest) from None
            raise self._fail(exc, f"read blob {digest[:12]}") from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"read blob {digest[:12]}") from None

    def local_path(self, digest: str) -> Path:
        cached = self.cache_dir / digest[:2] / digest
        if cached.is_file():
            return cached
        data = self.read(digest)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConnectionError(f"object storage {self.location}: blob {digest[:12]} came back corrupted")
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{os.getpid()}-", suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, cached)
        return cached

    def ages(self) -> Iterator[tuple[str, float]]:
        paginator = self._client.get_paginator("list_objects_v2")
        now = time.time()
        try:
            for page in paginator.paginate(Bucket=self.place.bucket, Prefix=f"{self.place.prefix}blobs/"):
                for item in page.get("Contents", []):
                    yield item["Key"].rsplit("/", 1)[-1], now - item["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "list blobs") from None

    def delete(self, digest: str) -> None:
        try:
            self._client.delete_object(Bucket=self.place.bucket, Key=self._key(digest))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"delete blob {digest[:12]}") from None

    def remove_stale_uploads(self) -> None:
        # A PUT that died left nothing behind; a cache file a dead process was writing is a '.part'.
        for tmp in self.cache_dir.glob("??/.*.part"):
            pid = tmp.name[1:].split("-", 1)[0]
            if pid.isdigit():
                from .sqlite import pid_alive

                if not pid_alive(int(pid)):
                    tmp.unlink(missing_ok=True)

    def check_reachable(self) -> None:
        """Fail now, in one line, when the bucket cannot be reached (rather than at the first artifact)."""
        try:
            self._client.head_bucket(Bucket=self.place.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"reach bucket {self.place.bucket!r}") from None


def _md5_b64(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
