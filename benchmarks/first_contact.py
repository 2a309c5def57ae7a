"""First contact: the wall time of ``anymoda tools`` on a fresh home, against its limit (3 s).

A new user's first command lists the tools. It used to take about a minute and a half offline, because
checking whether the packaged LLM could run converted it. Each run here starts a new process (imports
included, as the user pays for them) with ANYMODA_HOME pointed at a new empty folder and offline mode on
(the case that converted), and checks afterwards that nothing was converted or joined into the home.

    python benchmarks/first_contact.py [--runs 3] [--limit 3.0] [--online]

Prints one line per run and a summary; exits 1 when the median is over the limit or the home gained a
converted model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(offline: bool) -> tuple[float, int, list[str]]:
    """Seconds, exit code, and what the fresh home holds afterwards (files over 1 MB)."""
    with tempfile.TemporaryDirectory(prefix="anymoda-fresh-home-") as home:
        env = {**os.environ, "ANYMODA_HOME": home}
        env.pop("ANYMODA_CONFIG", None)
        if offline:
            env.update(ANYMODA_OFFLINE="1", HF_HUB_OFFLINE="1")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "tools"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
        heavy = [str(p.relative_to(home)) for p in Path(home).rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]
        return seconds, done.returncode, heavy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=float, default=3.0, help="seconds the median may take (default 3)")
    parser.add_argument("--online", action="store_true", help="leave offline mode off (the hub is not asked either way)")
    args = parser.parse_args()
    times, failed = [], False
    for run in range(1, args.runs + 1):
        seconds, code, heavy = one_run(offline=not args.online)
        times.append(seconds)
        note = f"; the home gained {', '.join(heavy)}" if heavy else ""
        print(f"run {run}: anymoda tools on a fresh home in {seconds:.2f} s (exit {code}){note}", flush=True)
        failed = failed or code != 0 or bool(heavy)
    median = statistics.median(times)
    verdict = "within" if median <= args.limit else "OVER"
    print(f"median {median:.2f} s, min {min(times):.2f} s, max {max(times):.2f} s: {verdict} the limit of {args.limit:g} s "
          f"({'offline' if not args.online else 'online'}, {os.cpu_count()} CPUs)")
    return 1 if failed or median > args.limit else 0


if __name__ == "__main__":
    sys.exit(main())
