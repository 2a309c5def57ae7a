"""Fuzzing the languages users write (issue 15): workflow YAML, the condition language, the compact plan
syntax. Each property: the input gives a valid result or a clear AnymodaError, never another exception.

Deterministic (derandomize, no example database) so that CI sees the same examples every run, and
bounded (max_examples) so that the whole file takes seconds. Inputs come from grammars of the
languages' own tokens, so that most examples get past the first check, and from mutations of the
shipped workflows, so that near-valid files are tried too.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import AnymodaError
from orchestrator.planning.plan import Plan, ValidatedPlan, validate_plan
from orchestrator.planning.plan_syntax import CompactSyntax, PlanInput
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.workflows.conditions import parse_condition
from orchestrator.workflows.definition import Condition, Workflow, WorkflowError
from orchestrator.workflows.graph_drawing import to_mermaid
from orchestrator.workflows.workflow_tasks import WorkflowTaskGraph, evaluate_condition

REGISTRY = ToolRegistry.default()
SHIPPED = sorted((Path(__file__).resolve().parents[1] / "graphs").glob("*.yaml"))
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


def tokens(vocabulary: list[str], max_size: int = 25) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(vocabulary), max_size=max_size).map("".join)


# ---------------------------------------------------------------------------------- conditions

CONDITION_TOKENS = [
    "$detect.detections", "$a", "$a.text", "$item", "$x.label", "$", "$$", "__r0", "__r1", "__r9", "int", "float",
    "count", "len", "lower", "upper", "strip", "open", "__import__", "(", ")", "[", "]", "[0]", "['label']", "[-1]",
    "0", "1", "-1", "1e308", "-1e308", "1e999", "9" * 30, "0.5", "'x'", '"cat"', "'$a'", "'", '"', "==", "!=", "<",
    "<=", ">", ">=", " in ", " not in ", "not ", " and ", " or ", "True", "False", "None", "true", " ", ",", ":",
    ".", "+", "*", "**", " if ", " else ", "lambda x: ", "{", "}", "f'{1}'", "...", "1j", "b'x'", "\\", "\n", "#",
]
# Conditions built by the language's grammar: mostly valid, so that evaluation meets every construct.
condition_atoms = st.one_of(
    st.sampled_from(["$a", "$a.text", "$x.label", "$item", "0", "1", "-1", "0.5", "1e308", "'x'", "''", "'dog'",
                     "None", "True", "False"]),
    st.builds("{}({})".format, st.sampled_from(["int", "float", "count", "len", "lower", "upper", "strip"]),
              st.sampled_from(["$a", "$a.text", "'3'", "1"])),
    st.builds("{}[{}]".format, st.sampled_from(["$a", "$x.label", "lower($a)"]),
              st.sampled_from(["0", "-1", "'label'", "'score'", "1000"])))
grammar_conditions = st.recursive(condition_atoms, lambda inner: st.one_of(
    st.builds("{} {} {}".format, inner, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]), inner),
    st.builds("not {}".format, inner), st.builds("-{}".format, inner),
    st.builds("({} {} {})".format, inner, st.sampled_from(["and", "or"]), inner)), max_leaves=8)
condition_texts = st.one_of(grammar_conditions, grammar_conditions, tokens(CONDITION_TOKENS), st.text(max_size=60),
                            st.builds(lambda n, inner: "(" * n + inner + ")" * n, st.integers(0, 300),
                                      grammar_conditions),
                            st.builds(lambda n, inner: "not " * n + inner, st.integers(0, 40), grammar_conditions))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=20), st.just("9" * 5000)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12)


@FUZZ
@given(condition_texts)
def test_a_condition_parses_or_is_refused_with_a_value_error(text):
    try:
        condition = parse_condition(text)
    except ValueError as exc:  # what _parse_nodes turns into the file's 'node ...: condition ...' problem
        assert str(exc).startswith("condition ") and len(str(exc)) < 400
        return
    assert isinstance(condition, Condition)


@FUZZ
@given(condition_texts, st.lists(json_values, min_size=10, max_size=10))
def test_a_condition_that_parsed_evaluates_or_fails_clearly_on_its_values(text, values):
    try:
        condition = parse_condition(text)
    except ValueError:
        return
    try:
        result = evaluate_condition(condition, values[:len(condition.references)], "node 'n'")
    except AnymodaError as exc:
        assert str(exc).startswith("node 'n': the condition ") and len(str(exc)) < 600
        return
    assert isinstance(result, bool)


@FUZZ
@given(condition_texts)
def test_a_condition_in_a_workflow_file_loads_or_is_a_workflow_error(text):
    document = {"inputs": {"image": "image"},
                "nodes": {"detect": {"tool": "object-detection", "args": {"image": "$image"}},
                          "caption": {"tool": "image-captioning", "when": text, "args": {"image": "$image"}}}}
    check_loads(yaml.safe_dump(document, allow_unicode=True))


# ---------------------------------------------------------------------------------- workflow YAML


def check_loads(text: str) -> Workflow | None:
    """The property every workflow text must have; a loaded workflow must also work as everything that
    takes one (its YAML reloads to the same meaning, it draws, it becomes the executor's graph)."""
    try:
        workflow = Workflow.loads(text, source="fuzz.yaml", registry=REGISTRY)
    except WorkflowError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("fuzz.yaml") for line in lines)
        assert all(len(line) < 500 for line in lines) and len(lines) <= 41
        return None
    again = Workflow.loads(workflow.to_yaml(), source="again.yaml", registry=REGISTRY)
    assert again.fingerprint() == workflow.fingerprint()
    nodes, edges = workflow.drawing()
    assert "flowchart" in to_mermaid(nodes, edges, title=workflow.name)
    graph = WorkflowTaskGraph(workflow, REGISTRY, None, "session", "run", {})
    assert set(graph.order) == set(workflow.nodes)
    return workflow


