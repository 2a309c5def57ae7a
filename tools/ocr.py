"""Optical character recognition with PaddleOCR's PP-OCR models run by RapidOCR on ONNX Runtime."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import Detections
from orchestrator.tooling.tool import (
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

from .weight_packages import PP_OCR

Line = tuple[list[list[float]], str, float]  # (4-point polygon, text, score) as RapidOCR returns it


def reading_rows(lines: list[Line]) -> list[list[Line]]:
    """Group text lines into rows, top to bottom, each row left to right.

    Lines whose vertical centres lie within half the median line height belong to one row, so a
    receipt's "TOTAL ... 42.50" reads as one row even though the detector boxes it in two pieces.
    """
    if not lines:
        return []

    def centre(line: Line) -> float:
        return float(np.mean([p[1] for p in line[0]]))

    heights = [max(p[1] for p in box) - min(p[1] for p in box) for box, _, _ in lines]
    tolerance = max(1.0, float(np.median(heights)) / 2)
    rows: list[list[Line]] = []
    for line in sorted(lines, key=centre):
        if rows and abs(centre(line) - np.mean([centre(item) for item in rows[-1]])) <= tolerance:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(row, key=lambda item: min(p[0] for p in item[0])) for row in rows]


class OpticalCharacterRecognition(Tool):
    name = "ocr"
    task = "image-to-text"
    description = (
        "Read the printed or handwritten text in an image (documents, receipts, signs, screenshots); returns "
        "the text in reading order and a box around every line."
    )
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image to read")}
    outputs = {
        "text": Output(ArtifactKind.TEXT, "the text in reading order, one line per row of text"),
        "regions": Output(ArtifactKind.DETECTIONS, "a box (and polygon) per text line, labelled with its text"),
    }
    params = {
        "min_score": Param(float, 0.5, "drop lines recognised with less confidence", minimum=0.0, maximum=1.0),
        "box_threshold": Param(float, 0.5, "text detector's box confidence threshold", minimum=0.05, maximum=0.95),
        "rotated_text": Param(bool, True, "detect and turn upside-down text lines"),
    }
    default_model = "PP-OCRv4"
    requires = ("rapidocr_onnxruntime", "onnxruntime")
    thread_safe = False  # RapidOCR keeps per-call thresholds on the shared engine

    def packaged_weights(self):
        return {"PP-OCRv4": PP_OCR.locator(self.settings.cache_dir)}

    def hub_location(self, model_id: str) -> HubLocation | None:
        return None  # RapidOCR ships its ONNX models inside its package

    def load(self, source: ModelSource, device: str) -> Any:
        from rapidocr_onnxruntime import RapidOCR

        models = source.path
        return RapidOCR(
            det_model_path=str(next(models.glob("*det*.onnx"))),
            rec_model_path=str(next(models.glob("*rec*.onnx"))),
            cls_model_path=str(next(models.glob("*cls*.onnx"))),
        )

    def run(self, engine: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        image = inputs["image"].convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # RapidOCR takes OpenCV's BGR order
        # The same page is often read twice in one request (the planner looks whether it is a document, then
        # document QA reads it): the engine keeps its last few readings, by content and settings.
        key = (hashlib.sha256(bgr.tobytes()).hexdigest(), bgr.shape, params["rotated_text"], params["min_score"],
               params["box_threshold"])
        readings = getattr(engine, "anymoda_readings", None)
        if readings is None:
            readings = engine.anymoda_readings = OrderedDict()
        if key in readings:
            result = readings[key]
            readings.move_to_end(key)
        else:
            result, _ = engine(bgr, use_cls=params["rotated_text"], text_score=params["min_score"],
                               box_thresh=params["box_threshold"])
            readings[key] = result
            while len(readings) > 8:
                readings.popitem(last=False)
        rows = reading_rows([(box, text, float(score)) for box, text, score in (result or [])])
        boxes, labels, scores, extra = [], [], [], []
        for polygon, text, score in (line for row in rows for line in row):
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            boxes.append((max(0.0, min(xs)), max(0.0, min(ys)), max(xs), max(ys)))
            labels.append(text)
            scores.append(score)
            extra.append({"polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in polygon]})
        regions = Detections(boxes, labels, scores, image_size=image.size, extra=extra)
        return {
            "text": OutputValue("\n".join(" ".join(text for _, text, _ in row) for row in rows), {"lines": len(rows)}),
            "regions": regions,
        }
