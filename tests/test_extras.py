"""The optional extras (plot: matplotlib, video: PyAV, lora: peft): the core never imports them, and where one is
missing the part that needs it says which extra to install in one line, and the tools that need it report
themselves unavailable with that command instead of failing when run.

A missing package is simulated the way Python itself reports one: ``sys.modules[name] = None`` makes both
``importlib.util.find_spec`` and ``import`` fail for it (restored after each test)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.config import Settings, current_settings, use_settings
from orchestrator.errors import AnymodaError, MissingExtraError, ToolUnavailableError
from orchestrator.extras import EXTRA_OF, import_extra, installed
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import AudioClip, TimeSeries

ROOT = Path(__file__).resolve().parents[1]
HEAVY = tuple(EXTRA_OF)  # matplotlib, av, peft


def hide(monkeypatch, *modules: str) -> None:
    # The package and every submodule an earlier test imported (import_module would hand back a loaded
    # matplotlib.pyplot whatever sys.modules says of matplotlib itself).
    for module in modules:
        for loaded in [name for name in sys.modules if name.startswith(module + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, module, None)


@pytest.fixture
def home(tmp_path):
    before = current_settings()
    settings = Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"})
    use_settings(settings)
    yield settings
    use_settings(before)


def run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------ the core without them

def test_importing_the_engine_the_cli_and_the_tools_imports_no_extra():
    code = ("import sys\nimport orchestrator, orchestrator.cli, orchestrator.cli.commands, tools\n"
            "from orchestrator import Orchestrator, Workflow, Pipeline\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_anymoda_help_runs_without_the_extras_and_stays_fast():
    """The whole command line is there with every extra hidden from the start (the packages cannot be imported)."""
    code = ("import sys\n"
            f"for name in {HEAVY!r}:\n    sys.modules[name] = None\n"
            "from orchestrator.cli import main\nsys.exit(main(['--help']))")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "render" in done.stdout and "workflow" in done.stdout
    assert elapsed < 5.0, f"anymoda --help took {elapsed:.1f} s"  # ~0.4 s here; the bound only catches a heavy import


def test_every_extra_is_declared_in_pyproject_and_installed_by_setup():
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for module, extra in EXTRA_OF.items():
        package = {"av": '"av'}.get(module, f'"{module}')
        assert package not in dependencies, f"{module} is a core dependency again"
        assert f"\n{extra} = [{package}" in pyproject, f"the {extra} extra does not install {module}"
        assert extra in setup.split('install -e ".[', 1)[1].split("]", 1)[0].split(","), f"setup.sh skips {extra}"


# ------------------------------------------------------------------------------------------ the one-line errors

@pytest.mark.parametrize(("module", "what", "message"), [
    ("matplotlib", "plotting", "plotting needs matplotlib: pip install 'anymoda[plot]'"),
    ("matplotlib.pyplot", "plotting", "plotting needs matplotlib: pip install 'anymoda[plot]'"),
    ("av", "writing a video file", "writing a video file needs av: pip install 'anymoda[video]'"),
    ("peft", "LoRA", "LoRA needs peft: pip install 'anymoda[lora]'"),
])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, module, what, message):
    hide(monkeypatch, module.split(".")[0])
    assert not installed(module)
    with pytest.raises(MissingExtraError) as missing:
        import_extra(module, what)
    assert str(missing.value) == message
    assert isinstance(missing.value, AnymodaError) and isinstance(missing.value, ToolUnavailableError)


def test_render_without_the_plot_extra_exits_2_with_one_line(home, monkeypatch, capsys, tmp_path):
    from orchestrator.execution.state import open_store

    store = open_store(home)
    sound = store.put_value(ArtifactKind.AUDIO, AudioClip(np.zeros(1600, np.float32), 16_000))
    series = store.put_value(ArtifactKind.TIME_SERIES, TimeSeries(np.arange(20, dtype=np.float64)))
    hide(monkeypatch, "matplotlib")
    for artifact, what in ((sound, "a spectrogram picture"), (series, "a time-series plot")):
        code, out, err = run(capsys, "render", artifact.id, "-o", tmp_path / "picture.png")
        assert code == 2 and out == ""
        assert err == f"error: {what} needs matplotlib: pip install 'anymoda[plot]'\n"
    assert not (tmp_path / "picture.png").exists()


def test_workflow_show_without_the_plot_extra_prints_mermaid_and_names_the_extra(home, monkeypatch, capsys, tmp_path):
    hide(monkeypatch, "matplotlib")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "workflow", "show", "voice-question")
    assert code == 0 and "flowchart" in out
    assert "no picture: a workflow picture needs matplotlib: pip install 'anymoda[plot]'" in err + out
    assert list(tmp_path.glob("*.png")) == []
    code, _, err = run(capsys, "workflow", "show", "voice-question", "-o", tmp_path / "asked.png")  # asked for one
    assert code == 2 and "a workflow picture (PNG; Mermaid text needs nothing) needs matplotlib: pip install " \
                          "'anymoda[plot]'" in err and err.count("\n") == 1


def test_writing_a_video_without_the_video_extra_names_it(monkeypatch):
    from tools.video_generation import encode_mp4

    hide(monkeypatch, "av")
    with pytest.raises(MissingExtraError, match=r"^writing a video file needs av: pip install 'anymoda\[video\]'$"):
        encode_mp4(np.zeros((2, 16, 16, 3), np.uint8), 8)


def test_lora_without_the_lora_extra_names_it(monkeypatch):
    from orchestrator.native.multimodal_lm import MultimodalLM

    hide(monkeypatch, "peft")
    model = SimpleNamespace(lora_settings=None)  # nothing else is touched before peft is needed
    with pytest.raises(MissingExtraError, match=r"^LoRA \(stage-2 training with lora_r > 0\) needs peft: "
                                                r"pip install 'anymoda\[lora\]'$"):
        MultimodalLM.enable_lora(model, r=4)


def test_the_loss_curve_is_skipped_without_the_plot_extra(monkeypatch):
    from orchestrator.native import train

    hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtraError, match=r"^the loss curve needs matplotlib"):
        train.plot_loss_curve([{"step": 1, "loss": 1.0}], [], Path("unused.png"))
    assert not installed("matplotlib")  # what train_connector asks before drawing it


def test_labels_are_drawn_without_the_plot_extra(monkeypatch):
    """Detection overlays and the sample receipt use matplotlib's DejaVu fonts when present, Pillow's otherwise."""
    from orchestrator.storage.media import Detections
    from orchestrator.storage.render import dejavu_font, draw_detections
    from orchestrator.storage.sample_inputs import receipt_image

    hide(monkeypatch, "matplotlib")
    assert dejavu_font(20).getbbox("TOTAL")[2] > 0
    from PIL import Image

    drawn = draw_detections(Image.new("RGB", (64, 64)), Detections([(4, 4, 40, 40)], ["dog"], [0.9], (64, 64)))
    assert drawn.size == (64, 64) and drawn.getbbox() is not None
    assert receipt_image().size[0] > 100


# ------------------------------------------------------------------------------------------ tools report it

@pytest.mark.parametrize(("tool_name", "module", "extra"), [
    ("time-series-description", "matplotlib", "plot"),
    ("depth-estimation", "matplotlib", "plot"),
    ("text-to-video", "av", "video"),
])
def test_a_tool_whose_extra_is_missing_is_unavailable_with_the_command(home, monkeypatch, tool_name, module, extra):
    from orchestrator.execution.recovery import unavailable_record
    from orchestrator.tooling.model_store import fetch_command
    from orchestrator.tooling.registry import ToolRegistry

    hide(monkeypatch, module)
    tool_class = ToolRegistry.default().get(tool_name)
    tool = tool_class(settings=home)
    availability = tool.available()
    assert not availability and availability.summary == f"needs {module}"
    assert availability.reason == (f"tool {tool_name!r} needs the Python package(s) {module}; install them with "
                                   f"pip install 'anymoda[{extra}]'")
    with pytest.raises(ToolUnavailableError, match=rf"pip install 'anymoda\[{extra}\]'"):
        tool.resolve()
    assert f"pip install 'anymoda[{extra}]'" in fetch_command(tool_name, home)
    record = unavailable_record(tool_class, "t1", {}, settings=home)
    assert record is not None and record.reason == availability.reason
    assert record.fetch_command.startswith(f"pip install 'anymoda[{extra}]'")


def test_anymoda_tools_and_models_list_show_them_as_unable_to_run(home, monkeypatch, capsys):
    import json

    hide(monkeypatch, "matplotlib", "av")
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps cells at the terminal's width
    code, out, _ = run(capsys, "tools")
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    for name, module in (("time-series-description", "matplotlib"), ("depth-estimation", "matplotlib"),
                         ("text-to-video", "av")):
        assert f"no: needs {module}" in lines[name], lines[name]
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    rows = {row["tool"]: row for row in json.loads(out)}
    assert rows["time-series-description"]["missing_runtime"] == ["matplotlib"]
    assert rows["time-series-description"]["fetch"] == "pip install 'anymoda[plot]'"
    assert rows["text-to-video"]["missing_runtime"] == ["av"]
    assert rows["text-to-video"]["fetch"].startswith("pip install 'anymoda[video]'")
