"""The server on the real built-in tools (no LLM: plans are given): the tool catalogue, the shipped workflows it
can run, and a weightless real tool run on an uploaded CSV through a plan that names the file."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from serve_harness import start_server


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-real"), "--orchestrator", "serve_harness:build_real_tools")
    yield httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key('acme')}"}, timeout=120)
    server.stop()


def test_the_catalogue_has_every_builtin_tool_and_the_shipped_workflows(api):
    tools = {t["function"]["name"]: t for t in api.get("/v1/tools").json()["data"]}
    assert len(tools) >= 30 and {"speech-recognition", "ocr", "time-series-description"} <= set(tools)
    for tool in tools.values():
        schema = tool["function"]["parameters"]
        assert schema["type"] == "object" and set(schema["required"]) <= set(schema["properties"])
    workflows = {w["id"] for w in api.get("/v1/workflows").json()["data"]}
    assert {"workflow:time-series-report", "workflow:voice-question"} <= workflows


def test_a_plan_naming_an_uploaded_csv_runs_the_real_time_series_tool(api):
    steps = np.arange(200)
    values = 0.05 * steps + np.sin(steps / 5)
    csv = "step,value\n" + "".join(f"{s},{v:.3f}\n" for s, v in zip(steps, values))
    file_id = api.post("/v1/files", files={"file": ("series.csv", csv.encode(), "text/csv")}).json()["id"]
    thread = api.post("/v1/threads", json={}).json()["thread_id"]
    plan = {"tasks": [{"id": "describe", "tool": "time-series-description", "args": {"series": file_id}}]}
    run = api.post(f"/v1/threads/{thread}/runs/wait", json={"input": {"message": "describe the series"}, "plan": plan})
    body = run.json()
    assert run.status_code == 200 and body["status"] == "done", body
    text = next(f for f in body["files"] if f["kind"] == "text")
    description = api.get(text["url"]).text.lower()
    assert "200 points" in description and "upward trend of +0.05" in description, description  # our CSV, read
    plot = next(f for f in body["files"] if f["kind"] == "image")
    assert api.get(plot["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
