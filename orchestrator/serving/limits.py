"""Per-key limits (request rate, upload size, concurrent runs) and the server-wide body bound."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass

from .auth import ApiKey


@dataclass(frozen=True)
class ServeLimits:
    """The server's defaults; a key may carry its own (``anymoda keys create --rate ...``)."""

    max_body_bytes: int = 64 * 1024 * 1024  # any request body; base64 makes a 40 MB file 54 MB
    max_upload_bytes: int = 40 * 1024 * 1024  # decoded media per request (a file upload, or a message's parts)
    requests_per_minute: int = 600
    max_concurrent_runs: int = 4
    max_message_parts: int = 16
    max_messages: int = 256

    def upload_bytes(self, key: ApiKey) -> int:
        return key.limits.max_upload_bytes or self.max_upload_bytes

    def rate(self, key: ApiKey) -> int:
        return key.limits.requests_per_minute or self.requests_per_minute

    def concurrent_runs(self, key: ApiKey) -> int:
        return key.limits.max_concurrent_runs or self.max_concurrent_runs


class RateLimiter:
    """A token bucket per key: a minute's allowance may be spent at once, then it refills evenly."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, key_id: str, per_minute: int) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        refill = per_minute / 60.0
        with self._lock:
            tokens, then = self._buckets.get(key_id, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - then) * refill)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / refill


class RunSlots:
    """How many runs each key has going; a run holds its slot until it finishes or waits for approval."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str, limit: int) -> bool:
        with self._lock:
            if self._running.get(key_id, 0) >= limit:
                return False
            self._running[key_id] = self._running.get(key_id, 0) + 1
            return True

    def release(self, key_id: str) -> None:
        with self._lock:
            left = self._running.get(key_id, 0) - 1
            if left > 0:
                self._running[key_id] = left
            else:
                self._running.pop(key_id, None)

    def total(self) -> int:
        with self._lock:
            return sum(self._running.values())


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused with 413 before it is read into memory.

    Content-Length is checked up front; a chunked body is counted as it arrives and cut off at the
    limit, so a client cannot stream an unbounded body into a handler or a multipart spool file."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _reply(send, 400, "Content-Length is not a number", "invalid_request_error")
                if declared > limit:
                    return await _reply(send, 413, f"the request body is {declared:,} bytes, over the limit of {limit:,}",
                                        "request_too_large")
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    scope[BODY_EXCEEDED] = limit  # parsers may wrap the exception; the flag survives that
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if BODY_EXCEEDED not in scope or started:
                raise
            await _reply(send, 413, body_too_large_message(limit), "request_too_large")


BODY_EXCEEDED = "anymoda.body_exceeded"


class BodyTooLarge(Exception):
    pass


def body_too_large_message(limit: int) -> str:
    return f"the request body is over the limit of {limit:,} bytes"


async def _reply(send, status: int, message: str, kind: str) -> None:
    body = error_body(message, kind)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
