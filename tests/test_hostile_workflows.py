"""Workflow files written to hurt (issue 15): alias bombs, deep nesting, names that are paths,
conditions that validate but cannot run, formulas in batch results. Each is refused up front with a
bounded, one-line-per-problem message (exit code 2 on the command line), never a traceback."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.agent import Orchestrator
from orchestrator.errors import shown
from orchestrator.execution.compose import Composer
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.stub_tools import STUB_TOOLS
from orchestrator.workflows.batch import csv_cell, run_batch, save_outputs
from orchestrator.workflows.conditions import parse_condition
from orchestrator.workflows.definition import (
    MAX_PROBLEMS,
    Workflow,
    WorkflowError,
    safe_filename,
)
from orchestrator.workflows.loading import MAX_YAML_DEPTH

from conftest import cli_home_with

REPO = Path(__file__).resolve().parents[1]
REGISTRY = ToolRegistry(STUB_TOOLS)
GOOD_NODES = "inputs: {image: image}\nnodes:\n  find: {tool: stub-find, args: {image: $image}}\n"


def alias_bomb(levels: int, where: str) -> str:
    """Each anchor a list of ten aliases of the one before: 10**levels strings from a few hundred bytes."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]" for k in range(1, levels)]
    body = "\n".join(lines) + "\n" + GOOD_NODES
    if where == "outputs":
        return body + f"outputs:\n  o: *l{levels - 1}\n"
    return body.replace("args: {image: $image}}", f"args: {{image: $image}}, description: *l{levels - 1}}}")


