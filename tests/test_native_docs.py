"""Every command the README and ARCHITECTURE show for the native path runs here, as a user would type it.

The fenced ``bash`` blocks of the two "native path" sections are read line by line; each command runs in a child
process (``anymoda`` as ``python -m orchestrator.cli``) in one working directory, in the order written, with the
environment it names and a sales.csv written the way people write them (a header, a date column, missing
values). Commands that train or benchmark run with a tiny LLM and a hundredth of their steps (options appended:
the last spelling wins), so a renamed or removed option fails here. Commands that use the shipped connector run on
the real packaged Qwen (``real_weights``) and must answer the trend and the spike of that file right. The
section's Python block runs too, on the tiny LLM.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import requires_offline_extra
from tiny_llms import save_tiny_chat_qwen2

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ((ROOT / "README.md", "## The native path"), (ROOT / "docs" / "ARCHITECTURE.md", "## The native path"))
SPIKE_ROW = 70


def section(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end > 0 else None]


def documented_commands() -> list[tuple[dict[str, str], list[str]]]:
    """(environment, argv) of every command line in the sections' bash blocks, in order."""
    commands = []
    for path, heading in SECTIONS:
        for block in re.findall(r"```bash\n(.*?)```", section(path, heading), re.S):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                env = {}
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                    name, value = words.pop(0).split("=", 1)
                    env[name] = value
                if words:
                    commands.append((env, words))
    return commands


def python_blocks() -> list[str]:
    return [block for path, heading in SECTIONS for block in re.findall(r"```python\n(.*?)```", section(path, heading), re.S)]


def uses_shipped_connector(env: dict[str, str], argv: list[str]) -> bool:
    if argv[:3] == ["anymoda", "tool", "native-chat"]:
        return "ANYMODA_MODEL_NATIVE_CHAT" not in env and "--model" not in argv
    return "--native-checkpoint" in argv and "shipped" in argv


def write_sales_csv(path: Path) -> Path:
    """120 days rising from about 100 to 160 with a weekly wobble, one spike, three empty cells and an NA."""
    lines = ["date,sales"]
    for day in range(120):
        value = 100 + 0.5 * day + 3 * math.sin(day * 2 * math.pi / 7) + (45 if day == SPIKE_ROW else 0)
        cell = "" if day in (12, 55, 90) else "NA" if day == 101 else f"{value:.2f}"
        lines.append(f"2024-{1 + day // 28:02d}-{1 + day % 28:02d},{cell}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def child_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANYMODA_")}
    env.update(ANYMODA_HOME=str(home), ANYMODA_OFFLINE="1", ANYMODA_DEVICE="cpu", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT), **extra)
    return env


def run(env: dict[str, str], argv: list[str], cwd: Path, home: Path, timeout: float = 600) -> str:
    if argv[0] == "anymoda":
        command = [sys.executable, "-m", "orchestrator.cli", *argv[1:]]
    elif argv[0] == "python":
        script = ROOT / argv[1]
        command = [sys.executable, str(script) if script.is_file() else argv[1], *argv[2:]]
    else:
        raise AssertionError(f"a documented command this test does not know how to run: {shlex.join(argv)}")
    done = subprocess.run(command, cwd=cwd, env=child_env(home, env), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"`{shlex.join(argv)}` exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
                                  f"--- stderr\n{done.stderr[-4000:]}")
    return done.stdout


def smaller(argv: list[str], tiny_llm: Path) -> list[str]:
    """The command at test size: a tiny LLM, few examples, a hundredth of the steps (options appended win)."""
    if argv[:3] == ["anymoda", "train", "connector"]:
        extra = ["--llm", str(tiny_llm), "--train-size", "8", "--eval-size", "3", "--batch-size", "2", "--eval-subset", "2",
                 "--eval-generate", "1", "--no-progress"]
        for option in ("--steps", "--eval-every", "--save-every"):  # a hundredth, as the steps
            if option in argv:
                extra += [option, str(max(1, math.ceil(int(argv[argv.index(option) + 1]) / 100)))]
        if "--resume" in argv:  # a resumed run keeps its own settings: only the LLM and the step count are given
            extra = ["--llm", str(tiny_llm), "--no-progress", "--steps", extra[extra.index("--steps") + 1]]
        return argv + extra
    if argv[:3] == ["anymoda", "tool", "native-chat"]:
        return argv + ["--max-new-tokens", "4"]
    if argv[:2] == ["python", "benchmarks/connectors.py"]:
        return argv + ["--llm", str(tiny_llm), "--train-size", "4", "--eval-size", "3", "--series-length", "32", "--steps", "1",
                       "--warmup", "0", "--csv-eval", "2", "--csv-length", "40", "--speech-steps", "0", "--out", "bench",
                       "--no-progress"]
    return argv


