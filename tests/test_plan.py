"""Plans: parsing, validation of every kind of mistake an LLM makes, and the plan JSON Schema."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest
from PIL import Image

from orchestrator import AudioClip, InvalidInputError, ToolRegistry
from orchestrator.planning.plan import OutputReference, Plan, PlanError, plan_json_schema, validate_plan


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


def plan(*tasks, answer=None) -> Plan:
    return Plan.from_json({"tasks": list(tasks), **({"answer": answer} if answer is not None else {})})


def problems_of(error: PlanError) -> list[str]:
    return [str(p) for p in error.problems]


def test_a_valid_chain_resolves_references_and_orders_tasks(registry, store):
    image = store.put_value("image", Image.new("RGB", (32, 32)), session="s")
    chain = plan(
        {"id": "t3", "tool": "text-to-speech", "args": {"text": "<t2>", "speed": 1.2}},
        {"id": "t1", "tool": "ocr", "args": {"image": image.id}},
        {"id": "t2", "tool": "summarization", "args": {"text": "<t1.text>"}},
    )
    validated = validate_plan(chain, registry, store=store, session="s")
    assert validated.order == ("t1", "t2", "t3")
    assert validated.references[("t3", "text")] == OutputReference("t2", "summary")  # the only text output
    assert validated.dependencies["t3"] == {"t2"} and validated.dependencies["t1"] == frozenset()


def test_a_direct_answer_needs_no_tasks(registry):
    assert validate_plan(plan(answer="Paris is the capital of France."), registry).order == ()
    with pytest.raises(PlanError, match="needs tasks, or an answer"):
        validate_plan(plan(), registry)


def test_every_mistake_is_reported_with_its_task_and_argument(registry, store):
    audio = store.put_value("audio", AudioClip(np.zeros(1600, np.float32), 16_000), session="s")
    other_session = store.put_value("image", Image.new("RGB", (8, 8)), session="someone-else")
    bad = plan(
        {"id": "t1", "tool": "speech-recogniton", "args": {"audio": audio.id}},                     # misspelt tool
        {"id": "t2", "tool": "image-classification", "args": {"image": audio.id}},                  # audio to an image input
        {"id": "t3", "tool": "image-classification", "args": {"image": other_session.id, "top_k": 500}},
        {"id": "t4", "tool": "ocr", "args": {"image": "photo.jpg"}},                                # invented file
        {"id": "t5", "tool": "text-to-speech", "args": {"text": "<t9>", "voice": "x"}},             # missing task, bad arg
        {"id": "t6", "tool": "image-classification", "args": {"image": "<t7>"}},                    # text output to image
        {"id": "t7", "tool": "ocr", "args": {"image": "<t6.labels>"}},
        {"id": "t8", "tool": "sentence-similarity", "args": {"source": "<t7>"}},                    # missing input
        {"id": "t2", "tool": "ocr", "args": {"image": "image-0123456789abcdef"}},                   # duplicate id
    )
    with pytest.raises(PlanError) as caught:
        validate_plan(bad, registry, store=store, session="s")
    found = "\n".join(problems_of(caught.value))
    assert "task 't1': no tool named 'speech-recogniton'; did you mean speech-recognition" in found
    assert f"task 't2', argument 'image': needs image, but {audio.id} is audio" in found
    assert f"task 't3', argument 'image': no input artifact {other_session.id!r} in this session" in found
    assert "task 't3', argument 'top_k': must be at most 50" in found
    assert "task 't4', argument 'image': needs image: an input artifact id or a reference" in found
    assert "task 't5', argument 'text': refers to task 't9', which is not in this plan" in found
    assert "task 't5', argument 'voice': 'text-to-speech' has no such argument" in found
    assert "task 't6', argument 'image': needs image, but task 't7' (ocr) produces text (text), regions (detections)" in found
    assert "task 't7', argument 'image': needs image, but <t6.labels> is json" in found
    assert "task 't8', argument 'sentences': 'sentence-similarity' needs this input (text)" in found
    assert "task 't2': two tasks have this id" in found


def test_cycles_are_found_and_named(registry):
    cyclic = plan(
        {"id": "a", "tool": "summarization", "args": {"text": "<c>"}},
        {"id": "b", "tool": "summarization", "args": {"text": "<a>"}},
        {"id": "c", "tool": "summarization", "args": {"text": "<b>"}},
        {"id": "d", "tool": "text-to-speech", "args": {"text": "fine"}},
    )
    with pytest.raises(PlanError, match=r"cycle: (a -> c -> b -> a|b -> a -> c -> b|c -> b -> a -> c)"):
        validate_plan(cyclic, registry)
    with pytest.raises(PlanError, match="cannot take its own output"):
        validate_plan(plan({"id": "a", "tool": "summarization", "args": {"text": "<a>"}}), registry)
    with pytest.raises(PlanError, match=r"cycle: a -> a"):
        validate_plan(plan({"id": "a", "tool": "summarization", "args": {"text": "x"}, "deps": ["a"]}), registry)


def test_ambiguous_references_must_name_the_output(registry):
    ambiguous = plan(
        {"id": "t1", "tool": "sentence-similarity", "args": {"source": "a", "sentences": "b\nc"}},
        {"id": "t2", "tool": "image-classification", "args": {"image": "image-0123456789abcdef"}},
        {"id": "t3", "tool": "translation", "args": {"text": "<t2>"}},
    )
    validate_plan(ambiguous, registry)  # t2 has one text output (label): fine
    doubled = plan(
        {"id": "t1", "tool": "ocr", "args": {"image": "image-0123456789abcdef"}},
        {"id": "t2", "tool": "image-classification", "args": {"image": "<t1.regions>"}},
    )
    with pytest.raises(PlanError, match=r"needs image, but <t1.regions> is detections"):
        validate_plan(doubled, registry)
    with pytest.raises(PlanError, match="is not a valid reference"):
        validate_plan(plan({"id": "t1", "tool": "summarization", "args": {"text": "<t1.>"}}), registry)


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "must be a JSON object"),
        ({"tasks": {}}, "'tasks' must be a list"),
        ({"tasks": [], "steps": []}, "unexpected key"),
        ({"tasks": ["t1"]}, "must be an object"),
        ({"tasks": [{"id": "1 2", "tool": "ocr"}]}, "id must be a short name"),
        ({"tasks": [{"id": "t1", "tool": "ocr", "args": []}]}, "'args' must be an object"),
        ({"tasks": [{"id": "t1", "tool": "ocr", "deps": "t0"}]}, "'deps' must be a list"),
        ({"tasks": [{"id": "t1", "tool": "ocr", "run": True}]}, "unexpected key"),
        ({"tasks": [{"id": f"t{i}", "tool": "ocr"} for i in range(65)]}, "at most 64 tasks"),
        ({"tasks": [], "answer": 42}, "'answer' must be text"),
    ],
)
def test_malformed_plans_are_refused_clearly(raw, message):
    with pytest.raises(InvalidInputError, match=message):
        Plan.from_json(raw)


def test_plan_json_schema_accepts_valid_plans_and_refuses_invented_tools(registry):
    schema = plan_json_schema(registry)
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {"tasks": [
        {"id": "t1", "tool": "speech-recognition", "args": {"audio": "audio-0123456789abcdef", "beam_size": 2}},
        {"id": "t2", "tool": "text-to-speech", "args": {"text": "<t1.text>"}, "deps": ["t1"]},
    ]}
    jsonschema.validate(good, schema)
    for bad in (
        {"tasks": [{"id": "t1", "tool": "make-coffee", "args": {}}]},
        {"tasks": [{"id": "t1", "tool": "image-classification", "args": {"image": "audio-0123456789abcdef"}}]},
        {"tasks": [{"id": "t1", "tool": "speech-recognition", "args": {"audio": "audio-0123456789abcdef", "beam_size": 99}}]},
        {"tasks": [{"id": "t1", "tool": "ocr", "args": {}}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert Plan.from_json(good).to_json() == {**good, "tasks": [{**good["tasks"][0], "deps": []}, good["tasks"][1]]}


def test_artifact_kinds_are_checked_from_the_id_even_without_a_store(registry):
    wrong = plan({"id": "t1", "tool": "image-classification", "args": {"image": "audio-0123456789abcdef"}})
    with pytest.raises(PlanError, match="needs image, but audio-0123456789abcdef is audio"):
        validate_plan(wrong, registry)
    validate_plan(plan({"id": "t1", "tool": "image-classification", "args": {"image": "image-0123456789abcdef"}}), registry)
