"""Plans: typed graphs of tool calls, and their validation before anything runs.

A plan is a list of tasks ``{id, tool, args, deps}`` plus an optional direct ``answer``. An argument
is a literal (text, numbers, JSON), an input artifact id (``image-0123456789abcdef``) or a reference
to another task's output: ``<t1>`` (its only output of the kind the argument needs) or ``<t1.text>``.

:func:`validate_plan` checks everything that can be checked without running: known tools, required
inputs, argument kinds (an audio never reaches an image input), references that resolve, no cycles,
input artifacts that exist in the caller's session, params within bounds. Every problem is reported
with the task and argument it concerns, so an LLM can be asked to repair exactly those.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArtifactNotFoundError, InvalidInputError, ToolNotFoundError, shown, shown_names
from ..storage.artifacts import ArtifactKind, is_artifact_id, kind_of_id
from ..storage.store import ArtifactStore
from ..tooling.registry import ToolRegistry
from ..tooling.tool import Tool

TASK_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
REFERENCE = re.compile(r"^<(?P<task>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?>$")
MAX_TASKS = 64


@dataclass(frozen=True)
class PlanTask:
    id: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    tasks: tuple[PlanTask, ...] = ()
    answer: str | None = None  # a direct answer, for requests that need no tool

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """Build a plan from parsed JSON, refusing any structural problem with a clear message."""
        if not isinstance(data, dict):
            raise InvalidInputError(
                f"a plan must be a JSON object with 'tasks' (and optionally 'answer'), got {type(data).__name__}")
        unknown = set(data) - {"tasks", "answer"}
        if unknown:
            raise InvalidInputError(
                f"a plan has only 'tasks' and 'answer'; unexpected key(s): {shown_names(sorted(unknown, key=str))}")
        answer = data.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise InvalidInputError("the plan's 'answer' must be text")
        raw_tasks = data.get("tasks", [])
        if not isinstance(raw_tasks, list):
            raise InvalidInputError("the plan's 'tasks' must be a list")
        if len(raw_tasks) > MAX_TASKS:
            raise InvalidInputError(f"a plan may have at most {MAX_TASKS} tasks, this one has {len(raw_tasks)}")
        tasks = []
        for position, raw in enumerate(raw_tasks):
            where = f"task #{position + 1}"
            if not isinstance(raw, dict):
                raise InvalidInputError(f"{where} must be an object with id, tool, args")
            extra = set(raw) - {"id", "tool", "args", "deps"}
            if extra:
                raise InvalidInputError(
                    f"{where} has unexpected key(s): {shown_names(sorted(extra, key=str))} (allowed: id, tool, args, deps)")
            task_id, tool, args, deps = raw.get("id"), raw.get("tool"), raw.get("args", {}), raw.get("deps", [])
            if not isinstance(task_id, str) or not TASK_ID.match(task_id):
                raise InvalidInputError(f"{where}: id must be a short name like 't1', got {shown(task_id)}")
            if not isinstance(tool, str) or not tool:
                raise InvalidInputError(f"task {task_id!r}: 'tool' must be a tool name")
            if not isinstance(args, dict):
                raise InvalidInputError(f"task {task_id!r}: 'args' must be an object of argument names to values")
            if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                raise InvalidInputError(f"task {task_id!r}: 'deps' must be a list of task ids")
            tasks.append(PlanTask(task_id, tool, dict(args), tuple(deps)))
        return cls(tuple(tasks), answer)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tasks": [{"id": t.id, "tool": t.tool, "args": t.args, "deps": list(t.deps)} for t in self.tasks]}
        if self.answer is not None:
            data["answer"] = self.answer
        return data


@dataclass(frozen=True)
class Problem:
    task: str | None
    argument: str | None
    message: str

    def __str__(self) -> str:
        # Task ids and argument names come from an LLM or a file: shown bounded.
        where = f"task {shown(self.task, 60)}" if self.task else "plan"
        if self.argument:
            where += f", argument {shown(self.argument, 60)}"
        return f"{where}: {self.message}"


class PlanError(InvalidInputError):
    """A plan failed validation; ``problems`` lists every finding, each naming its task and argument."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid plan:\n" + "\n".join(f"- {p}" for p in problems))


@dataclass(frozen=True)
class OutputReference:
    task: str
    output: str


@dataclass(frozen=True)
class ValidatedPlan:
    plan: Plan
    order: tuple[str, ...]  # task ids, every task after the tasks it depends on
    dependencies: dict[str, frozenset[str]]
    references: dict[tuple[str, str], OutputReference]  # (task, argument) -> the output it takes


