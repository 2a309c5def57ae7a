"""Workflow files, pipelines and batches (issue 6), on stub tools: format, validation, semantics, resume."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from orchestrator.agent import Orchestrator
from orchestrator.workflows.batch import STATE_FILE, run_batch
from orchestrator.execution.compose import Composer
from orchestrator.errors import InvalidInputError
from orchestrator.workflows.pipeline import Pipeline, item, pipeline_function, step
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.tooling.stub_tools import STUB_TOOLS
from orchestrator.workflows.definition import Workflow, WorkflowError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
import crash_child  # noqa: E402
from conftest import cli_home_with  # noqa: E402

REGISTRY = ToolRegistry([*STUB_TOOLS, crash_child.GatedWait])

SQUARES = """\
name: squares
description: find squares, name each colour, repaint each, report
inputs:
  image: image
  note: {kind: text, default: "hello"}
nodes:
  find:
    tool: stub-find
    args: {image: $image}
  name_each:
    tool: stub-name
    for_each: {crops: $find.detections, of: $image}
    args: {image: $item}
  paint_each:
    tool: stub-paint
    for_each: $name_each.text
    args: {text: $item}
  report:
    tool: stub-wait
    when: count($find.detections) > 0
    args: {a: $name_each.text, b: "found {$find.summary} / {$note}", seconds: 0.0}
  many:
    tool: stub-wait
    when: count($find.detections) >= 3 and "red" in $find.summary
    args: {a: $find.summary, seconds: 0.0}
outputs:
  colours: $name_each.text
  paints: $paint_each.image
  report: $report.text
  many: $many.text
