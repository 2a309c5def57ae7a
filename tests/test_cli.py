"""The command line, through ``orchestrator.cli.main(argv)``, in a private ANYMODA_HOME.

What is printed is checked as a person would read it; rich wraps long lines at the console width, so
messages are compared with their whitespace squashed, and COLUMNS is set wide enough for tables.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import soundfile
from PIL import Image

from orchestrator.cli.commands import main
from orchestrator.config import Settings, current_settings, use_settings
from orchestrator.storage.sample_inputs import eagle_photo_path, receipt_image
from tools import BUILTIN_TOOLS

# tests/ has no __init__.py: pytest's default "prepend" import mode registers tests/conftest.py as the
# top-level module ``conftest``, so this import reuses it.
from conftest import offline_extra_installed, requires_offline_extra

SENTENCE = "Please send the quarterly report to Anna by Friday."
# The seven experts whose weights ship in the offline extra (other built-in tools may be listed too).
BUILTIN_NAMES = {"speech-recognition", "voice-activity-detection", "text-to-speech", "ocr", "image-classification",
                 "sentence-embedding", "sentence-similarity"}


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9']+", " ", text.lower()).split()


def squash(text: str) -> str:
    """Text without whitespace: rich may break a long message anywhere there is a space."""
    return "".join(text.split())


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory):
    """ANYMODA_HOME in a temporary folder for the module; the process settings point at it."""
    home = tmp_path_factory.mktemp("cli-home")
    previous = current_settings()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANYMODA_HOME", str(home))
        patch.delenv("ANYMODA_CONFIG", raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("COLUMNS", "400")  # rich and argparse read it when they print
        use_settings(None)
        assert current_settings().home == home  # the CLI's settings come from ANYMODA_HOME ...
        use_settings(Settings.from_dict({"home": str(home), "offline": True, "device": "cpu"}))  # ... pinned to CPU
        yield home
    use_settings(previous)


def run_cli(*argv: Any) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured (rich's consoles write to whatever sys.stdout/err are)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


def cli(capsys: pytest.CaptureFixture, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def spoken(cli_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`anymoda tool text-to-speech --text SENTENCE -o out.wav --json`, once for the module."""
    wav = tmp_path_factory.mktemp("cli-out") / "out.wav"
    code, out, err = run_cli("tool", "text-to-speech", "--text", SENTENCE, "-o", wav, "--json")
    assert code == 0, err
    return {"wav": wav, "run": json.loads(out), "err": err}


