"""The agent end to end on the real packaged weights: the Qwen planner plans, real experts run, Qwen answers.

Greedy decoding makes the planner and the composer repeatable, but a plan may hold a sampled step (the
text-generation tool samples), so the results the composer is shown, and its reply, can differ from run
to run. The checks are on what a user would look for (the transcript heard, the total read, a sound
made), not on exact wording. The composer's template quotes the tools' texts too, so "france" or
"42.50" in an answer does not show who wrote it: every answer here is checked to be the reply Qwen
streamed, or else the template's only because that very reply fails the composer's checks (run again on
it here, with the same verdict). That Qwen writes the answer when the results allow it is tested on
fixed one-step plans, where nothing is sampled. (Scripted replies test the fallback rule both ways in
test_honest_answers.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.agent import Orchestrator, RunResult
from orchestrator.config import current_settings
from orchestrator.execution.compose import delivered_artifacts, not_done_sentences, strike_unknown_ids
from orchestrator.planning.plan import Plan, validate_plan
from orchestrator.storage.codecs import encode
from orchestrator.storage.sample_inputs import receipt_image
from orchestrator.tooling.registry import ToolRegistry

from conftest import requires_offline_extra

pytestmark = [pytest.mark.real_weights, requires_offline_extra]

@pytest.fixture(scope="module")
def orchestrator(packaged_llm) -> Orchestrator:
    settings = current_settings()
    packaged_llm.use_in(settings.home)  # the session's one conversion of the packaged Qwen (tests/conftest.py)
    return Orchestrator(settings=settings)


def _run(orchestrator: Orchestrator, request: str, files: list[Path]) -> tuple[RunResult, str]:
    """The run's result, and the reply the composing LLM streamed (before any check)."""
    run_id, tokens = None, []
    for event in orchestrator.stream(request, files=files):
        run_id = run_id or event.run
        if event.type == "answer_token":
            tokens.append(event.data["text"])
    return orchestrator.result(run_id), "".join(tokens)