"""


def squares(path: Path, colours: list[tuple[int, int, int]]) -> Path:
    image = Image.new("RGB", (96, 32), "white")
    draw = ImageDraw.Draw(image)
    for i, colour in enumerate(colours):
        draw.rectangle((4 + 30 * i, 6, 22 + 30 * i, 24), fill=colour)
    image.save(path)
    return path


@pytest.fixture
def orch(settings) -> Orchestrator:
    orchestrator = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None))
    yield orchestrator
    orchestrator.runner.shutdown()


def load(text: str, source: str = "wf.yaml") -> Workflow:
    return Workflow.loads(text, source=source, registry=REGISTRY)


def problems(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        load(text)
    return str(caught.value).splitlines()


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("text, expected", [
    ("nodes:\n  a:\n    tool: stub-fnd\n    args: {}\n", ["wf.yaml:3: node 'a': no tool named 'stub-fnd'; did you mean stub-find"]),
    ("inputs:\n  words: text\nnodes:\n  a:\n    tool: stub-brighten\n    args:\n      image: $words\n",
     ["wf.yaml:7: node 'a', argument 'image': needs image, but $words is text"]),
    ("nodes:\n  a:\n    tool: stub-wait\n    args: {a: $b.text}\n  b:\n    tool: stub-wait\n    args: {a: $a.text}\n",
     ["wf.yaml:2: workflow: the tasks depend on each other in a cycle: a -> b -> a"]),
    ("inputs: {image: image}\nnodes:\n  a:\n    tool: stub-paint\n    args: {}\n  b:\n    tool: stub-brighten\n"
     "    args: {image: $picture}\n",
     ["wf.yaml:3: node 'a', argument 'text': 'stub-paint' needs this input (text)",
      "wf.yaml:8: node 'b', argument 'image': $picture is neither an input nor a node (known: $image, $a)"]),
    ("nodes:\n  a:\n    tool: stub-wait\n    args: {a: [1, 2}\n", ["wf.yaml:4: not valid YAML: expected ',' or ']'"]),
    ("nodes:\n  a:\n    tool: stub-wait\n    tool: stub-paint\n", ["wf.yaml:4: not valid YAML: 'tool' is given twice"]),
    ("nodes:\n  a:\n    tool: stub-wait\n    when: __import__('os').system('rm')\n",
     ["wf.yaml:4: node 'a': condition \"__import__('os').system('rm')\": only one-argument calls of count"]),
    ("nodes:\n  a:\n    tool: stub-wait\n    args: {seconds: 9999}\n    retry: 3\n",
     ["wf.yaml:4: node 'a', argument 'seconds': must be at most 600.0, got 9999",
      "wf.yaml:5: node 'a': unknown key 'retry'"]),
    ("inputs: {image: image}\nnodes:\n  f: {tool: stub-find, args: {image: $image}}\n  c:\n    tool: stub-brighten\n"
     "    for_each: {crops: $f.detections, of: $image}\n    args: {image: $item}\n  d:\n    tool: stub-brighten\n"
     "    args: {image: $c.image}\n",
     ["wf.yaml:10: node 'd', argument 'image': $c.image is a list (one per item of c); only text lists can be joined"]),
    ("nodes:\n  a:\n    tool: stub-wait\n    args: {a: $item}\n",
     ["wf.yaml:4: node 'a', argument 'a': $item exists only inside a node with for_each"]),
    ("inputs: {image: image}\nnodes:\n  a:\n    tool: stub-brighten\n    for_each: {lines: $image}\n    args: {image: $item}\n",
     ["wf.yaml:3: node 'a', for_each: lines needs text, but $image is image"]),
    ("inputs: {clip: {kind: audio, default: x.wav}}\nnodes:\n  a: {tool: stub-wait}\n",
     ["wf.yaml:1: input 'clip': only text and json inputs can have a default"]),
    ("nodes:\n  a: {tool: stub-find, args: {image: $$literal}}\noutputs:\n  x: $a\n",
     ["wf.yaml:2: node 'a', argument 'image': needs image: an input artifact id or a reference",
      "wf.yaml:4: output 'x': $a has several outputs"]),
    ("- just\n- a list\n", ["wf.yaml:1: a workflow is a mapping"]),
])
def test_invalid_workflows_are_reported_with_file_and_line(text, expected):
    found = problems(text)
    for line in expected:
        assert any(f.startswith(line) for f in found), (line, found)
    if len(expected) > 1 or expected[0].startswith("wf.yaml:7") or "cycle" in expected[0]:
        # every problem at once, none hidden behind the first
        assert len(found) >= len(expected)


def test_a_file_that_is_not_there_or_not_text_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        Workflow.load(tmp_path / "missing.yaml", REGISTRY)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(WorkflowError, match=r"binary.yaml:1: not UTF-8 text"):
        Workflow.load(binary, REGISTRY)


def test_the_yaml_round_trip_keeps_the_meaning():
    workflow = load(SQUARES)
    again = load(workflow.to_yaml())
    assert again.to_dict() == workflow.to_dict()
    assert again.fingerprint() == workflow.fingerprint()
    assert load(SQUARES.replace("seconds: 0.0}\n  many", "seconds: 0.5}\n  many")).fingerprint() != workflow.fingerprint()
    literal = load("nodes:\n  a: {tool: stub-wait, args: {label: $$5 off}}\n")
    assert literal.nodes["a"].args["label"] == "$5 off"
    assert load(literal.to_yaml()).nodes["a"].args["label"] == "$5 off"


# ---------------------------------------------------------------------------------- running


def test_conditions_fan_out_map_gather_and_templates(orch, tmp_path):
    image = squares(tmp_path / "three.png", [(255, 0, 0), (0, 0, 255), (0, 160, 0)])
    events = list(orch.stream_workflow(load(SQUARES), {"image": image}))
    run_id = events[0].run
    result = orch.result(run_id)
    assert result.status == "done" and not result.failures and not result.error
    store = orch.store
    colours = [store.load(a, session=result.session) for a in result.outputs["colours"]]
    assert colours == ["red", "blue", "green"]  # one task per crop, in box order
    paints = [store.load(a, session=result.session) for a in result.outputs["paints"]]
    assert [p.getpixel((5, 5)) for p in paints] == [(255, 0, 0), (0, 0, 255), (0, 160, 0)]  # map after map
    assert store.load(result.outputs["report"], session=result.session) == \
        "done | red\nblue\ngreen | found 1 red, 1 blue, 1 green / hello"  # gathered lines + template + default input
    assert store.load(result.outputs["many"], session=result.session).startswith("done | 1 red")
    crops = [store.get(a, session=result.session) for a in
             [t.arguments["image"] for t in orch.journal.tasks(run_id) if t.task.startswith("name_each[")]]
    assert [c.metadata["label"] for c in crops] == ["red", "blue", "green"]
    assert all(len(c.parents) == 2 for c in crops)  # lineage: the image and the detections it was cut by
    started = [e.task for e in events if e.type == "task_started"]
    assert {"name_each[0]", "name_each[1]", "name_each[2]", "paint_each[2]"} <= set(started)


def test_a_false_condition_skips_the_node_and_what_needs_it(orch, tmp_path):
    image = squares(tmp_path / "one.png", [(0, 0, 255)])
    result = orch.run_workflow(load(SQUARES), {"image": image, "note": "hi"})
    assert result.status == "done"
    assert result.tasks["many"].status == "skipped" and "condition" in result.tasks["many"].error
    assert result.outputs["many"] is None and result.outputs["report"] is not None
    blank = Image.new("RGB", (40, 40), "white")
    empty = orch.run_workflow(load(SQUARES), {"image": blank})
    assert empty.status == "done"
    assert empty.tasks["name_each"].status == "skipped" and "nothing to iterate" in empty.tasks["name_each"].error
    assert empty.tasks["paint_each"].status == "skipped"
    assert empty.tasks["report"].status == "skipped"
    assert empty.outputs["colours"] == [] and empty.outputs["report"] is None


def test_a_failed_fan_out_item_fails_alone(orch):
    text = """
