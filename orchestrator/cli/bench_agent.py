"""``anymoda bench agent``: run requests through the real agent and check what comes back.

A case file is JSON Lines; paths are relative to the file::

    {"id": "r1", "request": "how much did i pay?", "files": ["media/receipt.png"], "session": "s1",
     "expect": {"answer_any": ["12.45"], "answer_none": ["here is your picture"], "outputs": ["audio"],
                "tools_all": ["ocr"], "unavailable_any": ["text-to-image"]}}

Every check in ``expect`` is optional (a case needs at least one) and a case passes when all of its
checks pass:

* ``answer_any``: at least one string appears in the answer; ``answer_none``: none does. Matching
  ignores case and runs of whitespace; a number only matches a whole number ('4' is not found in
  '42.50', '42.5' is not found in '42.50', '3' is found in '3:00'), any other string matches anywhere
  ('horse' in 'horses').
* ``outputs``: artifact kinds the answer must deliver (listed twice: two of them).
* ``tools_all``: tools the plan must use; ``a|b`` accepts either (``ocr|document-question-answering``: the
  receipt must be read, by whichever tool reads it).
* ``unavailable_any``: at least one of these tools must be reported as unable to run here
  (:func:`unavailable_tools` reads the run result's ``unavailable`` field).

Cases with the same ``session`` are turns of one conversation, run in file order through
``Orchestrator.session(name)``; a case without one is a conversation of its own. Each conversation
gets a fresh anymoda home (a temporary folder: store, journal, checkpoints), so no case sees another
conversation's artifacts or history, while the model cache (the packaged LLM converted once to
safetensors, the joined Whisper parts) stays the configured one: nothing is converted per case, and
tools load models from one process-wide pool under the same paths.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..config import Settings, current_settings
from ..errors import InvalidInputError
from ..execution.journal import check_session_id
from ..storage.artifacts import ArtifactKind
from ..storage.jsonl import read_json_lines
from ..tooling.registry import ToolRegistry

CHECKS = ("answer_any", "answer_none", "outputs", "tools_all", "unavailable_any")
CASE_KEYS = ("id", "request", "files", "session", "expect")
_NUMBER = re.compile(r"[0-9]+(?:[.,:][0-9]+)*")


@dataclass(frozen=True)
class AgentCase:
    id: str
    request: str
    files: tuple[Path, ...]
    session: str | None
    expect: dict[str, tuple[str, ...]]
    where: str  # file:line, for messages

    @property
    def conversation(self) -> str:
        """The key its conversation is grouped under: the session, or the case itself."""
        return f"session:{self.session}" if self.session is not None else f"case:{self.id}"


# ---------------------------------------------------------------------------------------------- case files


def load_cases(path: str | Path, registry: ToolRegistry | None = None) -> list[AgentCase]:
    """Read and validate a case file; the first problem is raised with its file:line.

    With ``registry``, tool names in ``tools_all`` and ``unavailable_any`` must be tools it knows."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such case file")
    cases: list[AgentCase] = []
    seen: dict[str, str] = {}
    known_kinds = [k.value for k in ArtifactKind]
    for _, where, data in read_json_lines(path):
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: a case must be a JSON object")
        unknown = sorted(set(data) - set(CASE_KEYS))
        if unknown:
            raise InvalidInputError(f"{where}: unknown key(s) {', '.join(unknown)}; a case has {', '.join(CASE_KEYS)}")
        case_id = data.get("id")
        if not isinstance(case_id, str) or not case_id.strip():
            raise InvalidInputError(f"{where}: 'id' must be a non-empty string")
        if case_id in seen:
            raise InvalidInputError(f"{where}: id {case_id!r} was already used at {seen[case_id]}")
        seen[case_id] = where
        request = data.get("request")
        if not isinstance(request, str) or not request.strip():
            raise InvalidInputError(f"{where}: 'request' must be a non-empty string")
        files = data.get("files", [])
        if not isinstance(files, list) or not all(isinstance(f, str) and f.strip() for f in files):
            raise InvalidInputError(f"{where}: 'files' must be a list of paths (strings)")
        resolved = []
        for name in files:
            file = (path.parent / name).resolve()
            if not file.is_file():
                raise InvalidInputError(f"{where}: file {name!r} not found (looked for {file})")
            resolved.append(file)
        session = data.get("session")
        if session is not None:
            try:
                check_session_id(session)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}: 'session': {exc}") from None
        expect = data.get("expect")
        if not isinstance(expect, dict) or not expect:
            raise InvalidInputError(f"{where}: 'expect' must be an object with at least one of {', '.join(CHECKS)}")
        unknown = sorted(set(expect) - set(CHECKS))
        if unknown:
            raise InvalidInputError(f"{where}: unknown check(s) {', '.join(unknown)} in 'expect'; checks: {', '.join(CHECKS)}")
        checks: dict[str, tuple[str, ...]] = {}
        for check, values in expect.items():
            if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise InvalidInputError(f"{where}: expect.{check} must be a non-empty list of non-empty strings")
            if check == "outputs":
                bad = [v for v in values if v not in known_kinds]
                if bad:
                    raise InvalidInputError(f"{where}: expect.outputs: unknown artifact kind(s) {', '.join(map(repr, bad))}; "
                                            f"kinds: {', '.join(known_kinds)}")
            if check in ("tools_all", "unavailable_any") and registry is not None:
                bad = [name for v in values for name in (v.split("|") if check == "tools_all" else [v])
                       if name not in registry]
                if bad:
                    raise InvalidInputError(f"{where}: expect.{check}: unknown tool(s) {', '.join(map(repr, bad))}")
            checks[check] = tuple(values)
        cases.append(AgentCase(case_id, request.strip(), tuple(resolved), session, checks, where))
    if not cases:
        raise InvalidInputError(f"{path}: holds no cases")
    return cases