def refused(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        Workflow.loads(text, source="wf.yaml", registry=REGISTRY)
    return str(caught.value).splitlines()


# ---------------------------------------------------------------------------------- alias expansion


@pytest.mark.parametrize("where", ["outputs", "description"])
def test_an_alias_bomb_is_refused_at_the_alias_by_the_command_line_within_bounded_memory(tmp_path, where):
    # 10**9 strings once expanded; before the fix this took gigabytes and printed hundreds of MB.
    # A child process under an address-space limit, so a regression fails here instead of taking the machine.
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9, where))
    assert path.stat().st_size < 1000
    child = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from orchestrator.cli import main
        sys.exit(main(["workflow", "validate", {str(path)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    printed = done.stdout + done.stderr
    assert "Traceback" not in printed and len(printed) < 2000
    assert f"{path}:5: alias *l3 takes the workflow past 100000 values" in printed


def test_merge_keys_cannot_multiply_a_mapping_past_the_limit():
    text = "m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n"
    text += "".join(f"m{k}: &m{k} {{<<: [" + ", ".join([f"*m{k - 1}"] * 10) + "]}\n" for k in range(1, 8))
    found = refused(text + GOOD_NODES)
    assert len(found) == 1 and "takes the workflow past 100000 values" in found[0] and found[0].startswith("wf.yaml:5:")


def test_aliases_of_one_long_text_are_counted_by_their_characters():
    text = f'big: &big "{"x" * 50_000}"\nmany: [' + ", ".join(["*big"] * 50) + "]\n" + GOOD_NODES
    found = refused(text)
    assert len(found) == 1 and "past 2000000 characters of text" in found[0] and found[0].startswith("wf.yaml:2:")


def test_an_alias_inside_the_value_it_names_is_refused():
    found = refused("loop: &loop [1, *loop]\n" + GOOD_NODES)
    assert found == ["wf.yaml:1: alias *loop is used inside the value it names, which would never end"]


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}"), ("- ", "")])
def test_deep_nesting_is_one_line_not_a_recursion_error(opening, closing):
    depth = 5000  # Python's limit is 1000 frames; PyYAML's composer takes ~3 a level
    start = "deep:\n  " if opening == "- " else "deep: "  # block sequences nest on one line: - - - 1
    text = start + opening * depth + "1" + closing * depth + "\n"
    found = refused(text + GOOD_NODES)
    assert len(found) == 1 and f"values nested more than {MAX_YAML_DEPTH} deep" in found[0]


def test_a_workflow_file_over_a_megabyte_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD_NODES + "description: " + "x" * 1_100_000 + "\n")
    with pytest.raises(WorkflowError, match="over 1000000 bytes"):
        Workflow.load(path, REGISTRY)


def test_values_a_file_cannot_hold_are_errors_with_their_line():
    for value in ("2021-13-45", "9" * 5000):  # a date that is none; more digits than int() takes
        assert refused(f"when: {value}\n" + GOOD_NODES)[0].startswith("wf.yaml:1: not valid YAML: cannot read this value")


def test_every_echoed_value_is_bounded():
    long_name = "n" * 1000  # PyYAML allows keys up to 1024 characters
    text = (f"{long_name}: 1\ninputs:\n  {long_name}: image\nnodes:\n  {long_name}: {{tool: stub-find}}\n"
            f"  find:\n    tool: {'t' * 5000}\n  other:\n    tool: stub-wait\n    args: {{{long_name}: 1}}\n"
            f"    description: [{', '.join(['x' * 100] * 100)}]\n    when: {'w' * 5000}\n"
            f"outputs:\n  o: {'y' * 5000}\n  p: ${'z' * 5000}\n")
    found = refused(text)
    assert len(found) == 9, found
    assert all(len(line) < 400 for line in found), max(found, key=len)
    assert sum("(1000 characters)" in line for line in found) == 4
    assert sum("(5000 characters)" in line or "(5001 characters)" in line for line in found) == 4


def test_the_number_of_problems_shown_is_bounded():
    text = "".join(f"unknown{k}: 1\n" for k in range(500)) + GOOD_NODES
    found = refused(text)
    assert len(found) == MAX_PROBLEMS + 1 and found[-1] == f"wf.yaml: … and {500 - MAX_PROBLEMS} more problem(s)"


def test_shown_cuts_texts_and_structures_without_building_them_whole():
    assert shown("short") == "'short'"
    assert shown("x" * 1000) == repr("x" * 60) + "… (1000 characters)"
    nested: list = ["x" * 1000]
    for _ in range(500):
        nested = [nested] * 10  # 10**500 items if expanded
    assert len(shown(nested)) < 100


# ---------------------------------------------------------------------------------- conditions


@pytest.mark.parametrize("condition, message", [
    ("__r0 == 1", "unknown name '__r0'"),
    ("$find.summary == 'a' and __r0 == 1", "names like __r0 are not allowed"),
    ("int == 1", "int is a function; call it on a value"),
    ("count == 0", "count is a function"),
    ("$find.summary == '$find.summary'", "a $reference inside quotes is not a value"),
    ("not " * 40 + "$find.summary", "nests more than 24 deep"),
    ("-" * 10_000 + "1", "longer than 500 characters"),
    ("(" * 300 + "1" + ")" * 300, "longer than 500 characters"),
])
def test_conditions_that_would_fail_at_run_time_are_refused_when_read(condition, message):
    found = refused(GOOD_NODES + f"  check:\n    tool: stub-wait\n    when: {condition!r}\n")
    assert len(found) == 1 and found[0].startswith("wf.yaml:6: node 'check':") and message in found[0], found
    assert len(found[0]) < 400


@pytest.mark.parametrize("condition, message", [
    # How these are written makes them fail whatever the values: they validated, then failed every run.
    ("count($find.summary) > 'a'", "compares a number with a text"),
    ("'a' <= len($find.summary)", "compares a text with a number"),
    ("(len($find.summary) > 1) >= 'x'", "compares a number with a text"),
    ("$find.summary in 5", "'in' needs a text or a list on its right, not a number"),
    ("$find.summary not in None", "'in' needs a text or a list on its right, not None"),
    ("count($find.summary) in lower($find.summary)", "a number is never in a text"),
    ("len(count($find.summary)) > 1", "len() of a number"),
    ("len(5) > 1", "can never be evaluated"),
    ("count(None) == 0", "can never be evaluated"),
    ("int('abc') > 1", "can never be evaluated"),
    ("'abc'[7] == 'c'", "can never be evaluated"),
    ("-'a' == 1", "can never be evaluated"),
    ("1 < 'a'", "can never be evaluated"),
    ("-lower($find.summary) == 1", "minus of a text"),
    ("len($find.summary)[0] == 1", "indexes a number"),
    ("upper($find.summary)['label'] == 'A'", "a text is indexed by a whole number"),
    ("float(None) > 1", "can never be evaluated"),
    ("None > count($find.summary)", "compares None"),
])
def test_conditions_that_fail_by_how_they_are_written_are_refused_when_read(condition, message):
    found = refused(GOOD_NODES + f"  check:\n    tool: stub-wait\n    when: {condition!r}\n")
    assert len(found) == 1 and found[0].startswith("wf.yaml:6: node 'check':") and message in found[0], found
    assert len(found[0]) < 400


@pytest.mark.parametrize("condition", [
    "count($find.summary) > 0 and $find.summary != 'cat'", "$find.summary[0] > 'a'", "$find.summary in 'abc'",
    "'dog' in lower($find.summary)", "float($find.summary) > 2.5", "-count($find.summary) < 0", "not $find.summary",
    "$find.summary[0]['label'] == 'x'", "$find.summary == None", "count($find.summary) == 'a'", "len('abc') == 3",
    "int('12') > 1", "'abc'[-1] == 'c'", "lower($find.summary)[0] == 'x'", "$find.summary > 3",
])
def test_conditions_whose_outcome_depends_on_the_values_are_accepted(condition):
    parse_condition(condition)


def test_a_condition_that_validates_runs():
    parsed = parse_condition("int($a.b) > 2 and lower($c)[0] == 'x'")
    assert [str(r) for r in parsed.references] == ["$a.b", "$c"]


# ---------------------------------------------------------------------------------- names are not paths


@pytest.mark.parametrize("name, expected", [
    ("../../../tmp/x", "tmp-x"), ("/etc/passwd", "etc-passwd"), ("..", "workflow"), ("grounded-segmentation",
     "grounded-segmentation"), ("My workflow", "My workflow"), ("a\x00b\nc", "a-b-c"), ("．．／．．／x", "x"),
    ("\u202eevil", "evil"), ("-rf", "rf"), ("x" * 300, "x" * 48),
])
def test_safe_filename_leaves_one_plain_name(name, expected):
    assert safe_filename(name) == expected


@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    with cli_home_with(tmp_path, monkeypatch, REGISTRY) as home:
        yield home


def test_graph_show_writes_a_name_with_slashes_into_the_current_folder(cli_home, monkeypatch, capsys):
    from orchestrator.cli.commands import main

    here = cli_home / "a" / "b" / "c"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    path = cli_home / "evil.yaml"
    path.write_text("name: ../../../escaped\n" + GOOD_NODES)
    assert main(["workflow", "show", str(path)]) == 0
    assert (here / "escaped.png").is_file()
    assert [p.relative_to(cli_home) for p in cli_home.rglob("*.png")] == [Path("a/b/c/escaped.png")]


def test_graph_show_never_overwrites_a_file_named_by_someone_elses_workflow(cli_home, monkeypatch, capsys):
    """The default picture is named after the workflow, a name from the file: 'name: holiday' overwrote the
    user's ./holiday.png. A name already taken gets -2, -3...; an -o the owner gives is theirs to overwrite."""
    from orchestrator.cli.commands import main

    monkeypatch.chdir(cli_home)
    (cli_home / "holiday.png").write_bytes(b"the user's own photo")
    path = cli_home / "holiday.yaml"
    path.write_text("name: holiday\n" + GOOD_NODES)
    assert main(["workflow", "show", str(path)]) == 0
    assert main(["workflow", "show", str(path)]) == 0
    assert (cli_home / "holiday.png").read_bytes() == b"the user's own photo"
    made = sorted(p.name for p in cli_home.glob("*.png"))
    assert made == ["holiday-2.png", "holiday-3.png", "holiday.png"], made
    assert capsys.readouterr().err.count("picture: holiday-") == 2
    assert main(["workflow", "show", str(path), "-o", "holiday.png"]) == 0  # asked for by name: replaced
    assert (cli_home / "holiday.png").read_bytes().startswith(b"\x89PNG")


def test_a_name_with_control_characters_or_too_long_is_refused():
    assert "'name' must be one line" in refused("name: \"a\\nb\"\n" + GOOD_NODES)[0]
    assert "at most 100 characters" in refused(f"name: {'n' * 200}\n" + GOOD_NODES)[0]


# ---------------------------------------------------------------------------------- batch results


@pytest.mark.parametrize("cell, expected", [
    ("=HYPERLINK(\"http://x\",\"y\").png", "'=HYPERLINK(\"http://x\",\"y\").png"), ("+1", "'+1"), ("-1", "'-1"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("photo.png", "photo.png"), ("", ""), (None, ""),
    ("a=b", "a=b"),
    # Full-width twins, and a formula behind invisible format characters or spaces.
    ("\uff1dSUM(A1)", "'\uff1dSUM(A1)"), ("\uff0b1", "'\uff0b1"), ("\u202e=cmd", "'\u202e=cmd"),
    ("\u200b@x", "'\u200b@x"), ("  =1", "'  =1"), ("\u202eplain", "\u202eplain"),
])
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(cell, expected):
    assert csv_cell(cell) == expected


def test_a_batch_file_named_like_a_formula_is_text_in_results_csv(settings, tmp_path):
    orchestrator = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None))
    try:
        folder = tmp_path / "in"
        folder.mkdir()
        hostile = '=HYPERLINK("https:evil.example","click").png'
        Image.new("RGB", (32, 32), "red").save(folder / hostile)
        Image.new("RGB", (32, 32), "blue").save(folder / "+cmd.png")
        workflow = Workflow.loads(GOOD_NODES + "outputs:\n  summary: $find.summary\n", registry=REGISTRY)
        report = run_batch(orchestrator, workflow, folder, tmp_path / "out", jobs=1)
    finally:
        orchestrator.runner.shutdown()
    assert [r.status for r in report.rows] == ["done", "done"]
    raw = (tmp_path / "out" / "results.csv").read_text()
    table = list(csv.reader(raw.splitlines()))
    assert [row[0] for row in table[1:]] == ["'+cmd.png", "'" + hostile]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in table for cell in row)
    assert all(line.startswith('"') for line in raw.splitlines())  # every cell quoted
    # The saved outputs went into a folder made from the file's name, inside the output folder.
    for row in report.rows:
        for value in row.outputs.values():
            assert all(Path(p).resolve().is_relative_to((tmp_path / "out").resolve()) for p in value["files"])