YAML_TOKENS = [
    "name: x\n", "nodes:\n", "inputs:\n", "outputs:\n", "  a:\n", "  b:\n", "    tool: image-captioning\n",
    "    tool: object-detection\n", "    tool: text-to-speech\n", "    tool: nope\n", "    args:\n",
    "      image: $image\n", "      image: $a.caption\n", "      text: $a.caption\n", "      text: \"{$a.caption}!\"\n",
    "      image: $item\n", "    for_each: {crops: $a.detections, of: $image}\n", "    for_each: $a.caption\n",
    "    when: count($a.detections) > 0\n", "    when: __r0 == 1\n", "  image: image\n", "  image: {kind: image}\n",
    "  q: {kind: text, default: hi}\n", "  o: $b.audio\n", "  o: $a\n", "  o: *x\n", "&x [1, 2]\n", "*x\n", "- ",
    "{", "}",
    "[", "]", ": ", "? ", "!!binary x\n", "!!python/object:os.system x\n", "<<: *x\n", "2021-13-45\n", "'", '"', "\t",
    "#", "%YAML 1.1\n", "---\n", "...\n", " ", "\n", "9" * 40, "~\n", ".inf\n", "\x00", "\ufeff",
]
yaml_texts = st.one_of(tokens(YAML_TOKENS, 40), st.text(max_size=200))


@FUZZ
@given(yaml_texts)
def test_any_text_loads_or_is_a_workflow_error(text):
    check_loads(text)


names = st.one_of(st.sampled_from(["a", "b", "image", "item", "caption", "detections", "x-y", "../x", ""]),
                  st.text(max_size=12))
references = st.one_of(st.sampled_from(["$image", "$a", "$a.caption", "$a.detections", "$b.audio", "$item", "$$x",
                                        "$", "$a.", "{$a.caption}", "x {$image} y"]), st.text(max_size=10))
scalars = st.one_of(references, st.integers(), st.floats(), st.booleans(), st.none())
tools = st.sampled_from(["image-captioning", "object-detection", "text-to-speech", "open-vocabulary-detection",
                         "segment-anything", "summarization", "nope", ""])
