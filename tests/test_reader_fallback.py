"""The extractive QA tools' offline fallback: the packaged LLM reads the text, and only grounded answers pass.

question-answering and document-question-answering default to an extractive SQuAD reader. Offline without
it, the packaged Qwen serves (as for the LLM tools); a tiny random chat Qwen2 saved to a temporary folder
stands in for it here, found through the same packaged locator. Its replies are scripted where a test needs
a given answer: the prompt, decoding and grounding around them are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import orchestrator.models.resolve as resolve
import tools.text as text_tools
from orchestrator.config import Settings
from orchestrator.errors import ModelNotAvailableError
from orchestrator.tooling.invoke import run_tool
from orchestrator.storage.media import Detections
from orchestrator.tooling.model_store import model_status
from orchestrator.models.packaged_llm import QWEN_CODER_05B, part_paths
from orchestrator.models.pool import ModelPool
from tiny_llms import save_tiny_chat_qwen2
from tools.document_qa import DocumentQuestionAnswering
from tools.text import (
    GENERATIVE_ANSWER_TOKENS,
    Chat,
    QuestionAnswering,
    ground_answer,
    is_causal_lm,
)

RECEIPT = ["CORNER BAKERY", "Sourdough loaf 6.50", "Coffee beans 500g 19.90", "TOTAL $42.50", "Paid by card"]
CONTEXT = "The shop receipt lists a sourdough loaf at 6.50. The total was 42.50 and it was paid by card."

needs_ocr_runtime = pytest.mark.skipif(bool(DocumentQuestionAnswering().missing_runtime()),
                                       reason="document-question-answering needs the OCR runtime (the offline extra)")


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    return save_tiny_chat_qwen2(tmp_path_factory.mktemp("tiny-packaged-qwen") / "qwen2")


@pytest.fixture
def packaged(tiny_qwen, monkeypatch) -> Path:
    """The tiny Qwen stands in for the packaged one; the default reader is in no cache and the hub is off."""
    monkeypatch.setattr(text_tools, "packaged_llm_locator", lambda settings=None, progress=None: (lambda: tiny_qwen))

    def from_hub(hub, *, local_only):  # a real hub cache holding deepset/roberta-base-squad2 must not count
        if local_only:
            return None
        raise ConnectionError("no route to host")

    monkeypatch.setattr(resolve, "_from_hub", from_hub)
    return tiny_qwen


@pytest.fixture
def pool() -> ModelPool:
    return ModelPool(2**32)


@pytest.fixture
def scripted(tiny_qwen, monkeypatch):
    """Make the tiny Qwen reply with a given text; records each call's prompt and decoding arguments."""
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    calls: list[dict[str, Any]] = []
    reply = {"text": ""}

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        calls.append({"prompt": tokenizer.decode(input_ids[0]), **kwargs})
        new = tokenizer(reply["text"], add_special_tokens=False)["input_ids"][: kwargs["max_new_tokens"] - 1] + [end]
        return torch.cat([input_ids, torch.tensor([new], dtype=input_ids.dtype)], dim=1)

    monkeypatch.setattr(Qwen2ForCausalLM, "generate", generate)

    def say(text: str) -> list[dict[str, Any]]:
        reply["text"] = text
        return calls

    return say