def test_batch_files_named_like_the_batchs_own_files_get_folders_of_their_own(settings, tmp_path):
    """A file's outputs go to a folder named after it, next to results.csv, results.jsonl and batch-state.jsonl:
    'results.jsonl.png' made a folder results.jsonl that the table could not replace (a traceback), and
    'batch-state.jsonl.png' failed on the state file. Names that differ only in case share a folder on macOS."""
    orchestrator = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None))
    names = ["results.jsonl.png", "results.csv.png", "batch-state.jsonl.png", "Results.CSV.jpg", "results.csv.part.png",
             "Photo.png", "photo.png"]
    try:
        folder = tmp_path / "in"
        folder.mkdir()
        for number, name in enumerate(names):
            Image.new("RGB", (32, 32), (number * 30, 0, 0)).save(folder / name, format="PNG")
        workflow = Workflow.loads(GOOD_NODES + "outputs:\n  summary: $find.summary\n", registry=REGISTRY)
        out = tmp_path / "out"
        report = run_batch(orchestrator, workflow, folder, out, jobs=2)
        again = run_batch(orchestrator, workflow, folder, out, jobs=2)  # the second invocation finds them done
    finally:
        orchestrator.runner.shutdown()
    assert [r.status for r in report.rows] == ["done"] * len(names), [(r.file, r.error) for r in report.rows]
    assert [r.status for r in again.rows] == ["skipped"] * len(names)
    assert (out / "results.csv").is_file() and (out / "results.jsonl").is_file() and (out / "batch-state.jsonl").is_file()
    folders = [Path(p).parent for row in report.rows for value in row.outputs.values() for p in value["files"]]
    assert len({f.name.casefold() for f in folders}) == len(names)
    assert all(f.parent == out for f in folders)


