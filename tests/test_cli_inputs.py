"""Hostile and careless command-line input: texts that look like paths, paths that are no files, outputs
that go nowhere. Each is a one-line error and exit code 2 (never a traceback), and a refused input stores nothing.

The tool run here is a weightless echo registered for these tests, so no model is loaded.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import orchestrator.cli.commands as cli
from orchestrator.cli import agent_commands
from orchestrator.config import Settings, current_settings, use_settings
from orchestrator.errors import InvalidInputError
from orchestrator.execution.events import Event
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.storage.media import TimeSeries
from orchestrator.storage.store import ArtifactStore
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.tool import Input, Output, WeightlessTool

PARAGRAPH = ("The harbour was quiet that morning; the fishing boats had gone out before dawn and the gulls followed "
             "them past the breakwater, leaving the quay to a man mending nets and a dog asleep in the sun. By noon "
             "the wind turned, and the first boats came back early, low in the water, their decks silver with fish.")


class Echo(WeightlessTool):
    name = "echo"
    task = "echo"
    description = "Says what it was given."
    inputs = {"text": Input(ArtifactKind.TEXT, "words"), "data": Input(ArtifactKind.JSON, "JSON", required=False),
              "image": Input(ArtifactKind.IMAGE, "a picture", required=False)}
    outputs = {"text": Output(ArtifactKind.TEXT, "what came in")}
    default_model = "echo"

    def build_method(self) -> Any:
        return "echo"

    def run(self, model: Any, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return {"text": inputs["text"]}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private home whose store the CLI uses, and a registry holding only the echo tool."""
    previous = current_settings()
    root = tmp_path / "home"
    use_settings(Settings.from_dict({"home": str(root), "offline": True, "device": "cpu",
                                     "limits": {"max_bytes": 4096}}))
    monkeypatch.setattr(ToolRegistry, "default", classmethod(lambda cls: cls([Echo])))
    monkeypatch.setenv("COLUMNS", "400")
    yield root
    use_settings(previous)


def run_cli(*argv: Any) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


def store(home: Path) -> ArtifactStore:
    return ArtifactStore(home / "artifacts")


def echoed(home: Path) -> list[str]:
    """The texts stored as the echo tool's inputs, oldest first."""
    texts = store(home).list(kind="text")
    return [store(home).load(a.id) for a in texts if a.metadata.get("tool") != "echo"]


def one_line_error(code: int, out: str, err: str, *words: str) -> str:
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------ text is text


def test_a_long_paragraph_is_the_text_not_a_file_name(home):
    code, out, err = run_cli("tool", "echo", "--text", PARAGRAPH)
    assert code == 0, err
    assert echoed(home) == [PARAGRAPH]


def test_a_path_given_as_text_is_the_words_with_a_note_on_reading_the_file(home, tmp_path):
    note = tmp_path / "hostname"
    note.write_text("secret-machine\n")
    code, out, err = run_cli("tool", "echo", "--text", note)
    assert code == 0, err
    assert echoed(home) == [str(note)]  # the words, not the file's contents
    assert "secret-machine" not in out
    assert f"--text @{note}" in " ".join(err.split())


def test_at_path_reads_the_file_and_keeps_its_name(home, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("mend the nets before noon\n", encoding="utf-8")
    code, out, err = run_cli("tool", "echo", "--text", f"@{note}")
    assert code == 0, err
    [stored] = [a for a in store(home).list(kind="text") if a.metadata.get("name") == "note.txt"]
    assert store(home).load(stored.id) == "mend the nets before noon\n"


def test_a_double_at_is_a_text_that_begins_with_at(home):
    code, _, err = run_cli("tool", "echo", "--text", "@@harbourmaster")
    assert code == 0, err
    assert echoed(home) == ["@harbourmaster"]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: "@/nonexistent/note.txt", ("--text", "no file", "/nonexistent/note.txt")),
        (lambda tmp: f"@{tmp}", ("--text", "is a directory")),
        (lambda tmp: f"@{_fifo(tmp)}", ("--text", "named pipe")),
        (lambda tmp: "@/proc/self/status", ("--text", "special file", "proc")),
        (lambda tmp: "@/dev/zero", ("--text", "special file", "dev")),
        (lambda tmp: "@" + "x" * 300, ("--text", "cannot read", "File name too long", "characters)")),
        (lambda tmp: "@" + str(Path(tmp) / "bin.png"), ("--text", "not valid UTF-8", "image/png")),
        (lambda tmp: "@" + str(Path(tmp) / "big.txt"), ("--text", "over the limit of 4,096")),
    ],
    ids=["missing", "directory", "fifo", "proc", "device", "name-too-long", "binary", "too-big"],
)
def test_unreadable_text_files_are_one_line_errors_and_store_nothing(home, tmp_path, make, words):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "bin.png")
    (tmp_path / "big.txt").write_text("a" * 5000)
    code, out, err = run_cli("tool", "echo", "--text", make(tmp_path))
    message = one_line_error(code, out, err, *words)
    assert len(message) < 400  # a 300-character name is echoed cut short
    assert store(home).count() == 0


