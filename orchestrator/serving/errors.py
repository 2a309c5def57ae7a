"""The one error shape every route answers with: ``{"error": {"message", "type", "code"}}`` and a 4xx
(or 5xx for the server's own faults, without a traceback), as OpenAI's API does."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())[:1000]
        self.kind = kind
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code}}