class StubOCR:
    """Stands in for the OCR tool: a fixed text with one box per line, as the OCR tool returns it."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def __call__(self, image: Image.Image, min_score: float) -> dict[str, Any]:
        boxes = [(10.0, 10.0 + 20 * i, 200.0, 28.0 + 20 * i) for i in range(len(self.lines))]
        scores = [0.9 - 0.01 * i for i in range(len(self.lines))]
        return {"text": "\n".join(self.lines), "regions": Detections(boxes, list(self.lines), scores, image_size=image.size)}


def document_tool(settings, pool, lines=RECEIPT) -> DocumentQuestionAnswering:
    tool = DocumentQuestionAnswering(settings=settings, pool=pool)
    tool.ocr = StubOCR(lines)
    return tool


def page(lines=RECEIPT) -> Image.Image:
    return Image.new("RGB", (220, 20 * len(lines) + 20), "white")


# ------------------------------------------------------------------------------------------ resolution


def test_offline_without_the_reader_both_tools_resolve_to_the_packaged_llm(packaged, settings):
    tools = [QuestionAnswering(settings=settings)]
    if not DocumentQuestionAnswering().missing_runtime():
        tools.append(DocumentQuestionAnswering(settings=settings))
    for tool in tools:
        assert tool.model_id == "deepset/roberta-base-squad2"
        source = tool.resolve()
        assert source.origin == "packaged" and source.path == packaged and tool.model_id == QWEN_CODER_05B
        assert tool.resolves_to_causal_lm()
        assert tool.available() and tool.available().summary == "packaged"


def test_an_unreachable_hub_falls_back_too(packaged, tmp_path):
    online = Settings.from_dict({"home": str(tmp_path / "home"), "offline": False, "device": "cpu"})
    tool = QuestionAnswering(settings=online)
    assert tool.resolve().origin == "packaged" and tool.model_id == QWEN_CODER_05B


def test_a_model_chosen_by_the_caller_or_the_config_is_never_replaced(packaged, tmp_path):
    offline = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})
    configured = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu",
                                     "models": {"question-answering": "org/chosen-reader",
                                                "document-question-answering": "org/chosen-reader"}})
    tool_classes = [QuestionAnswering]
    if not DocumentQuestionAnswering().missing_runtime():
        tool_classes.append(DocumentQuestionAnswering)
    for tool_class in tool_classes:
        for tool in (tool_class(settings=configured), tool_class("org/chosen-reader", settings=offline)):
            with pytest.raises(ModelNotAvailableError, match="org/chosen-reader"):
                tool.resolve()
            assert tool.model_id == "org/chosen-reader"
            assert not tool.available()


def test_models_list_names_the_fallback(packaged, settings):
    for tool_class in (QuestionAnswering, DocumentQuestionAnswering):
        status = model_status(tool_class, settings)
        assert status.model_id == "deepset/roberta-base-squad2" and status.source == "not here"
        assert status.fallback == QWEN_CODER_05B
        if part_paths() is not None and not status.missing_runtime:  # the real packaged slices are installed
            assert f"until it is here, the packaged {QWEN_CODER_05B} serves when the hub is off" in status.note
    chosen = Settings.from_dict({"home": str(settings.home), "offline": True, "models": {"question-answering": "org/x"}})
    assert model_status(QuestionAnswering, chosen).fallback is None


def test_the_reader_kind_comes_from_the_config_not_the_id():
    assert is_causal_lm({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    assert is_causal_lm({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    assert not is_causal_lm({"architectures": ["RobertaForQuestionAnswering"], "model_type": "roberta"})
    assert not is_causal_lm({"architectures": ["Qwen2ForQuestionAnswering"], "model_type": "qwen2"})
    assert not is_causal_lm({"model_type": "roberta"})  # no architectures: roberta has no causal-LM reading here
    assert not is_causal_lm({"model_type": "bert", "architectures": []})


# ------------------------------------------------------------------------------------------ grounding


@pytest.mark.parametrize(("reply", "answer"), [
    ("42.50", "42.50"),
    ("$42.50.", "42.50"),
    ("Answer: 42.50", "42.50"),
    ("The total is 42.50", "TOTAL $42.50"),  # the text's own piece, as the text spells it
    ("paid by CARD", "Paid by card"),
    ('"Coffee beans"\nand more text the model went on with', "Coffee beans"),
])
def test_a_grounded_reply_becomes_a_piece_of_the_text(reply, answer):
    text = "\n".join(RECEIPT)
    found = ground_answer(reply, text)
    assert found.grounded and found.answer == answer and text[found.start:found.end] == answer


@pytest.mark.parametrize("reply", ["42.5", "42", "142.50", "99.99", "Paid with cash", "none", "N/A", "", "the"])
def test_an_ungrounded_reply_gives_no_answer(reply):
    found = ground_answer(reply, "\n".join(RECEIPT))
    assert not found.grounded and found.answer == "" and found.start is None
    assert found.note.startswith("no grounded answer")


# ------------------------------------------------------------------------------------------ question-answering


def test_question_answering_returns_a_grounded_generated_answer(packaged, settings, store, pool, scripted):
    calls = scripted("42.50.")
    tool = QuestionAnswering(settings=settings, pool=pool)
    run = run_tool(tool, {"question": "What was the total?", "context": CONTEXT}, store=store)
    result = run.values["result"]
    assert run.values["answer"] == result["answer"] == "42.50" == CONTEXT[result["start"]:result["end"]]
    assert result["has_answer"] and result["generated"] == "42.50."
    assert result["reader"] == "generative" and result["grounded"] and result["model"] == QWEN_CODER_05B
    assert result["score"] is None and result["no_answer_score"] is None
    assert result["candidates"] == [{"answer": "42.50", "score": None, "start": result["start"], "end": result["end"]}]
    assert run.outputs["answer"].metadata["reader"] == "generative"
    # One greedy call within the small budget; the context goes in as quoted data, the question after it.
    (call,) = calls
    assert call["do_sample"] is False and call["max_new_tokens"] == GENERATIVE_ANSWER_TOKENS
    prompt = call["prompt"]
    assert f'"""\n{CONTEXT}\n"""' in prompt and prompt.index(CONTEXT) < prompt.index("Question: What was the total?")
    assert prompt.rstrip().endswith("<|im_start|>assistant")


def test_question_answering_refuses_an_answer_the_context_does_not_hold(packaged, settings, pool, scripted):
    scripted("It was 99.99 dollars")
    out = QuestionAnswering(settings=settings, pool=pool)(question="What was the total?", context=CONTEXT)
    result = out["result"]
    assert out["answer"] == "" and result["answer"] == "" and not result["has_answer"] and not result["grounded"]
    assert result["start"] is None and result["candidates"] == []
    assert result["note"].startswith("no grounded answer")
    assert "99.99" not in json.dumps(result)  # nothing invented reaches the caller, not even in the details


def test_an_unscripted_tiny_model_answers_only_from_the_context(packaged, settings, pool):
    out = QuestionAnswering(settings=settings, pool=pool)(question="where is the eagle?",
                                                          context="the eagle sits on a branch")
    result = out["result"]
    assert result["reader"] == "generative"
    if result["has_answer"]:  # random weights: either outcome, but never text the context lacks
        assert result["start"] is None or "the eagle sits on a branch"[result["start"]:result["end"]] == out["answer"]
    else:
        assert out["answer"] == "" and result["note"].startswith("no grounded answer")


def test_a_chosen_llm_reads_generatively_and_shares_the_llm_tools_pool_entry(tiny_qwen, settings, pool, scripted):
    scripted("a branch")
    out = QuestionAnswering(str(tiny_qwen), settings=settings, pool=pool)(question="where is the eagle?",
                                                                          context="the eagle sits on a branch")
    assert out["answer"] == "a branch" and out["result"]["model"] == str(tiny_qwen)
    Chat(str(tiny_qwen), settings=settings, pool=pool)(message="hello")
    assert [info.key for info in pool.loaded()] == [("causal-lm", str(tiny_qwen), "cpu")]  # one copy for both


# ------------------------------------------------------------------------------------------ document-question-answering


@needs_ocr_runtime
def test_document_qa_answers_from_the_ocr_text_with_the_lines_as_evidence(packaged, settings, store, pool, scripted):
    calls = scripted("$42.50")
    tool = document_tool(settings, pool)
    image = store.put_value("image", page())
    # Not one of the questions a receipt's layout answers by itself, so the LLM reads the page.
    run = run_tool(tool, {"image": image.id, "question": "What is written near the bottom?"}, store=store)
    answer, details, evidence = run.values["answer"], run.values["details"], run.values["evidence"]
    text = "\n".join(RECEIPT)
    assert answer == details["answer"] == "42.50" and text[details["start"]:details["end"]] == "42.50"
    assert details["text"] == text and details["reader"] == "generative" and details["grounded"]
    assert details["score"] is None and details["no_answer_score"] is None and len(details["candidates"]) == 1
    assert details["generated"] == "$42.50"
    # Evidence: the box of the line holding the answer, scored by the OCR's confidence in that line.
    assert evidence.boxes == [(10.0, 70.0, 200.0, 88.0)] and evidence.labels == ["42.50"]
    assert evidence.scores == [pytest.approx(0.87)] and evidence.extra[0]["line"] == "TOTAL $42.50"
    assert run.outputs["answer"].metadata["score"] is None
    assert "TOTAL $42.50" in calls[0]["prompt"] and "Question: What is written near the bottom?" in calls[0]["prompt"]


@needs_ocr_runtime
def test_document_qa_gives_no_answer_rather_than_an_invented_one(packaged, settings, pool, scripted):
    scripted("The total is 57.20")
    out = document_tool(settings, pool)(image=page(), question="What is written near the bottom?")
    details = out["details"]
    assert out["answer"] == "" and details["answer"] == "" and not details["grounded"]
    assert len(out["evidence"]) == 0 and details["candidates"] == [] and details["start"] is None
    assert details["note"].startswith("no grounded answer") and "57.20" not in json.dumps(details)


@needs_ocr_runtime
def test_document_qa_evidence_for_words_found_apart(packaged, settings, pool, scripted):
    scripted("card sourdough")  # both words are on the page, on different lines
    out = document_tool(settings, pool)(image=page(), question="?")
    details = out["details"]
    assert out["answer"] == "card sourdough" and details["grounded"] and details["start"] is None
    assert [extra["line"] for extra in out["evidence"].extra] == ["Sourdough loaf 6.50", "Paid by card"]


@needs_ocr_runtime
def test_document_qa_answers_receipt_questions_from_the_layout_not_the_llm(packaged, settings, store, pool, scripted):
    """The 0.5B reader once answered "how much was the hobbit" with the total, in pages; on a receipt the
    layout answers the questions it can, and the LLM is not asked."""
    calls = scripted("The hobbit was 40.48 pages long")
    tool = document_tool(settings, pool)
    image = store.put_value("image", page())
    run = run_tool(tool, {"image": image.id, "question": "how much was the sourdough?"}, store=store)
    details, evidence = run.values["details"], run.values["evidence"]
    assert run.values["answer"] == "6.50" and details["reader"] == "receipt-layout"
    assert details["question_kind"] == "item-price" and details["rows"] == ["Sourdough loaf 6.50"]
    assert "\n".join(RECEIPT)[details["start"]:details["end"]] == "6.50"
    assert [extra["line"] for extra in evidence.extra] == ["Sourdough loaf 6.50"] and evidence.labels == ["6.50"]
    listed = tool(image=page(), question="how many things did I buy?")
    assert listed["answer"] == "2 items: Sourdough loaf, Coffee beans 500g" and listed["details"]["question_kind"] == "item-count"
    assert calls == []  # neither question reached the LLM
    # What the layout cannot answer still goes to the LLM, whose answer must be on the page.
    assert tool(image=page(), question="What is written near the bottom?")["answer"] == "" and len(calls) == 1
