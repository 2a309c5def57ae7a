"""A front-end process for tests/test_shared_state.py: its own home, the shared Postgres + S3 state from
the config file in that home. ``python shared_state_child.py COMMAND JSON`` prints one JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.agent import Orchestrator  # noqa: E402
from orchestrator.config import Settings  # noqa: E402
from orchestrator.execution.compose import Composer  # noqa: E402
from orchestrator.tooling.registry import ToolRegistry  # noqa: E402
from orchestrator.tooling.stub_tools import STUB_TOOLS  # noqa: E402


def build(approve_before=()) -> Orchestrator:
    return Orchestrator(settings=Settings.load(), registry=ToolRegistry(STUB_TOOLS), planner=None,
                        composer=Composer(None), approve_before=approve_before)


def main() -> None:
    command, argument = sys.argv[1], json.loads(sys.argv[2])
    orch = build(argument.get("approve_before", ()))
    try:
        if command == "run":
            events = []
            for event in orch.stream(argument["request"], plan=argument["plan"], session=argument.get("session")):
                events.append(event.type)
                print(json.dumps({"event": event.type, "run": event.run, "task": event.task}), flush=True)
            result = orch.result(event.run)
            print(json.dumps({"run": result.run_id, "status": result.status, "events": events}), flush=True)
        elif command == "resume":
            result = orch.resume(argument["run"], approve=argument.get("approve"))
            print(json.dumps({"run": result.run_id, "status": result.status, "answer": result.answer,
                              "tasks": {t: r.to_json() for t, r in result.tasks.items()},
                              "pid": os.getpid()}), flush=True)
        elif command == "session-put":
            session = orch.session(argument["session"])
            artifact = orch.store.put_value("text", argument["text"], session=session.id)
            print(json.dumps({"id": artifact.id}), flush=True)
        elif command == "session-read":
            session = orch.session(argument["session"])
            found = {}
            for artifact_id in argument["ids"]:
                try:
                    found[artifact_id] = session.load(artifact_id)
                except Exception as exc:  # noqa: BLE001 - reported to the test
                    found[artifact_id] = f"error: {type(exc).__name__}"
            runs = {}
            for run_id in argument.get("runs", []):
                try:
                    runs[run_id] = session.result(run_id).status
                except Exception as exc:  # noqa: BLE001
                    runs[run_id] = f"error: {type(exc).__name__}"
            print(json.dumps({"found": found, "listed": [a.id for a in session.artifacts()], "runs": runs,
                              "history": [r.id for r in session.history()]}), flush=True)
    finally:
        orch.runner.shutdown()


if __name__ == "__main__":
    main()