@pytest.fixture(scope="module")
def read_receipt(cli_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`anymoda tool ocr --image receipt.png --json`, once for the module."""
    path = tmp_path_factory.mktemp("cli-in") / "receipt.png"
    receipt_image().save(path)
    code, out, err = run_cli("tool", "ocr", "--image", path, "--json")
    assert code == 0, err
    return {"image": path, "run": json.loads(out)}


@pytest.fixture
def wav_file(tmp_path: Path) -> Path:
    """A real WAV file (a 440 Hz tone), for commands that must refuse or accept audio."""
    path = tmp_path / "some.wav"
    rate = 16_000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate), rate)
    return path


# ------------------------------------------------------------------------------------------ tools


def test_tools_json_lists_every_builtin_tool_with_an_arguments_schema(cli_home, capsys):
    code, out, _ = cli(capsys, "tools", "--json")
    assert code == 0
    cards = {card["name"]: card for card in json.loads(out)}
    assert BUILTIN_NAMES <= {tool.name for tool in BUILTIN_TOOLS} <= set(cards)
    for name, card in cards.items():
        schema = card["arguments_schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False, name
        assert set(schema["properties"]) == set(card["inputs"]) | set(card["params"]), name
        assert set(schema["required"]) == {n for n, spec in card["inputs"].items() if spec["required"]}, name
    classify = jsonschema.Draft202012Validator(cards["image-classification"]["arguments_schema"])
    assert classify.is_valid({"image": "image-0123456789abcdef", "top_k": 3})
    assert not classify.is_valid({"image": "image-0123456789abcdef", "top_k": 0})
    assert not classify.is_valid({"image": "audio-0123456789abcdef"})
    assert not classify.is_valid({"top_k": 3})  # the image is required


def test_tools_table_shows_every_tool_and_whether_it_runs_here(cli_home, capsys):
    code, out, _ = cli(capsys, "tools")
    assert code == 0
    count = re.search(r"\b(\d+) tools\b", out)
    assert count and int(count.group(1)) >= len(BUILTIN_NAMES), out[:200]
    for header in ("name", "task", "inputs -> outputs", "model", "runs here?"):
        assert header in out
    rows = {}
    for name in BUILTIN_NAMES:
        row = re.search(rf"^│ {re.escape(name)}\s+│.*$", out, re.MULTILINE)
        assert row, name
        rows[name] = row.group(0)
    assert "audio:audio -> text:text, segments:json" in rows["speech-recognition"]
    if offline_extra_installed():  # the seven experts of the offline extra run here on packaged weights
        for row in rows.values():  # on a fresh home: "yes (packaged, sha256-checked on first use)"
            assert "yes (packaged" in row, row


def test_tool_help_shows_inputs_params_and_bounds(cli_home, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["tool", "speech-recognition", "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--audio", "--language", "--beam-size", "--word-timestamps", "--translate", "--model", "-o"):
        assert option in help_text, option
    assert ">= 1; <= 10" in help_text  # beam_size's bounds
    assert "Systran/faster-whisper-tiny.en" in help_text


@pytest.mark.parametrize(
    ("name", "expected"),
    [("speech-recogniton", "did you mean speech-recognition"), ("image-classifier", "did you mean image-classification")],
)
def test_tool_with_a_misspelt_name_suggests_the_close_one(cli_home, capsys, name, expected):
    code, _, err = cli(capsys, "tool", name)
    assert code == 2
    assert squash(f"no tool named '{name}'") in squash(err) and squash(expected) in squash(err)


def test_tool_nonexistent_exits_2_naming_the_known_tools(cli_home, capsys):
    code, out, err = cli(capsys, "tool", "nonexistent")
    assert code == 2 and out == ""
    assert "no tool named 'nonexistent'" in " ".join(err.split())
    for name in BUILTIN_NAMES:
        assert name in squash(err), name


def test_missing_input_file_exits_2_naming_it(cli_home, capsys, tmp_path):
    missing = tmp_path / "missing.png"
    code, out, err = cli(capsys, "tool", "ocr", "--image", missing)
    assert code == 2 and out == ""
    assert "missing.png" in squash(err) and "error:" in err
    assert "Traceback" not in err


def test_input_of_the_wrong_kind_exits_2_saying_what_it_is(cli_home, capsys, wav_file):
    code, out, err = cli(capsys, "tool", "ocr", "--image", wav_file)
    assert code == 2 and out == ""
    message = " ".join(err.split())
    assert "'some.wav'" in message and "image" in message and "audio/wav" in message, message


@pytest.mark.parametrize(("top_k", "bound"), [("0", "at least 1"), ("51", "at most 50")])
def test_param_out_of_bounds_exits_2_naming_the_bound(cli_home, capsys, top_k, bound):
    code, out, err = cli(capsys, "tool", "image-classification", "--image", eagle_photo_path(), "--top-k", top_k)
    assert code == 2 and out == ""
    message = " ".join(err.split())
    assert "top_k" in message and bound in message, message


# ------------------------------------------------------------------------------------------ real runs


@pytest.mark.real_weights
@requires_offline_extra
def test_tool_text_to_speech_writes_a_wav(spoken):
    wav = spoken["wav"]
    info = soundfile.info(wav)
    assert info.format == "WAV" and info.channels == 1 and info.samplerate == 22_050
    assert 1.5 < info.duration < 6.0
    samples, _ = soundfile.read(wav)
    assert np.abs(samples).max() > 0.05
    assert squash(f"saved {wav}") in squash(spoken["err"])
    run = spoken["run"]
    assert run["tool"] == "text-to-speech" and run["model"] == "en_US-joe-medium"
    assert run["outputs"]["audio"]["kind"] == "audio"


@pytest.mark.real_weights
@requires_offline_extra
def test_tool_speech_recognition_prints_the_sentence(spoken, capsys):
    code, out, err = cli(capsys, "tool", "speech-recognition", "--audio", spoken["wav"])
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if re.fullmatch(r"text text-[0-9a-f]{16}", line.strip()))
    assert words(lines[header + 1]) == words(SENTENCE), out
    assert "speech-recognition with Systran/faster-whisper-tiny.en" in err


@pytest.mark.real_weights
@requires_offline_extra
def test_artifacts_list_and_show_give_the_lineage_of_a_run(read_receipt, spoken, capsys):
    outputs = read_receipt["run"]["outputs"]
    regions, text = outputs["regions"], outputs["text"]
    image_id = regions["parents"][0]

    code, out, _ = cli(capsys, "artifacts", "list")
    assert code == 0
    for artifact_id in (image_id, regions["id"], text["id"], spoken["run"]["outputs"]["audio"]["id"]):
        assert artifact_id in out, artifact_id
    assert "receipt.png" in out  # the ingested file keeps its name

    code, out, _ = cli(capsys, "artifacts", "show", regions["id"])
    assert code == 0
    shown, end = json.JSONDecoder().raw_decode(out)
    assert shown["id"] == regions["id"] and shown["kind"] == "detections"
    assert shown["parents"] == [image_id] and shown["metadata"]["tool"] == "ocr"
    assert shown["metadata"]["model"] == "PP-OCRv4" and "params" in shown["metadata"]
    derived = [line.strip() for line in out[end:].splitlines() if line.strip()]
    assert len(derived) == 1 and derived[0].startswith(f"derived from {image_id} (image, image/png")

    audio_id = spoken["run"]["outputs"]["audio"]["id"]
    code, out, _ = cli(capsys, "artifacts", "show", audio_id)
    shown, end = json.JSONDecoder().raw_decode(out)
    assert code == 0 and shown["metadata"]["tool"] == "text-to-speech"
    assert re.search(r"derived from text-[0-9a-f]{16} \(text, text/plain", out[end:])


@pytest.mark.real_weights
@requires_offline_extra
def test_render_ocr_regions_draws_on_the_ancestor_image(read_receipt, capsys, tmp_path):
    picture = tmp_path / "x.png"
    code, _, err = cli(capsys, "render", read_receipt["run"]["outputs"]["regions"]["id"], "-o", picture)
    assert code == 0, err
    original = Image.open(read_receipt["image"]).convert("RGB")
    drawn = Image.open(picture)
    assert drawn.format == "PNG" and drawn.size == original.size
    # The receipt is grey on off-white; the boxes are drawn in colour.
    def coloured(image: Image.Image) -> int:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())
    assert coloured(original) == 0 and coloured(drawn) > 1000


@pytest.mark.real_weights
@requires_offline_extra
def test_render_audio_writes_a_spectrogram(spoken, capsys, tmp_path):
    picture = tmp_path / "spectrogram.png"
    code, _, err = cli(capsys, "render", spoken["run"]["outputs"]["audio"]["id"], "-o", picture)
    assert code == 0, err
    image = Image.open(picture)
    assert image.format == "PNG" and image.width > image.height > 100
    assert np.asarray(image.convert("L")).std() > 20  # a picture, not a blank canvas


@pytest.mark.real_weights
@requires_offline_extra
def test_render_refuses_a_text_artifact(read_receipt, capsys, tmp_path):
    code, _, err = cli(capsys, "render", read_receipt["run"]["outputs"]["text"]["id"], "-o", tmp_path / "t.png")
    assert code == 2 and "read, not rendered" in " ".join(err.split())
    assert not (tmp_path / "t.png").exists()


@pytest.mark.real_weights
@requires_offline_extra
def test_demo_answers_the_spoken_question(cli_home, packaged_llm, capsys, tmp_path):
    packaged_llm.use_in(cli_home)  # the session's one conversion of the packaged Qwen (tests/conftest.py)
    out_dir = tmp_path / "demo"
    code, out, err = cli(capsys, "demo", "--out", out_dir)
    assert code == 0, out + err
    for name in ("answer.wav", "receipt_boxes.png", "answer_spectrogram.png", "question.wav"):
        assert (out_dir / name).is_file(), name
    for name in ("answer.wav", "question.wav"):
        info = soundfile.info(out_dir / name)
        assert info.format == "WAV" and info.duration > 1.0
    assert Image.open(out_dir / "receipt_boxes.png").size == receipt_image().size
    assert Image.open(out_dir / "answer_spectrogram.png").format == "PNG"
    answer = next(line for line in out.splitlines() if line.startswith("Answer:"))
    assert "42.50" in answer, answer