def parse_reference(value: Any) -> tuple[str, str | None] | None:
    if isinstance(value, str):
        match = REFERENCE.match(value.strip())
        if match:
            return match["task"], match["output"]
    return None


def validate_plan(
    plan: Plan, registry: ToolRegistry, *, store: ArtifactStore | None = None, session: str | None = None
) -> ValidatedPlan:
    """Check a plan completely; raise :class:`PlanError` listing every problem found."""
    problems: list[Problem] = []
    tasks = {}
    for task in plan.tasks:
        if task.id in tasks:
            problems.append(Problem(task.id, None, "two tasks have this id; ids must be unique"))
        tasks[task.id] = task
    if not plan.tasks and not (plan.answer or "").strip():
        problems.append(Problem(None, None, "a plan needs tasks, or an answer when no tool is needed"))

    tool_classes: dict[str, type[Tool]] = {}
    for task in plan.tasks:
        try:
            tool_classes[task.id] = registry.get(task.tool)
        except ToolNotFoundError as exc:
            problems.append(Problem(task.id, None, str(exc)))

    dependencies: dict[str, set[str]] = {task.id: set() for task in plan.tasks}
    references: dict[tuple[str, str], OutputReference] = {}
    for task in plan.tasks:
        for dep in task.deps:
            if dep not in tasks:
                problems.append(Problem(task.id, None, f"depends on {dep!r}, which is not a task of this plan"))
            else:
                dependencies[task.id].add(dep)
        tool = tool_classes.get(task.id)
        if tool is None:
            continue
        unknown = set(task.args) - set(tool.inputs) - set(tool.params)
        for name in sorted(unknown):
            known = list(tool.inputs) + list(tool.params)
            close = difflib.get_close_matches(name, known, n=1)
            problems.append(Problem(task.id, name, f"{tool.name!r} has no such argument"
                                    + (f"; did you mean {close[0]!r}?" if close else f"; its arguments: {', '.join(known)}")))
        for name, spec in tool.inputs.items():
            if name not in task.args or task.args[name] is None:
                if spec.required:
                    problems.append(Problem(task.id, name, f"{tool.name!r} needs this input ({spec.kind.value})"))
                continue
            value = task.args[name]
            reference = parse_reference(value)
            if reference is not None:
                source_id, output = reference
                resolved = _resolve_reference(source_id, output, spec.kind, tasks, tool_classes, task.id, name, problems)
                if resolved is not None:
                    references[(task.id, name)] = resolved
                    dependencies[task.id].add(source_id)
            elif is_artifact_id(value):
                _check_artifact(value, spec.kind, store, session, task.id, name, problems)
            elif isinstance(value, str) and value.startswith("<") and value.endswith(">"):
                problems.append(Problem(task.id, name,
                                        f"{value!r} is not a valid reference; write '<task_id>' or '<task_id.output>'"))
            elif spec.kind not in (ArtifactKind.TEXT, ArtifactKind.JSON):
                problems.append(Problem(task.id, name, f"needs {spec.kind.value}: an input artifact id or a reference to a "
                                        f"task's output, not the literal {str(value)[:60]!r}"))
            elif spec.kind is ArtifactKind.TEXT and not isinstance(value, str):
                problems.append(Problem(task.id, name, f"needs text, got {type(value).__name__}"))
        for name, spec in tool.params.items():
            if name in task.args:
                try:
                    spec.check(f"tool {tool.name!r}", name, task.args[name])
                except InvalidInputError as exc:
                    prefix = f"tool {tool.name!r}: param {name!r} "  # the Problem names task and argument itself
                    message = str(exc)
                    problems.append(Problem(task.id, name, message[len(prefix):] if message.startswith(prefix) else message))

    order = _topological_order(plan, dependencies, problems)
    if problems:
        raise PlanError(problems)
    return ValidatedPlan(plan, order, {k: frozenset(v) for k, v in dependencies.items()}, references)


