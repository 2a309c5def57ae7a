"""A tool's packaged fallback model serves when the hub is forbidden or cannot be reached, and only then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import orchestrator.models.resolve as resolve
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.config import Settings
from orchestrator.errors import ModelNotAvailableError
from orchestrator.tooling.tool import Input, Output, Tool


class Fallbacking(Tool):
    name = "fallbacking"
    task = "text-generation"
    description = "A tool whose default lives on the hub and whose fallback ships in a package."
    inputs = {"text": Input(ArtifactKind.TEXT, "anything")}
    outputs = {"text": Output(ArtifactKind.TEXT, "the same")}
    default_model = "org/only-on-the-hub"
    offline_fallback = "packaged-model"
    packaged_folder: Path

    def packaged_weights(self) -> dict[str, Any]:
        return {"packaged-model": lambda: self.packaged_folder}


@pytest.fixture
def tool_class(tmp_path):
    folder = tmp_path / "packaged"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"0")
    return type("FallbackingHere", (Fallbacking,), {"packaged_folder": folder})


def hub_failing_with(monkeypatch, error: Exception) -> None:
    def from_hub(hub, *, local_only):
        if local_only:
            return None
        raise error
    monkeypatch.setattr(resolve, "_from_hub", from_hub)


def online(tmp_path, **extra) -> Settings:
    return Settings.from_dict({"home": str(tmp_path / "home"), "offline": False, "device": "cpu", **extra})


def test_an_unreachable_hub_falls_back_to_the_packaged_model(tool_class, tmp_path, monkeypatch):
    hub_failing_with(monkeypatch, OSError("ConnectError: [Errno -2] Name or service not known"))
    tool = tool_class(settings=online(tmp_path))
    source = tool.resolve()
    assert source.origin == "packaged" and tool.model_id == "packaged-model"


def test_a_hub_that_refuses_the_model_is_reported_not_papered_over(tool_class, tmp_path, monkeypatch):
    hub_failing_with(monkeypatch, ValueError("401 Client Error: Repository Not Found"))
    with pytest.raises(ModelNotAvailableError, match="the hub download failed") as caught:
        tool_class(settings=online(tmp_path)).resolve()
    assert caught.value.hub_unreachable is False


def test_a_chosen_model_never_falls_back(tool_class, tmp_path, monkeypatch):
    hub_failing_with(monkeypatch, ConnectionError("no route to host"))
    with pytest.raises(ModelNotAvailableError, match="org/chosen"):
        tool_class("org/chosen", settings=online(tmp_path)).resolve()
    configured = online(tmp_path, models={"fallbacking": "org/configured"})
    with pytest.raises(ModelNotAvailableError, match="org/configured"):
        tool_class(settings=configured).resolve()
