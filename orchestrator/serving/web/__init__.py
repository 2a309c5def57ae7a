"""The web chat page: static HTML, CSS and JavaScript shipped in the package (no build step, no CDN)."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def _asset(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def add_web_routes(app: FastAPI) -> None:
    # Public like /health: the page holds no data; it asks for an API key and sends it with every call.
    security = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: data:; "
                                           "connect-src 'self'; style-src 'self'; script-src 'self'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8", headers=security)

    @app.get("/web/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in ASSETS:
            from ..errors import ApiError

            raise ApiError(404, f"no asset {name[:40]!r}", "not_found_error")
        return Response(_asset(name), media_type=ASSETS[name], headers=security)