def _resolve_reference(
    source_id: str, output: str | None, kind: ArtifactKind, tasks: dict[str, PlanTask],
    tool_classes: dict[str, type[Tool]], task_id: str, argument: str, problems: list[Problem],
) -> OutputReference | None:
    if source_id not in tasks:
        problems.append(Problem(task_id, argument, f"refers to task {source_id!r}, which is not in this plan"))
        return None
    if source_id == task_id:
        problems.append(Problem(task_id, argument, "a task cannot take its own output"))
        return None
    source = tool_classes.get(source_id)
    if source is None:
        return None  # its unknown tool is reported already
    if output is not None:
        spec = source.outputs.get(output)
        if spec is None:
            problems.append(Problem(task_id, argument, f"task {source_id!r} ({source.name}) has no output {output!r}; "
                                    f"its outputs: {', '.join(f'{n} ({s.kind.value})' for n, s in source.outputs.items())}"))
            return None
        if spec.kind is not kind:
            problems.append(Problem(task_id, argument, f"needs {kind.value}, but <{source_id}.{output}> is {spec.kind.value}"))
            return None
        return OutputReference(source_id, output)
    matching = [name for name, spec in source.outputs.items() if spec.kind is kind]
    if len(matching) == 1:
        return OutputReference(source_id, matching[0])
    if not matching:
        problems.append(Problem(task_id, argument, f"needs {kind.value}, but task {source_id!r} ({source.name}) produces "
                                f"{', '.join(f'{n} ({s.kind.value})' for n, s in source.outputs.items())}"))
    else:
        problems.append(Problem(task_id, argument, f"task {source_id!r} has several {kind.value} outputs "
                                f"({', '.join(matching)}); name one, e.g. '<{source_id}.{matching[0]}>'"))
    return None


def _check_artifact(artifact_id: str, kind: ArtifactKind, store: ArtifactStore | None, session: str | None,
                    task_id: str, argument: str, problems: list[Problem]) -> None:
    if kind_of_id(artifact_id) is not kind:  # ids carry their kind, so this holds even without a store
        problems.append(Problem(task_id, argument, f"needs {kind.value}, but {artifact_id} is {kind_of_id(artifact_id).value}"))
        return
    if store is None:
        return  # planning over virtual inputs (the benchmark): existence cannot be checked
    try:
        artifact = store.get(artifact_id, session=session)
    except ArtifactNotFoundError:
        problems.append(Problem(task_id, argument, f"no input artifact {artifact_id!r} in this session"))
        return
    if artifact.kind is not kind:
        problems.append(Problem(task_id, argument, f"needs {kind.value}, but {artifact_id} is {artifact.kind.value}"))


def _topological_order(plan: Plan, dependencies: dict[str, set[str]], problems: list[Problem]) -> tuple[str, ...]:
    """Kahn's algorithm, keeping the plan's own order among ready tasks; a cycle is reported with its members."""
    ids = list(dict.fromkeys(task.id for task in plan.tasks))  # a duplicated id is reported elsewhere
    remaining = {task_id: set(dependencies[task_id]) & set(dependencies) for task_id in ids}
    order: list[str] = []
    while remaining:
        ready = [task_id for task_id in ids if task_id in remaining and not remaining[task_id]]
        if not ready:
            cycle = " -> ".join(_find_cycle(remaining))
            problems.append(Problem(None, None, f"the tasks depend on each other in a cycle: {cycle}"))
            break
        for task_id in ready:
            order.append(task_id)
            del remaining[task_id]
        for waiting in remaining.values():
            waiting.difference_update(ready)
    return tuple(order)


def _find_cycle(remaining: dict[str, set[str]]) -> list[str]:
    start = next(iter(remaining))
    path, seen = [start], {start: 0}
    while True:
        following = next(iter(sorted(remaining[path[-1]])))
        if following in seen:
            return path[seen[following]:] + [following]
        seen[following] = len(path)
        path.append(following)


def plan_json_schema(registry: ToolRegistry) -> dict[str, Any]:
    """JSON Schema of a plan over ``registry``: tool names as constants, each tool's own argument schema.

    Inputs accept either what the tool card allows (an artifact id of the right kind, or a literal for
    text/json) or a reference to a task's output; kinds of references are checked by validate_plan.
    """
    reference = {"type": "string", "pattern": r"^<[A-Za-z][A-Za-z0-9_-]{0,31}(\.[a-z][a-z0-9_]*)?>$"}
    variants = []
    for tool in registry:
        arguments = tool.card()["arguments_schema"]
        properties = {}
        for name, schema in arguments["properties"].items():
            if name in tool.inputs:
                direct = {k: v for k, v in schema.items() if k not in ("description", "x-anymoda-kind")}
                properties[name] = {"anyOf": [direct or {}, reference], "description": schema.get("description", "")}
            else:
                properties[name] = schema
        variants.append({
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": TASK_ID.pattern},
                "tool": {"const": tool.name},
                "args": {**arguments, "properties": properties},
                "deps": {"type": "array", "items": {"type": "string", "pattern": TASK_ID.pattern}},
            },
            "required": ["id", "tool", "args"],
            "additionalProperties": False,
        })
    return {
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "maxItems": MAX_TASKS, "items": {"oneOf": variants}},
            "answer": {"type": "string"},
        },
        "required": ["tasks"],
        "additionalProperties": False,
    }


