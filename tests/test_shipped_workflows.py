"""Every shipped workflow (graphs/*.yaml) validates, draws, and runs end to end on tiny models.

The tools that have no packaged weights (BLIP, DETR, OWLv2, SAM, Stable Diffusion, AudioLDM, a causal
LM) get tiny random checkpoints built from configs, saved with save_pretrained and named in the
settings' ``models`` table, so each tool loads them through the same from_pretrained path as real
weights. OCR (RapidOCR), speech recognition (Whisper tiny.en) and text-to-speech (Piper) use the real
weights of the offline extra; the workflows that need them are skipped without it. Random weights say
nothing sensible, so the checks are on the run: status, skipped and finished nodes, the kind of every
named output, one fan-out item per detection, and conditions that really switch nodes off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import requires_offline_extra
from orchestrator.agent import Orchestrator, RunResult
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.cli.commands import main
from orchestrator.cli.workflow_commands import shipped_workflows
from orchestrator.config import Settings, current_settings, use_settings
from orchestrator.execution.journal import RunJournal
from orchestrator.storage.media import AudioClip, Detections, TimeSeries
from orchestrator.storage.sample_inputs import receipt_image
from orchestrator.workflows.definition import Workflow
from orchestrator.workflows.workflow_tasks import MIN_CROP_PIXELS
from tiny_llms import CHATML
from tiny_tokenizers import CORPUS, bert_tokenizer

SHIPPED = shipped_workflows()
# Each shipped workflow and the test below that runs it: a new workflow file must come with a run test.
RUN_TESTS = {
    "grounded-segmentation": "test_grounded_segmentation_masks_what_it_finds_and_skips_sam_otherwise",
    "describe-objects": "test_describe_objects_captions_one_crop_per_detection_and_speaks",
    "document-reader": "test_document_reader_reads_summarises_and_speaks_a_receipt",
    "voice-question": "test_voice_question_hears_answers_and_speaks",
    "image-remix": "test_image_remix_captions_then_paints",
    "sound-for-picture": "test_sound_for_picture_captions_then_makes_a_sound",
    "time-series-report": "test_time_series_report_runs_in_python_and_from_the_command_line",
}


# ------------------------------------------------------------------------------------------ tiny models


def build_blip(captioning: Path, vqa: Path) -> None:
    """A tiny BLIP, saved twice: with the captioning head and with the question-answering head."""
    import torch
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering, BlipImageProcessor,
                              BlipProcessor)

    tokenizer = bert_tokenizer(captioning)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    ids = dict(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
               sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    config = BlipConfig(text_config=dict(tiny, vocab_size=len(tokenizer), max_position_embeddings=64, **ids),
                        vision_config=dict(tiny, image_size=32, patch_size=8), projection_dim=32)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(captioning)
    processor.save_pretrained(captioning)
    BlipForQuestionAnswering(config).save_pretrained(vqa)
    processor.save_pretrained(vqa)


def ascii_tokenizer():
    """A GPT-2 style byte-level BPE of the test corpus, with ChatML's specials, that knows only the bytes of
    printable ASCII: whatever a random model says decodes to text Piper can read aloud (the full byte
    alphabet makes it emit stray bytes, which it rightly refuses to speak)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # Byte-level BPE writes printable ASCII as itself, a space as "Ġ" and a newline as "Ċ".
    ascii_alphabet = [chr(code) for code in range(33, 127)] + ["Ġ", "Ċ"]
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                        initial_alphabet=ascii_alphabet))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=specials[0], pad_token=specials[0],
                                        additional_special_tokens=specials[1:])
    tokenizer.chat_template = CHATML
    return tokenizer


