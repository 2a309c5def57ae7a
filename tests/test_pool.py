"""The model pool: one load per key, a memory budget kept by LRU eviction, models in use never evicted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import torch

import orchestrator.models.pool as pool_module
from orchestrator.errors import MemoryBudgetError
from orchestrator.models.pool import ModelPool, measure_size

MiB = 2**20


def linear(mib: int) -> torch.nn.Linear:
    """A real torch module holding ``mib`` MiB of float32 weights."""
    return torch.nn.Linear(256, mib * MiB // (256 * 4), bias=False)


def real_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


class Loaders:
    """Loader factory that counts calls per key and remembers what it built."""

    def __init__(self, mib: int = 4):
        self.mib = mib
        self.calls: dict[str, int] = {}
        self.models: dict[str, torch.nn.Module] = {}
        self.lock = threading.Lock()

    def __call__(self, key: str, delay: float = 0.0) -> Callable[[], torch.nn.Module]:
        def load() -> torch.nn.Module:
            with self.lock:
                self.calls[key] = self.calls.get(key, 0) + 1
            if delay:
                time.sleep(delay)
            model = linear(self.mib)
            with self.lock:
                self.models[key] = model
            return model

        return load


def run_threads(count: int, target: Callable[[int], None], timeout: float = 30.0) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a thread is stuck"
    return errors


def test_measure_size_counts_parameters_and_buffers_once():
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.BatchNorm1d(20))
    expected = (10 * 20 + 20 + 20 + 20) * 4 + (20 + 20) * 4 + 8  # weights, bias, bn affine; running stats; num_batches
    assert measure_size(model) == expected
    tied = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 100, bias=False))
    tied[1].weight = tied[0].weight
    assert measure_size(tied) == 100 * 8 * 4
    assert measure_size(object()) is None
    marked = type("Marked", (), {"anymoda_size_bytes": 1234})()
    assert measure_size(marked) == 1234


def test_budget_is_kept_while_cycling_more_models_than_fit():
    budget = 10 * MiB
    evicted: list[str] = []
    pool = ModelPool(budget, on_evict=evicted.append)
    loaders = Loaders(mib=4)
    keys = [f"model-{i}" for i in range(6)]
    sequence = keys * 3

    expected_resident: list[str] = []  # least recently used first
    expected_evicted: list[str] = []
    for key in sequence:
        with pool.use(key, loaders(key)) as model:
            assert model is loaders.models[key]
            if key in expected_resident:
                expected_resident.remove(key)
            elif len(expected_resident) == 2:  # two 4 MiB models fit in 10 MiB; a third evicts the LRU one
                expected_evicted.append(expected_resident.pop(0))
            expected_resident.append(key)
            assert pool.used_bytes <= budget
        loaded = pool.loaded()
        assert [info.key for info in loaded] == expected_resident
        for info in loaded:
            assert info.size_bytes == real_bytes(loaders.models[info.key]) == 4 * MiB
            assert info.in_use == 0
        assert pool.used_bytes == sum(info.size_bytes for info in loaded) <= budget

    assert evicted == expected_evicted and pool.evictions == len(expected_evicted) == len(sequence) - 2
    assert pool.loads == len(sequence) and sum(loaders.calls.values()) == len(sequence)


def test_least_recently_used_is_evicted_first():
    pool = ModelPool(10 * MiB)
    loaders = Loaders(mib=4)
    for key in ("a", "b"):
        with pool.use(key, loaders(key)):
            pass
    with pool.use("a", loaders("a")):  # a is now more recent than b
        pass
    with pool.use("c", loaders("c")):
        pass
    assert "b" not in pool and "a" in pool and "c" in pool
    assert [info.key for info in pool.loaded()] == ["a", "c"]
    assert loaders.calls == {"a": 1, "b": 1, "c": 1}
    assert pool.loaded()[0].uses == 2


def test_warm_use_does_not_reload_or_call_the_size_hint():
    pool = ModelPool(10 * MiB)
    loaders = Loaders(mib=1)
    hints = []

    def hint() -> int:
        hints.append(1)
        return MiB

    for _ in range(5):
        with pool.use("k", loaders("k"), size_hint=hint) as model:
            assert model is loaders.models["k"]
    assert loaders.calls == {"k": 1} and hints == [1] and pool.loads == 1


def test_concurrent_first_use_loads_once():
    pool = ModelPool(100 * MiB)
    loaders = Loaders(mib=1)
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def worker(i: int) -> None:
        barrier.wait()
        with pool.use("shared", loaders("shared", delay=0.3)) as model:
            seen.append(model)

    assert run_threads(8, worker) == []
    assert loaders.calls == {"shared": 1} and pool.loads == 1
    assert len(seen) == 8 and all(model is seen[0] for model in seen)
    assert pool.loaded()[0].uses == 8


def test_failed_load_reaches_every_waiter_and_a_later_call_retries(monkeypatch: pytest.MonkeyPatch):
    waiting = threading.Semaphore(0)

    class CountedPendingLoad(pool_module._PendingLoad):
        """Lets the test see each caller start waiting for the load in progress."""

        def __init__(self) -> None:
            super().__init__()
            event = self.done

            class Done:
                def wait(self, timeout=None):
                    waiting.release()
                    return event.wait(timeout)

                def set(self):
                    event.set()

            self.done = Done()

    monkeypatch.setattr(pool_module, "_PendingLoad", CountedPendingLoad)
    pool = ModelPool(100 * MiB)
    calls = []
    barrier = threading.Barrier(8)
    caught: list[BaseException] = []

    def failing() -> torch.nn.Module:
        calls.append(1)
        for _ in range(7):  # fail only once the seven others wait for this load
            assert waiting.acquire(timeout=30)
        raise RuntimeError("weights file is corrupt")

    def worker(i: int) -> None:
        barrier.wait()
        try:
            with pool.use("flaky", failing):
                pass
        except RuntimeError as exc:
            caught.append(exc)

    assert run_threads(8, worker) == []
    assert len(calls) == 1
    assert len(caught) == 8 and all("weights file is corrupt" in str(exc) for exc in caught)
    assert "flaky" not in pool and pool.used_bytes == 0 and pool.loads == 0

    loaders = Loaders(mib=1)
    with pool.use("flaky", loaders("flaky")) as model:  # nothing of the failure is remembered
        assert model is loaders.models["flaky"]
    assert "flaky" in pool and pool.loads == 1


def test_model_larger_than_the_whole_budget_is_refused():
    pool = ModelPool(10 * MiB)
    loaders = Loaders(mib=16)
    with pool.use("small", Loaders(mib=4)("small")):
        pass
    with pytest.raises(MemoryBudgetError, match=r"'huge'.*16\.0 MiB.*whole budget of 10\.0 MiB"):
        with pool.use("huge", loaders("huge")):
            pytest.fail("the oversized model was handed out")
    assert "huge" not in pool and pool.used_bytes <= 10 * MiB

    never = Loaders()
    with pytest.raises(MemoryBudgetError, match=r"'huge'.*whole budget.*memory_budget"):
        with pool.use("huge", never("huge"), size_hint=16 * MiB):
            pass
    assert never.calls == {}  # refused from the hint, before loading anything
    assert "small" in pool  # nothing was evicted for a model that can never fit


def test_model_in_use_is_never_evicted_and_the_newcomer_waits():
    pool = ModelPool(10 * MiB, wait_timeout=30)
    loaders = Loaders(mib=6)
    holding, release = threading.Event(), threading.Event()
    got_second = threading.Event()
    observed: list[tuple[bool, int]] = []

    def first(i: int) -> None:
        with pool.use("first", loaders("first")) as model:
            holding.set()
            release.wait(30)
            observed.append(("first" in pool, id(model) == id(loaders.models["first"])))

    def second(i: int) -> None:
        holding.wait(30)
        with pool.use("second", loaders("second")):
            got_second.set()
            observed.append(("second" in pool, pool.used_bytes))

    thread_first = threading.Thread(target=first, args=(0,))
    thread_second = threading.Thread(target=second, args=(1,))
    thread_first.start()
    thread_second.start()
    assert holding.wait(30)
    time.sleep(0.4)
    assert not got_second.is_set()  # 6 + 6 MiB do not fit in 10 and the first is in use: wait
    assert "first" in pool and [info.in_use for info in pool.loaded()] == [1]
    release.set()
    thread_first.join(30)
    thread_second.join(30)
    assert got_second.is_set()
    assert observed == [(True, True), (True, 6 * MiB)]
    assert "first" not in pool and [info.key for info in pool.loaded()] == ["second"]


def test_waiting_for_room_times_out_with_a_clear_error():
    pool = ModelPool(10 * MiB, wait_timeout=0.3)
    loaders = Loaders(mib=6)
    holding, release = threading.Event(), threading.Event()

    def hold_busy() -> None:  # another caller keeps "busy" in use until told to stop
        with pool.use("busy", loaders("busy")):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_busy)
    holder.start()
    holding.wait(10)
    started = time.monotonic()
    with pytest.raises(MemoryBudgetError, match=r"cannot fit model 'other'.*held by models in use"):
        with pool.use("other", loaders("other")):
            pass
    assert 0.25 < time.monotonic() - started < 5
    with pytest.raises(MemoryBudgetError):  # also when the size is known up front: the loader is never called
        with pool.use("hinted", loaders("hinted"), size_hint=6 * MiB):
            pass
    assert "hinted" not in loaders.calls
    assert "busy" in pool and loaders.models["busy"].weight.numel() > 0
    release.set()
    holder.join(10)
    assert pool.used_bytes == 6 * MiB
    with pool.use("other", loaders("other")):  # room is made once "busy" is released
        assert "busy" not in pool


def test_a_caller_needing_room_it_holds_itself_fails_at_once():
    # A tool that calls another tool holds its own model meanwhile: waiting for it would wait forever.
    pool = ModelPool(10 * MiB, wait_timeout=30)
    loaders = Loaders(mib=6)
    with pool.use("outer", loaders("outer")):
        started = time.monotonic()
        with pytest.raises(MemoryBudgetError, match=r"6\.0 MiB of them by this very call"):
            with pool.use("inner", loaders("inner")):
                pass
        assert time.monotonic() - started < 5


def test_small_sizes_are_reported_in_kib():
    pool = ModelPool(64 * 1024)
    with pytest.raises(MemoryBudgetError, match=r"100\.0 KiB, more than the whole budget of 64\.0 KiB"):
        with pool.use("big", lambda: object(), size_hint=100 * 1024):
            pass


def test_exclusive_serialises_callers_and_shared_does_not():
    def max_concurrency(exclusive: bool) -> int:
        pool = ModelPool(100 * MiB)
        loaders = Loaders(mib=1)
        with pool.use("m", loaders("m")):
            pass
        active, peak, lock = [0], [0], threading.Lock()
        barrier = threading.Barrier(4)

        def worker(i: int) -> None:
            barrier.wait()
            for _ in range(3):
                with pool.use("m", loaders("m"), exclusive=exclusive):
                    with lock:
                        active[0] += 1
                        peak[0] = max(peak[0], active[0])
                    time.sleep(0.05)
                    with lock:
                        active[0] -= 1

        assert run_threads(4, worker) == []
        assert loaders.calls == {"m": 1}
        return peak[0]

    assert max_concurrency(exclusive=True) == 1
    assert max_concurrency(exclusive=False) > 1


def test_many_threads_many_models_stay_within_budget():
    budget = 10 * MiB
    pool = ModelPool(budget, wait_timeout=30)
    loaders = Loaders(mib=4)
    keys = [f"m{i}" for i in range(5)]

    def worker(i: int) -> None:
        for step in range(8):
            key = keys[(i * 3 + step) % len(keys)]
            with pool.use(key, loaders(key)) as model:
                assert key in pool and model is not None and model.weight.numel() > 0
                assert pool.used_bytes <= budget
                time.sleep(0.002)

    assert run_threads(4, worker, timeout=60) == []
    assert pool.used_bytes <= budget
    assert all(info.in_use == 0 for info in pool.loaded())
    assert pool.loads == sum(loaders.calls.values()) and pool.evictions == pool.loads - len(pool.loaded())


def test_evict_and_clear_spare_models_in_use():
    released = []

    class Releasable(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name
            self.weight = torch.nn.Parameter(torch.zeros(1024))

        def anymoda_release(self) -> None:
            released.append(self.name)

    pool = ModelPool(10 * MiB)
    with pool.use("held", lambda: Releasable("held")):
        with pool.use("idle", lambda: Releasable("idle")):
            pass
        assert pool.evict("held") is False  # in use
        assert pool.evict("missing") is False
        pool.clear()
        assert "held" in pool and "idle" not in pool and released == ["idle"]
    assert pool.evict("held") is True and released == ["idle", "held"]
    assert pool.used_bytes == 0 and pool.loaded() == []


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ModelPool(0)
