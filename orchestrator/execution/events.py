"""What a run reports while it runs: one small, JSON-able event type for the CLI, Python callers and HTTP.

Types, in the order a run emits them: ``run_started``, ``plan_token`` (the plan's text as the planner's LLM
writes it), ``plan_ready``, ``approval_needed``,
``task_started``, ``task_progress``, ``task_retry``, ``task_finished``, ``task_failed``,
``task_skipped``, ``task_cancelled``, ``answer_token``, ``answer``, and finally one of
``run_finished``, ``run_interrupted`` (waiting for approval), ``run_failed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_TYPES = (
    "run_started", "plan_token", "plan_ready", "approval_needed", "task_started", "task_progress", "task_retry", "task_finished",
    "task_failed", "task_skipped", "task_cancelled", "answer_token", "answer", "run_finished", "run_interrupted",
    "run_failed",
)


@dataclass(frozen=True)
class Event:
    type: str
    run: str
    task: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The sink of callers that do not listen."""
