"""``anymoda bench agent``: case files refused with file:line, every check scored (and able to fail) on
hand-made results, conversations grouped by session, and the command end to end on stub tools with the
real Planner over a scripted backend (the helpers of test_agent.py; nothing loads a model)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from orchestrator.cli import bench_agent
from orchestrator.agent import Orchestrator
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.cli.bench_agent import (
    AgentCase,
    conversations,
    load_cases,
    mentions,
    run_benchmark,
    score,
    select_cases,
    unavailable_tools,
)
from orchestrator.cli.commands import main
from orchestrator.execution.compose import Composer
from orchestrator.errors import InvalidInputError
from orchestrator.tooling.registry import ToolRegistry
from orchestrator.storage.store import ArtifactStore
from orchestrator.tooling.stub_tools import STUB_TOOLS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent import ScriptedBackend, scripted_planner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STUBS = ToolRegistry(STUB_TOOLS)


def write_cases(folder: Path, *cases: dict[str, Any] | str, name: str = "cases.jsonl") -> Path:
    path = folder / name
    path.write_text("".join((c if isinstance(c, str) else json.dumps(c)) + "\n" for c in cases), encoding="utf-8")
    return path


def case(case_id: str = "c1", **expect: list[str]) -> AgentCase:
    return AgentCase(case_id, "a request", (), None, {k: tuple(v) for k, v in expect.items()}, "cases.jsonl:1")


def result(answer: str = "", kinds: tuple[str, ...] = (), tools: tuple[str, ...] = (), **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(answer=answer, artifacts=[SimpleNamespace(kind=ArtifactKind(k)) for k in kinds],
                           plan={"tasks": [{"id": f"t{i}", "tool": t, "args": {}} for i, t in enumerate(tools, 1)]},
                           **extra)


# ---------------------------------------------------------------------- case files


GOOD = {"id": "ok", "request": "what is the total?", "files": ["receipt.png"], "expect": {"answer_any": ["12.45"]}}
BAD = {**GOOD, "id": "bad"}


@pytest.mark.parametrize("bad, line, message", [
    ({**BAD, "expected": {}}, 2, "unknown key(s) expected"),
    ({**BAD, "files": ["nowhere.png"]}, 2, "file 'nowhere.png' not found"),
    ({**BAD, "expect": {"outputs": ["sound"]}}, 2, "unknown artifact kind(s) 'sound'"),
    ({**BAD, "expect": {"answer_all": ["x"]}}, 2, "unknown check(s) answer_all"),
    ({**BAD, "expect": {"tools_all": ["paint-by-numbers"]}}, 2, "unknown tool(s) 'paint-by-numbers'"),
    ({**BAD, "expect": {"answer_any": []}}, 2, "expect.answer_any must be a non-empty list"),
    ({**BAD, "expect": {}}, 2, "'expect' must be an object with at least one of"),
    ({**BAD, "session": "two words"}, 2, "'session':"),
    ({**BAD, "request": " "}, 2, "'request' must be a non-empty string"),
    (GOOD, 2, "id 'ok' was already used at"),
    ('{"id": "broken", ', 2, "not valid JSON"),
])
def test_a_bad_case_file_exits_2_with_one_line_naming_file_and_line(tmp_path: Path, capsys, monkeypatch,
                                                                     bad: Any, line: int, message: str):
    monkeypatch.setenv("COLUMNS", "400")
    (tmp_path / "receipt.png").write_bytes(b"not read before the run")
    path = write_cases(tmp_path, GOOD, bad)
    code = main(["bench", "agent", "--cases", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert f"{path}:{line}:" in err and message in err, err


def test_files_are_found_relative_to_the_case_file(tmp_path: Path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.wav").write_bytes(b"x")
    cases = load_cases(write_cases(tmp_path, {"id": "a", "request": "r", "files": ["media/a.wav"],
                                              "expect": {"outputs": ["audio", "audio"]}}))
    assert cases[0].files == ((tmp_path / "media" / "a.wav").resolve(),)
    assert cases[0].expect == {"outputs": ("audio", "audio")} and cases[0].where.endswith("cases.jsonl:1")


def test_the_shipped_case_files_validate():
    registry = bench_agent.default_registry()
    dev = load_cases(REPO / "benchmarks" / "agent_cases" / "dev.jsonl", registry)
    heldout = load_cases(REPO / "benchmarks" / "agent_cases" / "heldout.jsonl", registry)
    assert len(dev) >= 44 and len(heldout) >= 30
    assert not {c.request.lower() for c in dev} & {c.request.lower() for c in heldout}
    assert sum(len(turns) > 1 for turns in conversations(dev)) >= 3


# ---------------------------------------------------------------------- checks


def test_answer_any_and_none_ignore_case_and_spacing_and_match_whole_numbers():
    assert mentions("The TOTAL  was\n$42.50.", "total was $42.50")
    assert mentions("You bought 4 things", "4") and not mentions("It came to 42.50", "4")
    assert not mentions("It came to 42.50", "42.5") and mentions("It came to 42.5 euros", "42.5")
    assert mentions("at 3:00 pm", "3") and not mentions("at 13:00", "3") and not mentions("1.3", "3")
    assert mentions("Horses, five of them", "horse") and mentions("it\u2019s Sarah", "it's sarah")

    assert score(case(answer_any=["12.45", "twelve"]), result("Total: 12.45")) == {"answer_any": True}
    assert score(case(answer_any=["12.45", "twelve"]), result("Total: 11.15")) == {"answer_any": False}
    assert score(case(answer_none=["here is your picture"]), result("I can't draw here.")) == {"answer_none": True}
    assert score(case(answer_none=["here is your picture"]), result("Here is your picture!")) == {"answer_none": False}


def test_outputs_tools_and_unavailable_checks_pass_and_fail():
    spoken = result("ok", kinds=("text", "audio"), tools=("ocr", "text-to-speech"))
    assert score(case(outputs=["audio"], tools_all=["ocr", "text-to-speech"]), spoken) == {"outputs": True, "tools_all": True}
    assert score(case(outputs=["audio", "audio"]), spoken) == {"outputs": False}  # two asked for, one delivered
    assert score(case(outputs=["image"]), spoken) == {"outputs": False}
    assert score(case(tools_all=["ocr", "image-classification"]), spoken) == {"tools_all": False}
    assert score(case(tools_all=["ocr"]), SimpleNamespace(answer="", artifacts=(), plan=None)) == {"tools_all": False}

    wanted = case(unavailable_any=["text-to-image", "image-editing"])
    assert score(wanted, result("no")) == {"unavailable_any": False}  # a result without the field: nothing reported
    assert score(wanted, result("no", unavailable=())) == {"unavailable_any": False}
    record = SimpleNamespace(task="t1", tool="text-to-image", reason="weights not here")
    assert score(wanted, result("no", unavailable=(record,))) == {"unavailable_any": True}
    assert score(wanted, result("no", unavailable=[{"tool": "image-editing"}])) == {"unavailable_any": True}
    assert score(wanted, result("no", unavailable=[{"tool": "text-to-video"}])) == {"unavailable_any": False}
    assert unavailable_tools(result(unavailable=[record, {"tool": "b"}, "c", {"no": "tool"}])) == ["text-to-image", "b", "c"]


def test_a_case_passes_only_when_every_check_passes():
    both = case(answer_any=["eagle"], outputs=["audio"])
    outcome = bench_agent.CaseOutcome(both, score(both, result("A bald eagle", kinds=("audio",))))
    assert outcome.passed and outcome.failed == []
    outcome = bench_agent.CaseOutcome(both, score(both, result("A bald eagle")))
    assert not outcome.passed and outcome.failed == ["outputs"]


# ---------------------------------------------------------------------- conversations


def _ids(groups: list[list[AgentCase]]) -> list[list[str]]:
    return [[c.id for c in turns] for turns in groups]


def test_cases_sharing_a_session_are_one_conversation_in_file_order(tmp_path: Path):
    rows = [{"id": i, "request": "r", "expect": {"answer_any": ["x"]}, **({"session": s} if s else {})}
            for i, s in [("a1", "a"), ("solo", None), ("b1", "b"), ("a2", "a"), ("b2", "b"), ("a3", "a")]]
    cases = load_cases(write_cases(tmp_path, *rows))
    assert _ids(conversations(cases)) == [["a1", "a2", "a3"], ["solo"], ["b1", "b2"]]
    # --only brings the earlier turns a turn builds on, not the later ones; --limit cuts in file order.
    assert [c.id for c in select_cases(cases, only=["a2"])] == ["a1", "a2"]
    assert [c.id for c in select_cases(cases, only=["solo", "b1"])] == ["solo", "b1"]
    assert [c.id for c in select_cases(cases, limit=3)] == ["a1", "solo", "b1"]
    with pytest.raises(InvalidInputError, match="no case with id 'zz'"):
        select_cases(cases, only=["zz"])


# ---------------------------------------------------------------------- end to end on stubs


def _reply(messages: list[dict[str, str]]) -> str:
    """Brighten the first image offered (attached or from an earlier turn), else say hello there."""
    offered = messages[-1]["content"].split("Input artifacts:", 1)[1]
    image = re.search(r"image-[0-9a-f]{16}", offered)
    if image:
        return json.dumps({"tasks": [{"id": "t1", "tool": "stub-brighten", "args": {"image": image.group(0)}}]})
    # Literals only from the request: the planner refuses text or numbers the request does not give.
    return json.dumps({"tasks": [{"id": "t1", "tool": "stub-wait", "args": {"label": "hello there"}}]})


@pytest.fixture
def stub_agent(monkeypatch):
    """The benchmark's agent on stub tools: the real Orchestrator and Planner, a scripted LLM, template answers."""
    built: list[Orchestrator] = []

    def build(settings) -> Orchestrator:
        store = ArtifactStore(settings.store_dir, settings.limits)
        planner = scripted_planner(ScriptedBackend(_reply), STUBS, store)
        orchestrator = Orchestrator(settings=settings, registry=STUBS, store=store, planner=planner,
                                    composer=Composer(None))
        built.append(orchestrator)
        return orchestrator

    monkeypatch.setattr(bench_agent, "default_orchestrator", build)
    monkeypatch.setattr(bench_agent, "default_registry", lambda: STUBS)
    return built