def build_causal_lm(folder: Path) -> Path:
    """A tiny Qwen2 chat model (ChatML template, sampling on), as the text-generation tool's default is."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = ascii_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
    ))
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, eos_token_id=0,
                                               pad_token_id=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tool name -> folder of its tiny checkpoint, for every tool of a shipped workflow without packaged weights."""
    pytest.importorskip("torch")  # not a dependency of anymoda: the runs need it, validating and drawing do not
    pytest.importorskip("diffusers")
    from test_tools_detection_segmentation import build_detr, build_owlv2, build_sam
    from test_tools_generation import _save_audioldm, _save_stable_diffusion
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("workflow-models")
    build_blip(root / "blip", root / "blip-vqa")
    models = {
        "image-captioning": root / "blip",
        "visual-question-answering": root / "blip-vqa",
        "object-detection": build_detr(root / "detr"),
        "open-vocabulary-detection": build_owlv2(root / "owlv2"),
        "segment-anything": build_sam(root / "sam"),
        "text-to-image": _save_stable_diffusion(root / "stable-diffusion"),
        "text-to-audio": _save_audioldm(root / "audioldm"),
        "text-generation": build_causal_lm(root / "qwen2"),
    }
    return {tool: str(folder) for tool, folder in models.items()}


@pytest.fixture(scope="module")
def tiny_settings(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("workflow-home")
    return Settings.from_dict({"home": str(home), "offline": True, "device": "cpu", "models": tiny_models})


@pytest.fixture(scope="module")
def orchestrator(tiny_settings) -> Orchestrator:
    return Orchestrator(settings=tiny_settings, planner=None, composer=None)


# ------------------------------------------------------------------------------------------ helpers


def picture(width: int = 128, height: int = 96) -> Image.Image:
    """A red ball and a green box on a striped blue ground: structure for random models to react to."""
    y, x = np.mgrid[0:height, 0:width]
    ground = np.stack([x * 60 // width, y * 80 // height + 40, 120 + ((x // 8) % 2) * 80], axis=-1).astype(np.uint8)
    image = Image.fromarray(ground)
    draw = ImageDraw.Draw(image)
    draw.ellipse((14, 20, 58, 64), fill=(220, 30, 30))
    draw.rectangle((70, 30, 118, 84), fill=(40, 190, 60))
    return image


def with_args(name: str, **node_args: dict[str, Any]) -> Workflow:
    """The shipped workflow ``name`` with some nodes' args changed (the file itself is left alone)."""
    data = Workflow.load(SHIPPED[name]).to_dict()
    for node, changes in node_args.items():
        data["nodes"][node]["args"].update(changes)
    return Workflow.from_dict(data, source=f"{name} (test args)")


def check_done(orchestrator: Orchestrator, result: RunResult, *, ran: set[str],
               skipped: set[str] = frozenset()) -> None:
    """Finished without failures; exactly ``ran`` nodes (fan-out items counted as their node) done, ``skipped``
    skipped; every tool with a tiny model in the settings ran that model (no fallback, no download)."""
    assert result.status == "done" and not result.failures and not result.error, (result.status, result.failures,
                                                                                   result.error)
    by_status: dict[str, set[str]] = {}
    for task, outcome in result.tasks.items():
        by_status.setdefault(outcome.status, set()).add(task.partition("[")[0])
        if outcome.status == "done" and outcome.tool in orchestrator.settings.models:
            assert outcome.model == orchestrator.settings.models[outcome.tool], (task, outcome.model)
    assert by_status.get("done", set()) == ran, by_status
    assert by_status.get("skipped", set()) == set(skipped), by_status


def kind_of(orchestrator: Orchestrator, result: RunResult, artifact_id: str) -> ArtifactKind:
    return orchestrator.store.get(artifact_id, session=result.session).kind


def value_of(orchestrator: Orchestrator, result: RunResult, artifact_id: str) -> Any:
    return orchestrator.store.load(artifact_id, session=result.session)


def arguments(orchestrator: Orchestrator, result: RunResult, task: str) -> dict[str, Any]:
    """What ``task`` was called with, as the journal recorded it (references resolved, templates filled)."""
    return next(t.arguments for t in orchestrator.journal.get_run(result.run_id).tasks if t.task == task)


def text_of(orchestrator: Orchestrator, result: RunResult, output: str) -> str:
    return str(value_of(orchestrator, result, result.outputs[output]))


def check_outputs(orchestrator: Orchestrator, result: RunResult, kinds: dict[str, ArtifactKind | None]) -> None:
    """Every named output present, of its kind (each item of a fan-out's list); kind None: its node did not run,
    so the output is None ([] for a fan-out node)."""
    assert set(result.outputs) == set(kinds), result.outputs
    for name, kind in kinds.items():
        value = result.outputs[name]
        if kind is None:
            assert value is None or value == [], (name, value)
        elif isinstance(value, list):
            assert all(kind_of(orchestrator, result, v) is kind for v in value), name
        else:
            assert value is not None and kind_of(orchestrator, result, value) is kind, (name, value)


def crops_of(detections: Detections, size: tuple[int, int]) -> int:
    """How many boxes the fan-out cuts a crop from: those that are not slivers once clipped to the image."""
    width, height = size
    return sum(min(width, round(b[2])) - max(0, int(b[0])) >= MIN_CROP_PIXELS
               and min(height, round(b[3])) - max(0, int(b[1])) >= MIN_CROP_PIXELS for b in detections.boxes)


def spoken(text: str) -> AudioClip:
    """``text`` said by the packaged Piper voice."""
    from tools.speech_synthesis import TextToSpeech

    return TextToSpeech(settings=current_settings())(text=text)["audio"]


def cli(capsys: pytest.CaptureFixture, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------ files


def test_every_shipped_workflow_has_a_run_test_here():
    assert set(SHIPPED) == set(RUN_TESTS), "a shipped workflow was added or removed: give it a run test below"
    assert all(name in globals() for name in RUN_TESTS.values())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_workflow_validates_against_the_tools(name):
    workflow = Workflow.load(SHIPPED[name])
    assert workflow.name == name and workflow.description and workflow.nodes and workflow.outputs
    again = Workflow.from_dict(workflow.to_dict())  # what a modified copy in the tests below goes through
    assert again.to_dict() == workflow.to_dict()


def test_graph_validate_accepts_every_shipped_file(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, err = cli(capsys, "workflow", "validate", *SHIPPED.values())
    assert code == 0, out + err
    assert all(f"ok {path}: {name}" in out for name, path in SHIPPED.items()), out


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_graph_show_prints_mermaid_with_every_node_and_draws_a_png(name, capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("COLUMNS", "400")
    png = tmp_path / "graph.png"
    code, out, err = cli(capsys, "workflow", "show", name, "-o", png)
    assert code == 0, out + err
    assert "flowchart LR" in out
    workflow = Workflow.load(SHIPPED[name])
    for node in [*workflow.inputs, *workflow.nodes, *workflow.outputs]:
        assert node in out, (node, out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as drawn:
        assert drawn.width > 200 and drawn.height > 100


# ------------------------------------------------------------------------------------------ runs


def test_grounded_segmentation_masks_what_it_finds_and_skips_sam_otherwise(orchestrator):
    image = picture()
    sensitive = with_args("grounded-segmentation", detect={"threshold": 0.01, "max_detections": 5})
    found = orchestrator.run_workflow(sensitive, {"image": image, "objects": "a ball. a box."})
    check_done(orchestrator, found, ran={"detect", "segment"})
    check_outputs(orchestrator, found, {"found": ArtifactKind.TEXT, "boxes": ArtifactKind.DETECTIONS,
                                        "masks": ArtifactKind.MASKS, "overlay": ArtifactKind.IMAGE})
    boxes = value_of(orchestrator, found, found.outputs["boxes"])
    masks = value_of(orchestrator, found, found.outputs["masks"])
    assert 0 < len(boxes) <= 5 and set(boxes.labels) <= {"a ball", "a box"}
    assert len(masks.labels) == len(boxes)  # one mask per box
    assert value_of(orchestrator, found, found.outputs["overlay"]).size == image.size

    nothing = orchestrator.run_workflow(with_args("grounded-segmentation", detect={"threshold": 1.0}), {"image": image})
    check_done(orchestrator, nothing, ran={"detect"}, skipped={"segment"})
    check_outputs(orchestrator, nothing, {"found": ArtifactKind.TEXT, "boxes": ArtifactKind.DETECTIONS,
                                          "masks": None, "overlay": None})
    assert len(value_of(orchestrator, nothing, nothing.outputs["boxes"])) == 0
    assert nothing.outputs["masks"] is None and nothing.outputs["overlay"] is None


@requires_offline_extra
def test_describe_objects_captions_one_crop_per_detection_and_speaks(orchestrator):
    image = picture()
    result = orchestrator.run_workflow(with_args("describe-objects", detect={"threshold": 0.05, "max_detections": 3},
                                                 describe={"max_new_tokens": 6, "num_beams": 1}), {"image": image})
    check_done(orchestrator, result, ran={"detect", "describe", "speak"})
    check_outputs(orchestrator, result, {"found": ArtifactKind.TEXT, "overlay": ArtifactKind.IMAGE,
                                         "captions": ArtifactKind.TEXT, "spoken": ArtifactKind.AUDIO})
    detections = value_of(orchestrator, result, result.tasks["detect"].outputs["detections"])
    assert 0 < len(detections) <= 3
    captions = result.outputs["captions"]
    assert isinstance(captions, list) and len(captions) == crops_of(detections, image.size) == len(detections)
    crops = [arguments(orchestrator, result, f"describe[{i}]")["image"] for i in range(len(captions))]
    assert [orchestrator.store.get(c, session=result.session).metadata["box"] for c in crops] == [
        [int(b[0]), int(b[1]), round(b[2]), round(b[3])] for b in detections.boxes]  # crop i is box i
    said = "\n".join(str(value_of(orchestrator, result, c)) for c in captions)
    found = text_of(orchestrator, result, "found")
    assert arguments(orchestrator, result, "speak")["text"] == f"{found} {said}"

    # Nothing found: no crops to caption, and the sentence that needs the captions is not spoken either.
    nothing = orchestrator.run_workflow(with_args("describe-objects", detect={"threshold": 1.0}), {"image": image})
    check_done(orchestrator, nothing, ran={"detect"}, skipped={"describe", "speak"})
    check_outputs(orchestrator, nothing, {"found": ArtifactKind.TEXT, "overlay": ArtifactKind.IMAGE, "captions": None,
                                          "spoken": None})
    assert nothing.outputs["captions"] == []


@requires_offline_extra
def test_document_reader_reads_summarises_and_speaks_a_receipt(orchestrator):
    reader = with_args("document-reader", summarise={"max_new_tokens": 12})
    result = orchestrator.run_workflow(reader, {"document": receipt_image()})
    check_done(orchestrator, result, ran={"read", "summarise", "speak"})
    check_outputs(orchestrator, result, {"text": ArtifactKind.TEXT, "summary": ArtifactKind.TEXT,
                                         "spoken_summary": ArtifactKind.AUDIO})
    read = text_of(orchestrator, result, "text")
    assert "TOTAL" in read and "42.50" in read  # the real OCR reads the receipt
    assert arguments(orchestrator, result, "summarise")["context"] == result.outputs["text"]  # references pass ids
    assert arguments(orchestrator, result, "speak")["text"] == result.outputs["summary"]

    blank = orchestrator.run_workflow(reader, {"document": Image.new("RGB", (320, 200), "white")})
    # Nothing read: nothing to summarise, and so nothing to say.
    check_done(orchestrator, blank, ran={"read"}, skipped={"summarise", "speak"})
    check_outputs(orchestrator, blank, {"text": ArtifactKind.TEXT, "summary": None, "spoken_summary": None})
    assert text_of(orchestrator, blank, "text").strip() == ""
    assert blank.outputs["summary"] is None and blank.outputs["spoken_summary"] is None


@requires_offline_extra
def test_voice_question_hears_answers_and_speaks(orchestrator):
    question = spoken("What colour is the ball?")
    result = orchestrator.run_workflow(with_args("voice-question", answer={"num_beams": 1}),
                                       {"image": picture(), "question": question})
    check_done(orchestrator, result, ran={"transcribe", "answer", "speak"})
    check_outputs(orchestrator, result, {"question": ArtifactKind.TEXT, "answer": ArtifactKind.TEXT,
                                         "spoken_answer": ArtifactKind.AUDIO})
    heard = text_of(orchestrator, result, "question")
    assert "ball" in heard.lower(), heard  # the real Whisper hears the real voice
    assert arguments(orchestrator, result, "answer")["question"] == result.outputs["question"]
    assert arguments(orchestrator, result, "speak")["text"] == result.outputs["answer"]


def test_image_remix_captions_then_paints(orchestrator):
    remix = with_args("image-remix", caption={"max_new_tokens": 6}, paint={"steps": 2, "width": 64, "height": 64})
    result = orchestrator.run_workflow(remix, {"image": picture()})
    check_done(orchestrator, result, ran={"caption", "paint"})
    check_outputs(orchestrator, result, {"caption": ArtifactKind.TEXT, "picture": ArtifactKind.IMAGE})
    assert value_of(orchestrator, result, result.outputs["picture"]).size == (64, 64)
    caption = text_of(orchestrator, result, "caption")
    # The style input's default fills in the rest of the prompt template.
    assert arguments(orchestrator, result, "paint")["prompt"] == f"{caption}, as a watercolour painting"


def test_sound_for_picture_captions_then_makes_a_sound(orchestrator):
    workflow = with_args("sound-for-picture", caption={"max_new_tokens": 6}, sound={"duration": 1.0, "steps": 2})
    result = orchestrator.run_workflow(workflow, {"image": picture()})
    check_done(orchestrator, result, ran={"caption", "sound"})
    check_outputs(orchestrator, result, {"caption": ArtifactKind.TEXT, "sound": ArtifactKind.AUDIO})
    sound = value_of(orchestrator, result, result.outputs["sound"])
    assert sound.duration_s == pytest.approx(1.0, abs=0.05)
    caption = text_of(orchestrator, result, "caption")
    assert arguments(orchestrator, result, "sound")["prompt"] == f"the sound of {caption}"


def series_values(length: int = 240) -> np.ndarray:
    """A rising line with a period of 24 and one spike: something for every part of the description."""
    t = np.arange(length, dtype=float)
    values = 0.05 * t + 2 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 0.1, length)
    values[150] += 15
    return values


def test_time_series_report_runs_in_python_and_from_the_command_line(orchestrator, tiny_settings, capsys, monkeypatch,
                                                                     tmp_path: Path):
    report = with_args("time-series-report", report={"max_new_tokens": 12})
    result = orchestrator.run_workflow(report, {"series": TimeSeries(series_values())})
    check_done(orchestrator, result, ran={"describe", "report"})
    check_outputs(orchestrator, result, {"description": ArtifactKind.TEXT, "facts": ArtifactKind.JSON,
                                         "plot": ArtifactKind.IMAGE, "report": ArtifactKind.TEXT})
    assert arguments(orchestrator, result, "report")["context"] == result.outputs["description"]

    # The shipped file by name, from the command line, in a private home whose settings name the tiny LM.
    home = tmp_path / "cli-home"
    series = tmp_path / "series.npy"
    np.save(series, series_values())
    previous = current_settings()
    monkeypatch.setenv("ANYMODA_HOME", str(home))
    monkeypatch.delenv("ANYMODA_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    use_settings(Settings.from_dict({"home": str(home), "offline": True, "device": "cpu",
                                     "models": {"text-generation": tiny_settings.models["text-generation"]}}))
    try:
        code, out, err = cli(capsys, "workflow", "run", "time-series-report", "--input", f"series={series}",
                             "--out", tmp_path / "out", "--json")
    finally:
        use_settings(previous)
    assert code == 0, out + err
    printed = json.loads(out)
    assert printed["status"] == "done" and not printed["failures"] and printed["error"] is None
    assert set(printed["outputs"]) == {"description", "facts", "plot", "report"}
    saved = printed["saved"]
    assert set(saved) == set(printed["outputs"])
    for name in printed["outputs"]:
        for path in saved[name]["files"]:
            assert Path(path).is_relative_to(tmp_path / "out") and Path(path).stat().st_size > 0
    assert Path(saved["plot"]["files"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = RunJournal(home / "runs.sqlite").get_run(printed["run"])  # journaled in the private home
    assert {t.task: t.model for t in run.tasks}["report"] == tiny_settings.models["text-generation"]
