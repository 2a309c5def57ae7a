"""Row-wise classification of a table (CSV text, JSON rows or a picture read by OCR) with a text classifier.

Each row is written as "column: value; column: value" and classified either zero-shot by an NLI model
(premise = the row, hypothesis = the template filled with each candidate label, as the Hugging Face
zero-shot-classification pipeline does) or, for a sequence classifier trained on such rows, by its own labels.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InvalidInputError
from orchestrator.models.resolve import ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .torch_runtime import torch_dtype
from .transformers_runtime import load_tokenizer, max_input_tokens, quiet_transformers

MAX_ROWS = 500
MAX_CELLS = 20_000
MAX_LABELS = 20
MAX_TABLE_CHARS = 2_000_000
SUMMARY_ROWS = 20
DELIMITERS = {"auto": None, "comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}


@dataclass
class Table:
    """Header and data rows, each row with where it came from (a CSV line, a JSON index, a picture row)."""

    columns: list[str]
    rows: list[list[str]]
    lines: list[int]
    source: str
    notes: list[str] = field(default_factory=list)

    def serialise(self, index: int) -> str:
        # Empty cells are left out: "price: " tells the model nothing and dilutes the premise.
        return "; ".join(f"{column}: {value}" for column, value in zip(self.columns, self.rows[index]) if value.strip())

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "source": self.source}


# ----------------------------------------------------------------------------------------- reading tables


def _unique_columns(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    columns = []
    for i, name in enumerate(names):
        name = name.strip() or f"column {i + 1}"
        seen[name] += 1
        columns.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return columns


def _check_size(tool: str, columns: list[str], rows: list[list[str]], lines: list[int], where: str) -> None:
    if not rows:
        raise InvalidInputError(f"tool {tool!r}: the table has no data rows" + (" (only a header)" if columns else ""))
    if len(rows) > MAX_ROWS:
        raise InvalidInputError(
            f"tool {tool!r}: the table has {len(rows):,} data rows, over the limit of {MAX_ROWS} "
            f"(the first one over it is {where} {lines[MAX_ROWS]}); split it first"
        )
    if len(rows) * len(columns) > MAX_CELLS:
        raise InvalidInputError(
            f"tool {tool!r}: the table has {len(rows) * len(columns):,} cells, over the limit of {MAX_CELLS:,}"
        )


def _shape_rows(tool: str, records: list[tuple[int, list[str]]], header: bool, where: str, source: str) -> Table:
    """Header + rows from (line, cells) records, refusing ragged rows with the line that is off."""
    if not records:
        raise InvalidInputError(f"tool {tool!r}: the table is empty")
    if header:
        header_line, names = records[0]
        body = records[1:]
    else:
        header_line, names = records[0][0], [f"column {i + 1}" for i in range(len(records[0][1]))]
        body = records
    columns = _unique_columns(names)
    rows, lines = [], []
    for line, cells in body:
        # A trailing delimiter (common in spreadsheet exports) adds empty cells that are not data.
        while len(cells) > len(columns) and not cells[-1].strip():
            cells = cells[:-1]
        if len(cells) != len(columns):
            reference = f"the header ({where} {header_line})" if header else f"the first row ({where} {header_line})"
            raise InvalidInputError(
                f"tool {tool!r}: {where} {line} has {len(cells)} cell(s) but {reference} has {len(columns)}; "
                f"every row needs one value per column"
            )
        rows.append([cell.strip() for cell in cells])
        lines.append(line)
    _check_size(tool, columns, rows, lines, where)
    return Table(columns, rows, lines, source)


def table_from_csv(tool: str, text: str, *, header: bool, delimiter: str) -> Table:
    if len(text) > MAX_TABLE_CHARS:
        raise InvalidInputError(f"tool {tool!r}: the CSV has {len(text):,} characters, over the limit of {MAX_TABLE_CHARS:,}")
    if not text.strip():
        raise InvalidInputError(f"tool {tool!r}: the table is empty")
    separator = DELIMITERS[delimiter]
    if separator is None:
        try:
            separator = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            separator = ","  # one column, or too few rows for the sniffer to decide
    reader = csv.reader(io.StringIO(text), delimiter=separator)
    records: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1  # a quoted cell may span lines: report where the row starts
            if cells and any(cell.strip() for cell in cells):
                records.append((start, cells))
    except csv.Error as exc:
        raise InvalidInputError(f"tool {tool!r}: CSV line {reader.line_num}: {exc}") from None
    return _shape_rows(tool, records, header, "line", "csv")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def table_from_json(tool: str, value: Any, *, header: bool) -> Table:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"tool {tool!r}: input 'rows' is not valid JSON: {exc.msg}") from None
    if isinstance(value, dict) and isinstance(value.get("rows", value.get("data")), list):
        columns = value.get("columns")
        body = value.get("rows", value.get("data"))
        if columns is not None:
            if not isinstance(columns, list):
                raise InvalidInputError(f"tool {tool!r}: input 'rows': 'columns' must be a list of names")
            value = [columns, *body]
            header = True
        else:
            value = body
    if not isinstance(value, list):
        raise InvalidInputError(
            f"tool {tool!r}: input 'rows' must be a list of objects, a list of lists (first = header) or "
            f"{{columns, rows}}; got {type(value).__name__}"
        )
    if not value:
        raise InvalidInputError(f"tool {tool!r}: the table is empty")
    if all(isinstance(item, dict) for item in value):
        records = [{str(key): cell for key, cell in item.items()} for item in value]
        names = list(dict.fromkeys(key for record in records for key in record))
        # Objects may leave keys out (sparse records): a missing key is an empty cell, not a ragged row.
        rows = [[_cell(record.get(name)) for name in names] for record in records]
        lines = list(range(1, len(rows) + 1))
        _check_size(tool, names, rows, lines, "row")
        return Table(_unique_columns(names), rows, lines, "json")
    records = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, list):
            raise InvalidInputError(
                f"tool {tool!r}: input 'rows': row {index} is {type(item).__name__}; mix neither objects and lists nor scalars"
            )
        records.append((index, [_cell(cell) for cell in item]))
    return _shape_rows(tool, records, header, "row", "json")


def table_from_boxes(boxes: list[tuple[float, float, float, float]], texts: list[str]) -> tuple[list[list[str]], list[str]]:
    """Rebuild a grid of cells from OCR text boxes.

    Rows: boxes whose vertical centres lie within half a line height (the OCR tool's reading_rows).
    Columns: horizontal clustering of the boxes' x-extents over all rows: extents that overlap (or nearly
    touch, closer than a fraction of the text height) merge into one column band, so a cell the OCR split
    in two ("New" "York") is bridged by the same column's cells in other rows. Rows of a single box (a
    title across the table) take no part when other rows have several. Each box then joins the band it
    overlaps most; a cell missing from a row stays empty instead of shifting the rest of the row left.

    Returns the grid and the caption: single-box rows above the first row of several cells (a title).
    """
    from tools.ocr import reading_rows

    lines = [([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], text, 1.0) for (x0, y0, x1, y1), text in zip(boxes, texts)]
    rows = [[(line[0][0][0], line[0][1][0], line[0][2][1] - line[0][0][1], line[1]) for line in row]
            for row in reading_rows(lines)]
    if not rows:
        return [], []
    caption = []
    while len(rows) > 1 and len(rows[0]) == 1 and any(len(row) > 1 for row in rows):
        caption.append(rows.pop(0)[0][3])
    heights = sorted(height for row in rows for _, _, height, _ in row)
    bridge = 0.6 * heights[len(heights) // 2]  # wider than a space between words, narrower than a column gap
    shaping = [row for row in rows if len(row) > 1] or rows
    bands: list[list[float]] = []
    for x0, x1 in sorted((x0, x1) for row in shaping for x0, x1, _, _ in row):
        if bands and x0 <= bands[-1][1] + bridge:
            bands[-1][1] = max(bands[-1][1], x1)
        else:
            bands.append([x0, x1])

    def column_of(x0: float, x1: float) -> int:
        overlaps = [min(x1, right) - max(x0, left) for left, right in bands]
        best = max(range(len(bands)), key=lambda j: overlaps[j])
        if overlaps[best] > 0:
            return best
        centre = (x0 + x1) / 2
        return min(range(len(bands)), key=lambda j: abs(centre - (bands[j][0] + bands[j][1]) / 2))

    grid = []
    for row in rows:
        cells: list[list[str]] = [[] for _ in bands]
        for x0, x1, _, text in row:  # already left to right
            cells[column_of(x0, x1)].append(text)
        grid.append([" ".join(parts) for parts in cells])
    return grid, caption


# ----------------------------------------------------------------------------------------- the tool


@dataclass
class _Classifier:
    model: Any
    tokenizer: Any
    device: str
    entailment: int | None  # NLI models: the entailment class; None for a classifier trained on the task
    contradiction: int | None


def _find_label(label2id: dict[str, int], prefix: str) -> int | None:
    for name, index in label2id.items():
        if str(name).lower().startswith(prefix):
            return int(index)
    return None


class TabularClassification(Tool):
    name = "tabular-classification"
    task = "tabular-classification"
    description = (
        "Classify each row of a table: given as CSV text, as JSON rows, or as a picture of a table (read with "
        "OCR). Zero-shot by default: give candidate labels (e.g. 'urgent, routine') and an NLI model "
        "(BART-large-MNLI) scores how well each row fits each label; a classifier fine-tuned on serialised rows "
        "uses its own labels instead. Returns each row's label and score, the parsed table, and a summary."
    )
    inputs = {
        "table": Input(ArtifactKind.TEXT, "the table as CSV text (header in the first line by default)", required=False),
        "rows": Input(ArtifactKind.JSON, "the table as JSON: a list of objects, a list of lists (first = header), or "
                                         "{columns, rows}", required=False),
        "image": Input(ArtifactKind.IMAGE, "a picture of the table (a grid of printed text)", required=False),
    }
    outputs = {
        "predictions": Output(ArtifactKind.JSON, "one {row, line, text, label, score, scores} per data row, in table order"),
        "table": Output(ArtifactKind.JSON, "the parsed table: {columns, rows, source}"),
        "summary": Output(ArtifactKind.TEXT, "how many rows got each label, and each row's label"),
    }
    params = {
        "labels": Param(str, "", "candidate labels, comma- or newline-separated (needed by zero-shot NLI models)"),
        "hypothesis_template": Param(str, "This example is {}.", "the NLI hypothesis; {} is replaced by each label"),
        "multi_label": Param(bool, False, "score each label on its own (several may fit) instead of choosing one"),
        "header": Param(bool, True, "the first row holds the column names"),
        "delimiter": Param(str, "auto", "CSV cell separator", choices=tuple(DELIMITERS)),
        "ocr_min_score": Param(float, 0.5, "for a picture: drop OCR text read with less confidence", minimum=0.0, maximum=1.0),
    }
    default_model = "facebook/bart-large-mnli"
    requires = ("torch", "transformers")
    uses_torch_device = True

    BATCH = 16

    def load(self, source: ModelSource, device: str) -> Any:
        from transformers import AutoModelForSequenceClassification

        quiet_transformers()
        tokenizer = load_tokenizer(source, self.name)
        model = AutoModelForSequenceClassification.from_pretrained(str(source.path), dtype=torch_dtype(device)).eval().to(device)
        label2id = dict(model.config.label2id or {})
        return _Classifier(model, tokenizer, device, _find_label(label2id, "entail"), _find_label(label2id, "contradict"))

    # -------------------------------------------------------------- inputs

    def _labels(self, text: str) -> list[str]:
        parts = text.splitlines() if "\n" in text else text.split(",")
        labels = list(dict.fromkeys(part.strip() for part in parts if part.strip()))
        if len(labels) > MAX_LABELS:
            raise InvalidInputError(
                f"tool {self.name!r}: param 'labels' has {len(labels)} labels, over the limit of {MAX_LABELS}"
            )
        too_long = [label for label in labels if len(label) > 200]
        if too_long:
            raise InvalidInputError(
                f"tool {self.name!r}: param 'labels': the label {too_long[0][:40]!r}... is over 200 characters"
            )
        return labels

    def read_table(self, inputs: dict[str, Any], params: dict[str, Any]) -> Table:
        given = [name for name in ("table", "rows", "image") if inputs.get(name) is not None]
        if len(given) != 1:
            raise InvalidInputError(
                f"tool {self.name!r} needs exactly one of the inputs 'table' (CSV text), 'rows' (JSON) or 'image'; "
                f"got {', '.join(map(repr, given)) or 'none'}"
            )
        if given[0] == "table":
            return table_from_csv(self.name, inputs["table"], header=params["header"], delimiter=params["delimiter"])
        if given[0] == "rows":
            return table_from_json(self.name, inputs["rows"], header=params["header"])
        return self._table_from_image(inputs["image"], params)

    def _table_from_image(self, image: Any, params: dict[str, Any]) -> Table:
        from tools.ocr import OpticalCharacterRecognition

        ocr = OpticalCharacterRecognition(settings=self.settings, pool=self.pool)
        self.report_progress(0, None, "reading the table with OCR")
        regions = ocr(image=image, min_score=params["ocr_min_score"])["regions"]
        grid, caption = table_from_boxes(regions.boxes, regions.labels)
        if not grid:
            raise InvalidInputError(f"tool {self.name!r}: input 'image': OCR found no text, so no table")
        table = _shape_rows(self.name, [(i, row) for i, row in enumerate(grid, start=1)], params["header"],
                            "picture row", "image")
        table.notes.append(f"OCR found {len(regions)} text boxes in {len(grid)} rows and {len(table.columns)} columns")
        if caption:
            table.notes.append(f"the caption above the table was left out: {' / '.join(caption)}")
        return table

    # -------------------------------------------------------------- classification

    def _batches(self, classifier: _Classifier, first: list[str], second: list[str] | None):
        import torch

        tokenizer, model = classifier.tokenizer, classifier.model
        limit = max_input_tokens(tokenizer, model.config)
        outputs = []
        for begin in range(0, len(first), self.BATCH):
            self.report_progress(begin, len(first), "classifying rows")
            pair = (first[begin:begin + self.BATCH],) + ((second[begin:begin + self.BATCH],) if second is not None else ())
            # Long rows lose their tail, never the hypothesis: truncate the premise only.
            encoded = tokenizer(*pair, truncation="only_first" if second is not None else True, max_length=limit,
                                padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**{k: v.to(classifier.device) for k, v in encoded.items()}).logits
            outputs.append(logits.float().cpu())
        self.report_progress(len(first), len(first), "done")
        return torch.cat(outputs)

    def run(self, classifier: _Classifier, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        labels = self._labels(params["labels"])
        template = params["hypothesis_template"]
        zero_shot = classifier.entailment is not None
        if zero_shot:
            if not labels:
                raise InvalidInputError(
                    f"tool {self.name!r}: param 'labels' is empty; the zero-shot model {self.model_id} needs candidate "
                    f"labels, e.g. 'positive, negative'"
                )
            if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
                raise InvalidInputError(
                    f"tool {self.name!r}: param 'hypothesis_template' must contain {{}} exactly once (where the label goes) "
                    f"and no other braces; got {template!r}"
                )
        elif labels:
            own = list(classifier.model.config.id2label.values())
            raise InvalidInputError(
                f"tool {self.name!r}: param 'labels' only applies to zero-shot NLI models; {self.model_id} is a trained "
                f"classifier with its own labels ({', '.join(map(str, own))}); leave 'labels' empty"
            )
        table = self.read_table(inputs, params)
        premises = [table.serialise(i) for i in range(len(table.rows))]

        if zero_shot:
            scores, names = self._zero_shot(classifier, premises, labels, template, params["multi_label"])
        else:
            logits = self._batches(classifier, premises, None)
            config = classifier.model.config
            multi = config.problem_type == "multi_label_classification"
            scores = logits.sigmoid() if multi else logits.softmax(-1)
            names = [str(config.id2label[i]) for i in range(logits.shape[-1])]

        predictions = []
        for i, row_scores in enumerate(scores.tolist()):
            ranked = sorted(zip(names, row_scores), key=lambda item: -item[1])
            predictions.append({
                "row": i + 1, "line": table.lines[i], "text": premises[i], "label": ranked[0][0],
                "score": round(ranked[0][1], 4), "scores": {name: round(score, 4) for name, score in ranked},
            })
        counts = Counter(p["label"] for p in predictions)
        where = {"csv": "line", "json": "row", "image": "picture row"}[table.source]
        summary_lines = [
            f"Classified {len(predictions)} row(s): " + ", ".join(f"{label} {n}" for label, n in counts.most_common()) + "."
        ]
        summary_lines += [f"{where} {p['line']}: {p['label']} ({p['score']:.2f}) - {p['text'][:120]}"
                          for p in predictions[:SUMMARY_ROWS]]
        if len(predictions) > SUMMARY_ROWS:
            summary_lines.append(f"... and {len(predictions) - SUMMARY_ROWS} more rows")
        metadata = {
            "mode": "zero-shot" if zero_shot else "classifier", "labels": names, "rows": len(predictions),
            "columns": table.columns, "source": table.source, "counts": dict(counts),
            **({"hypothesis_template": template, "multi_label": params["multi_label"]} if zero_shot else {}),
            **({"notes": table.notes} if table.notes else {}),
        }
        return {
            "predictions": OutputValue(predictions, metadata),
            "table": OutputValue(table.to_json(), {"rows": len(table.rows), "columns": len(table.columns)}),
            "summary": OutputValue("\n".join(summary_lines), {"counts": dict(counts)}),
        }

    def _zero_shot(self, classifier: _Classifier, premises: list[str], labels: list[str], template: str, multi_label: bool):
        """Entailment scores as the HF zero-shot-classification pipeline computes them."""
        hypotheses = [template.format(label) for label in labels]
        first = [premise for premise in premises for _ in labels]
        second = [hypothesis for _ in premises for hypothesis in hypotheses]
        logits = self._batches(classifier, first, second).reshape(len(premises), len(labels), -1)
        entail, contra = classifier.entailment, classifier.contradiction
        if multi_label or len(labels) == 1:
            # Each label alone: entailment against contradiction (neutral left out), or against all classes.
            pair = logits[..., [contra, entail]] if contra is not None else logits
            index = 1 if contra is not None else entail
            return pair.softmax(-1)[..., index], labels
        return logits[..., entail].softmax(-1), labels