node_specs = st.fixed_dictionaries(
    {"tool": st.one_of(tools, scalars)},
    optional={"args": st.one_of(st.dictionaries(st.sampled_from(["image", "text", "labels", "boxes", "max_length",
                                                                 "bogus"]), scalars, max_size=3), scalars),
              "when": st.one_of(condition_texts, scalars), "model": scalars, "description": scalars,
              "for_each": st.one_of(references, st.dictionaries(st.sampled_from(["crops", "items", "lines", "of", "x"]),
                                                                references, max_size=3)),
              "retry": scalars})
documents = st.fixed_dictionaries(
    {"nodes": st.one_of(st.dictionaries(names, node_specs, max_size=4), scalars)},
    optional={"name": st.one_of(names, scalars), "description": scalars,
              "inputs": st.one_of(st.dictionaries(names, st.one_of(
                  st.sampled_from(["image", "text", "audio", "json", "video", "nope"]),
                  st.fixed_dictionaries({"kind": st.one_of(st.sampled_from(["image", "text", "json"]), scalars)},
                                        optional={"default": json_values, "description": scalars})), max_size=3),
                  scalars),
              "outputs": st.one_of(st.dictionaries(names, st.one_of(references, json_values), max_size=3), scalars),
              "extra": scalars})


@FUZZ
@given(documents)
def test_any_workflow_shaped_mapping_loads_or_is_a_workflow_error(document):
    check_loads(yaml.safe_dump(document, allow_unicode=True))


# Nodes that fit together, so that many generated workflows are valid and reach the round trip, the
# drawing and the executor's graph; a few of their values are then replaced by anything at all.
NODE_MENU = {
    "detect": {"tool": "object-detection", "args": {"image": "$image", "threshold": 0.5}},
    "find": {"tool": "open-vocabulary-detection", "args": {"image": "$image", "labels": "$objects"}},
    "caption": {"tool": "image-captioning", "args": {"image": "$image", "prompt": "a photo of"}},
    "each": {"tool": "image-captioning", "for_each": {"crops": "$detect.detections", "of": "$image"},
             "args": {"image": "$item"}},
    "speak": {"tool": "text-to-speech", "args": {"text": "{$caption.caption} / {$objects}"}},
    "sum": {"tool": "summarization", "args": {"text": "$each.caption"}},
    "lines": {"tool": "text-to-speech", "for_each": {"lines": "$sum.summary"}, "args": {"text": "$item"}},
}
NEEDS = {"each": ["detect"], "speak": ["caption"], "sum": ["each"], "lines": ["sum"]}
MENU_CONDITIONS = {"detect": "count($detect.detections) > 0", "caption": "'dog' in lower($caption.caption)",
                   "find": "$find.summary != '' and not count($find.detections) == 0",
                   "sum": "len(strip($sum.summary)) > 3"}
INPUT_CONDITIONS = ["len($objects) < 40", "int($threshold) >= 1", "'dog' in $objects", "upper($objects)[0] == 'A'"]
MENU_OUTPUTS = {"speak": "$speak.audio", "each": "$each.caption", "detect": "$detect.overlay", "sum": "$sum.summary",
                "lines": "$lines.audio", "caption": "$caption", "find": "$find.detections"}


@st.composite
def menu_documents(draw) -> dict:
    chosen = set(draw(st.lists(st.sampled_from(sorted(NODE_MENU)), min_size=1, max_size=4, unique=True)))
    while any(need not in chosen for name in chosen for need in NEEDS.get(name, ())):
        chosen |= {need for name in chosen for need in NEEDS.get(name, ())}
    chosen = [name for name in NODE_MENU if name in chosen]  # upstream first, as people write them
    nodes = {name: {**NODE_MENU[name], "args": dict(NODE_MENU[name]["args"])} for name in chosen}
    for position, name in enumerate(chosen):
        if draw(st.booleans()):  # on what is known before it: the inputs, the nodes written above it
            fitting = st.sampled_from([MENU_CONDITIONS[n] for n in chosen[:position] if n in MENU_CONDITIONS]
                                      + INPUT_CONDITIONS)
            nodes[name]["when"] = draw(st.one_of(fitting, fitting, condition_texts))
    outputs = [MENU_OUTPUTS[n] for n in chosen]
    usual = st.sampled_from(["photo report", "../../../tmp/x", "Bild für Fotos", "x" * 100])
    inputs = {"image": "image", "objects": {"kind": "text", "default": "a dog"},
              "threshold": {"kind": "json", "default": 1}}
    document = {"name": draw(st.one_of(usual, usual, usual, names)), "inputs": inputs, "nodes": nodes,
                "outputs": {f"o{k}": draw(st.sampled_from(outputs)) for k in range(draw(st.integers(0, 3)))}}
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # perturbations
        name = draw(st.sampled_from(chosen))
        key = draw(st.sampled_from(["tool", "when", "for_each", "description", "model", *nodes[name]["args"]]))
        value = draw(st.one_of(scalars, json_values, references))
        where = nodes[name] if key in ("tool", "when", "for_each", "description", "model") else nodes[name]["args"]
        where[key] = value
    return document


