"""Files written whole or not at all, by any number of threads and processes at once.

A partial file gets a name no other writer can share (process, thread and a random part): a name made of the
process id alone is shared by the threads of a batch, and two threads verifying the same packaged weights
renamed one partial file twice (the second rename failed with FileNotFoundError and a run failed with it).
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path


def partial_path(path: Path, suffix: str = ".tmp") -> Path:
    """A temporary name beside ``path`` that no other writer uses (hidden, so listings skip it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}{suffix}")


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a partial file renamed over it: a reader sees the old
    file or the new one, never half of one; concurrent writers of the same content both succeed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
