"""Tools that wait, echo, paint or fail on purpose: for measuring and testing the executor.

They go through the same contract, store and runner as real tools (so a benchmark of the executor
measures everything but the model), and are never registered by default: build a
``ToolRegistry(STUB_TOOLS)`` for them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import ToolExecutionError, TransientError
from ..storage.artifacts import ArtifactKind
from .tool import Input, Output, Param, WeightlessTool

_failures_left: dict[str, int] = {}
_failures_lock = threading.Lock()


class StubWait(WeightlessTool):
    name = "stub-wait"
    task = "stub"
    description = "Wait a fixed time, then return a label joined to the texts it was given (a stand-in for a model call)."
    inputs = {name: Input(ArtifactKind.TEXT, f"an earlier result ({name})", required=False) for name in ("a", "b", "c", "d")}
    outputs = {"text": Output(ArtifactKind.TEXT, "the label, then the inputs")}
    params = {
        "seconds": Param(float, 0.05, "how long the call takes", minimum=0.0, maximum=600.0),
        "label": Param(str, "done", "the text this call returns"),
        "fail": Param(bool, False, "fail (permanently) after waiting"),
        "transient_failures": Param(int, 0, "fail transiently this many times per key before succeeding",
                                    minimum=0, maximum=10),
        "key": Param(str, "", "what transient_failures are counted under"),
    }
    default_model = "wait"

    def build_method(self) -> Any:
        return time.sleep

    def run(self, sleep: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        sleep(params["seconds"])
        if params["transient_failures"]:
            with _failures_lock:
                left = _failures_left.setdefault(params["key"], params["transient_failures"])
                if left > 0:
                    _failures_left[params["key"]] = left - 1
                    raise TransientError(f"stub-wait: transient failure ({left} left)")
        if params["fail"]:
            raise ToolExecutionError(f"stub-wait: {params['label']!r} failed on purpose")
        parts = [params["label"]] + [str(inputs[n]) for n in ("a", "b", "c", "d") if inputs.get(n)]
        return {"text": " | ".join(parts)}


class StubPaint(WeightlessTool):
    name = "stub-paint"
    task = "stub"
    description = "Paint a flat image of one colour named in the text (red, green, blue, white, black)."
    inputs = {"text": Input(ArtifactKind.TEXT, "a colour name")}
    outputs = {"image": Output(ArtifactKind.IMAGE, "a 32x32 image of that colour")}
    default_model = "paint"
    _COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "white": (255, 255, 255), "black": (0, 0, 0)}

    def build_method(self) -> Any:
        from PIL import Image

        return Image

    def run(self, image: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        words = str(inputs["text"]).lower().split()
        colour = next((self._COLOURS[w] for w in words if w in self._COLOURS), (128, 128, 128))
        return {"image": image.new("RGB", (32, 32), colour)}


class StubBrighten(WeightlessTool):
    name = "stub-brighten"
    task = "stub"
    description = "Make an image brighter."
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image")}
    outputs = {"image": Output(ArtifactKind.IMAGE, "the brighter image")}
    params = {"amount": Param(int, 60, "how much to add to every channel", minimum=0, maximum=255)}
    default_model = "brighten"

    def build_method(self) -> Any:
        from PIL import ImageChops

        return ImageChops

    def run(self, chops: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        image = inputs["image"].convert("RGB")
        return {"image": chops.add(image, Image.new("RGB", image.size, (params["amount"],) * 3))}




def _colour_name(rgb: tuple[float, float, float]) -> str:
    names = {**StubPaint._COLOURS, "grey": (128, 128, 128)}
    return min(names, key=lambda n: sum((a - b) ** 2 for a, b in zip(names[n], rgb)))


class StubFind(WeightlessTool):
    name = "stub-find"
    task = "stub"
    description = "Find the coloured squares on a white image: one box per square, labelled with its colour."
    inputs = {"image": Input(ArtifactKind.IMAGE, "squares on white")}
    outputs = {"detections": Output(ArtifactKind.DETECTIONS, "one box per square"),
               "summary": Output(ArtifactKind.TEXT, "how many of each colour")}
    default_model = "find"

    def build_method(self) -> Any:
        import numpy

        return numpy

    def run(self, np: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from ..storage.media import Detections

        pixels = np.asarray(inputs["image"].convert("RGB")).astype(int)
        ink = (pixels < 240).any(axis=2)
        seen = np.zeros_like(ink)
        boxes, labels = [], []
        for y, x in zip(*np.nonzero(ink)):  # squares are axis-aligned, so a flood along rows and columns finds each
            if seen[y, x]:
                continue
            x1 = x
            while x1 + 1 < ink.shape[1] and ink[y, x1 + 1]:
                x1 += 1
            y1 = y
            while y1 + 1 < ink.shape[0] and ink[y1 + 1, x]:
                y1 += 1
            seen[y:y1 + 1, x:x1 + 1] = True
            boxes.append((float(x), float(y), float(x1 + 1), float(y1 + 1)))
            labels.append(_colour_name(tuple(pixels[y:y1 + 1, x:x1 + 1].reshape(-1, 3).mean(axis=0))))
        counts = {label: labels.count(label) for label in dict.fromkeys(labels)}
        summary = ", ".join(f"{n} {label}" for label, n in counts.items()) or "nothing"
        return {"detections": Detections(boxes, labels, [1.0] * len(boxes), image_size=inputs["image"].size),
                "summary": summary}


class StubName(WeightlessTool):
    name = "stub-name"
    task = "stub"
    description = "Name the dominant colour of an image."
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image")}
    outputs = {"text": Output(ArtifactKind.TEXT, "a colour name")}
    default_model = "name"

    def build_method(self) -> Any:
        from PIL import ImageStat

        return ImageStat

    def run(self, stat: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return {"text": _colour_name(tuple(stat.Stat(inputs["image"].convert("RGB")).mean))}


STUB_TOOLS = (StubWait, StubPaint, StubBrighten, StubFind, StubName)
