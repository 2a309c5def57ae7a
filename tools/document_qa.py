"""Document question answering: read the page with the OCR tool, then pick the answer span with an extractive QA model.

On a receipt, the questions its layout answers (total, tip, an item's price, date, shop, the items and
their number) are answered from the layout (tools.receipt_layout) when the reader is the packaged LLM
(offline without the QA model); an extractive reader still quotes spans, and the layout answers only
what no span can (the items, how many). Other questions go to the reader; the LLM's answer is kept
only if the page's text holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInputError, ToolExecutionError
from orchestrator.models.pool import measure_size
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import Detections
from orchestrator.tooling.tool import (
    Availability,
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

from .ocr import OpticalCharacterRecognition
from .receipt_layout import LayoutAnswer, parse_receipt
from .receipt_layout import answer as receipt_answer
from .text import (
    GenerativeReaderFallback,
    is_generative,
    read_generatively,
    word_occurs,
)
from .torch_runtime import torch_dtype
from .transformers_runtime import transformers_hub_location

MAX_WINDOW_TOKENS = 384  # SQuAD fine-tuning length of the usual checkpoints (and the QA pipeline's max_seq_len)
MAX_STRIDE_TOKENS = 128  # tokens shared by neighbouring windows (the QA pipeline's doc_stride)
WINDOWS_PER_BATCH = 8


@dataclass
class _Reader:
    model: Any
    tokenizer: Any
    device: str
    max_tokens: int

    @property
    def anymoda_size_bytes(self) -> int | None:
        """What the model pool counts: the loaded weights, not the folder (which may hold two copies)."""
        return measure_size(self.model)


@dataclass(frozen=True)
class Span:
    start: int  # character offsets in the OCR text
    end: int
    score: float


def line_spans(text: str, lines: list[str]) -> list[tuple[int, int]]:
    """Character span of each OCR line in the OCR text (lines appear in it in order, joined by spaces and newlines)."""
    spans, cursor = [], 0
    for line in lines:
        start = text.find(line, cursor)
        if start < 0:  # not expected from the OCR tool; such a line simply never becomes evidence
            spans.append((-1, -1))
            continue
        spans.append((start, start + len(line)))
        cursor = start + len(line)
    return spans


def best_spans(start_logits: Any, end_logits: Any, context: Any, cls_index: int | None, max_tokens: int, count: int):
    """Top answer spans of one window as (start token, end token, score), and the window's no-answer score.

    As in transformers' question-answering pipeline: start and end probabilities are softmaxes over the
    context tokens (plus [CLS], which SQuAD 2.0 models point at when there is no answer); a span scores
    p(start) * p(end), with end >= start and at most ``max_tokens`` tokens.
    """
    import torch

    allowed = context.clone()
    if cls_index is not None:
        allowed[cls_index] = True
    start = start_logits.float().masked_fill(~allowed, float("-inf")).softmax(-1)
    end = end_logits.float().masked_fill(~allowed, float("-inf")).softmax(-1)
    no_answer = float(start[cls_index] * end[cls_index]) if cls_index is not None else 0.0
    start, end = start * context, end * context
    scores = torch.triu(torch.outer(start, end)).tril(max_tokens - 1)
    top = scores.flatten().topk(min(count, scores.numel()))
    n = scores.shape[1]
    spans = [(int(i) // n, int(i) % n, float(p)) for p, i in zip(top.values, top.indices) if p > 0]
    return spans, no_answer


class DocumentQuestionAnswering(GenerativeReaderFallback, Tool):
    name = "document-question-answering"
    task = "document-question-answering"
    description = (
        "Answer a question about a document image (receipt, invoice, form, letter, screenshot, sign) with a "
        "piece of its text, e.g. 'what is the total?' -> '42.50'. Reads the text with OCR, then picks the "
        "answer from it; also returns the confidence and the box of the text line the answer is on."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the document: a photo or scan of the page"),
        "question": Input(ArtifactKind.TEXT, "the question, in English"),
    }
    outputs = {
        "answer": Output(ArtifactKind.TEXT, "the answer, copied from the document's text"),
        "details": Output(ArtifactKind.JSON, (
            "{answer, score, start, end, no_answer_score, candidates, text, reader}: the answer's character span in "
            "the OCR text, the model's score for the page holding no answer, other candidates and the text read; "
            "with a generative reader (an LLM, offline) score and no_answer_score are null, and the answer is "
            "kept only if the text holds it (else empty, with a note)"
        )),
        "evidence": Output(ArtifactKind.DETECTIONS, "the box of each text line the answer was read from (scored by "
                                                    "the reader, or by the OCR when an LLM read the page)"),
    }
    params = {
        "top_k": Param(int, 3, "how many candidate answers to list in details", minimum=1, maximum=20),
        "max_answer_tokens": Param(int, 15, "longest answer, in tokens (about 3/4 of a word each)", minimum=1, maximum=64),
        "min_ocr_score": Param(float, 0.5, "ignore text lines the OCR reads with less confidence", minimum=0.0, maximum=1.0),
    }
    default_model = "deepset/roberta-base-squad2"
    requires = ("torch", "transformers", "rapidocr_onnxruntime", "onnxruntime")
    uses_torch_device = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # The OCR tool as configured (its model id from the settings), sharing its pool entry with plain OCR calls.
        self.ocr = OpticalCharacterRecognition(settings=self.settings, pool=self._pool)

    def available(self) -> Availability:
        own = super().available()
        if not own:
            return own
        reader = self.ocr.available()
        if not reader:
            return Availability(False, f"{self.name} reads documents with the ocr tool: {reader.reason}")
        return own

    def hub_location(self, model_id: str) -> HubLocation | None:
        return transformers_hub_location(model_id)

    def load_extractive(self, source: ModelSource, device: str) -> _Reader:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        model = AutoModelForQuestionAnswering.from_pretrained(str(source.path), dtype=torch_dtype(device))
        tokenizer = AutoTokenizer.from_pretrained(str(source.path))
        if not tokenizer.is_fast:
            raise InvalidInputError(f"tool {self.name!r} needs a fast (Rust) tokenizer for character offsets; "
                                    f"{source.model_id!r} has none")
        # RoBERTa-style position tables start after the padding index, so two positions are never usable
        # (BERT-style models lose two of their 512 too: too few to be worth telling the families apart).
        limit = min(MAX_WINDOW_TOKENS, tokenizer.model_max_length, model.config.max_position_embeddings - 2)
        return _Reader(model.eval().to(device), tokenizer, device, int(limit))

    def run(self, reader: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        question = " ".join(inputs["question"].split())
        if not question:
            raise InvalidInputError(f"tool {self.name!r}: input 'question' is empty")
        read = self.ocr(image=inputs["image"], min_score=params["min_ocr_score"])
        text, regions = read["text"], read["regions"]
        if not text.strip():
            raise InvalidInputError(
                f"tool {self.name!r}: no text was found in the image (try a sharper or larger scan, or a lower min_ocr_score)"
            )
        receipt = parse_receipt(text)
        if receipt is not None:
            found = receipt_answer(receipt, question)
            # An extractive reader quotes a total or a price well, with a score; lists and counts are no span.
            if found is not None and (is_generative(reader) or found.kind in ("items", "item-count")):
                return self._layout_output(found, text, regions)
        if is_generative(reader):
            return self._run_generative(reader, question, text, regions)
        # Rows become sentences of one paragraph: the same offsets, and no newline tokens SQuAD models never saw.
        context = text.replace("\n", " ")
        spans, no_answer = self._answer_spans(reader, question, context, params)
        if not spans:
            raise ToolExecutionError(f"tool {self.name!r}: the model found no answer span in the document's text")

        best = spans[0]
        answer = context[best.start:best.end]
        used = [i for i, (a, b) in enumerate(line_spans(text, regions.labels)) if a < best.end and b > best.start]
        evidence = Detections(
            [regions.boxes[i] for i in used], [answer] * len(used), [best.score] * len(used), image_size=regions.image_size,
            extra=[{"line": regions.labels[i], **(regions.extra[i] if regions.extra else {})} for i in used],
        )
        candidates = [{"answer": context[s.start:s.end], "score": round(s.score, 4), "start": s.start, "end": s.end}
                      for s in spans[: params["top_k"]]]
        details = {**candidates[0], "no_answer_score": round(no_answer, 4), "candidates": candidates, "text": text,
                   "reader": "extractive"}
        metadata = {"score": round(best.score, 4), "no_answer_score": round(no_answer, 4), "ocr_lines": len(regions)}
        return {"answer": OutputValue(answer, metadata), "details": details, "evidence": evidence}

    def _layout_output(self, found: LayoutAnswer, text: str, regions: Detections) -> dict[str, Any]:
        """The tool's outputs for an answer read from the receipt's layout, its rows' OCR lines as evidence."""
        rows = text.split("\n")
        starts = [sum(len(r) + 1 for r in rows[:i]) for i in range(len(rows))]
        chosen = [(starts[i], starts[i] + len(rows[i])) for i in found.rows]
        used = [i for i, (a, b) in enumerate(line_spans(text, regions.labels))
                if a >= 0 and any(start <= a and b <= end for start, end in chosen)]
        evidence = Detections(
            [regions.boxes[i] for i in used], [found.answer] * len(used), [regions.scores[i] for i in used],
            image_size=regions.image_size,
            extra=[{"line": regions.labels[i], **(regions.extra[i] if regions.extra else {})} for i in used],
        )
        start = text.find(found.answer) if found.answer else -1
        span = (start, start + len(found.answer)) if start >= 0 else (None, None)
        details: dict[str, Any] = {
            "answer": found.answer, "score": None, "start": span[0], "end": span[1], "no_answer_score": None,
            "candidates": [{"answer": found.answer, "score": None, "start": span[0], "end": span[1]}] if found.answer else [],
            "text": text, "reader": "receipt-layout",
            "question_kind": found.kind, "rows": [rows[i] for i in found.rows],
        }
        if found.note:
            details["note"] = found.note
        metadata = {"score": None, "no_answer_score": None, "ocr_lines": len(regions), "reader": details["reader"],
                    "grounded": bool(found.answer)}
        return {"answer": OutputValue(found.answer, metadata), "details": details, "evidence": evidence}

    def _run_generative(self, loaded: Any, question: str, text: str, regions: Detections) -> dict[str, Any]:
        """An LLM reads the OCR text (the offline fallback, or an LLM chosen as the model): greedy, one short
        answer, kept only if the text holds it; the evidence is the lines holding it, found by string match.

        score and no_answer_score are None (an LLM gives no span probability); evidence boxes carry the OCR's
        confidence in their line.
        """
        grounding, reply, generation = read_generatively(self, loaded, question, text,
                                                         what="The text of a document, read by OCR line by line")
        answer = grounding.answer
        if grounding.start is not None:
            used = [i for i, (a, b) in enumerate(line_spans(text, regions.labels))
                    if a < grounding.end and b > grounding.start]
        elif answer:  # every word is in the text, not together: the lines holding them
            used = [i for i, line in enumerate(regions.labels)
                    if any(word_occurs(word, line) for word in grounding.words)]
        else:
            used = []
        evidence = Detections(
            [regions.boxes[i] for i in used], [answer] * len(used), [regions.scores[i] for i in used],
            image_size=regions.image_size,
            extra=[{"line": regions.labels[i], **(regions.extra[i] if regions.extra else {})} for i in used],
        )
        candidates = [{"answer": answer, "score": None, "start": grounding.start, "end": grounding.end}] if answer else []
        details: dict[str, Any] = {
            "answer": answer, "score": None, "start": grounding.start, "end": grounding.end, "no_answer_score": None,
            "candidates": candidates, "text": text, "reader": "generative", "model": self.model_id,
            "grounded": grounding.grounded,
        }
        if grounding.grounded:
            details["generated"] = reply  # the reply as the model wrote it; only passed on when grounded
        if grounding.note:
            details["note"] = grounding.note
        metadata = {"score": None, "no_answer_score": None, "ocr_lines": len(regions), "reader": "generative",
                    "grounded": grounding.grounded, "new_tokens": generation["new_tokens"]}
        return {"answer": OutputValue(answer, metadata), "details": details, "evidence": evidence}

    def _answer_spans(self, reader: _Reader, question: str, context: str, params: dict[str, Any]) -> tuple[list[Span], float]:
        """Answer spans over the whole text, best first, and the no-answer score, with overlapping windows."""
        import torch

        tokenizer, model = reader.tokenizer, reader.model
        question_tokens = len(tokenizer(question, add_special_tokens=False).input_ids)
        room = reader.max_tokens - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
        if room < 16:
            raise InvalidInputError(
                f"tool {self.name!r}: input 'question' is too long ({question_tokens} tokens); the model reads "
                f"{reader.max_tokens} tokens of question and document together"
            )
        # The question goes on the side the tokenizer does not pad from (RoBERTa and BERT: question first).
        question_first = tokenizer.padding_side == "right"
        pair = (question, context) if question_first else (context, question)
        encoding = tokenizer(
            *pair, truncation="only_second" if question_first else "only_first", max_length=reader.max_tokens,
            stride=min(MAX_STRIDE_TOKENS, room // 2), return_overflowing_tokens=True, return_offsets_mapping=True,
            padding="longest", return_tensors="pt",
        )
        words = tokenizer(context, add_special_tokens=False, verbose=False)  # its word boundaries, not fed to the model
        names = [name for name in tokenizer.model_input_names if name in encoding]
        context_side = 1 if question_first else 0
        found: dict[tuple[int, int], float] = {}
        no_answer = 1.0
        windows = encoding["input_ids"].shape[0]
        for first in range(0, windows, WINDOWS_PER_BATCH):
            batch = {name: encoding[name][first:first + WINDOWS_PER_BATCH].to(reader.device) for name in names}
            with torch.inference_mode():
                output = model(**batch)
            for row in range(batch["input_ids"].shape[0]):
                window = first + row
                sequence = encoding.sequence_ids(window)
                is_context = torch.tensor([side == context_side for side in sequence], device=reader.device)
                ids = encoding["input_ids"][window]
                cls = (ids == tokenizer.cls_token_id).nonzero() if tokenizer.cls_token_id is not None else []
                spans, window_no_answer = best_spans(
                    output.start_logits[row], output.end_logits[row], is_context,
                    int(cls[0]) if len(cls) else None, params["max_answer_tokens"], params["top_k"] * 4,
                )
                # A document has no answer only if no window finds one (the pipeline keeps the minimum too).
                no_answer = min(no_answer, window_no_answer)
                offsets = encoding["offset_mapping"][window]
                for start_token, end_token, score in spans:
                    start, end = int(offsets[start_token][0]), int(offsets[end_token][1])
                    while start < end and context[start].isspace():  # byte-level BPE tokens carry their leading space
                        start += 1
                    end = len(context[:end].rstrip())
                    if end <= start:
                        continue
                    # Whole words, as the QA pipeline's align_to_words gives ("Paid", not "id"); looked up in the
                    # whole text, since a window's edge can cut a word.
                    first_word, last_word = words.char_to_word(start), words.char_to_word(end - 1)
                    if first_word is not None:
                        start = words.word_to_chars(first_word).start
                    if last_word is not None:
                        end = words.word_to_chars(last_word).end
                    if score > found.get((start, end), 0.0):
                        found[(start, end)] = score
        ranked = sorted(found.items(), key=lambda item: -item[1])
        return [Span(start, end, score) for (start, end), score in ranked], no_answer