def test_a_file_growing_past_the_limit_after_its_size_was_checked_is_cut_at_the_limit(tmp_path, monkeypatch):
    from orchestrator.storage import codecs

    path = tmp_path / "growing.txt"
    path.write_text("a" * 100)
    monkeypatch.setattr(codecs, "check_input_file", lambda p, limit, what: Path(p))  # as if checked when it was small
    path.write_text("a" * 10_000)
    with pytest.raises(InvalidInputError, match="over the limit of 1,000 bytes"):
        codecs.read_input_file(path, 1000, "--text")


# ------------------------------------------------------------------------------------------ json and media


def test_json_is_written_out_or_read_with_at(home, tmp_path):
    data = tmp_path / "rows.json"
    data.write_text('[{"boat": "Mary"}]')
    assert run_cli("tool", "echo", "--text", "hi", "--data", '{"a": 1}')[0] == 0
    assert run_cli("tool", "echo", "--text", "hi", "--data", f"@{data}")[0] == 0
    stored = [store(home).load(a.id) for a in store(home).list(kind="json")]
    assert {"a": 1} in stored and [{"boat": "Mary"}] in stored


@pytest.mark.parametrize(("value", "words"), [("{'a': 1}", ("--data", "not valid JSON")),
                                               ("@bad.json", ("--data", "bad.json", "not valid JSON", "line 1")),
                                               ("bad.json", ("--data", "not valid JSON", "write --data @bad.json"))])
def test_bad_json_is_a_one_line_error(home, tmp_path, monkeypatch, value, words):
    (tmp_path / "bad.json").write_text("{nope")
    monkeypatch.chdir(tmp_path)
    one_line_error(*run_cli("tool", "echo", "--text", "hi", "--data", value), *words)
    assert store(home).count() == 0


@pytest.mark.parametrize(("value", "words"), [("/dev/zero", ("--image", "special file")),
                                               ("@/dev/null", ("--image", "special file")),
                                               ("{tmp}", ("--image", "is a directory")),
                                               ("@{tmp}/none.png", ("--image", "no file"))])
def test_media_paths_that_are_no_files_are_refused_before_reading(home, tmp_path, value, words):
    one_line_error(*run_cli("tool", "echo", "--text", "hi", "--image", value.format(tmp=tmp_path)), *words)
    assert store(home).count() == 0


def test_a_media_file_may_be_given_with_or_without_at(home, tmp_path):
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "p.png")
    assert run_cli("tool", "echo", "--text", "hi", "--image", tmp_path / "p.png")[0] == 0
    assert run_cli("tool", "echo", "--text", "hi", "--image", f"@{tmp_path / 'p.png'}")[0] == 0
    assert len(store(home).list(kind="image")) == 2


