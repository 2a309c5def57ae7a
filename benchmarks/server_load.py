"""Load on ``anymoda serve``: concurrent chat sessions over loopback, against the stub stack.

Workload (printed at the start):

- The server is a real ``anymoda serve`` subprocess on 127.0.0.1 with the tests' stub stack
  (``tests/serve_harness.py``: stub tools, a keyword planner, the template composer; no LLM, no weights),
  in a fresh home under a temporary folder.
- ``--sessions`` concurrent conversations (default 50), each its own tenant and API key, each ``--turns``
  turns (default 3, at most 3): paint a colour, make that picture brighter, say it as a tone. All sessions
  start together; every request is ``POST /v1/chat/completions`` with the conversation id.
- Checked for every answer: HTTP 200 and status done; every artifact it names (in its files and its text)
  is one its own conversation made, and every parent of its outputs is its own tenant's (cross-session leak
  check: each session is a tenant, so another's answers 404); turn 2's picture is turn 1's
  colour brightened (+60 per channel), so a turn that picked up another session's picture is caught.
  At the end, /metrics must show no run still active and no concurrent-run slot still held.
- Server overhead: the same turns one at a time (``--overhead-sessions`` sessions, no concurrency) over HTTP,
  and in-process through ``Orchestrator.run`` on the same stack; overhead = p50(HTTP) - p50(in-process).
  Target: under 20 ms.

Bounded: ``--timeout`` seconds for the whole load phase (default 300), loopback only.

    python benchmarks/server_load.py [--sessions 50] [--turns 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "white": (255, 255, 255), "black": (0, 0, 0)}
ARTIFACT_ID = re.compile(r"\b(?:text|image|audio|video|time_series|detections|masks|json)-[0-9a-f]{16}\b")


def turns_for(index: int, count: int) -> list[str]:
    colour = list(COLOURS)[index % len(COLOURS)]
    return [f"paint it {colour}", "make that picture brighter", "say it as a tone"][:count]


def brightened(colour: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(min(255, c + 60) for c in colour)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def conversation(client, url: str, key: str, index: int, turns: int, latencies: list[float],
                       problems: list[str]) -> None:
    from PIL import Image

    headers = {"Authorization": f"Bearer {key}"}
    conversation_id = f"load-{index}"
    own: set[str] = set()
    colour = COLOURS[list(COLOURS)[index % len(COLOURS)]]
    for turn, text in enumerate(turns_for(index, turns), 1):
        began = time.perf_counter()
        try:
            response = await client.post(url + "/v1/chat/completions", headers=headers, json={
                "model": "anymoda", "conversation": conversation_id, "messages": [{"role": "user", "content": text}]})
        except Exception as exc:  # noqa: BLE001 - counted, not raised: the run goes on
            problems.append(f"session {index} turn {turn}: {type(exc).__name__}: {exc}")
            return
        latencies.append(time.perf_counter() - began)
        if response.status_code != 200:
            problems.append(f"session {index} turn {turn}: HTTP {response.status_code} {response.text[:200]}")
            return
        body = response.json()
        extension = body["anymoda"]
        if extension["status"] != "done":
            problems.append(f"session {index} turn {turn}: status {extension['status']} {extension.get('error')}")
            return
        made = set(extension["artifacts"])
        named = set(ARTIFACT_ID.findall(body["choices"][0]["message"]["content"] or ""))
        for artifact_id in made:
            # Each session is its own tenant, so an artifact (or a parent of one) of another session answers 404.
            record = await client.get(url + f"/v1/artifacts/{artifact_id}", headers=headers)
            parents = record.json().get("parents", []) if record.status_code == 200 else []
            if record.status_code != 200:
                problems.append(f"LEAK session {index} turn {turn}: its own output {artifact_id} is not its own")
            for parent in parents:
                if parent not in own and (await client.get(url + f"/v1/artifacts/{parent}", headers=headers)).status_code != 200:
                    problems.append(f"LEAK session {index} turn {turn}: {artifact_id} derives from another's {parent}")
        own |= made
        leaked = named - own
        if leaked:
            problems.append(f"LEAK session {index} turn {turn}: the answer names {sorted(leaked)}")
        if turn == 2:
            picture = await client.get(url + extension["files"][0]["url"], headers=headers)
            pixel = Image.open(io.BytesIO(picture.content)).convert("RGB").getpixel((0, 0))
            if pixel != brightened(colour):
                problems.append(f"LEAK session {index} turn 2: brightened {pixel}, expected {brightened(colour)}")


async def load(server, sessions: int, turns: int, timeout: float) -> dict:
    import httpx

    keys = [server.key(f"load-{i}", requests_per_minute=10_000) for i in range(sessions)]
    latencies: list[float] = []
    problems: list[str] = []
    limits = httpx.Limits(max_connections=sessions + 10, max_keepalive_connections=sessions + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(conversation(client, server.url, keys[i], i, turns, latencies, problems)
                                                for i in range(sessions))), timeout)
        elapsed = time.perf_counter() - began
        metrics = (await client.get(server.url + "/metrics", headers={"Authorization": f"Bearer {keys[0]}"})).text
    active = re.search(r"^anymoda_runs_active (\d+)", metrics, re.M)
    slots = re.search(r"^anymoda_run_slots_held (\d+)", metrics, re.M)
    if not active or active.group(1) != "0" or not slots or slots.group(1) != "0":
        problems.append(f"after the load: runs active {active and active.group(1)}, slots held {slots and slots.group(1)}")
    return {"latencies": latencies, "problems": problems, "elapsed": elapsed}


def sequential_http(server, sessions: int, turns: int) -> list[float]:
    import httpx

    key = server.key("sequential", requests_per_minute=10_000)
    latencies = []
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        for i in range(sessions):
            for text in turns_for(i, turns):
                began = time.perf_counter()
                response = client.post(server.url + "/v1/chat/completions", json={
                    "model": "anymoda", "conversation": f"seq-{i}", "messages": [{"role": "user", "content": text}]})
                latencies.append(time.perf_counter() - began)
                assert response.status_code == 200 and response.json()["anymoda"]["status"] == "done", response.text
    return latencies


def sequential_in_process(home: Path, sessions: int, turns: int) -> list[float]:
    from orchestrator.config import Settings, use_settings
    from serve_harness import build_orchestrator

    settings = Settings.from_dict({"home": str(home), "offline": True, "device": "cpu"})
    use_settings(settings)
    orchestrator = build_orchestrator(settings)
    orchestrator.run("paint it red", session="warm-up")  # the server was warm too: graphs compiled, SQLite open
    latencies = []
    for i in range(sessions):
        for text in turns_for(i, turns):
            began = time.perf_counter()
            result = orchestrator.run(text, session=f"seq-{i}")
            latencies.append(time.perf_counter() - began)
            assert result.status == "done", result.error
    orchestrator.runner.shutdown()
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--workers", type=int, default=8, help="the server's run workers (anymoda serve --workers)")
    parser.add_argument("--overhead-sessions", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 500:
        parser.error("--sessions is 1-500")
    from serve_harness import start_server

    print(f"workload: {args.sessions} concurrent sessions x {args.turns} turns (paint, brighten, tone), one tenant "
          f"and key each, loopback, stub tools, keyword planner, template composer; server workers {args.workers}; "
          f"overhead: {args.overhead_sessions} sessions x {args.turns} turns one at a time, HTTP vs in-process", flush=True)
    with tempfile.TemporaryDirectory(prefix="anymoda-load-") as folder:
        server = start_server(Path(folder) / "server", "--workers", str(args.workers), "--concurrent-runs", "4")
        try:
            result = asyncio.run(load(server, args.sessions, args.turns, args.timeout))
            http = sequential_http(server, args.overhead_sessions, args.turns)
        finally:
            server.stop()
        local = sequential_in_process(Path(folder) / "local", args.overhead_sessions, args.turns)
    latencies, problems = result["latencies"], result["problems"]
    requests = args.sessions * args.turns
    leaks = [p for p in problems if p.startswith("LEAK")]
    errors = [p for p in problems if not p.startswith("LEAK")]
    print(f"load: {len(latencies)}/{requests} requests in {result['elapsed']:.2f} s = {len(latencies) / result['elapsed']:.1f} req/s; "
          f"latency p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms")
    print(f"errors: {len(errors)}; cross-session leaks: {len(leaks)}")
    for problem in problems[:20]:
        print("  " + problem)
    overhead = (statistics.median(http) - statistics.median(local)) * 1000
    print(f"one at a time: HTTP p50 {statistics.median(http) * 1000:.1f} ms, in-process p50 "
          f"{statistics.median(local) * 1000:.1f} ms -> server overhead {overhead:.1f} ms per request at p50 (target < 20)")
    ok = not problems and len(latencies) == requests and overhead < 20
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