inputs: {words: text}
nodes:
  each:
    tool: stub-wait
    for_each: {lines: $words}
    when: $item != "bad"
    args: {a: $item, seconds: 0.0}
  broken:
    tool: stub-wait
    for_each: {lines: $words}
    args: {a: $item, fail: true, seconds: 0.0}
  after:
    tool: stub-wait
    args: {a: $broken.text}
outputs:
  each: $each.text
"""
    result = orch.run_workflow(load(text), {"words": "one\nbad\nthree\n\n"})
    statuses = {t: r.status for t, r in result.tasks.items()}
    assert statuses["each[0]"] == statuses["each[2]"] == "done" and statuses["each[1]"] == "skipped"
    assert [statuses[f"broken[{i}]"] for i in range(3)] == ["failed"] * 3
    assert statuses["after"] == "skipped"
    assert result.status == "failed" and len(result.failures) == 3
    assert len(result.outputs["each"]) == 2


def test_items_of_a_json_list_are_literals(orch):
    text = """
inputs:
  colours: {kind: json, default: ["red", "blue"]}
nodes:
  paint:
    tool: stub-paint
    for_each: {items: $colours}
    args: {text: $item}
outputs:
  pictures: $paint.image
"""
    result = orch.run_workflow(load(text))
    pictures = [orch.store.load(a, session=result.session) for a in result.outputs["pictures"]]
    assert [p.getpixel((0, 0)) for p in pictures] == [(255, 0, 0), (0, 0, 255)]


def test_inputs_are_validated_before_anything_runs(orch, tmp_path):
    workflow = load(SQUARES)
    with pytest.raises(InvalidInputError, match="needs input 'image'"):
        orch.run_workflow(workflow, {})
    with pytest.raises(InvalidInputError, match="has no input.*picture"):
        orch.run_workflow(workflow, {"picture": "x.png"})
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture at all")
    with pytest.raises(InvalidInputError, match="fake.png"):
        orch.run_workflow(workflow, {"image": fake})
    with pytest.raises(InvalidInputError, match="takes text"):
        orch.run_workflow(workflow, {"image": squares(tmp_path / "s.png", [(255, 0, 0)]), "note": 5})
    assert orch.journal.runs(limit=10) == []  # no run was started for any of them


def test_cancel_then_resume_runs_only_what_had_not_finished(orch, tmp_path):
    gate = tmp_path / "gate"
    log = tmp_path / "log"
    text = f"""
nodes:
  one: {{tool: gated-wait, args: {{label: one, log: "{log}"}}}}
  two: {{tool: gated-wait, args: {{a: $one.text, label: two, log: "{log}", gate: "{gate}"}}}}
  three: {{tool: gated-wait, args: {{a: $two.text, label: three, log: "{log}"}}}}
outputs:
  result: $three.text
