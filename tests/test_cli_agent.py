"""`anymoda run`, `chat` and `runs list|show|resume` through ``orchestrator.cli.main``, on stub tools.

The planner is replaced by a small rule-based one (paint the colour named, or brighten the image
offered) so these tests check the commands, not an LLM; everything else is the real orchestrator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.agent import Orchestrator
from orchestrator.cli import agent_commands
from orchestrator.cli.commands import main
from orchestrator.execution.compose import Composer
from orchestrator.planning.plan import Plan, validate_plan
from orchestrator.planning.planner import Attempt, PlanResult
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.stub_tools import STUB_TOOLS


class RulePlanner:
    """Brighten the first image offered, else paint the request's colour."""

    def __init__(self, registry: ToolRegistry):
        self.registry = registry
        self.seen_context: list[str] = []

    def plan(self, request, *, artifacts=(), session=None, context=""):
        self.seen_context.append(context)
        image = next((a for a in artifacts if a.kind is ArtifactKind.IMAGE), None)
        if image is not None:
            task = {"id": "t1", "tool": "stub-brighten", "args": {"image": image.id}}
        else:
            task = {"id": "t1", "tool": "stub-paint", "args": {"text": request}}
        plan = Plan.from_json({"tasks": [task]})
        return PlanResult(validate_plan(plan, self.registry), (Attempt(json.dumps(plan.to_json()), (), 0.01),))


@pytest.fixture
def agent_cli(settings, monkeypatch):
    registry = ToolRegistry(STUB_TOOLS)
    planner = RulePlanner(registry)
    made: list[Orchestrator] = []

    def build(args) -> Orchestrator:
        orchestrator = Orchestrator(settings=settings, registry=registry, planner=planner, composer=Composer(None),
                                    approve_before=args.approve_before or ())
        made.append(orchestrator)
        return orchestrator

    monkeypatch.setattr(agent_commands, "_orchestrator", build)
    monkeypatch.setenv("COLUMNS", "300")
    return {"planner": planner, "made": made}