def test_the_sections_show_the_commands_a_user_needs() -> None:
    commands = [shlex.join(argv) for _, argv in documented_commands()]
    assert any(c.startswith("anymoda train connector") and "--export orchestrator/data/native_ts" in c for c in commands)
    assert any(c.startswith("anymoda tool native-chat --time-series") for c in commands)
    assert any(c.startswith("python benchmarks/connectors.py") for c in commands)
    assert not any("--time_series" in c for c in commands)  # one spelling, the dashed one


def test_documented_commands_run(tmp_path: Path) -> None:
    tiny = save_tiny_chat_qwen2(tmp_path / "tiny-qwen2", hidden_size=48, intermediate_size=96)
    work = tmp_path / "work"
    work.mkdir()
    write_sales_csv(work / "sales.csv")
    ran = 0
    for env, argv in documented_commands():
        if uses_shipped_connector(env, argv):
            continue  # test_shipped_connector_commands
        printed = run(env, smaller(argv, tiny), work, tmp_path / "home")
        if argv[:3] == ["anymoda", "tool", "native-chat"]:
            assert printed.startswith("answer "), printed
        ran += 1
    assert ran >= 5
    if (work / "orchestrator" / "data" / "native_ts").exists():  # the shipped connector's command, at test size
        assert sorted(p.name for p in (work / "orchestrator" / "data" / "native_ts").iterdir()) == [
            "connectors.safetensors", "native.json"]


def test_the_python_block_runs(tmp_path: Path) -> None:
    import torch

    tiny = save_tiny_chat_qwen2(tmp_path / "tiny-qwen2")
    blocks = python_blocks()
    assert blocks
    for block in blocks:
        assert "load_llm()" in block
        namespace: dict = {}
        exec(compile(block.replace("load_llm()", f"load_llm({str(tiny)!r})"), "README.md", "exec"), namespace)
        model = namespace["model"]
        assert torch.isfinite(namespace["loss"])
        assert all(p.grad is None for p in model.llm.parameters())  # the LLM stayed frozen
        assert all(p.grad is not None for p in model.connectors.parameters())


@pytest.mark.real_weights
@requires_offline_extra
def test_shipped_connector_commands(tmp_path: Path, packaged_llm) -> None:
    from tools.native_chat import shipped_connector_folder

    if shipped_connector_folder() is None:
        pytest.skip("this checkout ships no native connector (orchestrator/data/native_ts)")
    home = tmp_path / "home"
    packaged_llm.use_in(home)
    work = tmp_path / "work"
    work.mkdir()
    write_sales_csv(work / "sales.csv")
    from orchestrator.native.datasets import parse_choice, parse_number
    from orchestrator.native.datasets.timeseries import _TREND_WORDS, DEFAULT_POSITION_TOLERANCE

    shipped = [(env, argv) for env, argv in documented_commands() if uses_shipped_connector(env, argv)]
    assert len(shipped) >= 3
    for env, argv in shipped:
        if argv[0] == "anymoda":
            printed = run(env, argv, work, home)
            answer = printed.split("\n", 1)[1].strip().splitlines()[0]
            question = argv[argv.index("--question") + 1].lower()
            if "trend" in question:
                assert parse_choice(answer, _TREND_WORDS) == "up", answer
            else:
                guess = parse_number(answer)
                assert guess is not None and abs(guess - SPIKE_ROW) <= DEFAULT_POSITION_TOLERANCE, answer
        else:
            printed = run(env, argv + ["--csv-eval", "2", "--train-size", "4", "--eval-size", "2", "--no-text-baseline",
                                       "--out", "bench-shipped", "--no-progress"], work, home)
            assert "shipped connector" in printed and "CSV e2e" in printed


def test_the_shipped_connector_is_small_package_data() -> None:
    """What a non-editable install gets: every file of orchestrator/data/native_ts matches the package-data globs."""
    import fnmatch
    import tomllib

    from tools.native_chat import shipped_connector_folder

    folder = shipped_connector_folder()
    if folder is None:
        pytest.skip("this checkout ships no native connector")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["orchestrator"]
    files = [path for path in folder.rglob("*") if path.is_file()]
    for path in files:
        relative = path.relative_to(ROOT / "orchestrator").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
    assert sum(path.stat().st_size for path in files) < 4_000_000  # a connector, not an LLM
    from orchestrator.native.checkpoint import read_metadata

    metadata = read_metadata(folder)
    assert metadata["extra"]["llm"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and metadata["lora"] is None
    assert metadata["encoders"]["ts"].startswith("ts-patch16@steps")
