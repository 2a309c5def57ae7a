"""The tool contract, the registry, model resolution and run_tool, without real weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image

from orchestrator import (
    ArtifactKind,
    AudioClip,
    Input,
    InvalidInputError,
    ModelNotAvailableError,
    ModelPool,
    Output,
    OutputValue,
    Param,
    Tool,
    ToolExecutionError,
    ToolNotFoundError,
    ToolRegistry,
    run_tool,
)
from orchestrator.tooling import registry as registry_module
from orchestrator.models.resolve import HubLocation, resolve_model
from tools import BUILTIN_TOOLS


class Brighten(Tool):
    """A small real tool: scales an image's brightness; its "model" is a JSON file with a default gain."""

    name = "brighten"
    task = "image-to-image"
    description = "Make an image brighter."
    inputs = {"image": Input(ArtifactKind.IMAGE, "the image"), "note": Input(ArtifactKind.TEXT, "a note", required=False)}
    outputs = {"image": Output(ArtifactKind.IMAGE, "the brighter image"), "report": Output(ArtifactKind.JSON, "what was done")}
    params = {
        "gain": Param(float, 1.5, "brightness factor", minimum=0.1, maximum=4.0),
        "mode": Param(str, "linear", "how to brighten", choices=("linear", "gamma")),
        "clip": Param(bool, True, "clip to 255"),
    }
    default_model = "brighten-model"
    loads = 0

    def load(self, source, device):
        type(self).loads += 1
        return json.loads((source.path / "config.json").read_text())

    def run(self, model, inputs, params):
        pixels = np.asarray(inputs["image"], dtype=np.float32) * params["gain"] * model["scale"]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        return {"image": OutputValue(image, {"gain": params["gain"]}), "report": {"note": inputs.get("note"), "mean": float(pixels.mean())}}


@pytest.fixture
def brighten_model(tmp_path: Path) -> Path:
    folder = tmp_path / "brighten-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"scale": 1.0}))
    return folder


@pytest.fixture
def pool() -> ModelPool:
    return ModelPool(2**30)


# ------------------------------------------------------------------------------------------ registry


def test_builtin_tools_are_registered_through_the_entry_point():
    registry = ToolRegistry.default()
    assert registry.origin("speech-recognition").startswith("entry point 'builtin'")
    assert {tool.name for tool in BUILTIN_TOOLS} <= set(registry.names())
    assert registry.by_task("automatic-speech-recognition")[0].name == "speech-recognition"


def test_every_card_is_valid_json_schema_and_accepts_its_defaults():
    for card in ToolRegistry.default().cards():
        jsonschema.Draft202012Validator.check_schema(card["arguments_schema"])
        example = {}
        for name, spec in card["inputs"].items():
            example[name] = "some text" if spec["kind"] == "text" else f"{spec['kind']}-0123456789abcdef"
        jsonschema.validate(example, card["arguments_schema"])
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**example, "no_such_argument": 1}, card["arguments_schema"])
        for name, schema in card["params"].items():
            assert "default" in schema and schema["description"], (card["name"], name)


def test_image_input_schema_refuses_an_audio_id():
    card = next(c for c in ToolRegistry.default().cards() if c["name"] == "image-classification")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": "audio-0123456789abcdef"}, card["arguments_schema"])


class _EntryPoint:
    def __init__(self, name: str, value: Any):
        self.name, self.value, self._value = name, f"plugin:{name}", value

    def load(self):
        if isinstance(self._value, Exception):
            raise self._value
        return self._value


def test_plugins_from_entry_points_register_and_broken_ones_are_reported(monkeypatch):
    monkeypatch.setattr(
        registry_module, "entry_points",
        lambda group: [_EntryPoint("good", [Brighten]), _EntryPoint("broken", ImportError("no module named foo"))],
    )
    registry = ToolRegistry()
    with pytest.warns(UserWarning, match="broken"):
        registry.load_entry_points()
    assert "brighten" in registry
    assert registry.origin("brighten") == "entry point 'good' (plugin:good)"
    assert len(registry.plugin_errors) == 1 and "no module named foo" in registry.plugin_errors[0]