@settings(FUZZ, max_examples=200)
@given(menu_documents())
def test_workflows_made_of_fitting_nodes_load_or_are_a_workflow_error(document):
    check_loads(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(SHIPPED), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 40), st.sampled_from(
    ["", " ", "\n", "  ", "$", "$item", "{", "]", ":", "- ", "&a ", "*a", "__r0", "'", "#", "nope", "0"])),
    min_size=1, max_size=4))
def test_a_shipped_workflow_with_random_edits_loads_or_is_a_workflow_error(path, edits):
    text = path.read_text(encoding="utf-8")
    for where, cut, insert in edits:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + cut:]
    check_loads(text)


def test_the_shipped_workflows_pass_the_property_unchanged():
    # The property's own positive case: check_loads returns the workflow, so the fuzzing above also
    # exercises the round trip, the drawing and the graph, not only the refusals.
    assert all(check_loads(path.read_text(encoding="utf-8")) is not None for path in SHIPPED)


# ---------------------------------------------------------------------------------- the compact plan syntax

INPUTS = [PlanInput("photo.jpg", "image-0123456789abcdef", ArtifactKind.IMAGE),
          PlanInput("voice.wav", "audio-0123456789abcdef", ArtifactKind.AUDIO)]
PLAN_TOKENS = [
    "t1", "t2", "t3", "t0", "t99999999999999999999", " = ", "=", "==", "image-captioning", "text-to-speech",
    "object-detection", "nope", "(", ")", "image=", "text=", "audio=", "labels=", "max_length=", "photo.jpg",
    "voice.wav", "image-0123456789abcdef", "t1.caption", "t1.nope", "t1.", '"hello"', '"', '"\\u0000"', '"\\ud800"',
    "[", "]", "{", "}", "[" * 50, "[[1]]", '{"a": [1]}', "1", "-1", "1e999", "9" * 5000, "0.5", "true", "false", "null",
    ", ", ",", " ", "\n", "answer(", 'answer("ok")', "```", "```text\n", "\t", "\x00", "é",
]
plan_texts = st.one_of(tokens(PLAN_TOKENS, 30), st.text(max_size=120),
                       st.builds(lambda n: 't1 = image-captioning(image=' + "[" * n + "]" * n + ")",
                                 st.integers(0, 100_000)))


@FUZZ
@given(plan_texts)
def test_a_compact_plan_parses_and_validates_or_is_refused_clearly(text):
    syntax = CompactSyntax()
    try:
        plan = syntax.parse(text, INPUTS)
    except AnymodaError as exc:
        assert str(exc) and len(str(exc)) < 1000
        return
    assert isinstance(plan, Plan)
    try:
        validated = validate_plan(plan, REGISTRY)
    except AnymodaError as exc:
        assert str(exc)
        return
    assert isinstance(validated, ValidatedPlan)
    # A valid plan renders back to text that parses to the same plan (infinity has no JSON spelling).
    if not any(isinstance(v, float) and not math.isfinite(v) for t in plan.tasks for v in t.args.values()):
        handles = {i.artifact_id: i.handle for i in INPUTS}
        assert syntax.parse(syntax.render(plan, handles), INPUTS) == plan
