"""Captioning, visual question answering and document QA on tiny random checkpoints.

Each model family is built from its config at toy size, saved with save_pretrained and loaded by the
tool from that folder: the same from_pretrained path real hub weights take. Random weights say
nothing sensible, so the checks are on types, shapes, spans, scores and refusals, never on words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from conftest import requires_offline_extra
from orchestrator.errors import InvalidInputError
from orchestrator.tooling.invoke import run_tool
from orchestrator.storage.media import Detections
from orchestrator.models.pool import ModelPool
from orchestrator.models.resolve import ModelSource
from orchestrator.storage.sample_inputs import receipt_image
from tiny_tokenizers import CORPUS, bert_tokenizer
from tools.captioning import ImageCaptioning
from tools.document_qa import DocumentQuestionAnswering, best_spans, line_spans
from tools.visual_question_answering import VisualQuestionAnswering, blip_question

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
TINY_VISION = dict(TINY, image_size=32, patch_size=8)
VQA_LABELS = ["yes", "no", "2", "red", "cat", "dog"]


def roberta_tokenizer(folder: Path):
    """A RobertaTokenizer (byte-level BPE with <s> ... </s></s> ... </s> pairs) trained on the test corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    wrapped = RobertaTokenizer(vocab=model["vocab"], merges=merges)  # dict and tuples: file arguments are ignored
    wrapped.save_pretrained(folder)
    return wrapped


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of tiny random checkpoints, one per model family, built once for the module."""
    from transformers import (
        BertConfig,
        BertForQuestionAnswering,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
        CLIPImageProcessor,
        GitConfig,
        GitForCausalLM,
        GitProcessor,
        RobertaConfig,
        RobertaForQuestionAnswering,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltImageProcessor,
        ViltProcessor,
    )

    root = tmp_path_factory.mktemp("tiny-vision-language")
    folders = {name: root / name for name in ("blip", "git", "blip-vqa", "vilt", "bert-qa", "roberta-qa")}
    torch.manual_seed(0)  # the same random weights every run: the checks below never depend on luck

    tokenizer = bert_tokenizer(folders["blip"])
    ids = dict(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id,
               pad_token_id=tokenizer.pad_token_id)
    blip = BlipConfig(text_config=dict(TINY, vocab_size=len(tokenizer), max_position_embeddings=64, **ids),
                      vision_config=TINY_VISION, projection_dim=32)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    BlipForConditionalGeneration(blip).save_pretrained(folders["blip"])
    processor.save_pretrained(folders["blip"])
    BlipForQuestionAnswering(blip).save_pretrained(folders["blip-vqa"])
    processor.save_pretrained(folders["blip-vqa"])

    tokenizer = bert_tokenizer(folders["git"])
    git = GitConfig(vision_config=TINY_VISION, vocab_size=len(tokenizer), max_position_embeddings=64,
                    bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                    pad_token_id=tokenizer.pad_token_id, **TINY)
    GitForCausalLM(git).save_pretrained(folders["git"])
    GitProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                 tokenizer).save_pretrained(folders["git"])

    tokenizer = bert_tokenizer(folders["vilt"])
    vilt = ViltConfig(vocab_size=len(tokenizer), image_size=32, patch_size=8, max_position_embeddings=40,
                      num_labels=len(VQA_LABELS), id2label=dict(enumerate(VQA_LABELS)),
                      label2id={label: i for i, label in enumerate(VQA_LABELS)}, **TINY)
    ViltForQuestionAnswering(vilt).save_pretrained(folders["vilt"])
    ViltProcessor(ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8), tokenizer).save_pretrained(folders["vilt"])

    tokenizer = bert_tokenizer(folders["bert-qa"])
    BertForQuestionAnswering(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=66, **TINY)).save_pretrained(
        folders["bert-qa"])

    tokenizer = roberta_tokenizer(folders["roberta-qa"])
    roberta = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=66, type_vocab_size=1,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, **TINY)
    RobertaForQuestionAnswering(roberta).save_pretrained(folders["roberta-qa"])
    for family in ("bert-qa", "roberta-qa"):
        folders[f"{family}-7"] = pointing_qa_model(folders[family], root / f"{family}-7", "7")
    return folders


def pointing_qa_model(source: Path, target: Path, token: str) -> Path:
    """A copy of a QA model whose answer is, by construction, the token ``token`` wherever it is.

    Only that token gets an embedding; positions and segments get none; every layer adds nothing to
    its residual stream; and the QA head scores the token's embedding direction. So the start and end
    logits are 0 everywhere except 32 on that token.
    """
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    direction = torch.tensor([1.0, -1.0] * (model.config.hidden_size // 2))  # mean 0, variance 1: LayerNorm keeps it
    with torch.no_grad():
        embeddings = model.base_model.embeddings
        for table in (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings):
            table.weight.zero_()
        embeddings.word_embeddings.weight[tokenizer.convert_tokens_to_ids(token)] = direction
        for layer in model.base_model.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        model.qa_outputs.weight.copy_(torch.stack([direction, direction]))
        model.qa_outputs.bias.zero_()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool(2**32)


@pytest.fixture
def photo() -> Image.Image:
    image = Image.new("RGB", (64, 48), (30, 120, 200))
    image.paste((240, 200, 20), (10, 10, 40, 30))
    return image


# ------------------------------------------------------------------------------------------ captioning


@pytest.mark.parametrize("family", ["blip", "git"])
def test_captioning_describes_an_image_and_continues_a_prompt(family, tiny, settings, store, pool, photo):
    tool = ImageCaptioning(model=str(tiny[family]), settings=settings, pool=pool)
    image = store.put_value("image", photo)
    run = run_tool(tool, {"image": image.id, "max_new_tokens": 6}, store=store)
    caption = run.values["caption"]
    assert isinstance(caption, str) and caption.strip() == caption and caption
    metadata = run.outputs["caption"].metadata
    assert metadata["model_type"] == family and metadata["prompt"] is None and metadata["num_beams"] == 3
    assert 1 <= metadata["generated_tokens"] <= 6

    prompted = run_tool(tool, {"image": image.id, "prompt": "a  photo of", "max_new_tokens": 6}, store=store)
    # The tokenizer lowercases; the caption continues the prompt (a random model may glue a word piece to "of").
    caption = prompted.values["caption"]
    assert caption.startswith("a photo of") and len(caption) > len("a photo of")
    assert prompted.outputs["caption"].metadata["prompt"] == "a photo of"
    assert len(prompted.outputs["caption"].parents) == 2  # the image and the prompt


@pytest.mark.parametrize("family", ["blip", "git"])
def test_captioning_is_deterministic_and_seeded_sampling_reproducible(family, tiny, settings, pool, photo):
    tool = ImageCaptioning(model=str(tiny[family]), settings=settings, pool=pool)
    assert tool(image=photo, max_new_tokens=8) == tool(image=photo, max_new_tokens=8)  # beam search
    torch.manual_seed(123)
    first = tool(image=photo, sampling=True, seed=7, max_new_tokens=20)["caption"]
    state = torch.random.get_rng_state()
    assert tool(image=photo, sampling=True, seed=7, max_new_tokens=20)["caption"] == first
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    others = {tool(image=photo, sampling=True, seed=seed, max_new_tokens=20)["caption"] for seed in (8, 9)}
    assert first not in others


def test_captioning_refuses_bad_inputs_naming_them(tiny, settings, store, pool, photo):
    tool = ImageCaptioning(model=str(tiny["blip"]), settings=settings, pool=pool)
    for arguments, message in [
        ({"max_new_tokens": 0}, "param 'max_new_tokens' must be at least 1"),
        ({"max_new_tokens": 100_000}, "param 'max_new_tokens' must be at most 128"),
        ({"num_beams": 0}, "param 'num_beams' must be at least 1"),
        ({"temperature": 0.0}, "param 'temperature' must be at least 0.1"),
        ({"seed": -1}, "param 'seed' must be at least 0"),
        ({"prompt": "   "}, "input 'prompt' is empty"),
        ({"prompt": "the quick brown fox " * 20, "max_new_tokens": 30}, "shorten the prompt"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            tool(image=photo, **arguments)
    note = store.put_value("text", "not an image")
    with pytest.raises(InvalidInputError, match="input 'image' takes image"):
        run_tool(tool, {"image": note.id}, store=store)
    with pytest.raises(InvalidInputError, match="'vilt' model"):
        ImageCaptioning(model=str(tiny["vilt"]), settings=settings, pool=pool)(image=photo)


# ------------------------------------------------------------------------------------------ visual QA


def test_blip_questions_are_normalised_as_in_its_fine_tuning():
    assert blip_question("How many DOGS (big ones) are there?!") == "how many dogs big ones are there?"
    assert blip_question("Is it red, or blue...   ") == "is it red, or blue"
    assert len(blip_question("why " * 80).split()) == 50


def test_blip_vqa_writes_an_answer_with_probabilities(tiny, settings, store, pool, photo):
    tool = VisualQuestionAnswering(model=str(tiny["blip-vqa"]), settings=settings, pool=pool)
    image = store.put_value("image", photo)
    run = run_tool(tool, {"image": image.id, "question": "What colour is the square?", "top_k": 5, "num_beams": 4},
                   store=store)
    answers = run.values["answers"]
    assert 1 <= len(answers) <= 4  # at most one candidate per beam
    assert run.values["answer"] == answers[0]["answer"]
    assert len({a["answer"] for a in answers}) == len(answers)
    assert all(isinstance(a["answer"], str) and a["answer"] and 0.0 < a["score"] <= 1.0 for a in answers)
    assert run.outputs["answer"].metadata["model_type"] == "blip"
    assert run.outputs["answer"].metadata["score"] == answers[0]["score"]
    greedy = tool(image=photo, question="What colour is the square?", num_beams=1, top_k=5)
    assert len(greedy["answers"]) == 1 and 0.0 < greedy["answers"][0]["score"] <= 1.0
    # Questions longer than the text encoder's positions are cut, not a crash.
    assert tool(image=photo, question="what is this " * 60)["answer"]


def test_vilt_vqa_ranks_its_answer_vocabulary_by_sigmoid_scores(tiny, settings, store, pool, photo):
    from transformers import AutoProcessor, ViltForQuestionAnswering

    tool = VisualQuestionAnswering(model=str(tiny["vilt"]), settings=settings, pool=pool)
    question = "what colour is the square?"
    run = run_tool(tool, {"image": store.put_value("image", photo).id, "question": question, "top_k": 4}, store=store)
    answers = run.values["answers"]
    assert len(answers) == 4 and {a["answer"] for a in answers} <= set(VQA_LABELS)
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert run.values["answer"] == answers[0]["answer"]

    # VQA answers are scored independently (binary cross-entropy per answer): sigmoid, not softmax.
    model = ViltForQuestionAnswering.from_pretrained(tiny["vilt"]).eval()
    processor = AutoProcessor.from_pretrained(tiny["vilt"])
    with torch.inference_mode():
        logits = model(**processor(photo, question, return_tensors="pt")).logits[0]
    expected = {model.config.id2label[i]: round(float(p), 4) for i, p in enumerate(logits.sigmoid())}
    assert all(a["score"] == pytest.approx(expected[a["answer"]], abs=1e-4) for a in answers)
    assert tool(image=photo, question=question, top_k=20)["answers"].__len__() == len(VQA_LABELS)
    assert tool(image=photo, question="is it " * 60)["answer"] in VQA_LABELS  # cut to ViLT's 40 positions


def test_vqa_refuses_bad_inputs(tiny, settings, pool, photo):
    tool = VisualQuestionAnswering(model=str(tiny["vilt"]), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="input 'question' is empty"):
        tool(image=photo, question=" \n ")
    with pytest.raises(InvalidInputError, match="needs the input 'question'"):
        tool(image=photo)
    with pytest.raises(InvalidInputError, match="param 'top_k' must be at least 1"):
        tool(image=photo, question="what?", top_k=0)
    with pytest.raises(InvalidInputError, match="param 'max_new_tokens' must be at most 64"):
        tool(image=photo, question="what?", max_new_tokens=10_000)
    with pytest.raises(InvalidInputError, match="'git' model"):
        VisualQuestionAnswering(model=str(tiny["git"]), settings=settings, pool=pool)(image=photo, question="what?")


# ------------------------------------------------------------------------------------------ document QA


def test_line_spans_and_best_spans():
    text = "TOTAL 42.50\nPaid by card\nTOTAL"
    assert line_spans(text, ["TOTAL", "42.50", "Paid by card", "TOTAL", "missing"]) == [
        (0, 5), (6, 11), (12, 24), (25, 30), (-1, -1)]
    # Tokens: [CLS] q [SEP] c1 c2 c3 [SEP]; the span c2..c3 is the only strong one.
    start = torch.tensor([0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0])
    end = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0])
    context = torch.tensor([False, False, False, True, True, True, False])
    spans, no_answer = best_spans(start, end, context, 0, max_tokens=3, count=3)
    assert spans[0][:2] == (4, 5) and spans[0][2] > 0.9 and 0.0 < no_answer < 0.01
    assert all(s <= e <= s + 2 and context[s] and context[e] for s, e, _ in spans)
    spans, _ = best_spans(start, end, context, 0, max_tokens=1, count=3)  # two-token spans are now too long
    assert all(s == e for s, e, _ in spans)


class _StubOCR:
    """Stands in for the OCR tool: returns a fixed text with one box per line, as the OCR tool does."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def __call__(self, image: Image.Image, min_score: float) -> dict[str, Any]:
        boxes = [(10.0, 10.0 + 20 * i, 200.0, 28.0 + 20 * i) for i in range(len(self.lines))]
        regions = Detections(boxes, list(self.lines), [0.99] * len(self.lines), image_size=image.size)
        return {"text": "\n".join(self.lines), "regions": regions}


