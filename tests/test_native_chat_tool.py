"""The native-chat tool end to end on a tiny trained checkpoint: run_tool, refusals, availability, planner perception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_llms import save_tiny_chat_qwen2

from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.tooling.invoke import run_tool
from orchestrator.storage.media import TimeSeries
from orchestrator.native.feature_cache import FeatureCache
from orchestrator.native.llm import build_model, load_llm
from orchestrator.native.tasks import prepare_task
from orchestrator.native.train import TrainConfig, train_connector
from orchestrator.models.pool import ModelPool
from tools.native_chat import (
    NO_CHECKPOINT,
    NativeChat,
    describe_media_for_planner,
    perceives,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder from a few training steps of a tiny Qwen2 with a ts-patch MLP connector."""
    llm_dir = save_tiny_chat_qwen2(tmp_path_factory.mktemp("tiny-qwen2-chat"))
    data = prepare_task("timeseries-qa", train_size=8, eval_size=2, seed=0,
                        cache=FeatureCache(tmp_path_factory.mktemp("features")), progress=False)
    model = build_model(load_llm(str(llm_dir)), data.modality, data.encoder, data.feature_dim, "mlp2x_gelu")
    out = tmp_path_factory.mktemp("run")
    train_connector(model, data.train, data.eval, TrainConfig(max_steps=3, batch_size=2, warmup_steps=1, output_dir=str(out)),
                    extra={"task": "timeseries-qa", "llm": str(llm_dir)}, progress=False)
    return out


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool(2**32)


def series(seed: int = 0) -> TimeSeries:
    steps = np.arange(128)
    return TimeSeries(0.05 * steps + np.sin(steps / 4) + np.random.default_rng(seed).normal(0, 0.1, 128))


def test_answers_a_question_about_a_series_through_run_tool(run_dir, settings, store, pool) -> None:
    tool = NativeChat(model=str(run_dir), settings=settings, pool=pool)  # the run folder: its checkpoint/ is used
    assert tool.available()
    stored = store.put_value(ArtifactKind.TIME_SERIES, series())
    run = run_tool(tool, {"time_series": stored.id, "question": "What is the overall trend of this series?",
                          "max_new_tokens": 4}, store=store)
    answer = run.values["answer"]
    assert isinstance(answer, str)
    artifact = run.outputs["answer"]
    assert artifact.kind is ArtifactKind.TEXT and stored.id in artifact.parents  # lineage to the series
    assert artifact.metadata["connectors"] == {"ts": "mlp2x_gelu"} and artifact.metadata["task"] == "timeseries-qa"
    # Same checkpoint, same input, greedy: the same answer (and the pool served the loaded model again).
    again = run_tool(tool, {"time_series": stored.id, "question": "What is the overall trend of this series?",
                            "max_new_tokens": 4}, store=store)
    assert again.values["answer"] == answer


def test_refuses_bad_requests(run_dir, settings, store, pool) -> None:
    tool = NativeChat(model=str(run_dir / "checkpoint"), settings=settings, pool=pool)
    stored = store.put_value(ArtifactKind.TIME_SERIES, series())
    with pytest.raises(InvalidInputError, match="at least one media"):
        run_tool(tool, {"question": "what is it?"}, store=store)
    with pytest.raises(InvalidInputError, match="'question' is empty"):
        run_tool(tool, {"time_series": stored.id, "question": "   "}, store=store)
    image = store.put_value(ArtifactKind.IMAGE, Image.new("RGB", (32, 32)))
    with pytest.raises(InvalidInputError, match="perceives time_series only"):
        run_tool(tool, {"image": image.id, "question": "what is it?"}, store=store)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        run_tool(tool, {"time_series": stored.id, "question": "trend?", "max_new_tokens": 0}, store=store)


