"""Answers that are true and honest (issue 14), on stub tools and scripted LLMs: nothing loads a model.

- A task whose tool cannot run here is ``unavailable`` (model ids, reason, fetch command), never replaced;
  its dependants are skipped, the answer says so, and nothing pretending to be its result is delivered.
- A failed task is named in the answer; the run is ``partial`` or ``failed``, not ``done``.
- An LLM reply with a number or name the tools never produced falls back to the template (and says why);
  a grounded reply is kept. The template reads like a person wrote it: no ids, no ``= (a json file)``.
- Conversations: turn 2 gets turn 1's answer as ``previous_answer``; "what did I ask first" is answered
  from the history; "make it brighter" edits the last image; chat files of turn 2 keep turn 1's.
- Repairs: a call that fails on a bad argument is repaired by the planner once; the journal has both.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli_agent
from orchestrator.agent import Orchestrator
from orchestrator.artifacts import ArtifactKind
from orchestrator.cli import main
from orchestrator.compose import Composer, Sources, ungrounded
from orchestrator.errors import ModelNotAvailableError
from orchestrator.plan import Plan, validate_plan
from orchestrator.planner import Attempt, PlanResult
from orchestrator.registry import ToolRegistry
from orchestrator.store import ArtifactStore
from orchestrator.stub_tools import STUB_TOOLS
from orchestrator.tool import Input, Output, Tool, WeightlessTool

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from test_agent import ScriptedBackend, made_by, scripted_planner  # noqa: E402

ARTIFACT_ID = re.compile(r"\b(?:text|image|audio|video|time_series|detections|masks|json)-[0-9a-f]{16}\b")
LOADS: list[str] = []


class StubCutout(Tool):
    """Needs hub weights that are not on this machine (the tests run offline)."""

    name = "stub-cutout"
    task = "image-segmentation"
    description = "Cut out the objects named, on a transparent background."
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image"), "labels": Input(ArtifactKind.TEXT, "what to cut out")}
    outputs = {"cutout": Output(ArtifactKind.IMAGE, "the objects on a transparent background")}
    default_model = "example-org/stub-cutout-weights"

    def load(self, source, device):
        LOADS.append(self.name)
        raise AssertionError("an unavailable tool must never be loaded")


class StubFlakyHub(WeightlessTool):
    """Says it can run, then finds out while running that its weights cannot be downloaded."""

    name = "stub-flaky-hub"
    task = "text-to-image"
    description = "Draw the text (the weights come from the hub on first use)."
    inputs = {"prompt": Input(ArtifactKind.TEXT, "what to draw")}
    outputs = {"image": Output(ArtifactKind.IMAGE, "the picture")}
    default_model = "draw"

    def build_method(self):
        return None

    def run(self, model, inputs, params):
        error = ModelNotAvailableError(
            "tool 'stub-flaky-hub': model 'example-org/drawing' is not available: the hub download failed "
            "(ConnectError: [Errno -3] Temporary failure in name resolution)")
        error.hub_unreachable = True
        raise error


REGISTRY = ToolRegistry((*STUB_TOOLS, StubCutout, StubFlakyHub))


def make(settings, **kwargs: Any) -> Orchestrator:
    kwargs.setdefault("registry", REGISTRY)
    kwargs.setdefault("planner", None)
    kwargs.setdefault("composer", Composer(None))
    return Orchestrator(settings=settings, **kwargs)


@pytest.fixture
def orch(settings):
    orchestrator = make(settings)
    yield orchestrator
    orchestrator.runner.shutdown()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "dog.png"
    Image.new("RGB", (24, 16), (200, 180, 150)).save(path)
    return path


def wait(task_id: str, label: str, **args: Any) -> dict[str, Any]:
    return {"id": task_id, "tool": "stub-wait", "args": {"label": label, "seconds": 0.0, **args}}


def no_ids_or_result_lines(text: str) -> None:
    assert not ARTIFACT_ID.search(text), text
    assert "= (a" not in text and not re.search(r"\[t\d+\]", text) and "(a json file" not in text, text
    assert "duration_s" not in text and "bytes" not in text, text


# ---------------------------------------------------------------------- 1. tools that cannot run here


def test_a_tool_whose_weights_are_absent_is_unavailable_and_its_dependants_skipped(orch: Orchestrator, photo: Path):
    LOADS.clear()
    plan = {"tasks": [{"id": "t1", "tool": "stub-cutout", "args": {"image": "dog.png", "labels": "dog"}},
                      {"id": "t2", "tool": "stub-name", "args": {"image": "<t1.cutout>"}},
                      wait("t3", "still here")]}
    plan["tasks"][0]["args"]["image"] = orch.ingest([photo], "cut-1")[0].id
    events = list(orch.stream("Find the dog and cut it out, and say still here", plan=plan, session="cut-1"))
    result = orch.result(events[0].run)

    assert result.status == "partial" and not result.ok  # not plainly done
    assert result.tasks["t1"].status == "unavailable" and result.tasks["t2"].status == "skipped"
    assert "t1" in result.tasks["t2"].error and "unavailable" in result.tasks["t2"].error
    assert result.tasks["t3"].status == "done"
    assert LOADS == []  # the check loads nothing

    (missing,) = result.unavailable
    assert (missing.task, missing.tool, missing.capability) == ("t1", "stub-cutout", "image-segmentation")
    assert missing.model == "example-org/stub-cutout-weights" and missing.why == "weights"
    assert "not available" in missing.reason and missing.fetch_command
    # The answer says it plainly, with the model and the exact fetch command; partial results still come.
    assert "I can't" in result.answer and missing.model in result.answer and missing.fetch_command in result.answer
    assert "still here" in result.answer
    assert "stub name step was not run, because the stub cutout step it needed could not run here" in result.answer
    no_ids_or_result_lines(result.answer)
    # Nothing pretends to be the result: only t3's text is delivered; t1 and t2 stored nothing.
    assert [a.id for a in result.artifacts] == [result.tasks["t3"].outputs["text"]]
    assert not made_by(orch.store, "cut-1", result.run_id, "t1") and not made_by(orch.store, "cut-1", result.run_id, "t2")

    # Events: the live tree can tell it apart from a failure.
    (event,) = [e for e in events if e.task == "t1"]
    assert event.type == "task_failed" and event.data["unavailable"]["fetch_command"] == missing.fetch_command
    skipped = next(e for e in events if e.task == "t2")
    assert skipped.type == "task_skipped" and skipped.data["because_unavailable"]

    # The journal keeps it (runs show, resume, another process).
    record = orch.journal.get_run(result.run_id)
    assert record.status == "partial" and record.task("t1").status == "unavailable"
    assert record.unavailable == [missing.to_json()]
    again = make(orch.settings).result(result.run_id)
    assert again.unavailable == result.unavailable and again.status == "partial"
    assert json.loads(json.dumps(result.to_json()))["unavailable"][0]["fetch_command"] == missing.fetch_command


def test_grounded_segmentation_without_weights_names_its_real_models(settings, photo: Path):
    from tools import GroundedSegmentation

    if GroundedSegmentation(settings=settings).available():
        pytest.skip("grounded-segmentation's weights are on this machine")
    orch = make(settings, registry=ToolRegistry((*STUB_TOOLS, GroundedSegmentation)))
    image = orch.ingest([photo], "gs")[0].id
    result = orch.run("Find the dog and cut it out", session="gs",
                      plan={"tasks": [{"id": "t1", "tool": "grounded-segmentation", "args": {"image": image, "labels": "dog"}}]})

    assert result.status == "failed" and not result.error  # nothing could be done; the run itself did not break
    (missing,) = result.unavailable
    assert missing.model == "facebook/sam-vit-base + google/owlv2-base-patch16-ensemble"
    assert result.answer.startswith(
        "I can't find and cut out 'dog' here: that needs grounded segmentation (models facebook/sam-vit-base + "
        "google/owlv2-base-patch16-ensemble), whose weights are not on this machine. Fetch them with: ")
    assert result.answer.rstrip().endswith(missing.fetch_command) and result.artifacts == ()
    assert result.composed_by == "template"


def test_a_tool_that_finds_out_while_running_is_unavailable_too(tmp_path: Path):
    from orchestrator.config import Settings

    # Not offline: the tool tries the hub on first use, which cannot be reached.
    orch = make(Settings.from_dict({"home": str(tmp_path / "home"), "offline": False, "device": "cpu"}))
    result = orch.run("Draw a picture of a lighthouse at dusk",
                      plan={"tasks": [{"id": "t1", "tool": "stub-flaky-hub", "args": {"prompt": "a lighthouse at dusk"}}]})
    assert result.status == "failed" and result.tasks["t1"].status == "unavailable"
    (missing,) = result.unavailable
    assert missing.why == "hub" and "ConnectError" in missing.reason
    assert "could not be reached" in result.answer and "lighthouse at dusk" in result.answer
    assert result.artifacts == ()


def test_the_default_planner_sees_every_tool(settings, monkeypatch):
    import orchestrator.local_llm as local_llm

    class NoLLM:
        name = "none"

        def __init__(self, **_: Any):
            pass

    monkeypatch.setattr(local_llm, "LocalLLMBackend", NoLLM)
    orchestrator = Orchestrator(settings=settings, registry=REGISTRY)
    assert orchestrator.planner.prefer_available is False
    tools = [t.name for t in orchestrator.planner.tools_for("cut out the dog", [ArtifactKind.IMAGE])]
    assert "stub-cutout" in tools  # offered although its weights are not here


class OnePlanPlanner:
    """A planner that always returns one fixed plan (over the first input offered, if it takes one)."""

    def __init__(self, registry: ToolRegistry, make_plan):
        self.registry = registry
        self.make_plan = make_plan

    def plan(self, request, *, artifacts=(), session=None, context=""):
        plan = Plan.from_json(self.make_plan(request, list(artifacts)))
        return PlanResult(validate_plan(plan, self.registry), (Attempt(json.dumps(plan.to_json()), (), 0.01),))


@pytest.fixture
def cli_with(settings, monkeypatch):
    made: list[Orchestrator] = []

    def install(planner) -> list[Orchestrator]:
        def build(args) -> Orchestrator:
            orchestrator = Orchestrator(settings=settings, registry=REGISTRY, planner=planner, composer=Composer(None),
                                        approve_before=args.approve_before or ())
            made.append(orchestrator)
            return orchestrator

        monkeypatch.setattr(cli_agent, "_orchestrator", build)
        monkeypatch.setenv("COLUMNS", "300")
        return made

    return install


def run_cli(capsys, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_json_and_runs_show_carry_the_unavailable_records(cli_with, capsys, photo: Path, tmp_path: Path):
    def cut_and_note(request, artifacts):
        return {"tasks": [{"id": "t1", "tool": "stub-cutout", "args": {"image": artifacts[0].id, "labels": "dog"}},
                          wait("t2", "noted")]}

    cli_with(OnePlanPlanner(REGISTRY, cut_and_note))
    code, out, err = run_cli(capsys, "run", "cut out the dog", "--file", photo, "--json", "--out", tmp_path / "out")
    assert code == 1, err
    report = json.loads(out)
    assert report["status"] == "partial"
    (missing,) = report["unavailable"]
    assert missing["tool"] == "stub-cutout" and missing["task"] == "t1" and missing["capability"] == "image-segmentation"
    assert missing["model"] == "example-org/stub-cutout-weights" and missing["fetch_command"] in report["answer"]
    assert report["tasks"]["t1"]["status"] == "unavailable"
    assert [Path(p).name for p in report["saved"]] == ["t2-text.txt"]  # nothing saved for the cut-out

    code, out, _ = run_cli(capsys, "runs", "show", report["run"], "--json")
    shown = json.loads(out)
    assert shown["status"] == "partial" and shown["unavailable"] == [missing]
    assert shown["tasks"][0]["unavailable"]["fetch_command"] == missing["fetch_command"]
    code, out, _ = run_cli(capsys, "runs", "show", report["run"])
    assert "unavailable" in out and "cannot run here" in " ".join(out.split())