def select_cases(cases: Sequence[AgentCase], only: Iterable[str] = (), limit: int | None = None) -> list[AgentCase]:
    """The cases to run, in file order: ``only`` these ids (each brings the earlier turns of its
    conversation, which it builds on), then the first ``limit``."""
    only = list(only)
    chosen = list(cases)
    if only:
        ids = {case.id for case in cases}
        missing = [case_id for case_id in only if case_id not in ids]
        if missing:
            raise InvalidInputError(f"--only: no case with id {', '.join(map(repr, missing))}")
        wanted = set(only)
        last_turn: dict[str, int] = {}
        for index, case in enumerate(cases):
            if case.id in wanted:
                last_turn[case.conversation] = index
        chosen = [case for index, case in enumerate(cases) if index <= last_turn.get(case.conversation, -1)]
    if limit is not None:
        if limit < 1:
            raise InvalidInputError("--limit must be at least 1")
        chosen = chosen[:limit]
    return chosen


def conversations(cases: Sequence[AgentCase]) -> list[list[AgentCase]]:
    """Cases grouped into conversations (turns in file order), in the order each first appears."""
    groups: dict[str, list[AgentCase]] = {}
    for case in cases:
        groups.setdefault(case.conversation, []).append(case)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------- scoring


def _normal(text: str) -> str:
    return " ".join(str(text).replace("\u2019", "'").replace("\u2018", "'").split()).casefold()


def mentions(text: str, needle: str) -> bool:
    """Whether ``needle`` appears in ``text``: case and whitespace ignored; numbers only as whole numbers."""
    text, needle = _normal(text), _normal(needle)
    if _NUMBER.fullmatch(needle):
        # Not inside a longer number: no digit, and no decimal point or thousands comma with a digit, on
        # either side ('4' is not in '42.50' or '1,400'); a time's colon is no part of it ('3' is in '3:00').
        return re.search(rf"(?<![0-9])(?<![0-9][.,]){re.escape(needle)}(?![0-9])(?![.,][0-9])", text) is not None
    return needle in text


def unavailable_tools(result: Any) -> list[str]:
    """Tools the run reported as unable to run here: ``result.unavailable`` holds records with a
    ``tool`` attribute, dicts with ``"tool"``, or names; absent or empty, none were reported."""
    names = []
    for item in getattr(result, "unavailable", None) or ():
        if isinstance(item, str):
            name = item
        else:
            name = item.get("tool") if isinstance(item, dict) else getattr(item, "tool", None)
        if isinstance(name, str):
            names.append(name)
    return names


def plan_tools(result: Any) -> list[str]:
    plan = getattr(result, "plan", None) or {}
    return [task.get("tool") for task in plan.get("tasks", []) if isinstance(task, dict)]


