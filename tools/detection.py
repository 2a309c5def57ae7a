"""Object detection: a closed set of classes (DETR family) or any named objects (OWLv2, Grounding DINO)."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import InvalidInputError, ToolUnavailableError
from orchestrator.models.resolve import ModelSource
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import Detections
from orchestrator.storage.render import draw_detections
from orchestrator.tooling.tool import Input, Output, OutputValue, Param, Tool

from .images import rgb
from .torch_runtime import torch_dtype

MAX_LABELS = 64
# Ranking more candidates than this before NMS only costs time: real scenes hold far fewer objects.
_MAX_NMS_CANDIDATES = 1000


def parse_labels(text: str, *, owner: str, name: str = "labels") -> list[str]:
    """'cat, red car. person' -> ['cat', 'red car', 'person'] (separators: , . ; and new lines; duplicates dropped)."""
    labels: list[str] = []
    seen: set[str] = set()
    for part in re.split(r"[,.;\n]+", text):
        label = " ".join(part.split())
        if label and label.lower() not in seen:
            seen.add(label.lower())
            labels.append(label)
    if not labels:
        raise InvalidInputError(
            f"tool {owner!r}: input {name!r} names no object; give what to look for, separated by commas, e.g. 'cat, red car'"
        )
    if len(labels) > MAX_LABELS:
        raise InvalidInputError(f"tool {owner!r}: input {name!r} names {len(labels)} objects; at most {MAX_LABELS} at a time")
    return labels


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, best first; a box is dropped when it overlaps a better one of its group by more
    than ``iou_threshold`` (intersection over union). torchvision's NMS is not a dependency, hence this one."""
    order = np.argsort(-scores, kind="stable")[:_MAX_NMS_CANDIDATES]
    if iou_threshold >= 1.0 or order.size == 0:
        return order
    b = boxes[order].astype(np.float64)
    areas = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    x0 = np.maximum(b[:, None, 0], b[None, :, 0])
    y0 = np.maximum(b[:, None, 1], b[None, :, 1])
    x1 = np.minimum(b[:, None, 2], b[None, :, 2])
    y1 = np.minimum(b[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = areas[:, None] + areas[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    same_group = groups[order][:, None] == groups[order][None, :]
    suppress = (iou > iou_threshold) & same_group
    kept: list[int] = []
    removed = np.zeros(order.size, dtype=bool)
    for i in range(order.size):
        if removed[i]:
            continue
        kept.append(i)
        removed |= suppress[i]
    return order[kept]


def finish_detections(
    boxes: Any, scores: Any, labels: list[str], image_size: tuple[int, int], *, nms_iou: float, max_detections: int
) -> Detections:
    """Clip boxes to the image, drop empty ones, run per-label NMS and keep the best ``max_detections``."""
    width, height = image_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    # Boxes may reach past the image (OWLv2 sees a padded square, DETR boxes overhang edges); clip them.
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(scores)
    index = np.flatnonzero(valid)
    group_of = {label: g for g, label in enumerate(dict.fromkeys(labels))}
    groups = np.array([group_of[labels[i]] for i in index], dtype=np.int64)
    kept = index[non_max_suppression(boxes[index], scores[index], groups, nms_iou)][:max_detections]
    return Detections(
        [tuple(float(v) for v in boxes[i]) for i in kept],
        [labels[i] for i in kept],
        [float(scores[i]) for i in kept],
        image_size=image_size,
    )


def detection_outputs(image: Any, detections: Detections, metadata: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for label in detections.labels:
        counts[label] = counts.get(label, 0) + 1
    return {
        "detections": OutputValue(detections, {**metadata, "count": len(detections), "counts": counts}),
        "overlay": OutputValue(draw_detections(image, detections), {"count": len(detections)}),
        "summary": OutputValue(count_summary(counts), {"count": len(detections)}),
    }


# COCO / LVIS style labels whose plural no suffix rule makes.
_IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
                      "knife": "knives", "leaf": "leaves", "wolf": "wolves", "shelf": "shelves", "foot": "feet",
                      "tooth": "teeth", "goose": "geese", "sheep": "sheep", "deer": "deer", "fish": "fish",
                      "broccoli": "broccoli", "scissors": "scissors", "skis": "skis", "glasses": "glasses"}


def plural(label: str) -> str:
    """The plural of a detector label: 'bus' -> 'buses', 'traffic light' -> 'traffic lights', 'person' -> 'people'."""
    head, _, last = label.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[lower]
        word = word.capitalize() if last[:1].isupper() else word
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def count_summary(counts: dict[str, int]) -> str:
    """'Found 2 dogs and 1 person.': what was found, most frequent first, as a sentence a chained text
    tool can read (or speak) as it is."""
    if not counts:
        return "No objects found."
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{n} {plural(label) if n > 1 else label}" for label, n in ordered]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Found {listed}."


# ------------------------------------------------------------------------------------------ DETR with a timm ResNet


def checkpoint_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint folder, read from the file headers (no weights loaded)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        files = []
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    if not shapes and (folder / "pytorch_model.bin").exists():
        import torch

        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
        shapes = {key: tuple(value.shape) for key, value in state.items()}
    return shapes


TIMM_STEM = "conv_encoder.model.conv1.weight"  # a timm ResNet's first conv inside a DETR-family checkpoint


def timm_resnet_as_transformers(shapes: dict[str, tuple[int, ...]], config: Any) -> tuple[Any, dict[str, str]]:
    """Rewrite a DETR config whose backbone is a timm ResNet into one with transformers' own ResNet, plus the
    weight renaming from timm's names (conv1, layer1.0.conv1, downsample.0, ...) to transformers' ones.

    facebook/detr-resnet-50 (and -101) on the hub's main branch say ``use_timm_backbone: true``;
    transformers 5 then builds a TimmBackbone, which needs the timm package. The two ResNets compute
    the same function (7x7 stem + max pool, bottlenecks with the stride on the 3x3 conv, 1x1
    projection shortcuts), so the weights only need new names (checked: identical feature maps and
    detections for timm 1.0's resnet50 and resnet18). The architecture is read from the checkpoint's
    tensor shapes (``shapes``), never guessed from the backbone's name.
    """
    from transformers import ResNetConfig

    backbone = config.backbone_config
    name = str(getattr(backbone, "backbone", None) or "resnet")
    needs_timm = (
        f"this checkpoint's backbone is timm's {name!r}, which transformers runs through the timm package "
        "(pip install timm)"
    )
    if getattr(config, "dilation", False):
        raise ToolUnavailableError(f"{needs_timm}; its dilated (DC5) ResNet has no timm-free equivalent")
    stems = [key for key in shapes if key.endswith(TIMM_STEM)]
    if not name.startswith("resnet") or len(stems) != 1 or len(shapes[stems[0]]) != 4 or shapes[stems[0]][2:] != (7, 7):
        raise ToolUnavailableError(f"{needs_timm}; only plain ResNets (7x7 stem) can be loaded without it")
    prefix = stems[0][: -len("conv1.weight")]
    depths, hidden_sizes = [], []
    bottleneck = f"{prefix}layer1.0.conv3.weight" in shapes
    while f"{prefix}layer{len(depths) + 1}.0.conv1.weight" in shapes:
        stage = len(depths) + 1
        blocks = 0
        while f"{prefix}layer{stage}.{blocks}.conv1.weight" in shapes:
            blocks += 1
        depths.append(blocks)
        last = f"{prefix}layer{stage}.0.conv{3 if bottleneck else 2}.weight"
        hidden_sizes.append(shapes[last][0])
        width = shapes[f"{prefix}layer{stage}.0.conv1.weight"][0]
        # transformers' bottleneck is 4x narrower inside than outside; wide ResNets are not.
        if bottleneck and width * 4 != hidden_sizes[-1]:
            raise ToolUnavailableError(f"{needs_timm}; its bottleneck width {width} is not a quarter of {hidden_sizes[-1]}")
    if not depths:
        raise ToolUnavailableError(f"{needs_timm}; no ResNet stages were found in its weights")
    # Both number the stem 0 and stage i as i (timm: layer i; transformers: "stage{i}").
    out_indices = [int(i) for i in (getattr(backbone, "out_indices", None) or range(1, len(depths) + 1))]
    resnet = ResNetConfig(
        num_channels=shapes[stems[0]][1],
        embedding_size=shapes[stems[0]][0],
        hidden_sizes=hidden_sizes,
        depths=depths,
        layer_type="bottleneck" if bottleneck else "basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
        out_features=[f"stage{i}" for i in out_indices],
    )
    config.backbone_config = resnet
    model = r"conv_encoder\.model\."
    target = "conv_encoder.model."
    mapping = {
        model + r"conv1\.": target + "embedder.embedder.convolution.",
        model + r"bn1\.": target + "embedder.embedder.normalization.",
    }
    for stage in range(1, len(depths) + 1):
        layers = f"{target}encoder.stages.{stage - 1}.layers.\\1."
        for i in (1, 2, 3) if bottleneck else (1, 2):
            mapping[model + rf"layer{stage}\.(\d+)\.conv{i}\."] = f"{layers}layer.{i - 1}.convolution."
            mapping[model + rf"layer{stage}\.(\d+)\.bn{i}\."] = f"{layers}layer.{i - 1}.normalization."
        mapping[model + rf"layer{stage}\.(\d+)\.downsample\.0\."] = f"{layers}shortcut.convolution."
        mapping[model + rf"layer{stage}\.(\d+)\.downsample\.1\."] = f"{layers}shortcut.normalization."
    return config, mapping


@dataclass
class _ClosedSetDetector:
    module: Any
    processor: Any
    labels: dict[int, str]
    device: str
    dtype: Any


class ObjectDetection(Tool):
    name = "object-detection"
    task = "object-detection"
    description = (
        "Find and box the everyday objects in a photo (the 80 COCO classes by default: person, car, dog, cup, "
        "chair, ...), each with a label and a confidence; also draws the boxes on the image. For objects outside "
        "that list, or described in words ('red car', 'coffee stain'), use open-vocabulary-detection."
    )
    inputs = {"image": Input(ArtifactKind.IMAGE, "the photo to search")}
    outputs = {
        "detections": Output(ArtifactKind.DETECTIONS, "one box per object found, with its class name and score"),
        "overlay": Output(ArtifactKind.IMAGE, "the image with the boxes and labels drawn on it"),
        "summary": Output(ArtifactKind.TEXT, "what was found, in words: counts per label, e.g. 'Found 2 dogs and 1 person.'"),
    }
    params = {
        "threshold": Param(float, 0.5, "lowest confidence kept (DETR's model card uses 0.9 for few, sure boxes)",
                           minimum=0.01, maximum=1.0),
        "max_detections": Param(int, 100, "most boxes returned, best first", minimum=1, maximum=300),
        "classes": Param(str, None, "only keep these class names, comma-separated (e.g. 'person, car'); "
                         "they must be classes the model knows", nullable=True),
    }
    default_model = "facebook/detr-resnet-50"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def load(self, source: ModelSource, device: str) -> Any:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForObjectDetection,
        )

        path = str(source.path)
        dtype = torch_dtype(device)
        config = AutoConfig.from_pretrained(path)
        options: dict[str, Any] = {}
        backbone_type = getattr(getattr(config, "backbone_config", None), "model_type", None)
        if backbone_type == "timm_backbone" and importlib.util.find_spec("timm") is None:
            config, mapping = timm_resnet_as_transformers(checkpoint_shapes(source.path), config)
            options = {"config": config, "key_mapping": mapping}
        module, info = AutoModelForObjectDetection.from_pretrained(path, dtype=dtype, output_loading_info=True, **options)
        missing = [key for key in info.get("missing_keys", []) if "backbone" in key]
        if options and missing:
            # A renaming that missed would leave a randomly initialised backbone: refuse rather than detect noise.
            raise ToolUnavailableError(
                f"tool {self.name!r}: the timm ResNet weights of {source.model_id!r} did not all map onto transformers' "
                f"ResNet ({len(missing)} missing, e.g. {missing[0]}); install timm to load this checkpoint"
            )
        processor = AutoImageProcessor.from_pretrained(path)
        labels = {int(i): str(label) for i, label in module.config.id2label.items()}
        return _ClosedSetDetector(module.eval().to(device), processor, labels, device, dtype)

    def _wanted_classes(self, classes: str | None, known: dict[int, str]) -> set[str] | None:
        if classes is None:
            return None
        by_lower = {label.lower(): label for label in known.values()}
        wanted = parse_labels(classes, owner=self.name, name="classes")
        unknown = [label for label in wanted if label.lower() not in by_lower]
        if unknown:
            sample = ", ".join(sorted(by_lower.values())[:20])
            raise InvalidInputError(
                f"tool {self.name!r}: param 'classes' names {', '.join(map(repr, unknown))}, which this model does not "
                f"detect; it knows {len(by_lower)} classes, e.g. {sample}. For other objects use open-vocabulary-detection"
            )
        return {by_lower[label.lower()] for label in wanted}

    def run(self, detector: _ClosedSetDetector, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        wanted = self._wanted_classes(params["classes"], detector.labels)
        image = rgb(inputs["image"])
        encoded = detector.processor(images=image, return_tensors="pt")
        encoded = {k: (v.to(detector.device, detector.dtype) if v.is_floating_point() else v.to(detector.device))
                   for k, v in encoded.items()}
        with torch.inference_mode():
            outputs = detector.module(**encoded)
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        result = detector.processor.post_process_object_detection(
            outputs, threshold=params["threshold"], target_sizes=[(image.height, image.width)]
        )[0]
        labels = [detector.labels.get(int(i), str(int(i))) for i in result["labels"]]
        keep = [i for i, label in enumerate(labels) if wanted is None or label in wanted]
        detections = finish_detections(
            result["boxes"].cpu().numpy()[keep], result["scores"].cpu().numpy()[keep], [labels[i] for i in keep],
            image.size, nms_iou=1.0, max_detections=params["max_detections"],  # DETR predicts a set: no duplicates to suppress
        )
        return detection_outputs(image, detections, {"threshold": params["threshold"]})


# ------------------------------------------------------------------------------------------ open vocabulary

OWL_TYPES = ("owlv2", "owlvit")
GROUNDING_DINO_TYPES = ("grounding-dino", "mm-grounding-dino")
# What each family's authors use: OWLv2's model card thresholds at 0.1; Grounding DINO's README uses
# box 0.35 / text 0.25.
DEFAULT_THRESHOLDS = {"owl": 0.1, "grounding-dino": 0.35}


@dataclass
class OpenVocabularyDetector:
    module: Any
    processor: Any
    family: str  # "owl" or "grounding-dino"
    device: str
    dtype: Any
    max_text_tokens: int


class OpenVocabularyDetection(Tool):
    name = "open-vocabulary-detection"
    task = "zero-shot-object-detection"
    description = (
        "Find and box any objects you name in words, e.g. 'red car, traffic light, dog on a leash' (names "
        "separated by commas), each with the name it matched and a score; also draws the boxes on the image. "
        "Needs the image and the list of things to look for."
    )
    inputs = {
        "image": Input(ArtifactKind.IMAGE, "the photo to search"),
        "labels": Input(ArtifactKind.TEXT, "what to look for: names or short phrases separated by commas or periods"),
    }
    outputs = {
        "detections": Output(ArtifactKind.DETECTIONS, "one box per object found, labelled with the name it matched"),
        "overlay": Output(ArtifactKind.IMAGE, "the image with the boxes and labels drawn on it"),
        "summary": Output(ArtifactKind.TEXT, "what was found, in words: counts per label, e.g. 'Found 2 dogs and 1 person.'"),
    }
    params = {
        "threshold": Param(float, None, "lowest box confidence kept; empty: the model family's usual value "
                           "(OWLv2 0.1, Grounding DINO 0.35)", minimum=0.01, maximum=1.0, nullable=True),
        "text_threshold": Param(float, 0.25, "Grounding DINO only: how strongly a box must match the words of a name "
                                "to be given that name", minimum=0.01, maximum=1.0),
        "nms_iou": Param(float, 0.5, "boxes of one name overlapping a better one by more than this are dropped "
                         "(1 keeps all)", minimum=0.05, maximum=1.0),
        "max_detections": Param(int, 100, "most boxes returned, best first", minimum=1, maximum=300),
    }
    default_model = "google/owlv2-base-patch16-ensemble"
    requires = ("torch", "transformers")
    uses_torch_device = True

    def load(self, source: ModelSource, device: str) -> OpenVocabularyDetector:
        from transformers import (
            AutoConfig,
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
        )

        path = str(source.path)
        config = AutoConfig.from_pretrained(path)
        if config.model_type in OWL_TYPES:
            family = "owl"
            max_text_tokens = int(config.text_config.max_position_embeddings)
        elif config.model_type in GROUNDING_DINO_TYPES:
            family = "grounding-dino"
            max_text_tokens = int(config.max_text_len)
        else:
            raise ToolUnavailableError(
                f"tool {self.name!r}: {source.model_id!r} is a {config.model_type!r} model; this tool runs OWLv2, "
                "OWL-ViT and Grounding DINO checkpoints"
            )
        dtype = torch_dtype(device)
        module = AutoModelForZeroShotObjectDetection.from_pretrained(path, dtype=dtype).eval().to(device)
        processor = AutoProcessor.from_pretrained(path)
        return OpenVocabularyDetector(module, processor, family, device, dtype, max_text_tokens)

    def run(self, detector: OpenVocabularyDetector, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        image = rgb(inputs["image"])
        labels = parse_labels(inputs["labels"], owner=self.name)
        threshold = params["threshold"] if params["threshold"] is not None else DEFAULT_THRESHOLDS[detector.family]
        detections = self.detect(
            detector, image, labels, threshold=threshold, text_threshold=params["text_threshold"],
            nms_iou=params["nms_iou"], max_detections=params["max_detections"],
        )
        return detection_outputs(image, detections, {"queries": labels, "threshold": threshold, "family": detector.family})

    # ------------------------------------------------------------------ public: also used by grounded-segmentation

    def detect(
        self,
        detector: OpenVocabularyDetector,
        image: Any,
        labels: list[str],
        *,
        threshold: float | None = None,
        text_threshold: float = 0.25,
        nms_iou: float = 0.5,
        max_detections: int = 100,
    ) -> Detections:
        """Boxes of ``labels`` in ``image`` (pixel coordinates of ``image``), best first."""
        image = rgb(image)
        if threshold is None:
            threshold = DEFAULT_THRESHOLDS[detector.family]
        if detector.family == "owl":
            boxes, scores, names = self._owl(detector, image, labels, threshold)
        else:
            boxes, scores, names = self._grounding_dino(detector, image, labels, threshold, text_threshold)
        return finish_detections(boxes, scores, names, image.size, nms_iou=nms_iou, max_detections=max_detections)

    def _encode(self, detector: OpenVocabularyDetector, encoded: Any) -> dict[str, Any]:
        return {k: (v.to(detector.device, detector.dtype) if v.is_floating_point() else v.to(detector.device))
                for k, v in encoded.items()}

    def _owl(self, detector: OpenVocabularyDetector, image: Any, labels: list[str], threshold: float):
        import torch

        # Each query is encoded on its own (up to 16 CLIP tokens); longer ones are cut rather than refused.
        encoded = detector.processor(text=[labels], images=image, return_tensors="pt", truncation=True,
                                     max_length=detector.max_text_tokens)
        with torch.inference_mode():
            outputs = detector.module(**self._encode(detector, encoded))
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        # OWLv2 pads the image to a square (bottom and right) before resizing; its post-processing scales the
        # boxes by the longer side for that reason, so (height, width) of the original gives original pixels.
        result = detector.processor.post_process_grounded_object_detection(
            outputs, threshold=threshold, target_sizes=[(image.height, image.width)], text_labels=[labels]
        )[0]
        names = [labels[int(i)] for i in result["labels"]]
        return result["boxes"].cpu().numpy(), result["scores"].cpu().numpy(), names

    def _grounding_dino(self, detector: OpenVocabularyDetector, image: Any, labels: list[str], threshold: float,
                        text_threshold: float):
        import torch

        # The model card's prompt: lower-case phrases, each ending with a period ("a cat. a remote control.").
        spans, parts, position = [], [], 0
        for label in labels:
            phrase = label.lower()
            spans.append((position, position + len(phrase)))
            parts.append(phrase + ".")
            position += len(phrase) + 2
        caption = " ".join(parts)
        tokens = detector.processor.tokenizer(caption, return_offsets_mapping=True)
        if len(tokens["input_ids"]) > detector.max_text_tokens:
            raise InvalidInputError(
                f"tool {self.name!r}: input 'labels' is {len(tokens['input_ids'])} tokens long; Grounding DINO reads at most "
                f"{detector.max_text_tokens}: name fewer objects or use shorter phrases"
            )
        owner = np.full(len(tokens["input_ids"]), -1)
        for t, (start, end) in enumerate(tokens["offset_mapping"]):
            if end > start:
                for j, (first, last) in enumerate(spans):
                    if first <= start and end <= last:
                        owner[t] = j
        encoded = detector.processor(images=image, text=caption, return_tensors="pt")
        if encoded["input_ids"][0].tolist() != list(tokens["input_ids"]):
            raise InvalidInputError(f"tool {self.name!r}: the tokenizer split the caption {caption!r} inconsistently")
        with torch.inference_mode():
            outputs = detector.module(**self._encode(detector, encoded))
        probs = outputs.logits[0, :, : len(owner)].float().sigmoid().cpu().numpy()  # (queries, tokens)
        named = owner >= 0
        probs = np.where(named[None, :], probs, 0.0)  # [CLS], [SEP] and the periods name nothing
        box_scores = probs.max(axis=1)
        # As in Grounding DINO's own post-processing: a box counts when its best token passes the box threshold,
        # and it is named by the tokens passing the text threshold (here: the name owning the strongest of them).
        per_label = np.stack([np.where(owner == j, probs, 0.0).max(axis=1) for j in range(len(labels))], axis=1)
        best = per_label.argmax(axis=1)
        keep = (box_scores > threshold) & (per_label[np.arange(len(best)), best] > text_threshold)
        width, height = image.size
        cx, cy, w, h = outputs.pred_boxes[0].float().cpu().numpy().T
        boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], axis=1)
        return boxes[keep], box_scores[keep], [labels[j] for j in best[keep]]