_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
# Words that carry no content of their own: a literal made only of these proves nothing either way.
_FILLER = frozenset(
    "a an the and or of to in on at for with from by is are was be it its this that these those as into out up "
    "me my you your i we our they them their he she his her please about what which who how".split())


_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")


def _same_number(value: float, number: float) -> bool:
    return abs(value - number) <= 1e-9 * max(1.0, abs(number))


def content_words(text: str) -> list[str]:
    return [w for w in _WORDS.findall(text.lower()) if w not in _FILLER]


# Words that ask for something or point at something said before, but say nothing themselves: "ok say that
# out loud", "read it back to me please", "draw it again".
_INSTRUCTION = frozenset(
    "ok okay okey now again just then so pls plz please can could would will you say read speak tell repeat "
    "aloud loud loudly voice back draw make show play give do turn put write answer result reply response "
    "said told fine alright right well sure instead".split())


def instruction_only(text: str, sources: Sequence[str] = ()) -> bool:
    """Whether ``text`` only asks or points ("say that out loud") and holds nothing to say, draw or read. A text
    the user put in quotes in one of ``sources`` (say "alright then" out loud) is what they want, whatever it is."""
    words = _WORDS.findall(text.lower())
    if not words or not all(w in _FILLER or w in _INSTRUCTION for w in words):
        return False
    quoted = text.strip()
    return not any(f"{a}{quoted}{b}" in source for source in sources
                   for a, b in (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019")))


def literal_provenance_problems(plan: Plan, registry: ToolRegistry, sources: Sequence[str], *,
                                min_share: float = 0.75, number_sources: Sequence[str] | None = None) -> list[Problem]:
    """Text literals in a plan's arguments that come from nowhere the user can see.

    A literal must be written from the request, the conversation or a tool's output (``sources``):
    at least ``min_share`` of its content words must occur there. A small planner otherwise copies
    sentences from its worked examples ("Our team finished the project two weeks early.") into a
    plan for "say that out loud". Text inputs are checked, and numeric settings (a number the user never
    gave, such as ``period=200`` on a 200-point series, is a guess; the default is the better one); other
    params (a language code for "French") the planner may rightly derive, and references and input ids
    are not literals. ``number_sources`` (default: ``sources``) are the texts a numeric setting may come
    from: what the user said, where the conversation also holds the assistant's own answers.
    """
    known = set()
    for source in sources:
        known.update(content_words(source))
    said = [float(n) for n in _NUMBERS.findall(" ".join(sources if number_sources is None else number_sources))]
    problems = []
    for task in plan.tasks:
        if task.tool not in registry:
            continue
        tool = registry.get(task.tool)
        for name, value in task.args.items():
            param = tool.params.get(name)
            if param is not None and param.type in (int, float) and not isinstance(value, bool) \
                    and isinstance(value, (int, float)) and not param.choices and value != param.default \
                    and not any(_same_number(value, number) for number in said):
                problems.append(Problem(task.id, name, f"{value!r} is not a number the user gave; "
                                        "leave the setting out to use its default"))
                continue
            if not isinstance(value, str) or parse_reference(value) is not None or is_artifact_id(value.strip()):
                continue
            spec_input = tool.inputs.get(name)
            # Only text inputs carry content; params (a language code for "French", a label set) are settings
            # the planner may rightly derive.
            if spec_input is None or spec_input.kind is not ArtifactKind.TEXT:
                continue
            if instruction_only(value, sources):
                problems.append(Problem(task.id, name, f"the text {value[:80]!r} only says what to do, not what to "
                                        "use; give the text it points at (the previous answer or an earlier output)"))
                continue
            words = content_words(value)
            if not words:
                continue
            found = sum(1 for w in words if w in known)
            if found / len(words) < min_share:
                missing = [w for w in words if w not in known][:6]
                problems.append(Problem(task.id, name, f"the text {value[:80]!r} is not from the request or the "
                                        f"conversation (not there: {', '.join(missing)}); copy the words from the request "
                                        "or use an earlier task's output"))
    return problems