@pytest.fixture(scope="module")
def question_wav(orchestrator: Orchestrator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    speech = ToolRegistry.default().get("text-to-speech")(settings=orchestrator.settings)
    clip = speech(text="What is the capital of France?")["audio"]
    question = tmp_path_factory.mktemp("spoken") / "question.wav"
    question.write_bytes(encode("audio", clip)[0])
    return question


@pytest.fixture(scope="module")
def receipt_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    receipt = tmp_path_factory.mktemp("receipt") / "receipt.png"
    receipt_image().save(receipt)
    return receipt


@pytest.fixture(scope="module")
def spoken_question(orchestrator: Orchestrator, question_wav: Path) -> tuple[RunResult, str]:
    # TTS made the question; the agent must hear it (ASR) and answer in writing (the example).
    return _run(orchestrator, "What does the speaker ask? Answer in writing.", [question_wav])


@pytest.fixture(scope="module")
def receipt_total(orchestrator: Orchestrator, receipt_png: Path) -> tuple[RunResult, str]:
    return _run(orchestrator, "Read the receipt and tell me the total out loud", [receipt_png])


def _tools_run(result) -> list[str]:
    return [task.tool for task in result.tasks.values() if task.status == "done"]


def _check_again(orchestrator: Orchestrator, result: RunResult, reply: str) -> str | None:
    """The composer's verdict on ``reply`` for this run, computed as the respond node does (a fresh session:
    no history, no earlier turns)."""
    store, composer = orchestrator.store, orchestrator.composer
    record = orchestrator.journal.get_run(result.run_id)
    validated = validate_plan(Plan.from_json(result.plan), orchestrator.registry, store=store, session=result.session)
    delivered = delivered_artifacts(validated, result.tasks)
    shown = composer.result_lines(store, result.session, validated, result.tasks, delivered) + not_done_sentences(
        validated, result.tasks)
    known = set(record.inputs) | {a for r in result.tasks.values() for a in r.outputs.values()}
    text, _ = strike_unknown_ids(reply.strip(), known)
    return composer.check(text, record.request, "", [], validated, result.tasks, store, result.session,
                          list(record.inputs), shown)


def _composed_honestly(orchestrator: Orchestrator, result: RunResult, reply: str) -> None:
    """Qwen was asked and streamed a reply; the answer is that reply, or the template's only because the
    reply fails a check, the one named in fallback_reason."""
    assert reply.strip(), "the composer's LLM was not asked (or wrote nothing)"
    if result.composed_by == orchestrator.composer.name:
        assert result.fallback_reason is None and result.answer == reply.strip(), (result.answer, reply)
        assert _check_again(orchestrator, result, reply) is None
    else:
        assert result.composed_by == "template" and result.fallback_reason, result
        assert _check_again(orchestrator, result, reply) == result.fallback_reason, (reply, result.fallback_reason)
        assert result.answer != reply.strip()


def test_spoken_question_is_transcribed_and_answered_in_writing(orchestrator: Orchestrator, spoken_question):
    result, reply = spoken_question
    assert result.status == "done", result.error
    assert "speech-recognition" in _tools_run(result), (result.plan, result.failures)
    transcript_task = next(t for t in result.tasks.values() if t.tool == "speech-recognition")
    transcript = orchestrator.store.load(transcript_task.outputs["text"], session=result.session)
    assert "capital of france" in transcript.lower()
    assert "france" in result.answer.lower(), result.answer
    _composed_honestly(orchestrator, result, reply)
    record = orchestrator.journal.get_run(result.run_id)
    assert record.status == "done" and all(t.seconds is not None for t in record.tasks)


def test_receipt_total_is_read_and_spoken(orchestrator: Orchestrator, receipt_total):
    result, reply = receipt_total
    assert result.status == "done", result.error
    tools = _tools_run(result)
    assert "ocr" in tools and "text-to-speech" in tools, tools
    # Speech comes last in the plan's order (tasks that do not depend on each other may finish in either order):
    # it takes an earlier task's output, and no task takes its own.
    planned = result.plan["tasks"]
    speech = next(task for task in planned if task["tool"] == "text-to-speech")
    assert any(isinstance(v, str) and v.startswith("<t") for v in speech["args"].values()), planned
    assert not any(f"<{speech['id']}." in json.dumps(task["args"]) for task in planned), planned
    spoken = result.first("audio")
    assert spoken is not None and spoken.metadata["duration_s"] > 0.3
    texts = {t.tool: [orchestrator.store.load(a, session=result.session) for a in t.outputs.values()]
             for t in result.tasks.values() if t.tool != "text-to-speech"}
    assert "42.50" in result.answer, (result.answer, result.plan, texts)
    _composed_honestly(orchestrator, result, reply)
    # The answer delivers only what tasks made: every artifact exists and came from this run.
    assert all(a.task and a.task.startswith(result.run_id + "/") for a in result.artifacts)


@pytest.mark.parametrize(("request_text", "fixture", "tool", "argument", "expected"), [
    ("What does the speaker ask?", "question_wav", "speech-recognition", "audio", "capital of france"),
    ("What is the total on this receipt?", "receipt_png", "ocr", "image", "42.50"),
])
def test_qwen_writes_a_grounded_answer_from_real_tool_outputs(orchestrator: Orchestrator, request, request_text,
                                                             fixture, tool, argument, expected):
    # One real expert under a fixed plan: nothing is sampled, so what Qwen is shown, and its reply, repeat.
    session = f"qwen-composes-{tool}"
    (item,) = orchestrator.ingest([request.getfixturevalue(fixture)], session)
    plan = {"tasks": [{"id": "t1", "tool": tool, "args": {argument: item.id}}]}
    run_id, tokens = None, []
    for event in orchestrator.stream(request_text, files=[item.id], session=session, plan=plan):
        run_id = run_id or event.run
        if event.type == "answer_token":
            tokens.append(event.data["text"])
    result, reply = orchestrator.result(run_id), "".join(tokens)
    assert result.status == "done", (result.error, result.failures)
    assert (result.composed_by, result.fallback_reason) == ("local", None), reply
    assert result.answer == reply.strip() and expected in result.answer.lower(), result.answer
    assert _check_again(orchestrator, result, reply) is None

