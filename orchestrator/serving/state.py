"""What every route shares: the Orchestrator, keys, ownership tables, limits, runs and metrics."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..agent import Orchestrator
from ..storage.artifacts import Artifact
from .auth import ApiKey, KeyStore
from .errors import ApiError
from .limits import RateLimiter, ServeLimits
from .runs import RunManager
from .tenancy import FileRecord, Tenancy

MODEL_ID = "anymoda"


@dataclass(frozen=True)
class Caller:
    key: ApiKey

    @property
    def tenant(self) -> str:
        return self.key.tenant


class Metrics:
    """Counters and a latency histogram in Prometheus' text format (no client library needed)."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> bucket counts + [sum, count]
        self.runs: dict[str, int] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            counts = self.latency.setdefault(route, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-2] += seconds
            counts[-1] += 1

    def run_finished(self, status: str | None) -> None:
        with self._lock:
            self.runs[status or "unknown"] = self.runs.get(status or "unknown", 0) + 1

    def render(self, active_runs: int, running_slots: int) -> str:
        def label(value: str) -> str:
            return json.dumps(value)  # a JSON string is a valid Prometheus label value

        lines = ["# HELP anymoda_http_requests_total HTTP requests by route and status.",
                 "# TYPE anymoda_http_requests_total counter"]
        with self._lock:
            for (method, route, status), count in sorted(self.requests.items()):
                lines.append(f"anymoda_http_requests_total{{method={label(method)},route={label(route)},"
                             f"status=\"{status}\"}} {count}")
            lines += ["# HELP anymoda_http_request_duration_seconds Time to the response's first byte.",
                      "# TYPE anymoda_http_request_duration_seconds histogram"]
            for route, counts in sorted(self.latency.items()):
                for bound, count in zip(self.BUCKETS, counts):
                    lines.append(f"anymoda_http_request_duration_seconds_bucket{{route={label(route)},le=\"{bound}\"}} {int(count)}")
                lines.append(f"anymoda_http_request_duration_seconds_bucket{{route={label(route)},le=\"+Inf\"}} {int(counts[-1])}")
                lines.append(f"anymoda_http_request_duration_seconds_sum{{route={label(route)}}} {counts[-2]:.6f}")
                lines.append(f"anymoda_http_request_duration_seconds_count{{route={label(route)}}} {int(counts[-1])}")
            lines += ["# HELP anymoda_runs_finished_total Runs that ended, by status.", "# TYPE anymoda_runs_finished_total counter"]
            for status, count in sorted(self.runs.items()):
                lines.append(f"anymoda_runs_finished_total{{status={label(status)}}} {count}")
        lines += ["# HELP anymoda_runs_active Runs being driven by a worker now.", "# TYPE anymoda_runs_active gauge",
                  f"anymoda_runs_active {active_runs}",
                  "# HELP anymoda_run_slots_held Concurrent-run slots held across keys.", "# TYPE anymoda_run_slots_held gauge",
                  f"anymoda_run_slots_held {running_slots}",
                  "# HELP anymoda_uptime_seconds Seconds since the server started.", "# TYPE anymoda_uptime_seconds gauge",
                  f"anymoda_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


@dataclass
class ServerState:
    orchestrator: Orchestrator
    keys: KeyStore
    tenancy: Tenancy
    limits: ServeLimits
    runs: RunManager
    allowed_url_hosts: frozenset[str] = frozenset()
    rate: RateLimiter = field(default_factory=RateLimiter)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def store(self):
        return self.orchestrator.store

    def publish_artifact(self, caller: Caller, artifact: Artifact) -> FileRecord:
        """An output artifact as a file of the caller (one file per artifact, made on first use)."""
        existing = self.tenancy.file_of_artifact(caller.tenant, artifact.id)
        if existing is not None:
            return existing
        from ..storage.store import extension_for
        from .media_input import safe_filename

        # The name goes into Content-Disposition headers: only the characters safe_filename keeps.
        name = safe_filename(artifact.metadata.get("name"), f"{artifact.id}{extension_for(artifact.mime)}")
        return self.tenancy.add_file(caller.tenant, artifact, name, "assistants_output")

    def not_found(self, error: LookupError) -> ApiError:
        return ApiError(404, str(error), "not_found_error")


def file_reference(record: FileRecord) -> dict[str, Any]:
    drawn = record.kind in ("detections", "masks", "time_series")
    return {**record.to_openai(), "url": f"/v1/files/{record.id}/content", "artifact": record.artifact,
            "preview_url": f"/v1/artifacts/{record.artifact}/preview" if drawn else None}
