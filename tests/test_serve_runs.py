"""Runs and workflows over HTTP (LangGraph's thread/run vocabulary): start, stream (SSE), join, approve
(Command(resume)), cancel, resume, plan and lineage; a slow run never blocks other requests."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from PIL import Image

from serve_harness import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-runs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(server):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key('acme')}"}, timeout=60)


def sse_events(response: httpx.Response) -> list[tuple[str, object]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def png(colour=(20, 20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, "PNG")
    return buffer.getvalue()


def wait_status(api, thread, run, wanted, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/v1/threads/{thread}/runs/{run}").json()
        if body["status"] in wanted:
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run} is still {body['status']}")


def test_a_run_waits_streams_and_reports_plan_and_lineage(api):
    thread = api.post("/v1/threads", json={"metadata": {"title": "pictures"}}).json()
    assert thread["metadata"] == {"title": "pictures"} and api.get(f"/v1/threads/{thread['thread_id']}").status_code == 200
    tid = thread["thread_id"]
    file_id = api.post("/v1/files", files={"file": ("dark.png", png(), "image/png")}).json()["id"]
    run = api.post(f"/v1/threads/{tid}/runs/wait", json={"input": {"message": "brighten this", "files": [file_id]}}).json()
    assert run["status"] == "done" and run["tasks"]["t1"]["tool"] == "stub-brighten"
    output = run["files"][0]
    brightened = Image.open(io.BytesIO(api.get(output["url"]).content)).convert("RGB")
    assert brightened.getpixel((0, 0)) == (80, 80, 80)
    plan = api.get(f"/v1/threads/{tid}/runs/{run['run_id']}/plan").json()
    assert plan["plan"]["tasks"][0]["tool"] == "stub-brighten" and plan["tasks"][0]["status"] == "done"
    lineage = api.get(f"/v1/threads/{tid}/runs/{run['run_id']}/lineage").json()
    [made] = [a for a in lineage["artifacts"] if a["kind"] == "image"]
    assert made["id"] == run["artifacts"][0] and made["parents"] == lineage["inputs"]
    assert api.get(f"/v1/artifacts/{lineage['inputs'][0]}").json()["metadata"]["name"] == "dark.png"
    assert [r["run_id"] for r in api.get(f"/v1/threads/{tid}/runs").json()] == [run["run_id"]]


def test_stream_gives_every_event_and_a_late_joiner_sees_the_whole_run(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    with api.stream("POST", f"/v1/threads/{tid}/runs/stream", json={"input": {"message": "paint it white"}}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    names = [n for n, _ in events]
    assert names[0] == "metadata" and names[-1] == "end"
    assert names[1:-1][:1] == ["run_started"] and names[-2] == "run_finished"
    assert {"plan_ready", "task_started", "task_finished", "answer"} <= set(names)
    run_id = events[0][1]["run_id"]
    with api.stream("GET", f"/v1/threads/{tid}/runs/{run_id}/stream") as response:
        again = [n for n, _ in sse_events(response)]
    assert again == names


def test_an_approval_is_answered_with_command_resume(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    waiting = api.post(f"/v1/threads/{tid}/runs/wait", json={"input": {"message": "post the news"}}).json()
    assert waiting["status"] == "awaiting_approval"
    assert [t["tool"] for t in waiting["pending_approval"]] == ["stub-post"] and "approval" in waiting["answer"]
    refused = api.post(f"/v1/threads/{tid}/runs/{waiting['run_id']}/resume", json={"command": {"resume": "maybe"}})
    assert refused.status_code == 400
    with api.stream("POST", f"/v1/threads/{tid}/runs/{waiting['run_id']}/resume?stream=1",
                    json={"command": {"resume": True}}) as response:
        names = [n for n, _ in sse_events(response)]
    assert "task_finished" in names and names[-2] == "run_finished"
    done = api.get(f"/v1/threads/{tid}/runs/{waiting['run_id']}").json()
    assert done["status"] == "done" and "posted: post the news" in api.get(done["files"][0]["url"]).text


def test_a_denied_approval_runs_nothing(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    waiting = api.post(f"/v1/threads/{tid}/runs/wait", json={"input": {"message": "post it"}}).json()
    denied = api.post(f"/v1/threads/{tid}/runs/{waiting['run_id']}/resume", json={"command": {"resume": False}}).json()
    assert denied["status"] != "awaiting_approval" and denied["files"] == []
    assert denied["tasks"]["t1"]["status"] in ("skipped", "cancelled", "failed")


def test_cancel_then_resume(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    run = api.post(f"/v1/threads/{tid}/runs", json={"input": {"message": "slow 3"}}).json()
    assert run["status"] == "running"
    wait_status(api, tid, run["run_id"], ("running",))
    time.sleep(0.3)  # the task has started
    assert api.post(f"/v1/threads/{tid}/runs/{run['run_id']}/cancel").json()["cancel_requested"] is True
    cancelled = wait_status(api, tid, run["run_id"], ("cancelled",), timeout=10)
    assert cancelled["files"] == []
    resumed = api.post(f"/v1/threads/{tid}/runs/{run['run_id']}/resume").json()
    assert resumed["status"] == "done" and api.get(resumed["files"][0]["url"]).text.startswith("slept")


def test_a_slow_run_does_not_block_other_requests(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    slow = api.post(f"/v1/threads/{tid}/runs", json={"input": {"message": "slow 2.5"}}).json()
    began = time.monotonic()
    reply = api.post("/v1/chat/completions", json={"model": "anymoda", "messages": [{"role": "user", "content": "paint it red"}]})
    assert reply.status_code == 200 and time.monotonic() - began < 1.5
    assert api.get(f"/v1/threads/{tid}/runs/{slow['run_id']}").json()["status"] == "running"
    assert wait_status(api, tid, slow["run_id"], ("done",))["status"] == "done"


def test_an_uploaded_workflow_runs_on_a_file_id(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    file_id = api.post("/v1/files", files={"file": ("in.png", png((0, 0, 0)), "image/png")}).json()["id"]
    workflow = """