def run_cli(capsys, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_prints_the_answer_and_saves_the_artifacts(agent_cli, capsys, tmp_path: Path):
    code, out, err = run_cli(capsys, "run", "paint it red", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "done" and result["artifacts"][0]["kind"] == "image"
    assert "image of that colour" in result["answer"] and "paint it red" in result["answer"]
    saved = tmp_path / "out" / "t1-image.png"
    assert saved.is_file() and saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_list_and_show_give_plan_tasks_timings_and_lineage(agent_cli, capsys, tmp_path: Path):
    code, out, _ = run_cli(capsys, "run", "paint it blue", "--json")
    run_id = json.loads(out)["run"]
    code, out, _ = run_cli(capsys, "runs", "list")
    assert code == 0 and run_id in out
    code, out, _ = run_cli(capsys, "runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "done" and shown["plan"]["tasks"][0]["tool"] == "stub-paint"
    (task,) = shown["tasks"]
    assert task["status"] == "done" and task["seconds"] >= 0 and task["outputs"]["image"].startswith("image-")
    code, out, _ = run_cli(capsys, "runs", "show", run_id)
    assert code == 0 and "stub-paint" in out and "<-" in out  # the output's lineage: made from the request text


def test_run_waiting_for_approval_exits_3_and_resumes_with_approve(agent_cli, capsys, tmp_path: Path):
    code, out, err = run_cli(capsys, "run", "paint it green", "--approve-before", "stub-paint")
    assert code == 3, err
    assert "runs resume" in " ".join(err.split())
    run_id = agent_cli["made"][-1].journal.runs()[-1].id
    assert agent_cli["made"][-1].journal.get_run(run_id).status == "awaiting_approval"
    code, out, err = run_cli(capsys, "runs", "resume", run_id, "--approve", "--out", tmp_path / "approved")
    assert code == 0, err
    assert (tmp_path / "approved" / "t1-image.png").is_file()
    assert agent_cli["made"][-1].journal.get_run(run_id).status == "done"


def test_runs_show_of_an_unknown_run_exits_2(agent_cli, capsys):
    code, _, err = run_cli(capsys, "runs", "show", "run-0123456789abcdef")
    assert code == 2 and "no run" in err
    code, _, err = run_cli(capsys, "runs", "show", "../etc/passwd")
    assert code == 2 and "not a run id" in err


def test_chat_turns_build_on_earlier_outputs(agent_cli, capsys, monkeypatch, tmp_path: Path):
    lines = iter(["paint it red", "make it brighter", "/artifacts", "/history", "/attach /no/such/file.png", "/quit"])
    monkeypatch.setattr(agent_commands.console, "input", lambda prompt="": next(lines))
    code, out, err = run_cli(capsys, "chat", "--session", "cli-chat")
    assert code == 0, err
    orchestrator = agent_cli["made"][-1]
    first, second = orchestrator.journal.runs(session="cli-chat")
    painted = orchestrator.store.get(first.answer_artifacts[0], session="cli-chat")
    brightened = orchestrator.store.get(second.answer_artifacts[0], session="cli-chat")
    assert brightened.parents == (painted.id,)  # "it" was the first turn's image
    assert "paint it red" in agent_cli["planner"].seen_context[-1]  # the second turn saw the first
    assert painted.id in err and "does not exist" in err  # /artifacts listed it; the bad /attach did not end the chat


def test_chat_commands_mistyped_or_missing_their_arguments_are_not_sent_as_requests(agent_cli, capsys, monkeypatch):
    """'/save' alone, '/attach' alone and '/histroy' went to the planner as requests (and were answered)."""
    lines = iter(["/save", "/attach", "/histroy", "/save a b c", "/etc/hosts: what is in this file?", "/quit"])
    monkeypatch.setattr(agent_commands.console, "input", lambda prompt="": next(lines))
    code, out, err = run_cli(capsys, "chat", "--session", "typos")
    assert code == 0, err
    requests = [r.request for r in agent_cli["made"][-1].journal.runs(session="typos")]
    assert requests == ["/etc/hosts: what is in this file?"]  # a path that starts a request is still a request
    said = " ".join(err.split())
    assert "usage: /save ARTIFACT_ID PATH" in said and "usage: /attach FILE" in said
    assert "error: unknown command /histroy; the commands: /attach FILE, /artifacts, /history, /save ID PATH, /quit" in said


@pytest.mark.parametrize("command", [("run", "paint it red"), ("chat",), ("runs", "resume", "run-0123456789abcdef")])
def test_an_out_that_cannot_be_a_folder_is_refused_before_anything_runs(agent_cli, capsys, tmp_path: Path, command):
    (tmp_path / "plain.txt").write_text("keep me")
    code, out, err = run_cli(capsys, *command, "--out", tmp_path / "plain.txt")
    assert code == 2 and "Traceback" not in out + err
    assert " ".join(err.split()).startswith("error: --out:") and "is a file, not a folder" in " ".join(err.split())
    assert not agent_cli["made"] and (tmp_path / "plain.txt").read_text() == "keep me"


def test_planner_option_chooses_the_llm_and_the_composer_follows(settings, monkeypatch, capsys):
    import argparse

    from orchestrator import config
    from orchestrator.planning.planner import OpenAICompatibleBackend

    monkeypatch.setattr(config, "_current", settings)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    args = argparse.Namespace(planner="openai:http://127.0.0.1:9/v1#qwen-7b", approve_before=None)
    orchestrator = agent_commands._orchestrator(args)
    backend = orchestrator.planner.backend
    assert isinstance(backend, OpenAICompatibleBackend) and backend.base_url == "http://127.0.0.1:9/v1"
    assert backend.model == "qwen-7b" and backend.api_key == "sk-local"
    assert orchestrator.composer.backend is backend  # the composer follows the planner unless configured apart
    code, out, err = run_cli(capsys, "run", "hello", "--planner", "claude")
    assert code == 2 and "--planner" in out + err and "Traceback" not in out + err


def test_a_composer_configured_apart_writes_the_answers(settings):
    import dataclasses

    from orchestrator.config import LLMSettings
    from orchestrator.planning.planner import OpenAICompatibleBackend

    apart = dataclasses.replace(settings, composer=LLMSettings.parse("openai:http://127.0.0.1:9/v1#writer", "x"))
    orchestrator = Orchestrator(settings=apart, registry=ToolRegistry(STUB_TOOLS))
    assert isinstance(orchestrator.composer.backend, OpenAICompatibleBackend)
    assert orchestrator.composer.backend.model == "writer"


def test_the_live_view_shows_the_plan_as_it_is_written():
    from orchestrator.execution.events import Event

    view = agent_commands.RunView("read it")
    view.apply(Event("plan_token", "run-0123456789abcdef", data={"text": "t1 = ocr("}))
    view.apply(Event("plan_token", "run-0123456789abcdef", data={"text": "image=receipt.png)"}))
    assert view.plan_text == "t1 = ocr(image=receipt.png)"
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(view.render())
    assert "t1 = ocr(image=receipt.png)" in console.export_text()
    view.apply(Event("plan_ready", "run-0123456789abcdef", data={"plan": {"tasks": [
        {"id": "t1", "tool": "ocr", "args": {}}]}}))
    assert view.plan_text == "" and "t1" in view.tasks
