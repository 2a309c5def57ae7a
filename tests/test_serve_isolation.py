"""Tenants over HTTP: tenant B cannot fetch, list, delete, reference, resume, approve or cancel anything
of tenant A's by any route; a foreign id answers exactly like one that does not exist; revoked keys get 401."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from PIL import Image

from serve_harness import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-isolation"))
    yield server
    server.stop()


def client(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def world(server):
    """Tenant A's file, conversation, finished run, output artifact and a run waiting for approval."""
    a = client(server, server.key("alpha"))
    b = client(server, server.key("bravo"))
    file_id = a.post("/v1/files", files={"file": ("a.png", png(), "image/png")}, data={"purpose": "vision"}).json()["id"]
    chat = a.post("/v1/chat/completions", json={"model": "anymoda", "conversation": "shared-name",
                                                 "messages": [{"role": "user", "content": "say it as a tone"}]}).json()
    thread = a.post("/v1/threads", json={}).json()["thread_id"]
    waiting = a.post(f"/v1/threads/{thread}/runs/wait", json={"input": {"message": "post this"}}).json()
    assert waiting["status"] == "awaiting_approval", waiting
    return {"a": a, "b": b, "file": file_id, "conversation": chat["conversation"], "run": chat["anymoda"]["run"],
            "output_file": chat["anymoda"]["files"][0]["id"], "artifact": chat["anymoda"]["artifacts"][0],
            "thread": thread, "waiting_run": waiting["run_id"]}


def same_as_missing(response: httpx.Response, foreign: str, missing: str, missing_response: httpx.Response) -> None:
    """A foreign id's answer is the missing id's answer, with the id swapped: nothing tells them apart."""
    assert response.status_code == 404, response.text
    assert response.text.replace(foreign, "ID") == missing_response.text.replace(missing, "ID")


def test_files_of_another_tenant_are_missing_by_every_route(world):
    a, b, file_id = world["a"], world["b"], world["file"]
    missing = "file-" + "0" * 24
    for suffix in ("", "/content"):
        same_as_missing(b.get(f"/v1/files/{file_id}{suffix}"), file_id, missing, b.get(f"/v1/files/{missing}{suffix}"))
    same_as_missing(b.delete(f"/v1/files/{file_id}"), file_id, missing, b.delete(f"/v1/files/{missing}"))
    assert b.get("/v1/files").json()["data"] == []
    assert a.get(f"/v1/files/{file_id}").status_code == 200  # B's delete did nothing


def test_another_tenants_file_cannot_be_referenced_in_a_message_or_a_run(world):
    b, file_id = world["b"], world["file"]
    for content in ([{"type": "file", "file": {"file_id": file_id}}], [{"type": "image_url", "image_url": {"url": file_id}}],
                    [{"type": "file", "file": {"file_id": world["output_file"]}}]):
        reply = b.post("/v1/chat/completions", json={"model": "anymoda", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "brighten"}, *content]}]})
        assert reply.status_code == 404 and reply.json()["error"]["type"] == "not_found_error"
    thread = b.post("/v1/threads", json={}).json()["thread_id"]
    run = b.post(f"/v1/threads/{thread}/runs", json={"input": {"message": "brighten", "files": [file_id]}})
    assert run.status_code == 404


def test_another_tenants_artifacts_cannot_be_read_named_or_planned_with(world):
    b, artifact = world["b"], world["artifact"]
    missing = "audio-" + "0" * 16
    for suffix in ("", "/content"):
        same_as_missing(b.get(f"/v1/artifacts/{artifact}{suffix}"), artifact, missing, b.get(f"/v1/artifacts/{missing}{suffix}"))
    named = b.post("/v1/chat/completions", json={"model": "anymoda", "messages": [
        {"role": "user", "content": f"make {artifact} louder"}]})
    assert named.status_code == 404 and artifact in named.json()["error"]["message"]
    thread = b.post("/v1/threads", json={}).json()["thread_id"]
    plan = {"tasks": [{"id": "t1", "tool": "stub-louder", "args": {"audio": artifact}}]}
    assert b.post(f"/v1/threads/{thread}/runs/wait", json={"input": {"message": "x"}, "plan": plan}).status_code == 404
    assert world["a"].get(f"/v1/artifacts/{artifact}").status_code == 200