"""
    events: list = []
    worker = threading.Thread(target=lambda: events.extend(orch.stream_workflow(load(text), {})))
    worker.start()
    deadline = time.monotonic() + 20
    while not (log.exists() and "two" in log.read_text().split()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    orch.cancel(events[0].run)
    worker.join(20)
    run_id = events[0].run
    assert orch.result(run_id).status == "cancelled"
    gate.touch()
    resumed = orch.resume(run_id)
    assert resumed.status == "done"
    assert orch.store.load(resumed.outputs["result"], session=resumed.session) == "three | two | one"
    assert log.read_text().split() == ["one", "two", "two", "three"]  # one was not run again


def test_a_killed_workflow_run_resumes_without_redoing_finished_tasks(tmp_path):
    home = tmp_path / "crash-home"
    home.mkdir()
    log = home / "executions.log"
    run_id = crash_child.run_until_then_kill(
        tmp_path, home, lambda rows, calls: rows.get("slow") == "running" and "slow" in calls
        and all(rows.get(f"each[{i}]") == "done" for i in range(3)), mode="workflow")
    (home / "gate").touch()
    orchestrator = crash_child.build_orchestrator(home)
    try:
        result = orchestrator.resume(run_id)
    finally:
        orchestrator.runner.shutdown()
    assert result.status == "done", result
    calls = log.read_text().split()
    assert calls.count("first") == 1 and calls.count("item") == 3  # finished before the kill: not run again
    assert calls.count("slow") == 2 and calls.count("last") == 1
    assert orchestrator.store.load(result.outputs["result"], session=result.session) == "last | slow | item | x\nitem | y\nitem | z"


# ---------------------------------------------------------------------------------- pipelines and plans


def test_pipeline_forms_build_the_same_workflow_as_the_file(orch, tmp_path):
    p = Pipeline("squares", registry=REGISTRY)
    image = p.input("image", "image")["image"]
    found = p.add("find", "stub-find", image=image)
    names = p.add("name_each", "stub-name", for_each=found.crops(of=image), image=p.item)
    p.add("report", "stub-wait", when="count($find.detections) > 0", a=names.text, b="found {$find.summary}",
          seconds=0.0)
    p.output("colours", names.text).output("report", p["report"].text)
    built = p.to_workflow()

    @pipeline_function(registry=REGISTRY, name="squares")
    def traced(image: "image"):  # noqa: F821 - the kind, as the annotation
        found = step("stub-find", name="find", image=image)
        names = step("stub-name", name="name_each", for_each=found.crops(of=image), image=item())
        report = step("stub-wait", name="report", when="count($find.detections) > 0", a=names.text,
                      b="found {$find.summary}", seconds=0.0)
        return {"colours": names.text, "report": report.text}

    assert traced.to_workflow().to_dict() == built.to_dict()
    from_file = load(built.to_yaml())
    assert from_file.to_dict() == built.to_dict()
    result = p.run(orch, image=squares(tmp_path / "two.png", [(255, 0, 0), (0, 0, 255)]))
    assert [orch.store.load(a, session=result.session) for a in result.outputs["colours"]] == ["red", "blue"]


def test_then_chains_feed_each_step_from_the_one_before(orch):
    chain = Pipeline("chain", registry=REGISTRY).input("colour", "text").then("stub-paint").then("stub-brighten")
    workflow = chain.to_workflow()
    assert str(workflow.nodes["stub_paint"].args["text"]) == "$colour"
    assert str(workflow.nodes["stub_brighten"].args["image"]) == "$stub_paint.image"
    result = chain.run(orch, colour="blue")
    assert orch.store.load(result.outputs["image"], session=result.session).getpixel((0, 0)) == (60, 60, 255)
    with pytest.raises(InvalidInputError, match="needs 'image'"):
        Pipeline("bad", registry=REGISTRY).input("colour", "text").then("stub-brighten")


def test_a_plan_saved_as_a_workflow_reruns_without_the_planner(orch, tmp_path):
    plan = {"tasks": [{"id": "t1", "tool": "stub-find", "args": {"image": "IMAGE"}},
                      {"id": "t2", "tool": "stub-wait", "args": {"a": "<t1.summary>", "seconds": 0.0}}]}
    photo = orch.store.ingest_file(squares(tmp_path / "photo.png", [(255, 0, 0)]), session="s1")
    plan["tasks"][0]["args"]["image"] = photo.id
    planned = orch.run("find the squares", files=[photo.id], session="s1", plan=plan)
    assert planned.status == "done"
    workflow = Workflow.from_plan(planned.plan, [photo], REGISTRY, name="found")
    assert list(workflow.inputs) == ["photo"] and "t1_summary" not in workflow.outputs  # consumed by t2
    path = workflow.save(tmp_path / "found.yaml")
    again = orch.run_workflow(Workflow.load(path, REGISTRY), {"photo": squares(tmp_path / "p2.png", [(0, 0, 255)] * 2)})
    assert orch.store.load(again.outputs["t2_text"], session=again.session) == "done | 2 blue"


# ---------------------------------------------------------------------------------- batch


def test_batch_survives_a_corrupt_file_and_resumes(orch, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, 4):
        squares(folder / f"img{n}.png", [(255, 0, 0)] * n)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "out"
    workflow = load(SQUARES)
    seen: list = []
    report = run_batch(orch, workflow, folder, out, jobs=2, on_row=seen.append)
    by_file = {r.file: r for r in report.rows}
    assert [r.file for r in report.rows] == ["broken.png", "img1.png", "img2.png", "img3.png"]
    assert by_file["broken.png"].status == "failed" and "broken.png" in by_file["broken.png"].error
    assert all(by_file[f"img{n}.png"].status == "done" for n in range(1, 4))
    assert len(seen) == 4
    assert by_file["img3.png"].outputs["colours"]["text"] == ["red", "red", "red"]
    assert Path(by_file["img2.png"].outputs["paints"]["files"][1]).is_file()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["failed", "done", "done", "done"]
    table = list(csv.reader((out / "results.csv").open(newline="")))
    assert table[0] == ["file", "status", "run", "seconds", "colours", "paints", "report", "many", "error"]
    assert len(table) == 5 and table[4][4] == "red | red | red" and table[4][6].startswith("done | red\nred")

    # A second batch run skips what is done and retries only the failure; a changed file runs again.
    squares(folder / "img1.png", [(0, 0, 255)])
    again = {r.file: r for r in run_batch(orch, workflow, folder, out, jobs=2).rows}
    assert again["img2.png"].status == again["img3.png"].status == "skipped"
    assert again["img1.png"].status == "done" and again["img1.png"].outputs["colours"]["text"] == ["blue"]
    assert again["broken.png"].status == "failed"


def test_a_batch_cut_off_mid_run_resumes_that_run(orch, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    squares(folder / "a.png", [(255, 0, 0)])
    out = tmp_path / "out"
    out.mkdir()
    workflow = load(SQUARES)
    # As a killed batch leaves it: the file's run was started and recorded, then the process died.
    events = orch.stream_workflow(workflow, {"image": folder / "a.png"})
    run_id = next(events).run
    events.close()
    fingerprint = workflow.fingerprint() + __import__("hashlib").sha256(b"{}").hexdigest()[:8]
    digest = __import__("hashlib").sha256((folder / "a.png").read_bytes()).hexdigest()
    (out / STATE_FILE).write_text(json.dumps({"event": "started", "key": f"a.png:{digest[:16]}:{fingerprint}",
                                              "run": run_id, "file": "a.png"}) + "\n{\"event\": \"fin")
    report = run_batch(orch, workflow, folder, out)
    assert report.rows[0].status == "done" and report.rows[0].run == run_id  # the same run, resumed


def test_batch_refuses_bad_arguments(orch, tmp_path):
    workflow = load(SQUARES)
    with pytest.raises(InvalidInputError, match="does not exist"):
        run_batch(orch, workflow, tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no files"):
        run_batch(orch, workflow, tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InvalidInputError, match="no input 'photo'"):
        run_batch(orch, workflow, tmp_path / "empty", tmp_path / "out", input_name="photo")
    with pytest.raises(InvalidInputError, match="jobs"):
        run_batch(orch, workflow, tmp_path / "empty", tmp_path / "out", jobs=0)


# ---------------------------------------------------------------------------------- command line


@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    with cli_home_with(tmp_path, monkeypatch, REGISTRY) as home:
        yield home


def test_graph_is_the_old_name_of_the_workflow_command_and_says_so(cli_home, capsys):
    from orchestrator.cli.commands import main

    good = cli_home / "squares.yaml"
    good.write_text(SQUARES)
    assert main(["graph", "validate", str(good)]) == 0
    assert "'anymoda graph' is now 'anymoda workflow'" in capsys.readouterr().err
    assert main(["workflow", "validate", str(good)]) == 0
    assert "is now" not in capsys.readouterr().err


def test_cli_validate_run_batch_show(cli_home, capsys):
    from orchestrator.cli.commands import main

    good = cli_home / "squares.yaml"
    good.write_text(SQUARES)
    bad = cli_home / "bad.yaml"
    bad.write_text(SQUARES.replace("stub-name", "stub-nam"))
    assert main(["workflow", "validate", str(good)]) == 0
    assert main(["workflow", "validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:11: node 'name_each': no tool named 'stub-nam'" in err

    image = squares(cli_home / "two.png", [(255, 0, 0), (0, 0, 255)])
    assert main(["workflow", "run", str(good), "--input", f"image={image}", "--input", "note=hi", "--out",
                 str(cli_home / "out"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "done" and len(printed["outputs"]["colours"]) == 2
    assert (cli_home / "out" / "colours-1.txt").read_text() == "blue"
    assert main(["workflow", "run", str(good), "--input", "image"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err

    folder = cli_home / "batch"
    folder.mkdir()
    squares(folder / "a.png", [(0, 160, 0)])
    (folder / "b.png").write_text("garbage")
    assert main(["workflow", "run", str(good), "--batch", str(folder), "--out", str(cli_home / "results")]) == 1
    assert (cli_home / "results" / "results.csv").is_file()
    assert "a.png" in capsys.readouterr().out

    assert main(["workflow", "show", str(good), "-o", str(cli_home / "g.png")]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.splitlines()[3] == "flowchart LR" and all(n in mermaid for n in ("find", "name_each", "report"))
    assert Image.open(cli_home / "g.png").size[0] > 200


def test_approval_before_a_tool_pauses_the_workflow_until_answered(settings, tmp_path):
    orchestrator = Orchestrator(settings=settings, registry=REGISTRY, planner=None, composer=Composer(None),
                                approve_before=["stub-paint"])
    try:
        workflow = load("inputs: {colour: text}\nnodes:\n  paint: {tool: stub-paint, args: {text: $colour}}\n"
                        "  note: {tool: stub-wait, args: {label: noted, seconds: 0.0}}\noutputs:\n  picture: $paint.image\n")
        waiting = orchestrator.run_workflow(workflow, {"colour": "green"})
        assert waiting.status == "awaiting_approval" and [t["id"] for t in waiting.pending_approval] == ["paint"]
        assert waiting.tasks["note"].status == "done"  # the rest ran meanwhile
        done = orchestrator.resume(waiting.run_id, approve=True)
        assert done.status == "done"
        assert orchestrator.store.load(done.outputs["picture"], session=done.session).getpixel((0, 0)) == (0, 160, 0)
    finally:
        orchestrator.runner.shutdown()


def test_cli_saves_a_planned_run_as_a_workflow_and_shows_workflow_runs(cli_home, capsys):
    from orchestrator.cli.commands import main
    from orchestrator.config import current_settings

    orchestrator = Orchestrator(settings=current_settings(), registry=REGISTRY, planner=None, composer=Composer(None))
    photo = orchestrator.store.ingest_file(squares(cli_home / "photo.png", [(255, 0, 0)]), session="s")
    planned = orchestrator.run("find squares", files=[photo.id], session="s", plan={"tasks": [
        {"id": "t1", "tool": "stub-find", "args": {"image": photo.id}},
        {"id": "t2", "tool": "stub-wait", "args": {"a": "<t1.summary>", "seconds": 0.0}}]})
    orchestrator.runner.shutdown()
    saved = cli_home / "saved.yaml"
    assert main(["workflow", "from-run", planned.run_id, "-o", str(saved), "--name", "found"]) == 0
    assert "--input photo=" in capsys.readouterr().out
    other = squares(cli_home / "other.png", [(0, 0, 255)] * 3)
    assert main(["workflow", "run", str(saved), "--input", f"photo={other}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(["runs", "show", result["run"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["request"] == "workflow found" and [t["task"] for t in shown["tasks"]] == ["t1", "t2"]
    assert "3 blue" in shown["answer"]
    assert main(["workflow", "from-run", result["run"], "-o", str(cli_home / "again.yaml")]) == 2
    assert "no planned tasks" in capsys.readouterr().err