def delivered_kinds(result: Any) -> list[str]:
    kinds = []
    for artifact in getattr(result, "artifacts", ()) or ():
        kind = getattr(artifact, "kind", None)
        kinds.append(kind.value if isinstance(kind, ArtifactKind) else str(kind))
    return kinds


def score(case: AgentCase, result: Any) -> dict[str, bool]:
    """Each of the case's checks on a run result (anything with ``answer``, ``artifacts``, ``plan``
    and, once the agent reports them, ``unavailable``): check name -> passed."""
    answer = getattr(result, "answer", "") or ""
    outcome: dict[str, bool] = {}
    for check, values in case.expect.items():
        if check == "answer_any":
            outcome[check] = any(mentions(answer, v) for v in values)
        elif check == "answer_none":
            outcome[check] = not any(mentions(answer, v) for v in values)
        elif check == "outputs":
            have = Counter(delivered_kinds(result))
            outcome[check] = all(have[kind] >= n for kind, n in Counter(values).items())
        elif check == "tools_all":
            used = set(plan_tools(result))
            outcome[check] = all(any(name in used for name in v.split("|")) for v in values)
        elif check == "unavailable_any":
            reported = set(unavailable_tools(result))
            outcome[check] = any(v in reported for v in values)
    return outcome


# ---------------------------------------------------------------------------------------------- running


@dataclass
class CaseOutcome:
    case: AgentCase
    checks: dict[str, bool]
    answer: str = ""
    plan: list[str] = dataclasses.field(default_factory=list)  # the plan as tool lines
    tools: list[str] = dataclasses.field(default_factory=list)  # the plan's tools, in order
    composed_by: str | None = None
    seconds: float = 0.0
    outputs: list[str] = dataclasses.field(default_factory=list)  # delivered artifact kinds
    unavailable: list[str] = dataclasses.field(default_factory=list)
    status: str = ""
    error: str | None = None
    run_id: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [check for check, ok in self.checks.items() if not ok]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.case.id, "passed": self.passed, "failed": self.failed, "request": self.case.request,
                "session": self.case.session, "plan": self.plan, "tools": self.tools, "answer": self.answer,
                "composed_by": self.composed_by, "seconds": round(self.seconds, 2), "outputs": self.outputs,
                "unavailable": self.unavailable, "status": self.status, "error": self.error, "run": self.run_id}


def plan_lines(plan: dict[str, Any] | None, names: dict[str, str]) -> list[str]:
    """A run's plan as the compact syntax's lines (``t1 = ocr(image=receipt.png)``), files by name."""
    if not plan:
        return []
    from ..planning.plan import Plan
    from ..planning.plan_syntax import CompactSyntax

    try:
        return CompactSyntax().render(Plan.from_json(plan), names).splitlines()
    except (InvalidInputError, KeyError, TypeError, ValueError):
        return [str(task.get("tool")) for task in plan.get("tasks", []) if isinstance(task, dict)]


@dataclass(frozen=True)
class SharedCacheSettings(Settings):
    """Settings of a fresh home whose model cache is another one's (see the module docstring)."""

    shared_cache: Path | None = None

    @property
    def cache_dir(self) -> Path:
        return self.shared_cache if self.shared_cache is not None else self.home / "cache"


def conversation_settings(base: Settings, home: Path) -> Settings:
    """``base`` with ``home`` as its home (store, journal, checkpoints) and ``base``'s model cache."""
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(Settings)}
    return SharedCacheSettings(**{**values, "home": Path(home)}, shared_cache=base.cache_dir)


def default_registry() -> ToolRegistry:
    """The tools the benchmark's agent has (case files are checked against it)."""
    return ToolRegistry.default()


_LOADED_LLMS: dict[tuple[str, str], Any] = {}  # the planner LLMs loaded so far, by backend class and model