def long_document(lines: list[str]) -> Image.Image:
    return Image.new("RGB", (220, 20 * len(lines) + 20), "white")


def read_with_stub_ocr(folder: Path, settings, lines: list[str], question: str, **params: Any) -> dict[str, Any]:
    """The document QA tool's load and run with the OCR stubbed: no OCR runtime needed."""
    tool = DocumentQuestionAnswering(model=str(folder), settings=settings, pool=ModelPool(2**30))
    tool.ocr = _StubOCR(lines)
    reader = tool.load(ModelSource(str(folder), folder, "local"), "cpu")
    return tool.run(reader, {"image": long_document(lines), "question": question}, tool.check_params(params))


@pytest.mark.parametrize("family", ["bert-qa", "roberta-qa"])
def test_document_qa_finds_the_answer_in_a_late_window_of_a_long_document(family, tiny, settings, pool):
    lines = [f"{item} costs a lot" for item in ["the cat", "a dog", "the eagle"] * 12]
    lines[30] = "the total is 7 dollars"  # ~10 windows of 64 tokens long; the answer sits in one of the last
    result = read_with_stub_ocr(tiny[f"{family}-7"], settings, lines, "what is the total?", top_k=20, max_answer_tokens=4)
    details = result["details"]
    assert result["answer"].value == details["answer"] == "7" and details["score"] > 0.9
    assert details["text"].replace("\n", " ")[details["start"]:details["end"]] == "7"
    assert result["evidence"].boxes == [(10.0, 610.0, 200.0, 628.0)]  # line 30's box
    assert result["evidence"].labels == ["7"] and result["evidence"].extra[0]["line"] == lines[30]


