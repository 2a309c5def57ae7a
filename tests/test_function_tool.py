"""The function form of a tool (@tool): what it derives from a signature, what it refuses, and that the result
runs, plans and validates like a class-form tool."""

from __future__ import annotations

import pickle
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from orchestrator import ArtifactKind, Output, Param, ToolRegistry, tool
from orchestrator.errors import InvalidInputError
from orchestrator.planning.plan import Plan, validate_plan
from orchestrator.storage.media import TimeSeries
from orchestrator.tooling.function_tool import ToolDefinitionError
from orchestrator.tooling.tool import WeightlessTool


@tool
def word_count(text: str, *, lowercase: bool = False, top: int = 3) -> dict:
    """Count how often each word occurs in a text.

    Args:
        text: the text to count words in
        lowercase: count "The" and "the" as one word
        top: how many of the most frequent words to keep,
            most frequent first
    Returns:
        word -> count, the most frequent first
    """
    words = text.lower().split() if lowercase else text.split()
    counts = sorted(((w, words.count(w)) for w in set(words)), key=lambda pair: (-pair[1], pair[0]))
    return dict(counts[:top])


@tool(name="brightest-spot", outputs={"x": Output(ArtifactKind.JSON, "column"), "y": Output(ArtifactKind.JSON, "row")},
      params={"threshold": Param(int, 200, "brightness from 0 to 255 that counts", minimum=0, maximum=255)})
def find_bright(image: Image.Image, mask: Image.Image | None = None, threshold: int = 200,
                channel: Literal["luma", "red"] = "luma") -> dict:
    """Where the brightest pixel of an image is.

    Args:
        image: the picture to look at
        mask: only look where this picture is white
        threshold: ignored below this brightness
        channel: which channel counts as brightness
    """
    grey = image.convert("L") if channel == "luma" else image.getchannel("R")
    pixels = grey.load()
    best = max(((x, y) for x in range(grey.width) for y in range(grey.height)), key=lambda p: pixels[p])
    return {"x": best[0], "y": best[1]}


@tool
def series_peak(series: TimeSeries) -> int:
    """The index of a series' highest value.

    Args:
        series: the time series
    """
    return int(series.values.argmax())


def test_signature_becomes_inputs_params_and_output():
    assert issubclass(word_count, WeightlessTool) and word_count.name == "word-count"
    assert word_count.description == "Count how often each word occurs in a text."
    assert set(word_count.inputs) == {"text"} and word_count.inputs["text"].kind is ArtifactKind.TEXT
    assert word_count.params["lowercase"] == Param(bool, False, 'count "The" and "the" as one word')
    assert word_count.params["top"].description == "how many of the most frequent words to keep, most frequent first"
    assert word_count.outputs["result"].kind is ArtifactKind.JSON
    assert word_count.outputs["result"].description == "word -> count, the most frequent first"
    assert series_peak.inputs["series"].kind is ArtifactKind.TIME_SERIES
    assert find_bright.inputs["image"].required and not find_bright.inputs["mask"].required
    assert find_bright.params["threshold"].maximum == 255  # the params= override keeps its bounds
    assert find_bright.params["channel"].choices == ("luma", "red")


def test_it_runs_through_the_tool_contract_and_checks_params(settings):
    counted = word_count(settings=settings)(text="the cat saw The cat", lowercase=True, top=2)
    assert counted == {"result": {"the": 2, "cat": 2}}
    image = Image.new("RGB", (8, 6))
    image.putpixel((5, 2), (255, 255, 255))
    assert find_bright(settings=settings)(image=image) == {"x": 5, "y": 2}
    with pytest.raises(InvalidInputError, match="threshold"):
        find_bright(settings=settings)(image=image, threshold=999)
    with pytest.raises(InvalidInputError, match="channel"):
        find_bright(settings=settings)(image=image, channel="blue")
    assert series_peak(settings=settings)(series=TimeSeries(np.array([1.0, 5.0, 2.0]))) == {"result": 1}


def test_a_plan_calling_it_validates_like_any_tool():
    registry = ToolRegistry([word_count, series_peak])
    plan = Plan.from_json({"tasks": [{"id": "t1", "tool": "word-count", "args": {"text": "a b a", "top": 1}}]})
    assert validate_plan(plan, registry).order == ("t1",)
    card = registry.get("word-count").card()
    assert card["name"] == "word-count" and "top" in card["params"]
    assert pickle.loads(pickle.dumps(word_count)) is word_count  # process and Ray runners ship it by reference


@pytest.mark.parametrize("define, message", [
    (lambda: tool(_undocumented), "give the tool a docstring"),
    (lambda: tool(_undescribed), "describe argument 'text'"),
    (lambda: tool(_unannotated), "annotate argument 'text'"),
    (lambda: tool(_no_return), "annotate the return type"),
    (lambda: tool(_object_input), "an input must be text, an image"),
    (lambda: tool(_bad_default), "defaults to 'three', which is not int"),
    (lambda: tool(_star_args), "name every argument"),
    (lambda: tool(name="Bad Name")(series_peak.function), "lowercase words joined by '-'"),
    (lambda: tool(params={"nope": Param(int, 1, "x")})(series_peak.function), "does not take"),
])
def test_definitions_that_break_a_rule_are_refused_when_defined(define, message):
    with pytest.raises(ToolDefinitionError, match=message):
        define()


def test_a_multi_output_tool_must_return_every_output(settings):
    @tool(outputs={"a": Output(ArtifactKind.TEXT, "a"), "b": Output(ArtifactKind.TEXT, "b")})
    def halves(text: str) -> dict:
        """Split a text in two.

        Args:
            text: the text
        """
        return {"a": text[: len(text) // 2]}

    with pytest.raises(ToolDefinitionError, match=r"must return a dict with \['a', 'b'\]"):
        halves(settings=settings)(text="abcd")


def _undocumented(text: str) -> str:
    return text


def _undescribed(text: str) -> str:
    """Echo."""
    return text


def _unannotated(text) -> str:
    """Echo.

    Args:
        text: the text
    """
    return text


def _no_return(text: str):
    """Echo.

    Args:
        text: the text
    """
    return text


def _object_input(thing: object) -> str:
    """Echo.

    Args:
        thing: anything
    """
    return str(thing)


def _bad_default(text: str, n: int = "three") -> str:  # type: ignore[assignment]
    """Echo.

    Args:
        text: the text
        n: times
    """
    return text


def _star_args(*texts: str) -> str:
    """Join.

    Args:
        texts: the texts
    """
    return "".join(texts)
