"""The agent end to end on the real packaged weights: the Qwen planner plans, real experts run, Qwen answers.

Greedy decoding makes these runs repeatable; the checks are on what a user would look for (the
transcript heard, the total read, a sound made), not on exact wording.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import requires_offline_extra
from orchestrator.agent import Orchestrator
from orchestrator.codecs import encode
from orchestrator.config import current_settings
from orchestrator.registry import ToolRegistry
from orchestrator.sample_inputs import receipt_image

pytestmark = [pytest.mark.real_weights, requires_offline_extra]


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Orchestrator:
    # The test session's settings: their cache keeps the converted Qwen checkpoint (one ~65 s conversion).
    return Orchestrator(settings=current_settings())


def _tools_run(result) -> list[str]:
    return [task.tool for task in result.tasks.values() if task.status == "done"]


def test_spoken_question_is_transcribed_and_answered_in_writing(orchestrator: Orchestrator, tmp_path: Path):
    # TTS makes the question; the agent must hear it (ASR) and answer with the LLM (the example).
    speech = ToolRegistry.default().get("text-to-speech")(settings=orchestrator.settings)
    clip = speech(text="What is the capital of France?")["audio"]
    question = tmp_path / "question.wav"
    question.write_bytes(encode("audio", clip)[0])

    result = orchestrator.run("What does the speaker ask? Answer in writing.", files=[question])

    assert result.status == "done", result.error
    assert "speech-recognition" in _tools_run(result), (result.plan, result.failures)
    transcript_task = next(t for t in result.tasks.values() if t.tool == "speech-recognition")
    transcript = orchestrator.store.load(transcript_task.outputs["text"], session=result.session)
    assert "capital of france" in transcript.lower()
    assert "france" in result.answer.lower(), result.answer
    record = orchestrator.journal.get_run(result.run_id)
    assert record.status == "done" and all(t.seconds is not None for t in record.tasks)


def test_receipt_total_is_read_and_spoken(orchestrator: Orchestrator, tmp_path: Path):
    receipt = tmp_path / "receipt.png"
    receipt_image().save(receipt)

    result = orchestrator.run("Read the receipt and tell me the total out loud", files=[receipt])

    assert result.status == "done", result.error
    tools = _tools_run(result)
    assert tools[0] == "ocr" and tools[-1] == "text-to-speech", tools
    spoken = result.first("audio")
    assert spoken is not None and spoken.metadata["duration_s"] > 0.3
    texts = {t.tool: [orchestrator.store.load(a, session=result.session) for a in t.outputs.values()]
             for t in result.tasks.values() if t.tool != "text-to-speech"}
    assert "42.50" in result.answer, (result.answer, result.plan, texts)
    # The answer delivers only what tasks made: every artifact exists and came from this run.
    assert all(a.task and a.task.startswith(result.run_id + "/") for a in result.artifacts)