@pytest.mark.parametrize("family", ["bert-qa", "roberta-qa"])
def test_document_qa_candidates_are_whole_words_of_the_text(family, tiny, settings, pool):
    lines = [f"{item} costs {index}.{index}0 today" for index, item in enumerate(["the cat", "a dog", "the fox"] * 12)]
    tool = DocumentQuestionAnswering(model=str(tiny[family]), settings=settings, pool=pool)
    tool.ocr = _StubOCR(lines)
    reader = tool.load(ModelSource(str(tiny[family]), tiny[family], "local"), "cpu")
    assert reader.max_tokens == 64  # the tiny model's positions (less RoBERTa's offset of 2), not the usual 384
    document = long_document(lines)
    result = tool.run(reader, {"image": document, "question": "what does the fox cost?"},
                      tool.check_params({"top_k": 20, "max_answer_tokens": 4}))
    text = "\n".join(lines)
    context = text.replace("\n", " ")
    details = result["details"]
    assert details["text"] == text and len(details["candidates"]) == 20
    assert result["answer"].value == details["answer"] == context[details["start"]:details["end"]]
    assert [c["score"] for c in details["candidates"]] == sorted((c["score"] for c in details["candidates"]), reverse=True)
    for candidate in details["candidates"]:
        start, end = candidate["start"], candidate["end"]
        assert candidate["answer"] == context[start:end] == context[start:end].strip()
        # The tiny vocabulary cuts words into pieces; spans are widened to whole words.
        assert start == 0 or not (context[start - 1].isalnum() and context[start].isalnum())
        assert end == len(context) or not (context[end - 1].isalnum() and context[end].isalnum())
    evidence = result["evidence"]
    assert isinstance(evidence, Detections) and 1 <= len(evidence) <= 2
    for box, label, extra in zip(evidence.boxes, evidence.labels, evidence.extra):
        line = lines.index(extra["line"])
        assert box == (10.0, 10.0 + 20 * line, 200.0, 28.0 + 20 * line) and label == result["answer"].value

    with pytest.raises(InvalidInputError, match="input 'question' is too long"):
        tool.run(reader, {"image": document, "question": "what " * 60}, tool.check_params({}))
    with pytest.raises(InvalidInputError, match="input 'question' is empty"):
        tool.run(reader, {"image": document, "question": "  "}, tool.check_params({}))
    tool.ocr = _StubOCR([])
    with pytest.raises(InvalidInputError, match="no text was found"):
        tool.run(reader, {"image": document, "question": "what?"}, tool.check_params({}))