def default_orchestrator(settings: Settings):
    """What the benchmark measures: the Orchestrator as ``anymoda run`` builds it, on ``settings``.

    Made before a conversation's first turn is timed: the packaged LLM is converted here if it never
    was (once per cache), and the planner's LLM is loaded and its system prompt prefilled once for the
    whole benchmark (45 s per conversation otherwise, on 2 cores) and handed to each new planner, as
    one long-running agent process serves many conversations; so seconds per request are those of a
    running agent, not of its start-up. Expert models load on first use (inside the first case that
    needs them) and stay in the process's model pool."""
    from ..agent import Orchestrator
    from ..models.packaged_llm import converted_checkpoint

    converted_checkpoint(settings.cache_dir)
    orchestrator = Orchestrator(settings=settings, registry=default_registry())
    planner = orchestrator.planner
    backend = getattr(planner, "backend", None)
    if backend is not None:
        key = (type(backend).__qualname__, str(getattr(backend, "model", "")))
        if key in _LOADED_LLMS:
            planner.backend = _LOADED_LLMS[key]  # the composer is made from it on first use, so it shares it too
        else:
            planner.warm_up()
            _LOADED_LLMS[key] = backend
    return orchestrator


def _run_turn(orchestrator: Any, session: Any, case: AgentCase) -> CaseOutcome:
    started = time.perf_counter()
    run_id, composed_by, names = None, None, {}
    for event in session.stream(case.request, files=[str(f) for f in case.files]):
        run_id = run_id or event.run
        if event.type == "run_started":
            names = {artifact_id: file.name for artifact_id, file in zip(event.data.get("inputs", []), case.files)}
        elif event.type == "answer":
            composed_by = event.data.get("composed_by")
    if run_id is None:
        raise InvalidInputError("the run produced no events")
    result = orchestrator.result(run_id)
    seconds = time.perf_counter() - started
    composed_by = getattr(result, "composed_by", None) or composed_by
    error = result.error or ("; ".join(result.failures) if result.failures else None)
    return CaseOutcome(case, score(case, result), result.answer or "", plan_lines(result.plan, names),
                       plan_tools(result), composed_by, seconds, delivered_kinds(result), unavailable_tools(result),
                       result.status, error, run_id)


def run_conversation(turns: Sequence[AgentCase], base: Settings, make_orchestrator: Callable[[Settings], Any],
                     progress: Callable[[CaseOutcome], None] | None = None) -> list[CaseOutcome]:
    """Run a conversation's turns in order in a fresh home; a turn that raises fails all its checks
    (the error is kept) and the next turn still runs."""
    home = Path(tempfile.mkdtemp(prefix="anymoda-bench-"))
    outcomes = []
    orchestrator = None
    try:
        orchestrator = make_orchestrator(conversation_settings(base, home))
        session = orchestrator.session(turns[0].session or f"bench-{turns[0].id}")
        for case in turns:
            started = time.perf_counter()
            try:
                outcome = _run_turn(orchestrator, session, case)
            except Exception as exc:  # noqa: BLE001 - one broken case must not end the benchmark
                outcome = CaseOutcome(case, dict.fromkeys(case.expect, False), seconds=time.perf_counter() - started,
                                      status="error", error=f"{type(exc).__name__}: {exc}")
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        runner = getattr(orchestrator, "runner", None)
        if runner is not None and hasattr(runner, "shutdown"):
            runner.shutdown()
        del orchestrator
        gc.collect()  # the conversation's planner LLM goes before the next one loads its own
        shutil.rmtree(home, ignore_errors=True)
    return outcomes


def run_benchmark(cases: Sequence[AgentCase], *, base: Settings | None = None,
                  make_orchestrator: Callable[[Settings], Any] | None = None,
                  progress: Callable[[CaseOutcome], None] | None = None) -> list[CaseOutcome]:
    """Every case through the agent, conversation by conversation; outcomes in file order."""
    base = base or current_settings()
    make_orchestrator = make_orchestrator or default_orchestrator  # looked up now: tests replace it
    outcomes: list[CaseOutcome] = []
    for turns in conversations(cases):
        outcomes += run_conversation(turns, base, make_orchestrator, progress)
    order = {case.id: index for index, case in enumerate(cases)}
    return sorted(outcomes, key=lambda o: order[o.case.id])


# ---------------------------------------------------------------------------------------------- report


