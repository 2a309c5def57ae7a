"""The optional extras: heavy packages the core does without, which extra installs each, and the one-line error
naming that extra when one is missing.

``pip install anymoda`` is the core: artifacts, plans, the agent, workflows, the experts' adapters. Three parts are
extras because only some users need them and each pulls in a large package:

* ``plot`` (matplotlib): plots and colour maps: ``anymoda render`` of audio and time series, workflow pictures
  (PNG), the time-series describer's plot, the depth map's colours, the training loss curve;
* ``video`` (PyAV, which bundles FFmpeg): writing video files (text-to-video's MP4);
* ``lora`` (peft): LoRA adapters: stage-2 training with ``--lora-r``, and loading checkpoints that carry one.

Code that needs one imports it with :func:`import_extra` where it is used (never at module import, so ``import
orchestrator`` and ``anymoda --help`` stay free of them); tools list the package in ``requires``, so a tool whose
extra is missing reports itself unavailable with the command that installs it. ``scripts/setup.sh`` installs all.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingExtraError

# import name -> the extra that installs it
EXTRA_OF = {"matplotlib": "plot", "av": "video", "peft": "lora"}


def install_command(extra: str) -> str:
    return f"pip install 'anymoda[{extra}]'"


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (a dotted name counts by its top-level package), or None."""
    return EXTRA_OF.get(module.split(".")[0])


def installed(module: str) -> bool:
    """Whether ``module``'s top-level package is installed (found, not imported)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):  # None or a module without a spec in sys.modules
        return False


def missing_extra(what: str, module: str, reason: str = "") -> MissingExtraError:
    """The one-line error: ``{what} needs {package}: pip install 'anymoda[{extra}]'``."""
    top = module.split(".")[0]
    extra = EXTRA_OF[top]
    because = f" ({reason})" if reason else ""
    return MissingExtraError(f"{what} needs {top}{because}: {install_command(extra)}")


def import_extra(module: str, what: str) -> ModuleType:
    """``module`` imported, or MissingExtraError naming its extra when it (or what it needs) cannot be imported;
    ``what`` is the part that needs it, in words ("plotting", "LoRA")."""
    top = module.split(".")[0]
    if top not in EXTRA_OF:
        raise ValueError(f"{top!r} is not the package of an extra; EXTRA_OF names them")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Not installed at all, or installed without something it needs (say one of its own dependencies).
        reason = "" if exc.name in (None, top) or not installed(top) else f"its import failed: {exc}"
        raise missing_extra(what, top, reason) from None
