"""A test-only tool that reports progress, importable by the Ray workers (the cluster's PYTHONPATH holds tests/)."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.stub_tools import STUB_TOOLS
from orchestrator.tooling.tool import Input, Output, Param, WeightlessTool


class StubSteps(WeightlessTool):
    name = "stub-steps"
    task = "stub"
    description = "Take a few steps, reporting progress after each."
    inputs = {"a": Input(ArtifactKind.TEXT, "ignored", required=False)}
    outputs = {"text": Output(ArtifactKind.TEXT, "how many steps were taken")}
    params = {"steps": Param(int, 3, "how many", minimum=1, maximum=20),
              "seconds": Param(float, 0.05, "per step", minimum=0.0, maximum=10.0)}
    default_model = "steps"

    def build_method(self) -> Any:
        return time.sleep

    def run(self, sleep: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        for step in range(params["steps"]):
            sleep(params["seconds"])
            self.report_progress(step + 1, params["steps"], f"step {step + 1}")
        return {"text": f"{params['steps']} steps"}


TOOLS = (*STUB_TOOLS, StubSteps)
