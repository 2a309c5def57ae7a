"""Bad requests to ``anymoda serve`` each get a clear one-line JSON 4xx and store nothing: no key, bad
base64, a body over the limit, a wrong content type, malformed JSON, an unknown model, a decompression
bomb; and the per-key limits on upload size, request rate and concurrent runs (413/429, Retry-After)."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from serve_harness import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-bad"), "--max-body", "2MiB")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(server):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key('acme')}"}, timeout=60)


def stored(server) -> int:
    """Every artifact in the server's store, whoever's."""
    import sqlite3

    with sqlite3.connect(server.home / "artifacts" / "index.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0]


def refused(response: httpx.Response, status: int, kind: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert "Traceback" not in response.text and "\n" not in body["error"]["message"]
    if kind:
        assert body["error"]["type"] == kind
    return body["error"]["message"]


def chat(text_or_parts) -> dict:
    return {"model": "anymoda", "messages": [{"role": "user", "content": text_or_parts}]}


def png(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (5, 5, 5)).save(buffer, "PNG")
    return buffer.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG of 900 megapixels that is about 100 KB on the wire."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_no_key_or_a_wrong_one_is_401_everywhere_but_health(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/v1/files"),
                         ("GET", "/metrics"), ("GET", "/v1/threads"), ("GET", "/v1/tools")):
        refused(httpx.request(method, server.url + path), 401, "authentication_error")
        refused(httpx.request(method, server.url + path, headers={"Authorization": "Bearer amk_" + "x" * 43}), 401)
        refused(httpx.request(method, server.url + path, headers={"Authorization": "Basic abc"}), 401)


def test_malformed_requests_are_400_and_store_nothing(server, api):
    before = stored(server)
    cases = [
        (chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not base64@@"}}]), "base64"),
        (chat([{"type": "input_audio", "input_audio": {"data": "AAAA%%%%", "format": "wav"}}]), "base64"),
        (chat([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aiff"}}]), "format"),
        (chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"hello there").decode()}}]),
         "its content is"),
        (chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"GIF89a bad").decode()}}]),
         "not a readable image"),
        (chat([{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                                   + base64.b64encode(png()).decode()}},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]), ""),  # 2nd bad: 1st not kept
        (chat([{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]), "does not fetch"),
        (chat([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]), "not"),
        (chat([{"type": "video", "video": {}}]), "unsupported type"),
        (chat(42), "content"),
        ({"model": "anymoda", "messages": [{"role": "assistant", "content": "hi"}]}, "user"),
        ({"model": "anymoda", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "anymoda", "messages": [{"role": "user", "content": "hi"}], "conversation": "../etc"}, "conversation"),
        ({"model": "anymoda", "messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ]
    for body, words in cases:
        response = api.post("/v1/chat/completions", json=body)
        assert words.lower() in refused(response, 400).lower()
    refused(api.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    refused(api.post("/v1/chat/completions", content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)
    refused(api.post("/v1/threads", json={"thread_id": "a/b"}), 400)
    refused(api.post("/v1/threads", json={"metadata": {"x": "y" * 5000}}), 400)
    refused(api.post("/v1/threads", json={"surprise": 1}), 400)
    assert api.get("/v1/files").json()["data"] == [] and stored(server) == before
    assert api.get("/v1/threads").json() == []  # not even an empty conversation


def test_an_unknown_model_is_404_model_not_found(api):
    response = api.post("/v1/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})
    assert "gpt-9" in refused(response, 404) and response.json()["error"]["code"] == "model_not_found"
    refused(api.get("/v1/models/gpt-9"), 404)


def test_a_wrong_content_type_is_415(server, api):
    before = stored(server)
    refused(api.post("/v1/chat/completions", content=b'{"model": "anymoda"}', headers={"Content-Type": "text/plain"}), 415)
    refused(api.post("/v1/files", json={"file": "aGVsbG8="}), 415)
    refused(api.post("/v1/threads/x/runs", content=b"{}", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    assert stored(server) == before


def test_a_body_over_the_limit_is_413_before_it_is_read(server, api):
    before = stored(server)
    big = base64.b64encode(b"\0" * (3 * 1024 * 1024)).decode()
    message = refused(api.post("/v1/chat/completions", json=chat([{"type": "input_audio", "input_audio": {
        "data": big, "format": "wav"}}])), 413, "request_too_large")
    assert "limit" in message

    def chunks():  # no Content-Length: counted as it arrives
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        for _ in range(40):
            yield b"x" * 100_000
        yield b"\r\n--x--\r\n"

    refused(api.post("/v1/files", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}), 413)
    assert stored(server) == before


def test_uploads_are_validated_like_the_cli_and_a_decompression_bomb_stores_nothing(server, api):
    before = stored(server)
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    message = refused(api.post("/v1/files", files={"file": ("bomb.png", bomb, "image/png")}, data={"purpose": "vision"}), 400)
    assert "pixels" in message or "limit" in message
    refused(api.post("/v1/chat/completions", json=chat([{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(bomb).decode()}}])), 400)
    message = refused(api.post("/v1/files", files={"file": ("photo.png", b"just some text", "image/png")}), 400)
    assert "photo.png" in message
    refused(api.post("/v1/files", files={"file": ("empty.wav", b"", "audio/wav")}), 400)
    refused(api.post("/v1/files", files={"file": ("x.png", png()[:40], "image/png")}), 400)  # truncated
    refused(api.post("/v1/files", files={"purpose": (None, "vision")}), 400)  # multipart without a file field
    refused(api.post("/v1/files", files={"file": ("a.png", png())}, data={"purpose": "Not A Purpose!"}), 400)
    assert api.get("/v1/files").json()["data"] == [] and stored(server) == before


def test_per_key_upload_limit_is_413(server):
    small = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key('tiny', max_upload_bytes=1000)}"})
    before = stored(server)
    noise = Image.frombytes("RGB", (40, 40), __import__("os").urandom(4800))  # noise: incompressible
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    data = buffer.getvalue()
    assert len(data) > 1000
    refused(small.post("/v1/files", files={"file": ("a.png", data, "image/png")}), 413, "request_too_large")
    refused(small.post("/v1/chat/completions", json=chat([{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(data).decode()}}])), 413)
    assert stored(server) == before
    assert small.post("/v1/files", files={"file": ("b.png", png(), "image/png")}).status_code == 200


def test_per_key_request_rate_is_429_with_retry_after(server):
    key = server.key("slowpoke", requests_per_minute=3)
    limited = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
    assert [limited.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
    response = limited.get("/v1/models")
    refused(response, 429, "rate_limit_exceeded")
    assert 1 <= int(response.headers["retry-after"]) <= 20
    other = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key('other')}"})
    assert other.get("/v1/models").status_code == 200  # the limit is the key's, not the server's


def test_per_key_concurrent_runs_is_429_with_retry_after(server):
    key = server.key("single", max_concurrent_runs=1)
    one = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    thread = one.post("/v1/threads", json={}).json()["thread_id"]
    slow = one.post(f"/v1/threads/{thread}/runs", json={"input": {"message": "slow 1.5"}}).json()
    began = time.monotonic()
    response = one.post("/v1/chat/completions", json=chat("paint it red"))
    refused(response, 429, "rate_limit_exceeded")
    assert int(response.headers["retry-after"]) >= 1 and time.monotonic() - began < 1.0  # refused at once, not queued
    while one.get(f"/v1/threads/{thread}/runs/{slow['run_id']}").json()["status"] == "running":
        time.sleep(0.1)
    assert one.post("/v1/chat/completions", json=chat("paint it red")).status_code == 200


def test_errors_of_the_framework_keep_the_shape(api):
    refused(api.get("/v1/no-such-route"), 404)
    refused(api.put("/v1/files"), 405)
    refused(api.get("/v1/files", params={"limit": "lots"}), 400)
