"""``anymoda mcp`` with the official SDK's own client: over stdio (list tools with their JSON Schemas, call
one with an image and get an image block back, the agent as one tool, audio blocks) and over streamable
HTTP (API key required; tenants do not see each other's artifacts)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import anyio
import pytest
from PIL import Image

pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from serve_harness import REPO, free_port, server_env  # noqa: E402


def data_url(colour=(10, 10, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def stdio_params(home) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[
        "-m", "orchestrator.cli", "mcp", "--orchestrator", "serve_harness:build_orchestrator"],
        env=server_env(home), cwd=str(REPO))


def test_stdio_lists_tools_and_returns_an_image_block_for_an_image(tmp_path):
    async def session():
        async with Client(stdio_params(tmp_path / "home"), read_timeout_seconds=60) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert {"stub-brighten", "stub-tone", "anymoda-agent"} <= set(tools)
            schema = tools["stub-brighten"].input_schema
            assert schema["required"] == ["image"] and schema["properties"]["amount"]["maximum"] == 255
            assert "data: URL" in schema["properties"]["image"]["description"]

            result = await client.call_tool("stub-brighten", {"image": data_url((10, 10, 10)), "amount": 30})
            assert not result.is_error, result.content
            [image] = [b for b in result.content if b.type == "image"]
            assert image.mime_type == "image/png"
            decoded = Image.open(io.BytesIO(base64.b64decode(image.data))).convert("RGB")
            assert decoded.size == (6, 5) and decoded.getpixel((0, 0)) == (40, 40, 40)

            # An output's artifact id goes into the next call.
            made = result.structured_content["artifacts"]["image"]
            again = await client.call_tool("stub-brighten", {"image": made, "amount": 30})
            [image] = [b for b in again.content if b.type == "image"]
            assert Image.open(io.BytesIO(base64.b64decode(image.data))).convert("RGB").getpixel((0, 0)) == (70, 70, 70)

            spoken = await client.call_tool("anymoda-agent", {"request": "say hi as a tone"})
            assert [b.type for b in spoken.content] == ["text", "audio"] and spoken.content[1].mime_type == "audio/wav"

            bad = await client.call_tool("stub-brighten", {"image": "data:image/png;base64,bm90IGFuIGltYWdl"})
            assert bad.is_error and "content" in bad.content[0].text
            path = await client.call_tool("stub-brighten", {"image": "/etc/passwd"})
            assert path.is_error and "data: URL" in path.content[0].text

    anyio.run(session)


def test_streamable_http_needs_a_key_and_keeps_tenants_apart(tmp_path):
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from orchestrator.serving.auth import KeyStore

    home = tmp_path / "home"
    home.mkdir()
    keys = KeyStore(home)
    alpha, bravo = keys.create("alpha")[1], keys.create("bravo")[1]
    port = free_port()
    log = open(tmp_path / "mcp.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "mcp", "--transport", "http", "--port",
                                str(port), "--orchestrator", "serve_harness:build_orchestrator"],
                               env=server_env(home), cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                unauthorised = httpx.post(url, json={}, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "mcp.log").read_text()
                time.sleep(0.1)
        assert unauthorised.status_code == 401 and unauthorised.json()["error"]["type"] == "authentication_error"

        def client(key: str) -> Client:
            return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {key}"}, timeout=60)), read_timeout_seconds=60)

        async def session():
            async with client(alpha) as a:
                result = await a.call_tool("stub-paint", {"text": "green"})
                [image] = [b for b in result.content if b.type == "image"]
                assert Image.open(io.BytesIO(base64.b64decode(image.data))).convert("RGB").getpixel((0, 0)) == (0, 160, 0)
                made = result.structured_content["artifacts"]["image"]
            async with client(bravo) as b:
                stolen = await b.call_tool("stub-brighten", {"image": made})
                assert stolen.is_error and made in stolen.content[0].text and "no artifact" in stolen.content[0].text

        anyio.run(session)
    finally:
        process.terminate()
        process.wait(10)


def test_stdio_on_the_real_tools_lists_the_shipped_workflows_and_reads_a_csv(tmp_path):
    params = stdio_params(tmp_path / "home")
    params.args[params.args.index("serve_harness:build_orchestrator")] = "serve_harness:build_real_tools"
    csv = "t,v\n" + "".join(f"{i},{0.5 * i:.2f}\n" for i in range(60))

    async def session():
        async with Client(params, read_timeout_seconds=120) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "workflow-time-series-report" in tools and "time-series-description" in tools
            report = tools["workflow-time-series-report"].input_schema
            assert report["required"] == ["series"] and "data: URL" in report["properties"]["series"]["description"]
            result = await client.call_tool("time-series-description", {
                "series": "data:text/csv;base64," + base64.b64encode(csv.encode()).decode()})
            assert not result.is_error, result.content
            text = " ".join(b.text for b in result.content if b.type == "text")
            assert "60 points" in text and "upward trend of +0.5" in text
            assert any(b.type == "image" for b in result.content)  # the plot

    anyio.run(session)
