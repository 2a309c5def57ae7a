"""The model pool: load each model once per process, share it, and keep the total under a budget.

A model is identified by a key (the tools use ``(family, weights path, device)``). The first caller
loads it; callers arriving during that load wait for it instead of loading a second copy. Loaded
models are kept in least-recently-used order; when a new one would exceed the memory budget, idle
models are evicted oldest first. A model in use is never evicted: a load that cannot make room waits
for users to finish, and fails with :class:`MemoryBudgetError` only if room can never be made.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import MemoryBudgetError


def _size(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB" if count >= 2**20 else f"{count / 1024:,.1f} KiB"


def measure_size(model: Any) -> int | None:
    """Bytes held by a model's tensors, or None when the object is not a torch module."""
    explicit = getattr(model, "anymoda_size_bytes", None)
    if explicit is not None:
        return int(explicit)
    try:
        import torch
    except ImportError:
        return None
    if not isinstance(model, torch.nn.Module):
        return None
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        pointer = tensor.data_ptr()
        if pointer in seen:  # tied weights share storage
            continue
        seen.add(pointer)
        total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class PoolEntry:
    key: Hashable
    model: Any
    size_bytes: int
    load_seconds: float
    loaded_at: float
    last_used: float
    uses: int = 0
    in_use: int = 0
    holders: Counter[int] = field(default_factory=Counter)  # thread id -> uses in progress
    exclusive_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class LoadedModelInfo:
    key: Hashable
    size_bytes: int
    load_seconds: float
    uses: int
    in_use: int
    idle_seconds: float


