"""Segmentation: SAM masks from boxes or clicks, per-class masks (SegFormer), and 'find X and cut it out'."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.config import Settings
from orchestrator.errors import InvalidInputError, ToolUnavailableError
from orchestrator.models.pool import ModelPool
from orchestrator.models.resolve import ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import Detections, Masks
from orchestrator.storage.render import draw_detections, overlay_masks
from orchestrator.tooling.tool import (
    Availability,
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

from .detection import OpenVocabularyDetection, parse_labels
from .images import rgb
from .torch_runtime import torch_dtype

MAX_POINTS = 64
MAX_MASKS = 255  # one label map holds at most 255 instances
# SAM's masks are upscaled to the full image one batch of prompts at a time, so a 24-megapixel photo with
# dozens of boxes never holds all of them as floats at once.
_PROMPTS_PER_BATCH = 8


@dataclass
class Prompt:
    """What SAM is asked to outline as one object: a box, points (1 = on the object, 0 = not on it), or both."""

    name: str
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)


@dataclass
class Sam:
    module: Any
    processor: Any
    device: str
    dtype: Any


def parse_points(value: Any, image_size: tuple[int, int], *, owner: str) -> list[tuple[float, float, int]]:
    """Points as JSON: [[x, y], ...], [[x, y, label], ...] or {"points": [[x, y], ...], "labels": [1, 0, ...]}."""
    where = f"tool {owner!r}: input 'points'"
    labels: list[Any] | None = None
    if isinstance(value, dict):
        unknown = set(value) - {"points", "labels"}
        if unknown or "points" not in value:
            raise InvalidInputError(f"{where} as an object needs 'points' (and optionally 'labels'), got keys {sorted(value)}")
        points, labels = value["points"], value.get("labels")
    else:
        points = value
    if not isinstance(points, list) or not points:
        raise InvalidInputError(f"{where} must be a non-empty list of [x, y] pixel positions, got {value!r:.200}")
    if len(points) > MAX_POINTS:
        raise InvalidInputError(f"{where} has {len(points)} points; at most {MAX_POINTS}")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(points)):
        raise InvalidInputError(f"{where}: 'labels' must be a list with one label per point ({len(points)})")
    width, height = image_size
    parsed = []
    for i, point in enumerate(points):
        if not isinstance(point, (list, tuple)) or len(point) not in (2, 3) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point
        ):
            raise InvalidInputError(f"{where}: point {i} must be [x, y] or [x, y, label] with numbers, got {point!r:.100}")
        label = point[2] if len(point) == 3 else (labels[i] if labels is not None else 1)
        if label not in (0, 1) or isinstance(label, bool):
            raise InvalidInputError(f"{where}: point {i} has label {label!r}; use 1 for 'on the object', 0 for 'not on it'")
        x, y = float(point[0]), float(point[1])
        if not (0 <= x <= width and 0 <= y <= height):
            raise InvalidInputError(f"{where}: point {i} ({x:g}, {y:g}) lies outside the {width}x{height} image")
        parsed.append((x, y, int(label)))
    return parsed


def boxes_in_image(detections: Detections, image_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """The boxes in ``image_size`` pixels (detections made on a resized copy are scaled), clipped to the image."""
    width, height = image_size
    sx = sy = 1.0
    if detections.image_size and detections.image_size != image_size:
        sx, sy = width / detections.image_size[0], height / detections.image_size[1]
    return [
        (min(max(x0 * sx, 0.0), width), min(max(y0 * sy, 0.0), height), min(max(x1 * sx, 0.0), width),
         min(max(y1 * sy, 0.0), height))
        for x0, y0, x1, y1 in detections.boxes
    ]


def build_prompts(
    boxes: list[tuple[float, float, float, float]],
    box_labels: list[str],
    points: list[tuple[float, float, int]],
    *,
    separate_points: bool,
    owner: str,
) -> list[Prompt]:
    """One prompt per box, with the points that fall inside it; the other points make objects of their own."""
    prompts = [Prompt(label, box) for box, label in zip(boxes, box_labels)]
    loose = []
    for x, y, label in points:
        holders = [p for p in prompts if p.box[0] <= x <= p.box[2] and p.box[1] <= y <= p.box[3]]
        for prompt in holders:
            prompt.points.append((x, y))
            prompt.point_labels.append(label)
        if not holders:
            loose.append((x, y, label))
    if loose:
        positives = [(x, y) for x, y, label in loose if label == 1]
        negatives = [(x, y) for x, y, label in loose if label == 0]
        if not positives and not prompts:
            raise InvalidInputError(f"tool {owner!r}: input 'points' has no point labelled 1 (on the object); "
                                    "points labelled 0 only say where the object is not")
        groups = [[p] for p in positives] if separate_points else ([positives] if positives else [])
        for group in groups:
            prompts.append(Prompt("object", None, group + negatives, [1] * len(group) + [0] * len(negatives)))
    return prompts


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


class _SamTool(Tool):
    """SAM loading and prompting, shared by segment-anything and grounded-segmentation (one pool entry)."""

    family = "sam"
    default_model = "facebook/sam-vit-base"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def load(self, source: ModelSource, device: str) -> Sam:
        from transformers import AutoConfig, SamModel, SamProcessor

        path = str(source.path)
        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type != "sam":
            raise ToolUnavailableError(f"tool {self.name!r}: {source.model_id!r} is a {model_type!r} model, not SAM")
        dtype = torch_dtype(device)
        module = SamModel.from_pretrained(path, dtype=dtype).eval().to(device)
        return Sam(module, SamProcessor.from_pretrained(path), device, dtype)

    def segment(self, sam: Sam, image: Any, prompts: list[Prompt], *, multimask: bool = True) -> Masks:
        """One instance per prompt, in prompt order (SAM's best of 3 candidates by predicted IoU when ``multimask``)."""
        import torch

        image = rgb(image)
        width, height = image.size
        label_map = np.zeros((height, width), dtype=np.uint8)
        if not prompts:
            return Masks(label_map, [], [])
        # One processor call scales every box and point from image pixels to SAM's 1024-pixel frame.
        boxes = [list(p.box) for p in prompts if p.box is not None]
        points = [list(xy) for p in prompts for xy in p.points]
        encoded = sam.processor(images=image, input_boxes=[boxes] if boxes else None,
                                input_points=[[points]] if points else None, return_tensors="pt")
        scaled_boxes = encoded["input_boxes"][0].tolist() if boxes else []
        scaled_points = encoded["input_points"][0, 0].tolist() if points else []
        with torch.inference_mode():
            embeddings = sam.module.get_image_embeddings(encoded["pixel_values"].to(sam.device, sam.dtype))

        calls: list[tuple[list[int], dict[str, Any]]] = []
        box_only, box_index, point_index = [], 0, 0
        for i, prompt in enumerate(prompts):
            box = None
            if prompt.box is not None:
                box, box_index = scaled_boxes[box_index], box_index + 1
            these = scaled_points[point_index: point_index + len(prompt.points)]
            point_index += len(prompt.points)
            if not these:
                box_only.append((i, box))
                continue
            arguments = {"input_points": torch.tensor([[these]]), "input_labels": torch.tensor([[prompt.point_labels]])}
            if box is not None:
                arguments["input_boxes"] = torch.tensor([[box]])
            calls.append(([i], arguments))
        box_only.sort(key=lambda item: -_area(prompts[item[0]].box))
        for start in range(0, len(box_only), _PROMPTS_PER_BATCH):
            chunk = box_only[start: start + _PROMPTS_PER_BATCH]
            calls.append(([i for i, _ in chunk], {"input_boxes": torch.tensor([[box for _, box in chunk]])}))

        # Large boxes are painted first so that a small object inside a large one stays visible on top;
        # point-only prompts (no box to measure) last.
        def paint_order(call: tuple[list[int], dict[str, Any]]) -> float:
            box = prompts[call[0][0]].box
            return -_area(box) if box is not None else 0.0

        scores = [0.0] * len(prompts)
        for indices, arguments in sorted(calls, key=paint_order):
            arguments = {k: (v.to(sam.device, sam.dtype) if v.is_floating_point() else v.to(sam.device))
                         for k, v in arguments.items()}
            with torch.inference_mode():
                output = sam.module(image_embeddings=embeddings, multimask_output=multimask, **arguments)
            iou = output.iou_scores[0].float()  # (prompts, candidates)
            best = iou.argmax(dim=-1)
            chosen = output.pred_masks[0, torch.arange(len(indices)), best].float().cpu()  # (prompts, h, w)
            masks = sam.processor.post_process_masks(
                [chosen[:, None]], encoded["original_sizes"], encoded["reshaped_input_sizes"]
            )[0][:, 0].numpy()
            order = sorted(range(len(indices)), key=lambda k: -int(masks[k].sum()))
            for k in order:
                label_map[masks[k]] = indices[k] + 1
                scores[indices[k]] = float(iou[k, best[k]])
        return Masks(label_map, [p.name for p in prompts], scores)


def masks_metadata(masks: Masks) -> dict[str, Any]:
    areas = np.bincount(masks.label_map.ravel(), minlength=len(masks.labels) + 1)[1:]
    total = masks.label_map.size or 1
    return {
        "count": len(masks.labels),
        "instances": [
            {"label": label, "score": round(score, 4) if score is not None else None, "area_fraction": round(int(a) / total, 5)}
            for label, score, a in zip(masks.labels, masks.scores or [None] * len(masks.labels), areas)
        ],
    }


class SegmentAnything(_SamTool):
    name = "segment-anything"
    task = "mask-generation"
    description = (
        "Cut out exact object outlines (pixel masks) with SAM, from boxes (e.g. the detections of object-detection) "
        "and/or clicked points; one mask per box, plus one for the points outside every box. Needs the image and "
        "boxes or points; it does not know what the objects are (use grounded-segmentation to find them by name)."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the image to segment"),
        "boxes": Input(ArtifactKind.DETECTIONS, "boxes around the objects to outline, one mask each", required=False),
        "points": Input(ArtifactKind.JSON, "pixel positions on the object: [[x, y], ...], or [[x, y, label], ...] with "
                        "label 1 (on the object) or 0 (not on it); points inside a box refine that box's mask",
                        required=False),
    }
    outputs = {
        "masks": Output(ArtifactKind.MASKS, "one mask per box (named as the box) or point group ('object')"),
        "overlay": Output(ArtifactKind.IMAGE, "the image with the masks tinted over it"),
    }
    params = {
        "multimask": Param(bool, True, "let SAM propose 3 masks per prompt and keep the one with the best predicted "
                           "quality (best for single clicks); false: SAM's single answer"),
        "separate_points": Param(bool, False, "treat each positive point as a different object (one mask each) "
                                 "instead of all points marking one object"),
        "min_box_score": Param(float, 0.0, "ignore boxes scored below this", minimum=0.0, maximum=1.0),
        "max_masks": Param(int, 64, "most masks made (best-scored boxes first)", minimum=1, maximum=MAX_MASKS),
    }

    def run(self, sam: Sam, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        image = rgb(inputs["image"])
        detections: Detections | None = inputs.get("boxes")
        points_value = inputs.get("points")
        if detections is None and points_value is None:
            raise InvalidInputError(f"tool {self.name!r} needs the input 'boxes' (detections) or 'points' (json) or both")
        points = parse_points(points_value, image.size, owner=self.name) if points_value is not None else []
        boxes, labels, box_scores = [], [], []
        if detections is not None:
            scaled = boxes_in_image(detections, image.size)
            ranked = sorted(range(len(scaled)), key=lambda i: -detections.scores[i])
            chosen = [i for i in ranked if detections.scores[i] >= params["min_box_score"]][: params["max_masks"]]
            boxes, labels = [scaled[i] for i in chosen], [detections.labels[i] for i in chosen]
            box_scores = [detections.scores[i] for i in chosen]
        prompts = build_prompts(boxes, labels, points, separate_points=params["separate_points"], owner=self.name)
        if len(prompts) > params["max_masks"]:
            prompts = prompts[: params["max_masks"]]
        masks = self.segment(sam, image, prompts, multimask=params["multimask"])
        overlay = overlay_masks(image, masks)
        if boxes:
            overlay = draw_detections(overlay, Detections(boxes, labels, box_scores, image_size=image.size))
        return {
            "masks": OutputValue(masks, {**masks_metadata(masks), "prompts": {"boxes": len(boxes), "points": len(points)}}),
            "overlay": OutputValue(overlay, {"count": len(masks.labels)}),
        }


# ------------------------------------------------------------------------------------------ semantic segmentation

# Logits are upscaled to the image before the argmax (sharper edges than upscaling the class map); above
# this many class x pixel values they are upscaled to a smaller size and the class map is enlarged instead.
_MAX_LOGIT_VALUES = 64_000_000


@dataclass
class _SemanticSegmenter:
    module: Any
    processor: Any
    labels: dict[int, str]
    device: str
    dtype: Any


class SemanticSegmentation(Tool):
    name = "semantic-segmentation"
    task = "image-segmentation"
    description = (
        "Label every pixel of a scene with what it is (150 ADE20K classes by default: sky, wall, road, tree, person, "
        "car, ...) and return one mask per class present, with its share of the image; also tints the classes "
        "over the image. For individual objects found by name, use grounded-segmentation."
    )
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image to segment")}
    outputs = {
        "masks": Output(ArtifactKind.MASKS, "one mask per class present, largest first, with the mean confidence"),
        "overlay": Output(ArtifactKind.IMAGE, "the image with each class tinted in its own colour"),
    }
    params = {
        "min_area": Param(float, 0.0, "drop classes covering less than this fraction of the image", minimum=0.0,
                          maximum=0.5),
    }
    default_model = "nvidia/segformer-b0-finetuned-ade-512-512"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def load(self, source: ModelSource, device: str) -> _SemanticSegmenter:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        path = str(source.path)
        dtype = torch_dtype(device)
        module = AutoModelForSemanticSegmentation.from_pretrained(path, dtype=dtype).eval().to(device)
        labels = {int(i): str(label) for i, label in module.config.id2label.items()}
        return _SemanticSegmenter(module, AutoImageProcessor.from_pretrained(path), labels, device, dtype)

    def run(self, segmenter: _SemanticSegmenter, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch
        from PIL import Image

        image = rgb(inputs["image"])
        width, height = image.size
        encoded = segmenter.processor(images=image, return_tensors="pt")
        pixels = encoded["pixel_values"].to(segmenter.device, segmenter.dtype)
        with torch.inference_mode():
            logits = segmenter.module(pixel_values=pixels).logits.float()
            classes = logits.shape[1]
            scale = min(1.0, math.sqrt(_MAX_LOGIT_VALUES / (classes * width * height)))
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]
            confidence, class_map = logits.softmax(dim=0).max(dim=0)
        class_map, confidence = class_map.cpu().numpy(), confidence.cpu().numpy()
        counts = np.bincount(class_map.ravel(), minlength=classes)
        present = [c for c in np.argsort(-counts, kind="stable") if counts[c] > 0
                   and counts[c] / class_map.size >= params["min_area"]][:MAX_MASKS]
        lookup = np.zeros(classes, dtype=np.uint8)
        for index, c in enumerate(present):
            lookup[c] = index + 1
        label_map = lookup[class_map]
        scores = [float(confidence[class_map == c].mean()) for c in present]
        if label_map.shape != (height, width):
            label_map = np.asarray(Image.fromarray(label_map).resize((width, height), Image.NEAREST))
        masks = Masks(label_map, [segmenter.labels.get(int(c), str(int(c))) for c in present], scores)
        return {
            "masks": OutputValue(masks, masks_metadata(masks)),
            "overlay": OutputValue(overlay_masks(image, masks), {"count": len(present)}),
        }


# ------------------------------------------------------------------------------------------ find by name, then cut out


class GroundedSegmentation(_SamTool):
    name = "grounded-segmentation"
    task = "image-segmentation"
    description = (
        "Find the objects you name in words and cut them out exactly: an open-vocabulary detector boxes them "
        "(e.g. 'dog, red umbrella') and SAM outlines each box. Returns the masks, the boxes, a tinted overlay and "
        "a cut-out (the objects on a transparent background). Needs the image and what to look for."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the image to search"),
        "labels": Input(ArtifactKind.TEXT, "what to find: names or short phrases separated by commas or periods"),
    }
    outputs = {
        "masks": Output(ArtifactKind.MASKS, "one mask per object found, named as what it matched"),
        "detections": Output(ArtifactKind.DETECTIONS, "the detector's box around each object"),
        "overlay": Output(ArtifactKind.IMAGE, "the image with the masks tinted and boxes drawn"),
        "cutout": Output(ArtifactKind.IMAGE, "RGBA image: the objects found, transparent everywhere else"),
    }
    params = {
        "threshold": Param(float, None, "lowest box confidence kept; empty: the detector family's usual value "
                           "(OWLv2 0.1, Grounding DINO 0.35)", minimum=0.01, maximum=1.0, nullable=True),
        "text_threshold": Param(float, 0.25, "Grounding DINO only: how strongly a box must match the words of a name",
                                minimum=0.01, maximum=1.0),
        "nms_iou": Param(float, 0.5, "boxes of one name overlapping a better one by more than this are dropped",
                         minimum=0.05, maximum=1.0),
        "max_objects": Param(int, 20, "most objects cut out, best first", minimum=1, maximum=MAX_MASKS),
        "multimask": Param(bool, True, "keep the best of SAM's 3 candidate masks per box; false: SAM's single answer"),
        "crop": Param(bool, False, "crop the cut-out to the objects' bounding box instead of keeping the image size"),
    }
    detector_setting = "grounded-segmentation-detector"

    def __init__(
        self,
        model: str | None = None,
        *,
        detector: str | None = None,
        settings: Settings | None = None,
        pool: ModelPool | None = None,
        device: str | None = None,
    ):
        super().__init__(model, settings=settings, pool=pool, device=device)
        # The detector: given here, or [models] grounded-segmentation-detector, or whatever
        # open-vocabulary-detection is set to use (then both tools share one loaded model).
        detector_id = detector or self.settings.models.get(self.detector_setting) or self.settings.model_for(
            OpenVocabularyDetection.name, OpenVocabularyDetection.default_model
        )
        self.detector = OpenVocabularyDetection(detector_id, settings=self.settings, pool=pool, device=device)

    def available(self) -> Availability:
        mine = super().available()
        if not mine:
            return mine
        theirs = self.detector.available()
        if not theirs:
            return Availability(False, f"its detector: {theirs.reason}")
        return Availability(True, f"{mine.reason}; detector {self.detector.model_id}: {theirs.reason}", mine.source)

    def run(self, sam: Sam, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        image = rgb(inputs["image"])
        labels = parse_labels(inputs["labels"], owner=self.name)
        self.detector.progress_callback = self.progress_callback
        with self.detector.loaded_model() as detector:
            detections = self.detector.detect(
                detector, image, labels, threshold=params["threshold"], text_threshold=params["text_threshold"],
                nms_iou=params["nms_iou"], max_detections=params["max_objects"],
            )
        prompts = [Prompt(label, box) for box, label in zip(detections.boxes, detections.labels)]
        masks = self.segment(sam, image, prompts, multimask=params["multimask"])
        union = masks.label_map > 0
        cutout = image.convert("RGBA")
        alpha = np.where(union, 255, 0).astype(np.uint8)
        cutout.putalpha(Image.fromarray(alpha))
        if params["crop"] and union.any():
            rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
            cutout = cutout.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
        overlay = draw_detections(overlay_masks(image, masks), detections)
        found = {"count": len(masks.labels), "queries": labels, "detector": self.detector.model_id}
        return {
            "masks": OutputValue(masks, {**masks_metadata(masks), "queries": labels, "detector": self.detector.model_id}),
            "detections": OutputValue(detections, found),
            "overlay": OutputValue(overlay, {"count": len(masks.labels)}),
            "cutout": OutputValue(cutout, {**found, "area_fraction": round(float(union.mean()), 5), "cropped": params["crop"]}),
        }

