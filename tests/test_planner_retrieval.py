"""Demo selection, tool shortlists and clause-to-tool hints for the planner prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator import ToolRegistry
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.planning.planner_retrieval import (
    DemoSelector,
    lexical_embedder,
    load_demos,
    request_clauses,
    shortlist_tools,
)


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


def test_request_clauses_split_steps_but_keep_quotes_whole():
    clauses = request_clauses("I have an image 'a.jpg'. Please segment it, then caption it and read 'one, two. three' aloud")
    assert clauses == ["I have an image 'a.jpg'", "Please segment it", "caption it", "read 'one, two. three' aloud"]
    assert request_clauses("Transcribe x.wav after that summarize it") == ["Transcribe x.wav", "summarize it"]
    assert request_clauses("ok") == []


def test_lexical_embedder_is_unit_length_and_ranks_shared_words():
    embed = lexical_embedder()
    vectors = embed(["transcribe the audio", "transcribe this audio file", "draw a red car", ""])
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0) and not vectors[3].any()
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_shipped_phrases_name_only_registered_tools(registry):
    from orchestrator.planning.planner_retrieval import PHRASES_FILE

    phrases = json.loads(PHRASES_FILE.read_text(encoding="utf-8"))
    assert set(k for k in phrases if not k.startswith("_")) <= set(registry.names())


def test_demo_selection_prefers_similar_requests_and_known_tools(registry):
    selector = DemoSelector(load_demos(), lexical_embedder())
    names = set(registry.names())
    chosen = selector.select("Transcribe the recording memo.wav and summarize the transcript",
                             [ArtifactKind.AUDIO], names, 3)
    assert len(chosen) == 3 and "speech-recognition" in chosen[-1].tools  # the closest comes last
    only_ocr = selector.select("read the text in the picture", [ArtifactKind.IMAGE], {"ocr"}, 5)
    assert only_ocr and all(set(d.tools) <= {"ocr"} for d in only_ocr)  # demos with unknown tools are never shown
    assert selector.select("anything", [], names, 0) == []


def test_shortlist_keeps_close_tools_and_those_taking_the_attached_kind(registry):
    tools = list(registry)
    picked = shortlist_tools("translate this sentence into German", tools, [ArtifactKind.TIME_SERIES],
                             lexical_embedder(), size=5)
    names = [tool.name for tool in picked]
    assert "translation" in names and "time-series-description" in names
    # Every tool taking a time series is kept (time-series-description, native-chat), beside the 5 closest.
    takers = [t.name for t in tools if ArtifactKind.TIME_SERIES in {spec.kind for spec in t.inputs.values()}]
    assert set(takers) <= set(names) and len(takers) >= 2
    assert len(picked) <= 5 + len(takers) and names == [t.name for t in tools if t.name in names]  # registry order kept
    assert shortlist_tools("x", tools, [], lexical_embedder(), size=100) == tools


def test_a_question_to_be_said_out_loud_is_two_steps():
    assert request_clauses("Could you say out loud how much the sun cream cost?") == \
        ["how much the sun cream cost", "say it out loud"]
    assert request_clauses("read me the total out loud") == ["read me the total", "say it out loud"]
    assert request_clauses("read the text aloud") == ["read the text aloud"]  # one step: speak the text


def test_demo_vectors_are_kept_on_disk_for_an_embedder_that_names_its_weights(tmp_path):
    from orchestrator.planning import planner_retrieval
    from orchestrator.config import Settings, current_settings, use_settings

    session_settings = current_settings()
    settings = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})
    use_settings(settings)
    try:
        _check_demo_vector_cache(planner_retrieval, settings)
    finally:
        use_settings(session_settings)


def _check_demo_vector_cache(planner_retrieval, settings):

    calls = []

    def embed(texts):
        calls.append(len(texts))
        return np.ones((len(texts), 3), dtype=np.float32)

    embed.cache_key = "example-embedder@/weights"
    first = planner_retrieval.cached_vectors(embed, ["a", "b"], "demos")
    again = planner_retrieval.cached_vectors(embed, ["a", "b"], "demos")
    assert calls == [2] and np.array_equal(first, again)
    planner_retrieval.cached_vectors(embed, ["a", "c"], "demos")  # other texts: embedded again
    assert calls == [2, 2] and len(list(settings.cache_dir.glob("demos-*.npy"))) == 2

    def plain(texts):  # an embedder without a name for its weights is never cached
        calls.append(len(texts))
        return np.ones((len(texts), 3), dtype=np.float32)

    planner_retrieval.cached_vectors(plain, ["a", "b"], "demos")
    assert calls == [2, 2, 2]
