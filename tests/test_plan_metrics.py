"""The planning benchmark's scorer, checked against hand-made predictions with hand-computed figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import InvalidInputError, ToolRegistry
from orchestrator.planning.plan import Plan
from orchestrator.planning.plan_metrics import (
    Case,
    CaseResult,
    Counts,
    Graph,
    Node,
    format_report,
    gold_graph,
    graph_from_plan,
    load_cases,
    load_predictions,
    match_predictions,
    registry_tool_task,
    save_predictions,
    score,
)

DEV_CASES = Path(__file__).resolve().parents[1] / "benchmarks" / "planner_dev.jsonl"  # shipped: runs in any clone


def graph(nodes: dict[str, str | None], links: list[tuple[str, str]] = ()) -> Graph:
    """Args play no part in scoring, so hand-made graphs leave them empty."""
    return Graph(tuple(Node(i, t, {}) for i, t in nodes.items()), tuple(links))


def case(case_id: str, structure: str, gold: Graph) -> Case:
    return Case(case_id, f"request {case_id}", structure, (), gold)


ASR, TTS, T2V, TOK = "automatic-speech-recognition", "text-to-speech", "text-to-video", "token-classification"
CHAIN = case("chain", "chain", graph({"n0": ASR, "n1": TTS}, [("n0", "n1")]))
SINGLE = case("single", "single", graph({"n0": "image-classification"}))
DAG = case("dag", "dag", graph({"n0": ASR, "n1": T2V, "n2": TOK}, [("n0", "n1"), ("n0", "n2")]))


def three_results() -> list[CaseResult]:
    # chain: exact, though numbered differently     nodes TP 2            edges TP 1
    # single: wrong tag                             nodes TP 0 FP 1 FN 1  edges none either side
    # dag: right nodes, one link missing            nodes TP 3            edges TP 1 FN 1
    return [
        CaseResult(CHAIN, graph({"t1": ASR, "t2": TTS}, [("t1", "t2")]), True, True, 1.0),
        CaseResult(SINGLE, graph({"t1": "object-detection"}), True, False, 2.0),
        CaseResult(DAG, graph({"a": ASR, "b": T2V, "c": TOK}, [("a", "b")]), True, True, 6.0),
    ]


def test_hand_computed_micro_averages():
    result = score(three_results())
    # nodes: TP 5, FP 1, FN 1 -> P = R = F1 = 5/6
    assert result.nodes == Counts(5, 1, 1)
    assert result.node_precision == pytest.approx(500 / 6)
    assert result.node_recall == pytest.approx(500 / 6)
    assert result.node_f1 == pytest.approx(500 / 6)
    # edges: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 = 2 * 1 * 2/3 / (5/3) = 0.8
    assert result.edges == Counts(2, 0, 1)
    assert result.edge_precision == pytest.approx(100.0)
    assert result.edge_recall == pytest.approx(200 / 3)
    assert result.edge_f1 == pytest.approx(80.0)
    assert result.exact_pct == pytest.approx(100 / 3)
    assert result.parse_pct == 100.0
    assert result.valid_pct == pytest.approx(200 / 3)
    assert result.mean_seconds == pytest.approx(3.0)


def test_breakdown_by_structure():
    parts = score(three_results()).by_structure
    assert list(parts) == ["single", "chain", "dag"]
    single, chain, dag = parts["single"], parts["chain"], parts["dag"]
    assert (single.node_f1, single.exact_pct, single.valid_pct) == (0.0, 0.0, 0.0)
    # no gold links and none predicted: agreement, not 0/0
    assert single.edge_f1 == 100.0 and single.edges == Counts(0, 0, 0)
    assert (chain.node_f1, chain.edge_f1, chain.exact_pct) == (100.0, 100.0, 100.0)
    assert dag.node_f1 == 100.0 and dag.exact_pct == 0.0
    # dag edges TP 1 FN 1: P 1, R 1/2, F1 2/3
    assert (dag.edge_precision, dag.edge_recall) == (100.0, 50.0)
    assert dag.edge_f1 == pytest.approx(200 / 3)
    assert dag.mean_seconds == 6.0


def test_tags_are_counted_as_multisets():
    gold = case("m", "dag", graph({"n0": ASR, "n1": "summarization", "n2": "summarization", "n3": "translation"},
                                  [("n0", "n1"), ("n0", "n2"), ("n0", "n3")]))
    predicted = graph({"a": ASR, "b": "summarization", "c": "translation", "d": "translation"},
                      [("a", "b"), ("a", "c"), ("a", "d")])
    result = score([CaseResult(gold, predicted, True, True)])
    # nodes: asr 1/1, summarization min(1, 2) = 1 of 2, translation min(2, 1) = 1 -> TP 3, FP 1, FN 1
    assert result.nodes == Counts(3, 1, 1)
    # edges: (asr, summarization) 1 of 2, (asr, translation) 1 of gold 1 but predicted twice -> TP 2, FP 1, FN 1
    assert result.edges == Counts(2, 1, 1)
    assert result.node_f1 == pytest.approx(75.0) and result.edge_f1 == pytest.approx(200 / 3)
    assert result.exact_pct == 0.0


def test_an_empty_prediction_finds_nothing():
    result = score([CaseResult(CHAIN, Graph(), True, True, 0.5)])
    assert result.nodes == Counts(0, 0, 2) and result.edges == Counts(0, 0, 1)
    assert (result.node_precision, result.node_recall, result.node_f1) == (0.0, 0.0, 0.0)
    assert (result.edge_f1, result.exact_pct, result.parse_pct) == (0.0, 0.0, 100.0)


def test_unparseable_predictions_count_as_all_false_negatives():
    # a stray graph on an unparsed result must not earn credit
    results = [CaseResult(CHAIN, None, False, False, 3.0), CaseResult(DAG, DAG.gold, False, False, 5.0)]
    result = score(results)
    assert result.nodes == Counts(0, 0, 5) and result.edges == Counts(0, 0, 3)
    assert (result.parse_pct, result.valid_pct, result.exact_pct, result.node_f1) == (0.0, 0.0, 0.0, 0.0)
    assert result.mean_seconds == 4.0
    mixed = score(three_results() + [CaseResult(CHAIN, None, False, False, 1.0)])
    # the hand-computed totals above plus chain's 2 node FN and 1 edge FN
    assert mixed.nodes == Counts(5, 1, 3) and mixed.edges == Counts(2, 0, 2)
    assert mixed.parse_pct == 75.0 and mixed.exact_pct == 25.0


def test_unknown_tools_never_match():
    predicted = graph({"a": None, "b": TTS}, [("a", "b")])
    result = score([CaseResult(CHAIN, predicted, True, False)])
    assert result.nodes == Counts(1, 1, 1) and result.edges == Counts(0, 1, 1)


def test_report_prints_one_metric_per_line_then_structures():
    lines = format_report(score(three_results())).splitlines()
    assert lines[1:8] == [
        "parse %: 100.0", "valid %: 66.7", "node F1: 83.3 (P 83.3, R 83.3)", "edge F1: 80.0 (P 100.0, R 66.7)",
        "exact-graph %: 33.3", "mean seconds per plan: 3.00", "by structure:",
    ]
    assert lines[8].startswith("  single (1): parse 100.0%, valid 0.0%, node F1 0.0, edge F1 100.0")
    assert lines[10].startswith("  dag (1):") and "edge F1 66.7" in lines[10]


def test_predictions_round_trip_through_a_file(tmp_path):
    results = three_results() + [CaseResult(case("lost", "chain", CHAIN.gold), None, False, False, 7.0)]
    path = tmp_path / "predictions.jsonl"
    save_predictions(path, results)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"id": "chain", "nodes": [{"id": "t1", "task": ASR, "args": {}}, {"id": "t2", "task": TTS, "args": {}}],
                        "links": [["t1", "t2"]], "parsed": True, "valid": True, "seconds": 1.0}
    assert lines[3]["nodes"] == [] and lines[3]["parsed"] is False
    cases = [r.case for r in results]
    reloaded = match_predictions(cases, load_predictions(path))
    assert score(reloaded) == score(results)


def test_saved_predictions_must_match_the_cases(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "chain", **CHAIN.gold.to_json()}) + "\n")
    # plain gold-format lines count as parsed and valid; a case with no line counts as unparsed
    results = match_predictions([CHAIN, SINGLE], load_predictions(path))
    assert [(r.parsed, r.valid) for r in results] == [(True, True), (False, False)]
    with pytest.raises(InvalidInputError, match="not in the case file: chain"):
        match_predictions([SINGLE], load_predictions(path))
    path.write_text('{"id": "x", "nodes": [{"id": "a", "task": "ocr"}], "links": [["a", "b"]]}\n')
    with pytest.raises(InvalidInputError, match=r"p.jsonl:1: prediction.links\[0\]: names unknown node 'b'"):
        load_predictions(path)


GOOD_LINE = json.dumps({"id": "1", "request": "caption it", "structure": "single",
                        "files": [{"name": "example.jpg", "kind": "image"}],
                        "gold": {"nodes": [{"id": "n0", "task": "image-to-text", "args": {"image": "example.jpg"}}],
                                 "links": []}})


@pytest.mark.parametrize("line, message", [
    ('{"id": "2", "request": "x", "gold": ', r":2: not valid JSON"),
    ('["a list"]', r":2: a case must be a JSON object"),
    ('{"id": "2", "gold": {"nodes": [], "links": []}}', r":2: field 'request' is missing"),
    ('{"id": "2", "request": "x"}', r":2: field 'gold' is missing"),
    ('{"id": "1", "request": "x", "gold": {"nodes": []}}', r":2: field 'id': '1' was already used on line 1"),
    ('{"id": "2", "request": "x", "gold": {"nodes": [{"id": "n0", "task": "ocr", "args": {}}], "links": [["n0", "n5"]]}}',
     r":2: field 'gold'.links\[0\]: names unknown node 'n5' \(nodes: n0\)"),
    ('{"id": "2", "request": "x", "gold": {"nodes": [{"id": "n0", "args": {}}]}}', r":2: field 'gold'.nodes\[0\].task"),
    ('{"id": "2", "request": "x", "structure": "tree", "gold": {"nodes": []}}',
     r":2: field 'structure' is 'tree'; expected one of single, chain, dag"),
])
def test_malformed_case_lines_name_line_and_field(tmp_path, line, message):
    path = tmp_path / "cases.jsonl"
    path.write_text(GOOD_LINE + "\n" + line + "\n")
    with pytest.raises(InvalidInputError, match=message):
        load_cases(path)


def test_cases_load_and_structure_is_inferred_when_absent(tmp_path):
    nodes = [{"id": f"n{i}", "task": "summarization", "args": {}} for i in range(3)]
    lines = [GOOD_LINE, "",
             json.dumps({"id": "c", "request": "x", "gold": {"nodes": nodes, "links": [["n0", "n1"], ["n1", "n2"]]}}),
             json.dumps({"id": "d", "request": "x", "gold": {"nodes": nodes, "links": [["n0", "n1"], ["n0", "n2"]]}})]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cases = load_cases(path)
    assert [(c.id, c.structure) for c in cases] == [("1", "single"), ("c", "chain"), ("d", "dag")]
    assert gold_graph(cases[0]).nodes == (Node("n0", "image-to-text", {"image": "example.jpg"}),)
    assert cases[0].files == ({"name": "example.jpg", "kind": "image"},)


@pytest.fixture(scope="module")
def tool_task():
    return registry_tool_task(ToolRegistry.default())


def test_graph_from_plan_maps_tools_to_tags_and_references_to_links(tool_task):
    plan = Plan.from_json({"tasks": [
        {"id": "t1", "tool": "speech-recognition", "args": {"audio": "example.wav"}},
        {"id": "t2", "tool": "text-to-speech", "args": {"text": "<t1.text>"}},
    ]})
    result = graph_from_plan(plan, tool_task)
    assert [(n.id, n.task) for n in result.nodes] == [("t1", ASR), ("t2", TTS)]
    assert result.links == (("t1", "t2"),)
    gold = graph({"n0": ASR, "n1": TTS}, [("n0", "n1")])
    assert score([CaseResult(case("x", "chain", gold), result, True, True)]).exact_pct == 100.0


def test_graph_from_plan_scores_deps_unknown_tools_and_bad_references(tool_task):
    plan = Plan.from_json({"tasks": [
        {"id": "t1", "tool": "ocr", "args": {"image": "example.jpg"}},
        {"id": "t2", "tool": "translation", "args": {"text": "<t1>"}, "deps": ["t1"]},
        {"id": "t3", "tool": "summarization", "args": {"text": "<t1.text>", "extra": ["<t2>", "<t2>"]}},
        {"id": "t4", "tool": "make-a-wish", "args": {"x": "<t9>"}, "deps": ["t3"]},
        {"id": "t5", "tool": "text-to-speech", "args": {"text": "<t5>"}},
    ]})
    result = graph_from_plan(plan, tool_task)
    assert [n.task for n in result.nodes] == ["image-to-text", "translation", "summarization", None, TTS]
    # the dep t2 -> t1 repeats a reference (one link); t4's bare dep passes no data; <t9> and <t5> in t5 are
    # validity errors, not edges; t3 takes t2's output twice but consumes it once
    assert result.links == (("t1", "t2"), ("t1", "t3"), ("t2", "t3"))
    with_deps = graph_from_plan(plan, tool_task, deps_as_links=True)
    assert with_deps.links == (("t1", "t2"), ("t1", "t3"), ("t2", "t3"), ("t3", "t4"))


def test_dev_gold_scored_against_itself_is_perfect(tmp_path):
    cases = load_cases(DEV_CASES)
    assert len(cases) == 60 and {c.structure for c in cases} == {"single", "chain", "dag"}
    results = [CaseResult(c, gold_graph(c), True, True, 0.0) for c in cases]
    for part in [score(results), *score(results).by_structure.values()]:
        assert (part.parse_pct, part.valid_pct, part.exact_pct) == (100.0, 100.0, 100.0)
        assert (part.node_precision, part.node_recall, part.node_f1) == (100.0, 100.0, 100.0)
        assert (part.edge_precision, part.edge_recall, part.edge_f1) == (100.0, 100.0, 100.0)
    # gold links are exactly the <nK> references, so the scorer's reading of a plan agrees with gold's
    for c in cases:
        as_plan = Plan.from_json({"tasks": [{"id": n.id, "tool": n.task, "args": n.args} for n in c.gold.nodes]})
        assert set(graph_from_plan(as_plan, lambda tool: tool).links) == set(c.gold.links), c.id
    path = tmp_path / "gold.jsonl"
    save_predictions(path, results)
    assert score(match_predictions(cases, load_predictions(path))) == score(results)


def test_shipped_sample_cases_load_and_gold_scores_100():
    from pathlib import Path

    from orchestrator.planning.plan_metrics import CaseResult, load_cases, score

    cases = load_cases(Path(__file__).resolve().parents[1] / "benchmarks" / "planner_cases_sample.jsonl")
    assert {case.structure for case in cases} == {"single", "chain", "dag"}
    perfect = score([CaseResult(case, case.gold, True, True, 0.0) for case in cases])
    assert (perfect.node_f1, perfect.edge_f1, perfect.exact_pct) == (100.0, 100.0, 100.0)