name: twice-brighter
inputs:
  image: {kind: image}
nodes:
  once: {tool: stub-brighten, args: {image: $image, amount: 50}}
  twice: {tool: stub-brighten, args: {image: $once.image, amount: 50}}
outputs:
  picture: $twice.image
"""
    run = api.post(f"/v1/threads/{tid}/runs/wait", json={"assistant_id": "workflow", "workflow_yaml": workflow,
                                                         "input": {"image": file_id}}).json()
    assert run["status"] == "done", run
    picture = run["outputs"]["picture"]
    image = Image.open(io.BytesIO(api.get(f"/v1/artifacts/{picture}/content").content)).convert("RGB")
    assert image.getpixel((0, 0)) == (100, 100, 100)
    bad = api.post(f"/v1/threads/{tid}/runs/wait", json={"assistant_id": "workflow", "workflow_yaml": workflow,
                                                         "input": {"image": "/etc/passwd"}})
    assert bad.status_code == 400 and "file id" in bad.json()["error"]["message"]
    broken = api.post(f"/v1/threads/{tid}/runs/wait", json={"assistant_id": "workflow", "workflow_yaml": "nodes: [",
                                                            "input": {}})
    assert broken.status_code == 400
    assert api.post(f"/v1/threads/{tid}/runs", json={"assistant_id": "workflow:nope"}).status_code == 404
    assert api.get("/v1/workflows").json()["object"] == "list"


def test_metrics_count_requests_and_runs(api):
    text = api.get("/metrics").text
    assert 'anymoda_http_requests_total{method="POST",route="/v1/threads/{thread_id}/runs/wait",status="200"}' in text
    assert 'anymoda_runs_finished_total{status="done"}' in text and "anymoda_runs_active" in text


def test_boxes_are_previewed_over_their_image_and_a_plan_runs_on_the_threads_artifacts(api):
    tid = api.post("/v1/threads", json={}).json()["thread_id"]
    painted = api.post(f"/v1/threads/{tid}/runs/wait", json={"input": {"message": "paint it red"}}).json()
    image_id = painted["artifacts"][0]
    plan = {"tasks": [{"id": "find", "tool": "stub-find", "args": {"image": image_id}}]}
    found = api.post(f"/v1/threads/{tid}/runs/wait", json={"input": {"message": "find the squares"}, "plan": plan}).json()
    assert found["status"] == "done", found
    boxes = next(f for f in found["files"] if f["kind"] == "detections")
    assert boxes["preview_url"] == f"/v1/artifacts/{boxes['artifact']}/preview"
    drawn = Image.open(io.BytesIO(api.get(boxes["preview_url"]).content))
    assert drawn.size == (32, 32) and drawn.convert("RGB").getpixel((16, 16)) == (255, 0, 0)
    assert drawn.convert("RGB").getpixel((0, 0)) != (255, 0, 0)  # the box's outline is drawn over the edge
    text = next(f for f in found["files"] if f["kind"] == "text")
    assert text["preview_url"] is None and api.get(f"/v1/artifacts/{text['artifact']}/preview").status_code == 422
    other = api.post("/v1/threads", json={}).json()["thread_id"]  # the same tenant's other thread cannot plan on it
    assert api.post(f"/v1/threads/{other}/runs/wait", json={"input": {"message": "x"}, "plan": plan}).status_code == 404
