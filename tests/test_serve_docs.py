"""The README's serving section runs as written (against the stub stack): its curl request and its Python
example with the official openai client, and the MCP config snippets parse."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from serve_harness import start_server

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text()
    return text[text.index("## Serving:"):text.index("## Examples")]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-docs"))
    yield server
    server.stop()


def test_the_curl_example_answers_and_its_download_line_works(server, tmp_path):
    Image.new("RGB", (20, 10), (30, 30, 30)).save(tmp_path / "receipt.png")
    [_, curl] = blocks("bash")
    key = server.key("docs")
    lines = curl.replace("http://127.0.0.1:8000", server.url).replace("KEY=amk_...", f"KEY={key}").splitlines()
    chat = "\n".join(line for line in lines if "/v1/files/file-..." not in line)  # the request, not the download
    out = subprocess.run(["bash", "-c", chat], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True).stdout
    reply = json.loads(out)
    assert reply["object"] == "chat.completion" and reply["conversation"] == "demo"
    [download] = [line for line in lines if "/v1/files/file-..." in line]
    file_id = reply["anymoda"]["files"][0]["id"]
    subprocess.run(["bash", "-c", f"KEY={key}\n" + download.replace("file-...", file_id)], cwd=tmp_path, check=True,
                   timeout=60)
    assert (tmp_path / "total.wav").read_bytes() == httpx.get(
        f"{server.url}/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {key}"}).content


def test_the_python_example_runs_with_the_official_client(server, tmp_path, monkeypatch):
    pytest.importorskip("openai")
    [example] = blocks("python")
    Image.new("RGB", (12, 8), (90, 60, 30)).save(tmp_path / "beach.jpg")
    monkeypatch.chdir(tmp_path)
    code = example.replace("http://127.0.0.1:8000", server.url).replace('"amk_..."', repr(server.key("docs-py")))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "description.wav").read_bytes()[:4] == b"RIFF"
    saved = [p.name for p in tmp_path.iterdir() if p.name.startswith("audio-")]
    assert saved and (tmp_path / saved[0]).read_bytes() == (tmp_path / "description.wav").read_bytes()


def test_the_mcp_config_snippets_are_json():
    [desktop] = blocks("json")
    assert json.loads(desktop)["mcpServers"]["anymoda"]["args"] == ["mcp"]
    inline = re.search(r"`(\{\"mcpServers\".*?\})`", section()).group(1)
    assert json.loads(inline)["mcpServers"]["anymoda"]["url"].endswith("/mcp")