def test_two_tools_with_one_name_are_refused():
    clash = type("OtherBrighten", (Brighten,), {})
    registry = ToolRegistry([Brighten])
    with pytest.raises(ValueError, match="two tools are named 'brighten'"):
        registry.register(clash, "entry point 'x'")


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"name": "Bad Name"}, "lowercase"),
        ({"description": ""}, "description"),
        ({"params": {"gain": Param(float, 9.0, "too big", maximum=4.0)}}, "at most 4.0"),
        ({"inputs": {"image": "image"}}, "must be an Input"),
        ({"params": {"image": Param(int, 1, "clash")}}, "both an input and a param"),
    ],
)
def test_malformed_tool_classes_are_refused(attributes, message):
    malformed = type("Malformed", (Brighten,), attributes)
    with pytest.raises((TypeError, InvalidInputError), match=message):
        ToolRegistry([malformed])


def test_unknown_tool_name_suggests_close_ones():
    with pytest.raises(ToolNotFoundError, match="did you mean speech-recognition"):
        ToolRegistry.default().get("speech-recogniton")


# ------------------------------------------------------------------------------------------ params


def test_params_are_checked_and_coerced(settings, brighten_model, pool):
    tool = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    assert tool.check_params({}) == {"gain": 1.5, "mode": "linear", "clip": True}
    assert tool.check_params({"gain": "2", "clip": "false"}) == {"gain": 2.0, "mode": "linear", "clip": False}
    for bad, message in [
        ({"gain": -1}, "at least 0.1"),
        ({"gain": 1e9}, "at most 4.0"),
        ({"gain": "loud"}, "must be a number"),
        ({"gain": float("nan")}, "finite"),
        ({"mode": "cubic"}, "must be one of"),
        ({"clip": "perhaps"}, "true or false"),
        ({"gian": 2}, "has no param"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            tool.check_params(bad)


def test_integer_params_refuse_fractions():
    spec = Param(int, 5, "count", minimum=1, maximum=10)
    assert spec.check("t", "n", "7") == 7
    with pytest.raises(InvalidInputError, match="whole number"):
        spec.check("t", "n", 2.5)
    with pytest.raises(InvalidInputError, match="must be a number"):
        spec.check("t", "n", True)


# ------------------------------------------------------------------------------------------ run_tool


def test_run_tool_stores_outputs_with_lineage_and_metadata(settings, store, brighten_model, pool):
    image = store.put_value("image", Image.new("RGB", (8, 4), (100, 50, 10)), session="s1")
    tool = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    run = run_tool(tool, {"image": image.id, "note": "for the report", "gain": 2}, store=store, session="s1", task="t1")
    output = run.outputs["image"]
    note = next(a for a in store.list(session="s1", kind="text"))
    assert set(output.parents) == {image.id, note.id}
    assert output.metadata["tool"] == "brighten" and output.metadata["params"]["gain"] == 2.0
    assert output.metadata["gain"] == 2.0 and output.task == "t1" and output.session == "s1"
    assert np.asarray(store.load(output.id))[0, 0].tolist() == [200, 100, 20]
    assert store.load(run.outputs["report"].id)["note"] == "for the report"
    assert {a.id for a in store.ancestors(run.outputs["report"].id)} == {image.id, note.id}


def test_run_tool_refuses_wrong_kinds_missing_inputs_and_unknown_arguments(settings, store, brighten_model, pool):
    tool = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    audio = store.put_value("audio", AudioClip(np.zeros(1600, np.float32), 16_000))
    before = store.count()
    with pytest.raises(InvalidInputError, match=r"input 'image' takes image, but audio-\w+ is audio"):
        run_tool(tool, {"image": audio.id}, store=store)
    with pytest.raises(InvalidInputError, match="needs the input 'image'"):
        run_tool(tool, {"note": "hi"}, store=store)
    with pytest.raises(InvalidInputError, match="has no argument"):
        run_tool(tool, {"image": audio.id, "colour": "red"}, store=store)
    with pytest.raises(InvalidInputError, match="takes a image artifact id"):
        run_tool(tool, {"image": "/etc/passwd"}, store=store)
    assert store.count() == before  # nothing half-stored by refused calls


def test_run_tool_hides_other_sessions_artifacts(settings, store, brighten_model, pool):
    from orchestrator import ArtifactNotFoundError

    image = store.put_value("image", Image.new("RGB", (4, 4)), session="alice")
    tool = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    with pytest.raises(ArtifactNotFoundError):
        run_tool(tool, {"image": image.id}, store=store, session="bob")


def test_a_tool_that_breaks_its_contract_or_crashes_gives_a_clear_error(settings, store, brighten_model, pool):
    class Forgetful(Brighten):
        name = "forgetful"

        def run(self, model, inputs, params):
            return {"image": inputs["image"]}

    class Crashing(Brighten):
        name = "crashing"

        def run(self, model, inputs, params):
            raise RuntimeError("CUDA out of memory")

    image = store.put_value("image", Image.new("RGB", (4, 4)))
    with pytest.raises(ToolExecutionError, match=r"missing outputs \['report'\]"):
        run_tool(Forgetful(model=str(brighten_model), settings=settings, pool=pool), {"image": image.id}, store=store)
    with pytest.raises(ToolExecutionError, match="crashing' failed: RuntimeError: CUDA out of memory"):
        run_tool(Crashing(model=str(brighten_model), settings=settings, pool=pool), {"image": image.id}, store=store)


def test_tools_of_one_process_share_a_loaded_model(settings, brighten_model, pool):
    Brighten.loads = 0
    first = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    second = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    image = Image.new("RGB", (4, 4), (10, 10, 10))
    first(image=image)
    second(image=image, gain=3)
    assert Brighten.loads == 1
    assert len(pool.loaded()) == 1 and pool.loaded()[0].uses == 2


def test_direct_call_checks_value_types(settings, brighten_model, pool):
    tool = Brighten(model=str(brighten_model), settings=settings, pool=pool)
    with pytest.raises(InvalidInputError, match="input 'image' must be image"):
        tool(image="not an image")


# ------------------------------------------------------------------------------------------ resolution


def _fake_hub_snapshot(cache: Path, repo_id: str) -> Path:
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return snapshot


def test_resolution_order_local_then_packaged_then_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = _fake_hub_snapshot(cache, "org/model")
    packaged_dir = tmp_path / "packaged"
    packaged_dir.mkdir()
    packaged = {"org/model": lambda: packaged_dir}

    assert resolve_model(str(tmp_path), tool="t", packaged=packaged, hub=HubLocation("org/model")).origin == "local"
    found = resolve_model("org/model", tool="t", packaged=packaged, hub=HubLocation("org/model"), offline=True)
    assert (found.origin, found.path) == ("packaged", packaged_dir)
    found = resolve_model("org/model", tool="t", packaged={"org/model": lambda: None}, hub=HubLocation("org/model"), offline=True)
    assert (found.origin, found.path.resolve()) == ("hub-cache", snapshot.resolve())


def test_offline_with_nothing_found_names_the_model_and_how_to_get_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelNotAvailableError) as caught:
        resolve_model("org/missing", tool="image-captioning", packaged={"org/missing": lambda: None},
                      hub=HubLocation("org/missing"), offline=True)
    message = str(caught.value)
    assert "'org/missing'" in message and "offline mode forbids a download" in message
    assert "hf download org/missing" in message and "ANYMODA_MODEL_IMAGE_CAPTIONING" in message
    assert "pip install 'anymoda[offline]' does" in message
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model("./no/such/folder", tool="t", offline=True)


def test_availability_explains_a_missing_runtime(settings):
    class NeedsMissingPackage(Brighten):
        name = "needs-missing"
        requires = ("anymoda_no_such_runtime",)

    availability = NeedsMissingPackage(settings=settings).available()
    assert not availability and "anymoda_no_such_runtime" in availability.reason


# ------------------------------------------------------------------------------------------ any HF checkpoint


def test_image_classification_runs_any_hugging_face_checkpoint(tmp_path, settings, store, pool):
    """A tiny random ViT saved with save_pretrained goes through the same from_pretrained path as hub weights."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from tools.image_classification import ImageClassification

    labels = ["cat", "dog", "eagle"]
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3, id2label=dict(enumerate(labels)),
                       label2id={label: i for i, label in enumerate(labels)})
    folder = tmp_path / "tiny-vit"
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)

    image = store.put_value("image", Image.new("RGB", (50, 40), (200, 30, 30)))
    tool = ImageClassification(model=str(folder), settings=settings, pool=pool)
    run = run_tool(tool, {"image": image.id, "top_k": 2}, store=store)
    ranked = run.values["labels"]
    assert [item["label"] in labels for item in ranked] == [True, True]
    assert ranked[0]["score"] >= ranked[1]["score"] and run.values["label"] == ranked[0]["label"]
    assert run.outputs["labels"].metadata["model"] == str(folder)
