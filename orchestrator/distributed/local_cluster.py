"""A Ray cluster of N nodes on this machine's loopback, each node its own ``ray start --block`` process
group: for tests and ``benchmarks/scale_out.py``. Stopping kills exactly those process groups (never
``ray stop``, which would stop every Ray process on the machine, other users' included)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRayCluster:
    def __init__(self, *, num_cpus: int = 1, env: dict[str, str] | None = None, detect_dead_node_s: float = 5.0):
        self.num_cpus = num_cpus
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="anymoda-ray-"))
        self.logs = self.temp_dir / "logs"
        self.logs.mkdir()
        # Dead nodes are noticed within a few seconds (the default is tens of seconds), so a test or benchmark
        # that kills one sees its tasks fail over promptly.
        # A busy machine can delay a healthy raylet's answer by a second or more: a tighter timeout declares
        # live nodes dead.
        period_ms = 1000
        self.env = {**os.environ, **(env or {}), "RAY_health_check_period_ms": str(period_ms),
                    "RAY_health_check_timeout_ms": str(2 * period_ms),
                    "RAY_health_check_failure_threshold": str(max(1, int(detect_dead_node_s * 1000 / period_ms))),
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # A token in ~/.ray/auth_token (someone's `ray get-auth-token --generate`) makes `ray start` turn on
                    # token authentication, which drivers without the token then fail; this throwaway cluster decides
                    # for itself.
                    "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        self.nodes: list[subprocess.Popen] = []

    def _ray(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def start_head(self) -> None:
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"],
                    "head")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.nodes[0].poll() is not None:
                raise RuntimeError(f"ray head exited with {self.nodes[0].returncode}; see {self.logs}/head.log")
            time.sleep(0.2)
        raise RuntimeError("the ray head did not start within 120 s")

    def add_worker(self) -> subprocess.Popen:
        return self._start([f"--address={self.address}"], f"worker{len(self.nodes)}")

    def _start(self, arguments: list[str], label: str) -> subprocess.Popen:
        log = open(self.logs / f"{label}.log", "wb")
        process = subprocess.Popen(
            [self._ray(), "start", "--block", f"--num-cpus={self.num_cpus}", "--node-ip-address=127.0.0.1",
             "--disable-usage-stats", f"--min-worker-port={_free_port()}", "--max-worker-port=0", *arguments],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.nodes.append(process)
        return process

    def wait_for_nodes(self, count: int, timeout_s: float = 120.0) -> None:
        import ray

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(1 for n in ray.nodes() if n.get("Alive")) >= count:
                return
            time.sleep(0.3)
        raise RuntimeError(f"fewer than {count} Ray nodes alive after {timeout_s:g} s; see {self.logs}")

    def kill(self, process: subprocess.Popen) -> None:
        """Kill a node as a crash would: its whole process group, at once."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def stop(self) -> None:
        for process in reversed(self.nodes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in reversed(self.nodes):
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill(process)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # workers the node left behind
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