def summary(outcomes: Sequence[CaseOutcome]) -> dict[str, Any]:
    """Success rate overall and per check, and seconds per request."""
    by_check = {}
    for check in CHECKS:
        results = [o.checks[check] for o in outcomes if check in o.checks]
        if results:
            by_check[check] = {"passed": sum(results), "cases": len(results), "rate": sum(results) / len(results)}
    seconds = [o.seconds for o in outcomes if o.status != "error"]  # a case that could not start took no time
    passed = sum(o.passed for o in outcomes)
    return {"cases": len(outcomes), "passed": passed, "rate": passed / len(outcomes) if outcomes else 0.0,
            "by_check": by_check, "seconds_mean": statistics.fmean(seconds) if seconds else 0.0,
            "seconds_median": statistics.median(seconds) if seconds else 0.0, "seconds_total": sum(seconds),
            "errors": sum(o.status == "error" for o in outcomes)}


def progress_line(outcome: CaseOutcome, position: int, total: int) -> str:
    mark = "pass" if outcome.passed else "FAIL " + ",".join(outcome.failed)
    if outcome.status == "error":
        what = f"error: {outcome.error}"
    elif outcome.tools:
        what = " -> ".join(outcome.tools)
    else:
        what = "direct answer" if outcome.plan else f"no plan ({outcome.error or outcome.status})"
    return f"[{position}/{total}] {outcome.case.id} {mark} {outcome.seconds:.1f} s  {what}"


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in (text.splitlines() or [""]))


def format_report(outcomes: Sequence[CaseOutcome], title: str = "") -> str:
    """The failures with their plans and answers, then the figures."""
    facts = summary(outcomes)
    lines = []
    failures = [o for o in outcomes if not o.passed]
    if failures:
        lines.append(f"Failures ({len(failures)}):")
        for outcome in failures:
            case = outcome.case
            lines.append(f"- {case.id}{f' (session {case.session})' if case.session else ''}: {case.request!r}")
            if case.files:
                lines.append(f"    files: {', '.join(f.name for f in case.files)}")
            for check in outcome.failed:
                detail = f"{check} {list(case.expect[check])}"
                if check == "outputs":
                    detail += f", delivered {outcome.outputs}"
                elif check == "unavailable_any":
                    detail += f", reported {outcome.unavailable}"
                lines.append(f"    failed: {detail}")
            if outcome.error:
                lines.append(f"    error: {outcome.error}")
            lines.append("    plan:" + ("" if outcome.plan else " (none)"))
            lines += [f"      {line}" for line in outcome.plan]
            lines.append(f"    answer ({outcome.composed_by or 'no answer'}):")
            answer = outcome.answer if len(outcome.answer) <= 800 else outcome.answer[:800] + " [...]"
            lines.append(_indent(answer or "(empty)"))
        lines.append("")
    heading = f"Agent benchmark{f' ({title})' if title else ''}: "
    lines.append(f"{heading}{facts['passed']}/{facts['cases']} cases passed ({facts['rate']:.1%})"
                 + (f", {facts['errors']} raised an error" if facts["errors"] else ""))
    for check, figures in facts["by_check"].items():
        lines.append(f"  {check:16} {figures['passed']:>3}/{figures['cases']:<3} {figures['rate']:6.1%}")
    lines.append(f"  seconds per request: mean {facts['seconds_mean']:.1f}, median {facts['seconds_median']:.1f} "
                 f"(total {facts['seconds_total'] / 60:.1f} min{', cases that raised left out' if facts['errors'] else ''})")
    return "\n".join(lines)


def run_command(cases_file: str, *, save: str | None = None, limit: int | None = None, only: Sequence[str] = (),
                echo: Callable[[str], None] = print, report: TextIO | None = None) -> int:
    """``anymoda bench agent``: validate, run with a progress line per case, write --save, print the report.

    The agent runs on the offline default, as ``anymoda demo`` does, whatever the config says: the
    packaged weights, no hub downloads (tools without weights here cannot run)."""
    cases = select_cases(load_cases(cases_file, default_registry()), only, limit)
    base = dataclasses.replace(current_settings(), offline=True)
    saved = open(save, "w", encoding="utf-8") if save else None  # noqa: SIM115 - written case by case
    done = 0

    def progress(outcome: CaseOutcome) -> None:
        nonlocal done
        done += 1
        echo(progress_line(outcome, done, len(cases)))
        if saved is not None:
            saved.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")
            saved.flush()

    try:
        outcomes = run_benchmark(cases, base=base, progress=progress)
    finally:
        if saved is not None:
            saved.close()
    print(format_report(outcomes, Path(cases_file).name), file=report or sys.stdout, flush=True)
    return 0