def test_tool_help_says_how_files_are_read(home, capsys):
    with pytest.raises(SystemExit):
        cli.main(["tool", "echo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--text TEXT|@FILE" in help_text and "--image FILE|ID" in help_text
    assert "@FILE to read a file" in help_text and "@@" in help_text


@pytest.mark.parametrize(("path", "words"), [("/proc/self/status", ("--file", "special file")),
                                              ("/dev/zero", ("--file", "special file")),
                                              ("{tmp}", ("--file", "is a directory")),
                                              ("{tmp}/none.wav", ("--file", "no file"))])
def test_run_refuses_files_that_are_no_files_before_planning(home, tmp_path, monkeypatch, path, words):
    monkeypatch.setattr(agent_commands, "Orchestrator", lambda *a, **k: pytest.fail("planned with a bad --file"))
    one_line_error(*run_cli("run", "what is in this file?", "--file", path.format(tmp=tmp_path)), *words)


# ------------------------------------------------------------------------------------------ outputs


@pytest.fixture
def series_id(home) -> str:
    t = np.arange(30.0)
    return store(home).put_value("time_series", TimeSeries(np.sin(t / 3), 1_708_000_000 + 86400 * t, None,
                                                           "seconds since 1970-01-01 UTC")).id


@pytest.mark.parametrize(("where", "words"), [("x.xyz", (".xyz", ".png")), ("nowhere/x.png", ("does not exist",)),
                                              ("noext", ("no extension",)), ("{tmp}/", ("is a folder",))])
def test_render_refuses_a_destination_before_drawing(home, tmp_path, monkeypatch, series_id, where, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.ArtifactStore, "load", lambda *a, **k: pytest.fail("loaded before the -o check"))
    one_line_error(*run_cli("render", series_id, "-o", where.format(tmp=tmp_path)), *words)
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "x.xyz").exists()


def test_render_writes_the_format_its_extension_names(home, tmp_path, series_id):
    code, _, err = run_cli("render", series_id, "-o", tmp_path / "plot.jpg")
    assert code == 0, err
    assert Image.open(tmp_path / "plot.jpg").format == "JPEG"


def test_export_into_a_new_folder_named_with_a_slash(home, tmp_path, series_id, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("artifacts", "export", series_id, "newdir/")
    assert code == 0, err
    assert (tmp_path / "newdir").is_dir()
    assert [p.name for p in (tmp_path / "newdir").iterdir()] == [f"{series_id}.json"]
    # An existing folder is also "into"; any other name is the file itself.
    assert run_cli("artifacts", "export", series_id, "newdir")[0] == 0
    assert len(list((tmp_path / "newdir").iterdir())) == 1
    assert run_cli("artifacts", "export", series_id, "copy.json")[0] == 0
    assert (tmp_path / "copy.json").read_bytes() == (tmp_path / "newdir" / f"{series_id}.json").read_bytes()


def test_export_under_a_file_is_a_one_line_error(home, tmp_path, series_id):
    (tmp_path / "plain").write_text("x")
    one_line_error(*run_cli("artifacts", "export", series_id, tmp_path / "plain" / "inside.json"), "cannot export", "plain")


def test_tool_output_that_fits_no_output_is_refused_before_running(home, tmp_path, monkeypatch):
    monkeypatch.setattr(Echo, "run", lambda *a: pytest.fail("ran with an -o it could not honour"))
    one_line_error(*run_cli("tool", "echo", "--text", "hi", "-o", tmp_path / "out.wav"), "-o", "'.wav'", "text (text)")
    assert store(home).count() == 0


def test_tool_output_into_a_folder_named_with_a_slash(home, tmp_path):
    code, _, err = run_cli("tool", "echo", "--text", "hi", "-o", f"{tmp_path}/out.d/")
    assert code == 0, err
    [saved] = list((tmp_path / "out.d").iterdir())
    assert saved.suffix == ".txt" and saved.read_text() == "hi"


def test_an_image_pillow_cannot_identify_is_named_without_a_memory_address(home, tmp_path):
    """'cannot identify image file <_io.BytesIO object at 0x7ff499d0e110>': Pillow's message named its buffer."""
    path = tmp_path / "broken.gif"
    path.write_bytes(b"GIF89a\x01\x00garbage")
    line = one_line_error(*run_cli("tool", "echo", "--text", "hi", "--image", path), "not a readable image",
                          "cannot identify")
    assert "0x" not in line and "BytesIO" not in line
    assert store(home).count() == 0


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


def test_export_never_replaces_a_special_file(home, tmp_path, series_id, fifo):
    """The export wrote a temporary file and renamed it over the FIFO (as root over /dev/null too)."""
    one_line_error(*run_cli("artifacts", "export", series_id, fifo), "named pipe", "pipe.json")
    assert fifo.is_fifo()
    symlink = tmp_path / "null.json"
    symlink.symlink_to("/dev/null")
    one_line_error(*run_cli("artifacts", "export", series_id, symlink), "special file of the system")
    assert symlink.is_symlink()
    one_line_error(*run_cli("artifacts", "export", series_id, "/proc/self/anymoda.json"), "special file of the system")
    os.mkfifo(tmp_path / "pipe.txt")
    one_line_error(*run_cli("tool", "echo", "--text", "hi", "-o", tmp_path / "pipe.txt"), "-o", "named pipe")
    assert (tmp_path / "pipe.txt").is_fifo()
    picture = tmp_path / "null.png"
    picture.symlink_to("/dev/null")
    one_line_error(*run_cli("render", series_id, "-o", picture), "-o", "special file of the system")


@pytest.mark.parametrize("name", ["x" * 300 + ".json", "deep/" + "y" * 300 + "/z.json"])
def test_export_to_a_name_too_long_is_a_one_line_error(home, tmp_path, series_id, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(*run_cli("artifacts", "export", series_id, name), "File name too long")


@pytest.mark.parametrize("where", ["{tmp}/pipe.png", "{tmp}/" + "w" * 300 + ".png", "/proc/self/graph.png",
                                   "/dev/anymoda-graph.png"])
def test_workflow_show_refuses_a_picture_path_it_cannot_write(home, tmp_path, where, monkeypatch):
    os.mkfifo(tmp_path / "pipe.png")
    monkeypatch.chdir(tmp_path)
    workflow = tmp_path / "w.yaml"
    workflow.write_text("name: w\ninputs: {t: text}\nnodes:\n  e: {tool: echo, args: {text: $t}}\noutputs: {o: $e.text}\n")
    code, out, err = run_cli("workflow", "show", workflow, "-o", where.format(tmp=tmp_path))
    one_line_error(code, "", err, "-o")
    assert (tmp_path / "pipe.png").is_fifo() and not Path("/dev/anymoda-graph.png").exists()


@pytest.mark.parametrize("where", ["{tmp}/pipe", "{tmp}/plain.txt", "{tmp}/plain.txt/inside", "/proc/self/outputs",
                                   "{tmp}/" + "o" * 300, ""])
def test_workflow_run_refuses_an_out_folder_it_cannot_make_before_running(home, tmp_path, where, monkeypatch):
    """A file, a FIFO, /proc or a name too long as --out: a traceback after the run had been done."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "plain.txt").write_text("keep me")
    workflow = tmp_path / "w.yaml"
    workflow.write_text("name: w\ninputs: {t: text}\nnodes:\n  e: {tool: echo, args: {text: $t}}\noutputs: {o: $e.text}\n")
    monkeypatch.setattr(Echo, "run", lambda *a: pytest.fail("ran with an --out it could not honour"))
    one_line_error(*run_cli("workflow", "run", workflow, "--input", "t=hi", "--out", where.format(tmp=tmp_path)), "--out")
    assert (tmp_path / "plain.txt").read_text() == "keep me" and (tmp_path / "pipe").is_fifo()
    assert store(home).count() == 0
    one_line_error(*run_cli("workflow", "run", workflow, "--batch", tmp_path, "--out", where.format(tmp=tmp_path)),
                   "--out")
    one_line_error(*run_cli("demo", "--out", where.format(tmp=tmp_path)), "--out")


@pytest.mark.parametrize(("option", "where", "words"), [
    ("--out", "{tmp}/pipe", "named pipe"), ("--out", "{tmp}", "is a folder"), ("--out", "/dev/anymoda-head.npz", "special file"),
    ("--phrases", "/proc/self/environ", "special file"), ("--phrases", "{tmp}/pipe", "named pipe"),
    ("--phrases", "{tmp}", "is a directory"),
])
def test_train_planner_refuses_its_files_before_loading_anything(home, tmp_path, monkeypatch, option, where, words):
    """--phrases /proc/self/environ was read; --out a FIFO was found out only after the minute of embedding."""
    import orchestrator.planning.planner_retrieval as retrieval

    os.mkfifo(tmp_path / "pipe")
    monkeypatch.setattr(retrieval, "minilm_embedder", lambda: pytest.fail("loaded MiniLM before checking the files"))
    argv = ["train", "planner", option, where.format(tmp=tmp_path)]
    if option == "--phrases":
        argv += ["--out", str(tmp_path / "head.npz")]
    one_line_error(*run_cli(*argv), option, words)
    assert not Path("/dev/anymoda-head.npz").exists()


@pytest.mark.parametrize(("where", "words"), [("/dev/zero", "special file"), ("{tmp}/pipe", "named pipe"),
                                              ("{tmp}", "is a directory"), ("{tmp}/missing.jsonl", "does not exist")])
def test_bench_planner_refuses_a_case_file_that_is_no_file(home, tmp_path, where, words):
    """/dev/zero or a FIFO as --cases hung; a folder or a missing file was a traceback."""
    os.mkfifo(tmp_path / "pipe")
    one_line_error(*run_cli("bench", "planner", "--cases", where.format(tmp=tmp_path)), "--cases", words)


LONG = "m" * 20_000


@pytest.mark.parametrize("argv", [("tool", LONG), ("workflow", "run", LONG), ("workflow", "show", LONG),
                                  ("workflow", "validate", LONG), ("models", "pull", LONG), ("models", "remove", LONG),
                                  ("artifacts", "list", "--kind", LONG), ("run", "hello", "--planner", LONG)])
def test_a_huge_name_is_quoted_short_in_its_error(home, argv):
    """Each of these echoed a 20,000-character argument whole; 'workflow run NAME' was an OSError traceback
    (File name too long) before it could say there is no such workflow."""
    line = one_line_error(*run_cli(*argv))
    assert len(line) < 1000 and "20000 characters" in line, line[:300]


@pytest.mark.parametrize("command", [("runs", "list"), ("artifacts", "list")])
@pytest.mark.parametrize(("option", "value", "words"), [
    ("--limit", "99999999999999999999", "from 1 to 100,000"), ("--limit", "-1", "from 1 to 100,000"),
    ("--limit", "0", "from 1 to 100,000"), ("--limit", "ten", "whole number"),
    ("--session", "../other", "not a usable session id"), ("--session", "s" * 5000, "5000 characters"),
])
def test_listing_options_out_of_range_are_refused_by_name(home, capsys, command, option, value, words):
    """--limit 99999999999999999999 overflowed SQLite in a traceback; -1 listed everything; a session that
    no id could be was looked up anyway."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"error: argument {option}:" in last and words in last and len(last) < 400, last


@pytest.mark.parametrize("command", [("runs", "show"), ("runs", "resume"), ("runs", "cancel")])
def test_a_long_run_id_is_quoted_short(home, command):
    line = one_line_error(*run_cli(*command, "run-" + "r" * 5000), "is not a run id", "5004 characters")
    assert len(line) < 300


@pytest.mark.parametrize("option", ["--rate", "--concurrent-runs"])
@pytest.mark.parametrize("value", ["99999999999999999999", "9007199254740992", "0"])
def test_key_limits_out_of_range_are_one_line_errors(home, option, value):
    pytest.importorskip("fastapi")
    one_line_error(*run_cli("keys", "create", "--tenant", "acme", option, value), "must be a whole number from 1 to")
    code, out, err = run_cli("keys", "list")
    assert code == 0 and "acme" not in out, (out, err)


# ------------------------------------------------------------------------------------------ what a pipe gets


def test_tables_keep_whole_names_when_piped(tmp_path, monkeypatch):
    """At 80 columns without a terminal, 'document-question-answering' came out as 'document-ques' / 'tion-answerin' / 'g'."""
    previous = current_settings()
    use_settings(Settings.from_dict({"home": str(tmp_path / "home"), "offline": True, "device": "cpu"}))
    monkeypatch.setenv("COLUMNS", "80")
    try:
        code, out, _ = run_cli("tools")
    finally:
        use_settings(previous)
    assert code == 0
    for tool in ToolRegistry.default():
        row = re.search(rf"^│ {re.escape(tool.name)}\s+│ {re.escape(tool.task)}\s+│.*│ {re.escape(tool.default_model)}\s", out,
                        re.MULTILINE)
        if tool.offline_fallback is None:  # those may show their offline fallback as the model
            assert row, tool.name


def test_an_error_after_the_live_tree_starts_on_its_own_line(capsys):
    def events():
        yield Event("run_started", "run-1", data={"request": "count the boats"})
        yield Event("plan_ready", "run-1", data={"plan": {"tasks": [{"id": "t1", "tool": "echo", "args": {}}]}})
        yield Event("task_started", "run-1", task="t1")
        raise InvalidInputError("the harbour camera is offline")

    assert not agent_commands.console.is_terminal
    with pytest.raises(InvalidInputError):
        agent_commands.show_run(events())
    cli.console.print("error: the harbour camera is offline")
    lines = capsys.readouterr().err.splitlines()
    assert "error: the harbour camera is offline" in lines, lines
    assert any(line.rstrip().endswith("t1 echo 0.0 s") or "t1 echo" in line for line in lines)
    assert not any("t1 echo" in line and "error" in line for line in lines)


if sys.platform == "win32":  # FIFOs and /proc are POSIX
    pytest.skip("POSIX special files", allow_module_level=True)


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_an_empty_text_is_refused_before_anything_is_stored(home, value: str):
    before = store(home).count()
    code, out, err = run_cli("tool", "echo", "--text", value)
    assert code == 2 and out == "" and err.strip() == "error: --text is empty"
    assert store(home).count() == before