@requires_offline_extra
@pytest.mark.parametrize("family", ["bert-qa", "roberta-qa"])
def test_document_qa_answers_from_a_receipt_read_by_ocr(family, tiny, settings, store, pool):
    tool = DocumentQuestionAnswering(model=str(tiny[family]), settings=settings, pool=pool)
    assert tool.available()
    receipt = store.put_value("image", receipt_image())
    run = run_tool(tool, {"image": receipt.id, "question": "What is the total?", "top_k": 3}, store=store)
    answer, details, evidence = run.values["answer"], run.values["details"], run.values["evidence"]
    text = details["text"]
    assert "42.50" in text and "Paid by card" in text  # the real OCR read the receipt
    assert answer and answer in text.replace("\n", " ")
    assert text.replace("\n", " ")[details["start"]:details["end"]] == answer
    assert 0.0 < details["score"] <= 1.0 and 0.0 <= details["no_answer_score"] <= 1.0
    assert 1 <= len(details["candidates"]) <= 3
    assert run.outputs["answer"].metadata["score"] == details["score"]
    # Evidence: the OCR boxes of the lines the answer came from, inside the page, labelled with the answer.
    assert isinstance(evidence, Detections) and len(evidence) >= 1 and evidence.image_size == receipt_image().size
    width, height = evidence.image_size
    for box, label, extra in zip(evidence.boxes, evidence.labels, evidence.extra):
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        assert label == answer and "polygon" in extra
        line_start = text.index(extra["line"])  # the receipt's lines are all different
        assert line_start < details["end"] and line_start + len(extra["line"]) > details["start"]
    assert run.outputs["evidence"].parents == run.outputs["answer"].parents
    # Same call, same answer: nothing random between OCR and the span choice.
    assert tool(image=receipt_image(), question="What is the total?")["answer"] == answer


@requires_offline_extra
def test_document_qa_refuses_a_page_without_text(tiny, settings, pool):
    tool = DocumentQuestionAnswering(model=str(tiny["bert-qa"]), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="no text was found"):
        tool(image=Image.new("RGB", (200, 120), "white"), question="What is the total?")
    with pytest.raises(InvalidInputError, match="param 'min_ocr_score' must be at most 1"):
        tool(image=receipt_image(), question="What is the total?", min_ocr_score=2)