def test_bench_agent_command_end_to_end_on_stub_tools(tmp_path: Path, capsys, stub_agent):
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "red.png")
    path = write_cases(
        tmp_path,
        {"id": "brighten", "request": "make this brighter", "files": ["red.png"],
         "expect": {"outputs": ["image"], "tools_all": ["stub-brighten"], "answer_none": ["hello"]}},
        {"id": "hello", "request": "say hello there", "expect": {"answer_any": ["HELLO there"], "unavailable_any": ["stub-paint"]}})
    saved = tmp_path / "out.jsonl"

    code = main(["bench", "agent", "--cases", str(path), "--save", str(saved)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert progress[0].startswith("[1/2] brighten pass ") and progress[0].endswith("stub-brighten")
    assert progress[1].startswith("[2/2] hello FAIL unavailable_any ") and progress[1].endswith("stub-wait")
    report = captured.out
    assert "1/2 cases passed (50.0%)" in report
    assert re.search(r"unavailable_any\s+0/1\s+0\.0%", report) and re.search(r"answer_any\s+1/1\s+100\.0%", report)
    assert "seconds per request: mean" in report
    # The failure is shown with its plan and answer.
    failures = report.split("Failures (1):", 1)[1]
    assert "- hello: 'say hello there'" in failures and "failed: unavailable_any ['stub-paint'], reported []" in failures
    assert 't1 = stub-wait(label="hello there")' in failures and "hello there" in failures

    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [(r["id"], r["passed"], r["failed"]) for r in rows] == [("brighten", True, []),
                                                                   ("hello", False, ["unavailable_any"])]
    assert rows[0]["plan"] == ["t1 = stub-brighten(image=red.png)"] and rows[0]["outputs"] == ["image"]
    assert rows[1]["composed_by"] == "template" and "hello there" in rows[1]["answer"]
    assert all(r["seconds"] >= 0 for r in rows)
    # Two conversations, two fresh homes, one shared model cache.
    homes = [o.settings.home for o in stub_agent]
    assert len(homes) == 2 and homes[0] != homes[1] and not any(h.exists() for h in homes)
    assert {o.settings.cache_dir for o in stub_agent} == {bench_agent.current_settings().cache_dir}


def test_turns_of_a_session_build_on_each_other_and_an_error_fails_only_its_case(tmp_path: Path, settings, stub_agent):
    Image.new("RGB", (8, 8), (0, 0, 200)).save(tmp_path / "blue.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    path = write_cases(
        tmp_path,
        {"id": "t1", "request": "brighten this", "files": ["blue.png"], "session": "s", "expect": {"outputs": ["image"]}},
        {"id": "bad", "request": "brighten this", "files": ["broken.png"], "expect": {"outputs": ["image"]}},
        {"id": "t2", "request": "and again, brighter", "session": "s", "expect": {"outputs": ["image"],
                                                                               "tools_all": ["stub-brighten"]}})
    seen: list[str] = []
    outcomes = run_benchmark(load_cases(path, STUBS), base=settings, progress=lambda o: seen.append(o.case.id))

    assert seen == ["t1", "t2", "bad"]  # conversation by conversation
    assert [o.case.id for o in outcomes] == ["t1", "bad", "t2"]  # reported in file order
    first, bad, second = outcomes
    assert first.passed and second.passed, (first.error, second.error)
    assert second.plan == [f"t1 = stub-brighten(image={second.plan[0].split('image=')[1]}"]
    assert "image-" in second.plan[0]  # the image it brightened came from turn 1, not from a file
    assert bad.status == "error" and bad.checks == {"outputs": False} and "InvalidInputError" in bad.error
    assert len(stub_agent) == 2  # the session's turns share one orchestrator
    facts = bench_agent.summary(outcomes)
    assert facts["errors"] == 1 and facts["seconds_total"] == pytest.approx(first.seconds + second.seconds)


def test_tools_all_accepts_alternatives():
    from types import SimpleNamespace

    from orchestrator.cli.bench_agent import score

    result = SimpleNamespace(answer="The total is 12.45.", artifacts=[], unavailable=(),
                             plan={"tasks": [{"id": "t1", "tool": "document-question-answering", "args": {}}]})
    case = SimpleNamespace(expect={"tools_all": ("ocr|document-question-answering",)})
    assert score(case, result)["tools_all"]
    case = SimpleNamespace(expect={"tools_all": ("ocr",)})
    assert not score(case, result)["tools_all"]