def test_the_same_conversation_name_is_a_different_conversation_per_tenant(world):
    b = world["b"]
    reply = b.post("/v1/chat/completions", json={"model": "anymoda", "conversation": world["conversation"],
                                                  "messages": [{"role": "user", "content": "now make it louder"}]}).json()
    # A's conversation has a sound to make louder; B's conversation of the same name has none, so it paints.
    assert reply["anymoda"]["files"][0]["kind"] == "image" and "audio" not in reply["choices"][0]["message"]


def test_threads_and_runs_of_another_tenant_are_missing_by_every_route(world):
    b, thread, run, waiting = world["b"], world["thread"], world["run"], world["waiting_run"]
    conversation = world["conversation"]
    assert b.get(f"/v1/threads/{thread}").status_code == 404
    assert b.get(f"/v1/threads/{thread}/runs").status_code == 404
    assert thread not in [t["thread_id"] for t in b.get("/v1/threads").json()]
    own = b.post("/v1/threads", json={}).json()["thread_id"]
    missing_run = "run-" + "0" * 16
    for thread_id in (thread, own, conversation):
        for run_id in (run, waiting):
            for method, path, body in (("GET", "", None), ("GET", "/plan", None), ("GET", "/lineage", None),
                                       ("GET", "/stream", None), ("POST", "/cancel", None),
                                       ("POST", "/resume", {"command": {"resume": True}})):
                foreign = b.request(method, f"/v1/threads/{thread_id}/runs/{run_id}{path}", json=body)
                missing = b.request(method, f"/v1/threads/{own}/runs/{missing_run}{path}", json=body)
                assert foreign.status_code == 404, (method, path, foreign.text)
                if thread_id == own:
                    same_as_missing(foreign, run_id, missing_run, missing)
    # A's run still waits: B's resume and cancel did nothing to it.
    a = world["a"]
    assert a.get(f"/v1/threads/{thread}/runs/{waiting}").json()["status"] == "awaiting_approval"


def test_guessed_ids_and_path_tricks_answer_404(world):
    b = world["b"]
    for path in ("/v1/files/..%2F..%2Fserving.sqlite", "/v1/files/../../etc/passwd", "/v1/files/file-%2e%2e",
                 "/v1/artifacts/..%2Findex.sqlite/content", "/v1/artifacts/image-0123456789abcdeg",
                 "/v1/threads/..%2Ft%3Aalpha%3Ashared-name", "/v1/threads/t:alpha:shared-name",
                 "/v1/threads/%2Fetc/runs", "/v1/files/FILE-" + "0" * 24, "/web/..%2F..%2F__init__.py"):
        response = b.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text)
        assert set(response.json()) == {"error"}


def test_a_revoked_key_gets_401_on_its_next_request(server):
    from orchestrator.serving.auth import KeyStore

    store = KeyStore(server.home)
    record, secret = store.create("charlie")
    c = client(server, secret)
    assert c.get("/v1/models").status_code == 200
    store.revoke(record.id)
    response = c.get("/v1/models")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert re.fullmatch(r"amk_[A-Za-z0-9_-]{43}", secret)
    stored = b"".join(p.read_bytes() for p in server.home.glob("serving.sqlite*"))  # the WAL too
    assert secret.encode() not in stored and record.id.encode() in stored  # kept hashed only


def test_another_tenants_file_or_artifact_is_not_a_workflow_input(world):
    b = world["b"]
    thread = b.post("/v1/threads", json={}).json()["thread_id"]
    workflow = "name: w\ninputs:\n  image: {kind: image}\nnodes:\n  up: {tool: stub-brighten, args: {image: $image}}\n" \
               "outputs:\n  picture: $up.image\n"
    for value in (world["file"], world["output_file"], "image-" + "0" * 16):
        response = b.post(f"/v1/threads/{thread}/runs/wait", json={"assistant_id": "workflow", "workflow_yaml": workflow,
                                                                   "input": {"image": value}})
        assert response.status_code == 404, response.text


def test_the_page_is_public_and_holds_no_data(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<script src=\"/web/app.js\"" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(server.url + "/web/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "Authorization" in script.text and "http://" not in script.text and "https://" not in script.text  # no CDN
    assert httpx.get(server.url + "/web/secret.txt").status_code == 404