def test_saved_outputs_of_a_workflow_built_in_code_stay_in_their_folder(settings, tmp_path):
    class Result:
        session = "s"
        outputs = {"../../escape": None}

    assert save_outputs(None, Result(), tmp_path / "out") == {}  # nothing produced, nothing written
    stored = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None))
    try:
        artifact = stored.store.put_value(__import__("orchestrator.storage.artifacts").storage.artifacts.ArtifactKind.TEXT, "hi",
                                          session="s")
        Result.outputs = {"../../escape": artifact.id}
        saved = save_outputs(stored.store, Result(), tmp_path / "out")
    finally:
        stored.runner.shutdown()
    [path] = saved["../../escape"]["files"]
    assert Path(path).parent == tmp_path / "out" and Path(path).name == "escape.txt"


def test_a_second_batch_into_the_same_folder_is_refused_while_the_first_runs(settings, tmp_path):
    """Two 'workflow run --batch' into one --out at once: files the first had not reached ran twice, the second
    recorded the first's live run as failed (busy) and the last to finish wrote a results table saying so."""
    import fcntl

    from orchestrator.execution.journal import RunBusyError

    orchestrator = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None))
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    Image.new("RGB", (32, 32), "red").save(folder / "a.png")
    workflow = Workflow.loads(GOOD_NODES + "outputs:\n  summary: $find.summary\n", registry=REGISTRY)
    out.mkdir()
    try:
        with open(out / ".batch.lock", "a+") as held:  # as the first invocation holds it while it runs
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.write(f"{os.getpid()} {socket.gethostname()}\n")
            held.flush()
            with pytest.raises(RunBusyError, match=rf"batch output folder .* is being written by process {os.getpid()} on "):
                run_batch(orchestrator, workflow, folder, out, jobs=1)
            assert orchestrator.journal.runs() == [] and not (out / "batch-state.jsonl").exists()
        report = run_batch(orchestrator, workflow, folder, out, jobs=1)  # the first has ended: the folder is free
    finally:
        orchestrator.runner.shutdown()
    assert [r.status for r in report.rows] == ["done"]