class _PendingLoad:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class ModelPool:
    def __init__(self, budget_bytes: int, *, wait_timeout: float = 600.0, on_evict: Callable[[Hashable], None] | None = None):
        if budget_bytes <= 0:
            raise ValueError(f"the model pool's budget must be positive, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self.wait_timeout = wait_timeout
        self._on_evict = on_evict
        self._entries: OrderedDict[Hashable, PoolEntry] = OrderedDict()
        self._pending: dict[Hashable, _PendingLoad] = {}
        self._reserved: dict[Hashable, int] = {}
        self._cond = threading.Condition()
        self.loads = 0
        self.evictions = 0

    # ------------------------------------------------------------------ public

    @contextmanager
    def use(
        self,
        key: Hashable,
        loader: Callable[[], Any],
        *,
        size_hint: int | Callable[[], int] | None = None,
        exclusive: bool = False,
    ) -> Iterator[Any]:
        """Yield the model for ``key``, loading it with ``loader`` on first use.

        ``size_hint`` (bytes, e.g. the weights' size on disk, or a function computing it, called only
        when a load is needed) lets room be made before loading; the measured size of a torch module
        replaces it afterwards. ``exclusive`` serialises callers of
        models that are not safe to call from several threads at once.
        """
        entry = self._checkout(key, loader, size_hint)
        try:
            if exclusive:
                with entry.exclusive_lock:
                    yield entry.model
            else:
                yield entry.model
        finally:
            with self._cond:
                entry.in_use -= 1
                entry.holders[threading.get_ident()] -= 1
                entry.last_used = time.monotonic()
                self._cond.notify_all()

    def loaded(self) -> list[LoadedModelInfo]:
        """What is loaded now, least recently used first."""
        now = time.monotonic()
        with self._cond:
            return [
                LoadedModelInfo(e.key, e.size_bytes, e.load_seconds, e.uses, e.in_use, now - e.last_used)
                for e in self._entries.values()
            ]

    @property
    def used_bytes(self) -> int:
        with self._cond:
            return sum(e.size_bytes for e in self._entries.values())

    def __contains__(self, key: Hashable) -> bool:
        with self._cond:
            return key in self._entries

    def evict(self, key: Hashable) -> bool:
        """Drop an idle model now; returns False if it is not loaded or is in use."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry.in_use:
                return False
            self._drop(entry)
        self._free_memory()
        return True

    def clear(self) -> None:
        with self._cond:
            for entry in [e for e in self._entries.values() if not e.in_use]:
                self._drop(entry)
        self._free_memory()

    # ------------------------------------------------------------------ internals

    def _checkout(self, key: Hashable, loader: Callable[[], Any], size_hint: int | Callable[[], int] | None) -> PoolEntry:
        while True:
            with self._cond:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.in_use += 1
                    entry.holders[threading.get_ident()] += 1
                    entry.uses += 1
                    self._entries.move_to_end(key)
                    return entry
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = _PendingLoad()
                    break
            pending.done.wait()  # someone else is loading this model: share theirs
            if pending.error is not None:
                raise pending.error

        try:
            return self._load(key, loader, size_hint)
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._cond:
                del self._pending[key]
                self._reserved.pop(key, None)
                self._cond.notify_all()
            pending.done.set()

    def _load(self, key: Hashable, loader: Callable[[], Any], size_hint: int | Callable[[], int] | None) -> PoolEntry:
        hint = int((size_hint() if callable(size_hint) else size_hint) or 0)
        if hint > self.budget_bytes:
            raise MemoryBudgetError(
                f"model {key!r} needs about {_size(hint)}, more than the whole budget of "
                f"{_size(self.budget_bytes)} (raise memory_budget in the config)"
            )
        evicted = False
        with self._cond:
            evicted |= self._make_room(hint, key)
            self._reserved[key] = hint
        if evicted:
            self._free_memory()
        started = time.perf_counter()
        model = loader()
        seconds = time.perf_counter() - started
        measured = measure_size(model)
        size = measured if measured is not None else hint
        if size > self.budget_bytes:
            del model
            self._free_memory()
            raise MemoryBudgetError(
                f"model {key!r} takes {_size(size)} once loaded, more than the whole budget of "
                f"{_size(self.budget_bytes)} (raise memory_budget in the config)"
            )
        with self._cond:
            self._reserved.pop(key, None)
            evicted = self._make_room(size, key)
            now = time.monotonic()
            entry = PoolEntry(key, model, size, seconds, now, now, uses=1, in_use=1, holders=Counter({threading.get_ident(): 1}))
            self._entries[key] = entry
            self.loads += 1
        if evicted:
            self._free_memory()
        return entry

    def _make_room(self, needed: int, key: Hashable) -> bool:
        """Evict idle models until ``needed`` more bytes fit; wait for users if that is not enough.

        Called with the condition held. Returns whether anything was evicted.
        """
        evicted = False
        deadline = time.monotonic() + self.wait_timeout
        while True:
            committed = sum(e.size_bytes for e in self._entries.values())
            committed += sum(v for k, v in self._reserved.items() if k != key)
            if committed + needed <= self.budget_bytes:
                return evicted
            idle = next((e for e in self._entries.values() if e.in_use == 0), None)
            if idle is not None:
                self._drop(idle)
                evicted = True
                continue
            # Waiting helps only if another thread will release something; models this thread holds
            # (a tool that calls another tool) will not be released while it waits here.
            me = threading.get_ident()
            others_busy = any(e.in_use > e.holders[me] for e in self._entries.values())
            busy = others_busy or any(k != key for k in self._reserved)
            remaining = deadline - time.monotonic()
            if not busy or remaining <= 0:
                mine = sum(e.size_bytes for e in self._entries.values() if e.holders[me])
                raise MemoryBudgetError(
                    f"cannot fit model {key!r} ({_size(needed)}) in the budget of {_size(self.budget_bytes)}: "
                    f"{_size(committed)} are held by models in use"
                    + (f", {_size(mine)} of them by this very call" if mine else "")
                )
            self._cond.wait(timeout=min(remaining, 1.0))

    def _drop(self, entry: PoolEntry) -> None:
        del self._entries[entry.key]
        self.evictions += 1
        if self._on_evict is not None:
            self._on_evict(entry.key)
        release = getattr(entry.model, "anymoda_release", None)
        if callable(release):
            release()
        entry.model = None

    @staticmethod
    def _free_memory() -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


_default_pool: ModelPool | None = None
_default_lock = threading.Lock()


def default_pool() -> ModelPool:
    """The process-wide pool, sized by the settings' memory budget."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            from ..config import current_settings

            _default_pool = ModelPool(current_settings().memory_budget)
        return _default_pool
