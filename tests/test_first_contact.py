"""First contact: checking which tools can run looks, and never joins, converts or loads a model.

`anymoda tools` on a fresh home used to convert the packaged LLM (a minute and a half) because the offline
fallback's availability check called its locator. These tests make that work impossible (the conversion
raises) and check the answer is still right, and that the first real use does prepare the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import orchestrator.models.packaged_llm as pl
from orchestrator.models.resolve import PreparedOnFirstUse, resolve_model
from tools.text import TextGeneration

ROOT = Path(__file__).resolve().parents[1]


def _fake_converted(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / pl.SOURCE_MARKER).write_text(json.dumps({"gguf_sha256": pl.GGUF_SHA256}))


@pytest.fixture
def no_conversion(monkeypatch):
    """Joining or converting the packaged LLM fails the test."""
    def refuse(*args, **kwargs):
        pytest.fail("an availability check joined or converted the packaged LLM")

    monkeypatch.setattr(pl, "converted_checkpoint", refuse)
    monkeypatch.setattr(pl, "assemble_gguf", refuse)


@pytest.fixture
def slices_installed(monkeypatch, tmp_path):
    """The six packaged slices, as far as part_paths() can tell (their bytes are never read here)."""
    parts = [tmp_path / f"part{n}.bin" for n in range(1, 7)]
    for part in parts:
        part.write_bytes(b"slice")
    monkeypatch.setattr(pl, "part_paths", lambda: parts)
    return parts


def test_offline_fallback_is_available_without_converting(settings, slices_installed, no_conversion):
    tool = TextGeneration(settings=settings)  # its hub model is not here and the settings are offline
    availability = tool.available()
    assert availability.ok, availability.reason
    assert availability.summary == "packaged, prepared on first use"
    assert availability.source.prepared is False
    assert availability.source.path == settings.cache_dir / pl.CHECKPOINT_NAME
    assert not (settings.cache_dir / pl.CHECKPOINT_NAME).exists()
    assert tool.model_id == pl.QWEN_CODER_05B


def test_the_peeked_source_is_not_kept_for_the_first_use(settings, slices_installed, monkeypatch):
    """available() must not leave a not-yet-converted folder behind as the source a run then loads from."""
    converted = settings.cache_dir / pl.CHECKPOINT_NAME
    calls = []

    def convert(cache_dir, progress=None):
        calls.append(cache_dir)
        _fake_converted(converted)
        return converted

    monkeypatch.setattr(pl, "converted_checkpoint", convert)
    tool = TextGeneration(settings=settings)
    assert tool.available()
    assert calls == []
    source = tool.resolve()  # the first use: now it is prepared
    assert calls == [settings.cache_dir]
    assert source.prepared and source.path == converted and source.origin == "packaged"
    assert tool.available().summary == "packaged"  # converted: nothing left to prepare


def test_without_the_slices_the_fallback_is_not_available(settings, monkeypatch, no_conversion):
    monkeypatch.setattr(pl, "part_paths", lambda: None)
    availability = TextGeneration(settings=settings).available()
    assert not availability.ok
    assert "not available" in availability.reason


def test_resolve_with_download_false_peeks_and_with_download_prepares(tmp_path):
    prepared: list[str] = []
    folder = tmp_path / "weights"

    def prepare():
        prepared.append("yes")
        folder.mkdir(exist_ok=True)
        return folder

    locator = PreparedOnFirstUse(prepare=prepare, peek=lambda: (folder, folder.is_dir()))
    peeked = resolve_model("org/model", tool="t", packaged={"org/model": locator}, offline=True, download=False)
    assert (peeked.origin, peeked.path, peeked.prepared, prepared) == ("packaged", folder, False, [])
    used = resolve_model("org/model", tool="t", packaged={"org/model": locator}, offline=True)
    assert (used.path, used.prepared, prepared) == (folder, True, ["yes"])
    again = resolve_model("org/model", tool="t", packaged={"org/model": locator}, offline=True, download=False)
    assert again.prepared and prepared == ["yes"]


def test_anymoda_tools_on_a_fresh_home_is_quick_and_converts_nothing(tmp_path):
    """The real command in a fresh process, as a first-time user runs it (offline: the case that converted)."""
    home = tmp_path / "fresh-home"
    env = {**os.environ, "ANYMODA_HOME": str(home), "ANYMODA_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("ANYMODA_CONFIG", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "tools"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert not (home / "cache" / pl.CHECKPOINT_NAME).exists()
    assert not list((home / "cache").glob("*.gguf")) if (home / "cache").exists() else True
    # The budget of benchmarks/first_contact.py is 3 s; a shared test machine gets some slack.
    assert seconds < 15, f"anymoda tools took {seconds:.1f} s on a fresh home"
    # Piped (as here), every tool's row holds its whole name: `anymoda tools | grep NAME` finds it.
    from orchestrator.tooling.registry import ToolRegistry

    rows = done.stdout.splitlines()
    for tool in ToolRegistry.default():
        assert any(line.startswith(f"│ {tool.name} ") and f" {tool.task} " in line for line in rows), tool.name