def test_availability_says_what_is_missing(run_dir, settings, tmp_path) -> None:
    unconfigured = NativeChat(model=NO_CHECKPOINT, settings=settings).available()  # an installation that ships none
    assert not unconfigured and "anymoda train connector" in unconfigured.reason
    assert "[models] native-chat" in unconfigured.reason
    empty = tmp_path / "not-a-checkpoint"
    empty.mkdir()
    wrong = NativeChat(model=str(empty), settings=settings).available()
    assert not wrong and "not a native checkpoint" in wrong.reason
    with pytest.raises(ModelNotAvailableError, match="no trained native checkpoint"):
        NativeChat(model=NO_CHECKPOINT, settings=settings).resolve()
    # A checkpoint whose LLM is nowhere here: the connector alone cannot answer.
    lost = tmp_path / "lost-llm"
    shutil.copytree(run_dir / "checkpoint", lost)
    metadata = json.loads((lost / "native.json").read_text())
    metadata["extra"]["llm"] = str(tmp_path / "no-such-llm")
    (lost / "native.json").write_text(json.dumps(metadata))
    orphan = NativeChat(model=str(lost), settings=settings).available()
    assert not orphan and "LLM is not here" in orphan.reason


def test_an_exported_connector_is_the_default_model_and_answers_like_its_checkpoint(run_dir, settings, store, pool,
                                                                                   tmp_path, monkeypatch) -> None:
    """The shipped connector is an export: native.json and fp16 weights, no tokenizer (the LLM's is used)."""
    import tools.native_chat as native_chat
    from orchestrator.native.checkpoint import export_connector

    exported = export_connector(run_dir / "checkpoint", tmp_path / "data" / "native_ts")
    assert sorted(p.name for p in exported.iterdir()) == ["connectors.safetensors", "native.json"]
    assert all(path.stat().st_mode & 0o004 for path in [exported, *exported.iterdir()])  # readable by all: shippable
    assert (exported / "connectors.safetensors").stat().st_size < 0.6 * (run_dir / "checkpoint" / "connectors.safetensors").stat().st_size
    monkeypatch.setattr(native_chat, "shipped_connector_folder", lambda: exported)
    shipped = NativeChat(model=native_chat.SHIPPED_CONNECTOR, settings=settings, pool=pool)
    assert shipped.available() and shipped.resolve().path == exported
    full = NativeChat(model=str(run_dir), settings=settings, pool=pool)
    stored = store.put_value(ArtifactKind.TIME_SERIES, series(3))
    asked = {"time_series": stored.id, "question": "What is the overall trend of this series?", "max_new_tokens": 4}
    assert run_tool(shipped, asked, store=store).values["answer"] == run_tool(full, asked, store=store).values["answer"]


def test_planner_perception_line(run_dir, settings, store, pool) -> None:
    assert perceives(run_dir) == {ArtifactKind.TIME_SERIES}
    tool = NativeChat(model=str(run_dir), settings=settings, pool=pool)
    stored = store.put_value(ArtifactKind.TIME_SERIES, series(1))
    line = describe_media_for_planner(run_dir, stored, store=store, tool=tool, max_new_tokens=3)
    assert line.startswith(f"{stored.id} (time_series) as the trained native model perceives it: trend: ")
    assert "repeating cycle: " in line and "spike at step: " in line and "\n" not in line
    with pytest.raises(InvalidInputError, match="not media"):
        describe_media_for_planner(run_dir, store.put_value(ArtifactKind.TEXT, "hello"), store=store, tool=tool)


def test_a_configured_checkpoint_becomes_the_planners_perception(run_dir, store, pool, tmp_path) -> None:
    from orchestrator.config import Settings
    from orchestrator.planning.planner import Planner
    from orchestrator.tooling.registry import ToolRegistry
    from tools.native_chat import planner_perception

    plain = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})
    assert planner_perception(plain, store) is None  # nothing trained, nothing configured: no perception
    configured = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu",
                                     "models": {"native-chat": str(run_dir)}})
    perceive = planner_perception(configured, store, pool)
    attached = store.put_value(ArtifactKind.TIME_SERIES, series(2), metadata={"name": "sales.csv"})
    picture = store.put_value(ArtifactKind.IMAGE, Image.new("RGB", (8, 8)), metadata={"name": "photo.png"})
    note = perceive(attached)
    assert note.startswith("trend: ") and "spike at step: " in note
    assert perceive(picture) is None  # a kind the checkpoint does not perceive
    registry = ToolRegistry([NativeChat])
    for syntax in ("compact", "json"):
        planner = Planner(object(), registry, syntax=syntax, demos=None, hints=False, perception=perceive)
        request = planner.messages("Describe sales.csv", list(registry), [attached, picture])[-1]["content"]
        assert f"perceived: {note}" in request and request.count("perceived:") == 1, request
