"""Runs executing in worker threads, and their events fanned out to HTTP followers.

The Orchestrator's API is blocking (a run is a generator of events that plans, calls models and
writes files), so every run is driven by a thread of a bounded pool and the event loop only relays
what it yields. Each run has a :class:`RunChannel` that keeps the events so far: a client that joins
late (``GET .../runs/{id}/stream``), or several at once, sees the whole run, and a client that goes
away leaves the run going (it is recorded and can be fetched, resumed or cancelled).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..execution.events import Event
from .errors import ApiError
from .limits import RunSlots

# A run's stored events are bounded: token events past this many are relayed live but not kept
# (a late joiner still gets the plan, every task event and the answer).
MAX_KEPT_EVENTS = 5_000
MAX_KEPT_RUNS = 2_000
_END = object()
FINAL_EVENTS = ("run_finished", "run_failed", "run_interrupted")


def event_json(event: Event) -> dict[str, Any]:
    return {"type": event.type, "run": event.run, "task": event.task, "data": event.data, "time": event.time}


class RunChannel:
    def __init__(self, run_id: str, tenant: str, loop: asyncio.AbstractEventLoop):
        self.run_id = run_id
        self.tenant = tenant
        self.loop = loop
        self.events: list[dict[str, Any]] = []
        self.done = False
        self.started_at = time.time()
        self._followers: set[asyncio.Queue] = set()
        self._lock = threading.Lock()

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self.events) < MAX_KEPT_EVENTS or not event["type"].endswith("_token"):
                self.events.append(event)
            for queue in self._followers:
                self.loop.call_soon_threadsafe(queue.put_nowait, event)

    def close(self) -> None:
        with self._lock:
            self.done = True
            for queue in self._followers:
                self.loop.call_soon_threadsafe(queue.put_nowait, _END)

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of the run: those so far, then the rest as they come, until it ends."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:  # the backlog and the subscription are taken together: nothing falls between
            backlog = list(self.events)
            done = self.done
            if not done:
                self._followers.add(queue)
        try:
            for event in backlog:
                yield event
            if done:
                return
            while (event := await queue.get()) is not _END:
                yield event
        finally:
            with self._lock:
                self._followers.discard(queue)

    @property
    def final_event(self) -> dict[str, Any] | None:
        with self._lock:
            return next((e for e in reversed(self.events) if e["type"] in FINAL_EVENTS), None)


class RunManager:
    """Starts runs on the worker pool, holds each key's concurrent-run slot while a run works."""

    def __init__(self, workers: int, slots: RunSlots, on_finish: Callable[[str | None], None] = lambda status: None):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anymoda-run")
        self.slots = slots
        self.on_finish = on_finish
        self._channels: collections.OrderedDict[str, RunChannel] = collections.OrderedDict()
        self._lock = threading.Lock()

    def channel(self, run_id: str) -> RunChannel | None:
        with self._lock:
            return self._channels.get(run_id)

    def active(self) -> int:
        with self._lock:
            return sum(1 for c in self._channels.values() if not c.done)

    async def start(self, run_id: str, tenant: str, key_id: str, max_runs: int,
                    events: Callable[[], Iterator[Event]]) -> RunChannel:
        """Start ``events()`` (a run's event generator) in a worker and return once it has begun.

        An error before the run's first event (a bad input, an unknown id) is raised here, so the
        request that started it gets its 4xx; later errors end the run as ``run_failed``."""
        existing = self.channel(run_id)
        if existing is not None and not existing.done:
            raise ApiError(409, f"run {run_id} is running; wait for it or cancel it", "conflict")
        if not self.slots.acquire(key_id, max_runs):
            raise ApiError(429, f"this key already has {max_runs} run(s) going, its limit; retry when one ends",
                           "rate_limit_exceeded", headers={"Retry-After": "2"})
        loop = asyncio.get_running_loop()
        channel = RunChannel(run_id, tenant, loop)
        began: asyncio.Future = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if not began.done():
                began.set_exception(error) if error is not None else began.set_result(None)

        def work() -> None:
            status, begun = None, False
            try:
                for event in events():
                    if event.type in FINAL_EVENTS:
                        status = event.data.get("status") or event.type.removeprefix("run_")
                    if not begun:
                        begun = True
                        with self._lock:
                            self._register(channel)
                        loop.call_soon_threadsafe(settle, None)
                    channel.publish(event_json(event))
            except BaseException as exc:  # noqa: BLE001 - before the first event it is the request's error
                if begun:
                    status = "failed"
                    channel.publish(event_json(Event("run_failed", run_id, data={"error": _one_line(exc)})))
                else:
                    loop.call_soon_threadsafe(settle, exc)
            finally:
                self.slots.release(key_id)
                channel.close()
                self.on_finish(status)
                loop.call_soon_threadsafe(settle, RuntimeError("the run produced no events"))

        try:
            self.pool.submit(work)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.slots.release(key_id)
            raise ApiError(503, "the server is shutting down", "server_unavailable") from None
        await began
        return channel

    def _register(self, channel: RunChannel) -> None:
        self._channels[channel.run_id] = channel
        self._channels.move_to_end(channel.run_id)
        while len(self._channels) > MAX_KEPT_RUNS:
            oldest_id, oldest = next(iter(self._channels.items()))
            if not oldest.done:
                break
            del self._channels[oldest_id]

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _one_line(exc: BaseException) -> str:
    from ..errors import AnymodaError

    text = str(exc) if isinstance(exc, AnymodaError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]