def test_outputs_whose_file_names_meet_are_all_saved(settings, tmp_path):
    """Output 'x' (a list: x-0, x-1) and output 'x-0' of the same run, or 'Part' and 'part' on a
    case-insensitive disk: the second file overwrote the first."""
    from orchestrator.storage.artifacts import ArtifactKind

    stored = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None))
    try:
        texts = {word: stored.store.put_value(ArtifactKind.TEXT, word, session="s").id
                 for word in ("first", "second", "single", "upper", "lower")}

        class Result:
            session = "s"
            outputs = {"x": [texts["first"], texts["second"]], "x-0": texts["single"], "Part": texts["upper"],
                       "part": texts["lower"]}
        saved = save_outputs(stored.store, Result(), tmp_path / "out")
    finally:
        stored.runner.shutdown()
    paths = [Path(p) for value in saved.values() for p in value["files"]]
    assert len({p.name.casefold() for p in paths}) == 5
    assert sorted(p.read_text() for p in paths) == ["first", "lower", "second", "single", "upper"]
    assert [p.name for p in paths] == ["x-0.txt", "x-1.txt", "x-0-2.txt", "Part.txt", "part-2.txt"]


# ---------------------------------------------------------------------------------- --input values


@pytest.mark.parametrize("value, words", [
    ("@/nonexistent/note.txt", ["--input note", "no file", "/nonexistent/note.txt"]),
    ("@{tmp}", ["--input note", "is a directory"]),
    ("@{tmp}/binary.bin", ["--input note", "UTF-8"]),
    ("@/proc/self/environ", ["--input note", "special file"]),
])
def test_graph_run_refuses_bad_input_files_in_one_line(cli_home, capsys, value, words):
    from orchestrator.cli.commands import main

    (cli_home / "binary.bin").write_bytes(bytes(range(256)) * 4)
    path = cli_home / "wf.yaml"
    path.write_text("inputs: {note: text}\nnodes:\n  wait: {tool: stub-wait, args: {a: $note, seconds: 0}}\n")
    assert main(["workflow", "run", str(path), "--input", "note=" + value.format(tmp=cli_home), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert all(word.lower() in err.lower() for word in words), err


def test_graph_run_takes_text_as_the_words_and_reads_a_file_only_with_at(cli_home, capsys):
    from orchestrator.cli.commands import main

    (cli_home / "note.txt").write_text("from the file")
    path = cli_home / "wf.yaml"
    path.write_text("inputs: {note: text}\nnodes:\n  wait: {tool: stub-wait, args: {a: $note, seconds: 0}}\n"
                    "outputs:\n  said: $wait.text\n")
    texts = []
    for value in (str(cli_home / "note.txt"), "@" + str(cli_home / "note.txt"), "@@home"):
        assert main(["workflow", "run", str(path), "--input", f"note={value}", "--out", str(cli_home / "out"),
                     "--json"]) == 0
        capsys.readouterr()
        texts.append((cli_home / "out" / "said.txt").read_text())
    assert texts[0].startswith("done | " + str(cli_home / "note.txt"))
    assert texts[1].startswith("done | from the file") and texts[2].startswith("done | @home")


def test_a_pipeline_refuses_a_bad_condition_or_output_as_invalid_input():
    from orchestrator.errors import InvalidInputError
    from orchestrator.workflows.pipeline import Pipeline

    pipeline = Pipeline("p", registry=REGISTRY).input("image", "image")
    with pytest.raises(InvalidInputError, match="node 'find': condition '__r0 == 1': unknown name '__r0'"):
        pipeline.add("find", "stub-find", when="__r0 == 1", image=pipeline["image"])
    with pytest.raises(InvalidInputError, match=r"output 'o': '\$x\.'"):
        pipeline.output("o", "$x.")
