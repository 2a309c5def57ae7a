"""What the server tests share: an Orchestrator on stub tools with a rule planner (no LLM, no
weights), and a real ``anymoda serve`` subprocess on 127.0.0.1 with a free port.

``build_orchestrator`` is what the subprocess loads through ``--orchestrator serve_harness:build_orchestrator``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.agent import Orchestrator
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.execution.compose import Composer
from orchestrator.storage.media import AudioClip
from orchestrator.planning.plan import Plan, validate_plan
from orchestrator.planning.planner import Attempt, PlanResult
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.stub_tools import STUB_TOOLS
from orchestrator.tooling.tool import Input, Output, Param, WeightlessTool

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


class StubTone(WeightlessTool):
    name = "stub-tone"
    task = "stub"
    description = "Say a text as a short tone (a stand-in for text to speech)."
    inputs = {"text": Input(ArtifactKind.TEXT, "what to say")}
    outputs = {"audio": Output(ArtifactKind.AUDIO, "a 0.25 s tone at 16 kHz")}
    params = {"amplitude": Param(float, 0.2, "peak level", minimum=0.0, maximum=1.0)}
    default_model = "tone"

    def build_method(self) -> Any:
        return np

    def run(self, numpy: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        t = numpy.arange(4000) / 16000.0
        return {"audio": AudioClip((params["amplitude"] * numpy.sin(2 * numpy.pi * 440 * t)).astype("float32"), 16000)}


class StubLouder(WeightlessTool):
    name = "stub-louder"
    task = "stub"
    description = "Make a sound twice as loud."
    inputs = {"audio": Input(ArtifactKind.AUDIO, "the sound")}
    outputs = {"audio": Output(ArtifactKind.AUDIO, "the louder sound")}
    default_model = "louder"

    def build_method(self) -> Any:
        return np

    def run(self, numpy: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        clip = inputs["audio"]
        return {"audio": AudioClip(numpy.clip(clip.samples * 2.0, -1.0, 1.0).astype("float32"), clip.sample_rate)}


class StubPost(WeightlessTool):
    name = "stub-post"
    task = "stub"
    description = "Publish a text (the server's tests make this wait for an approval)."
    inputs = {"text": Input(ArtifactKind.TEXT, "what to publish")}
    outputs = {"text": Output(ArtifactKind.TEXT, "the receipt")}
    default_model = "post"

    def build_method(self) -> Any:
        return str

    def run(self, method: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return {"text": f"posted: {inputs['text']}"}


SERVE_TOOLS = (*STUB_TOOLS, StubTone, StubLouder, StubPost)


class RulePlanner:
    """Plans by keyword, so the tests check the server, not an LLM:
    'slow N' waits N seconds; 'post' publishes (waits for approval); 'louder' with a sound in the
    conversation makes it louder; 'tone', 'say' or 'out loud' makes a sound; an image offered is brightened;
    anything else paints the colour named."""

    def __init__(self, registry: ToolRegistry):
        self.registry = registry

    def plan(self, request, *, artifacts=(), session=None, context=""):
        words = request.lower()
        image = next((a for a in artifacts if a.kind is ArtifactKind.IMAGE), None)
        audio = next((a for a in artifacts if a.kind is ArtifactKind.AUDIO), None)
        if match := re.search(r"\bslow (\d+(?:\.\d+)?)", words):
            task = {"id": "t1", "tool": "stub-wait", "args": {"seconds": float(match.group(1)), "label": "slept"}}
        elif "post" in words:
            task = {"id": "t1", "tool": "stub-post", "args": {"text": request}}
        elif "louder" in words and audio is not None:
            task = {"id": "t1", "tool": "stub-louder", "args": {"audio": audio.id}}
        elif "tone" in words or "say" in words or "out loud" in words:
            task = {"id": "t1", "tool": "stub-tone", "args": {"text": request}}
        elif image is not None:
            task = {"id": "t1", "tool": "stub-brighten", "args": {"image": image.id}}
        else:
            task = {"id": "t1", "tool": "stub-paint", "args": {"text": request}}
        plan = Plan.from_json({"tasks": [task]})
        return PlanResult(validate_plan(plan, self.registry), (Attempt(json.dumps(plan.to_json()), (), 0.0),))


def build_orchestrator(settings) -> Orchestrator:
    registry = ToolRegistry(SERVE_TOOLS)
    return Orchestrator(settings=settings, registry=registry, planner=RulePlanner(registry), composer=Composer(None),
                        approve_before=("stub-post",))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ANYMODA_HOME": str(home), "ANYMODA_OFFLINE": "1", "ANYMODA_DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    env.pop("ANYMODA_CONFIG", None)
    return env


@dataclass
class Server:
    url: str
    home: Path
    process: subprocess.Popen
    log: Path

    def key(self, tenant: str, **limits: Any) -> str:
        """A new key of ``tenant`` (made in the server's home, as ``anymoda keys create`` does)."""
        from orchestrator.serving.auth import KeyLimits, KeyStore

        return KeyStore(self.home).create(tenant, KeyLimits(**limits))[1]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_server(home: Path, *extra: str, timeout: float = 60.0) -> Server:
    """``anymoda serve`` on the stub stack, as a subprocess; returns once /health answers."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--orchestrator", "serve_harness:build_orchestrator", *extra],
        env=server_env(home), stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=str(REPO))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return Server(url, home, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not answer /health in {timeout} s: {log.read_text()[-3000:]}")


def build_real_tools(settings) -> Orchestrator:
    """The real built-in tools, no planner and no LLM composer: runs are given their plans or workflows."""
    return Orchestrator(settings=settings, registry=ToolRegistry.default(), planner=None, composer=Composer(None))
