"""The compact plan syntax: one tool call per line, and the grammar that keeps an LLM inside it.

A plan in this syntax reads like code a coder model has seen a million times::

    t1 = image-captioning(image=photo.jpg)
    t2 = text-to-speech(text=t1)

or, when no tool is needed, ``answer("...")``. A value is ``"quoted text"`` (JSON string rules), a
number, ``true``/``false``, the handle of an input (its file name, or its artifact id), ``tN`` (the
output of task ``tN`` of the kind the argument needs) or ``tN.output``.

It exists for small local planners: a JSON plan costs ~40 generated tokens a task, this one ~12,
and on a CPU every generated token is ~50-130 ms. :meth:`CompactSyntax.segment_grammar` gives the
grammar of the *next line* given the lines already written, so that each line can only call a tool
whose required inputs can be met, with each input filled by an input or an earlier task's output of
the right kind. A plan decoded under it is therefore valid by construction in everything the
grammar can express (kinds, references, argument names, choices); :func:`validate_plan` still
checks every plan afterwards (numeric bounds, session ownership).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..tooling.tool import Param, Tool
from .plan import MAX_TASKS, Plan, PlanTask, parse_reference

_HANDLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED = re.compile(r"^(t\d+|true|false|null|answer)$")
_LINE = re.compile(r"^t(?P<index>\d+)\s*=\s*(?P<tool>[A-Za-z0-9_-]+)\s*\((?P<args>.*)\)\s*$")
_ANSWER = re.compile(r"^answer\s*\((?P<text>.*)\)\s*$")
_TASK_REF = re.compile(r"^t(?P<index>\d+)(?:\.(?P<output>[a-z][a-z0-9_]*))?$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
# Literal texts: JSON strings without control characters (a model left free writes raw newlines,
# which end the line), bounded in length so that a looping model cannot run to the token limit.
# (llguidance's max_tokens on a rule cuts a lexeme short, leaving an unterminated string.)
TEXT_MAX_CHARS = 300
ANSWER_MAX_CHARS = 800


def _string_lexeme(max_chars: int) -> str:
    return r'/"([^"\\\x00-\x1f]|\\["\\\/nt]){1,%d}"/' % max_chars


# Sampling controls are not the planner's to set: a seed an LLM makes up is noise (tools draw and record
# one themselves), and temperatures change results in ways no request asks for.
# "language" (speech recognition) too: Whisper detects it, and a 0.5B planner wrote the whole request
# into it, failing a sound plan.
PLANNER_HIDDEN_PARAMS = frozenset({"seed", "temperature", "top_p", "sampling", "language"})
_SMALL_INT_RANGE = 64  # int params with at most this many values are offered as a closed list


@dataclass(frozen=True)
class PlanInput:
    """An input the plan may name: ``handle`` is what the LLM writes, ``artifact_id`` what it means."""

    handle: str
    artifact_id: str
    kind: ArtifactKind
    note: str = ""

    def prompt_line(self) -> str:
        return f"{self.handle} ({self.kind.value}{', ' + self.note if self.note else ''})"


def plan_inputs(artifacts: Sequence[Artifact]) -> list[PlanInput]:
    """Handles for a request's inputs: the file name where it is short, safe and unique, else the id."""
    names = [str(a.metadata.get("name", "")) for a in artifacts]
    inputs = []
    for artifact, name in zip(artifacts, names):
        usable = bool(_HANDLE.match(name)) and not _RESERVED.match(name) and names.count(name) == 1
        note = ", ".join(f"{key}={artifact.metadata[key]}" for key in ("width", "height", "duration_s", "length")
                         if key in artifact.metadata)
        inputs.append(PlanInput(name if usable else artifact.id, artifact.id, artifact.kind, note))
    return inputs


def _lark_literal(text: str) -> str:
    return json.dumps(text)  # a Lark string literal takes the same escapes as JSON


def _rule_name(prefix: str, name: str) -> str:
    return prefix + "_" + re.sub(r"[^a-z0-9]", "_", name.lower())


class CompactSyntax:
    """Render, parse and constrain plans written one call per line."""

    name = "compact"

    def instructions(self) -> str:
        return (
            "You turn a user's request into a plan: one tool call per line, numbered t1, t2, ...\n"
            "t1 = tool-name(arg=value, ...)\n"
            "A value is \"quoted text\" copied from the request, the name of an input, or tN for the output of "
            "an earlier task tN (tN.output to pick one of several outputs).\n"
            "Use exactly the tools the request asks for, in its order, each fed by the step before when it "
            "works on that result. Copy texts and questions from the request word for word.\n"
            "If no tool is needed, write answer(\"...\") instead."
        )

    def tool_line(self, tool: type[Tool]) -> str:
        inputs = ", ".join(f"{n}{'' if s.required else '?'}: {s.kind.value}" for n, s in tool.inputs.items())
        outputs = ", ".join(f"{n}: {s.kind.value}" for n, s in tool.outputs.items())
        return f"{tool.name}({inputs}) -> {outputs}. {first_sentence(tool.description)}"

    # ------------------------------------------------------------------ plans to text and back

    def render(self, plan: Plan, handles: dict[str, str] | None = None) -> str:
        """The text of a plan (demos are stored as plans and shown to the model in this form)."""
        if not plan.tasks:
            return f"answer({json.dumps(plan.answer or '', ensure_ascii=False)})"
        numbers = {task.id: f"t{position}" for position, task in enumerate(plan.tasks, 1)}
        lines = []
        for task in plan.tasks:
            args = []
            for name, value in task.args.items():
                args.append(f"{name}={self._render_value(value, numbers, handles or {})}")
            lines.append(f"{numbers[task.id]} = {task.tool}({', '.join(args)})")
        return "\n".join(lines)

    @staticmethod
    def _render_value(value: Any, numbers: dict[str, str], handles: dict[str, str]) -> str:
        reference = parse_reference(value)
        if reference is not None:
            task, output = reference
            return numbers.get(task, task) + (f".{output}" if output else "")
        if isinstance(value, str) and value in handles:
            return handles[value]
        if isinstance(value, str) and is_artifact_id(value):
            return value
        return json.dumps(value, ensure_ascii=False)

    def parse(self, text: str, inputs: Sequence[PlanInput]) -> Plan:
        """A plan from its text; any line that does not follow the syntax is refused with its number."""
        by_handle = {i.handle: i.artifact_id for i in inputs} | {i.artifact_id: i.artifact_id for i in inputs}
        lines = [line.strip() for line in _strip_fence(text).splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise InvalidInputError("the reply has no plan: expected lines like 't1 = tool(arg=value)'")
        answer = _ANSWER.match(lines[0])
        if answer:
            if len(lines) > 1:
                raise InvalidInputError("line 2: nothing may follow answer(...)")
            value = _parse_values(answer["text"], "line 1")
            if len(value) != 1 or not isinstance(value[0][1], str) or value[0][0] is not None:
                raise InvalidInputError("line 1: answer(...) takes one quoted text")
            return Plan((), value[0][1])
        if len(lines) > MAX_TASKS:
            raise InvalidInputError(f"a plan may have at most {MAX_TASKS} tasks, this one has {len(lines)}")
        tasks = []
        for number, line in enumerate(lines, 1):
            match = _LINE.match(line)
            if not match:
                raise InvalidInputError(f"line {number}: {line[:80]!r} is not of the form 't{number} = tool(arg=value, ...)'")
            args: dict[str, Any] = {}
            for name, value in _parse_values(match["args"], f"line {number}"):
                if name is None:
                    raise InvalidInputError(f"line {number}: every argument needs a name (name=value)")
                if name in args:
                    raise InvalidInputError(f"line {number}: argument {name[:40]!r} is given twice")
                args[name] = self._resolve_value(value, by_handle, number, name)
            tasks.append(PlanTask(f"t{match['index']}", match["tool"], args))
        return Plan(tuple(tasks))

    @staticmethod
    def _resolve_value(value: Any, by_handle: dict[str, str], line: int, name: str) -> Any:
        if not isinstance(value, _Bare):
            return value
        reference = _TASK_REF.match(value.text)
        if reference:
            return f"<t{reference['index']}{'.' + reference['output'] if reference['output'] else ''}>"
        if value.text in by_handle:
            return by_handle[value.text]
        shown = repr(value.text) if len(value.text) <= 60 else f"{value.text[:60]!r}… ({len(value.text)} characters)"
        raise InvalidInputError(f"line {line}, argument {name[:40]!r}: {shown} is neither an input, a task "
                                f"output (tN) nor quoted text; inputs: {', '.join(sorted(by_handle)) or 'none'}")

    # ------------------------------------------------------------------ the grammar, one line at a time

    def segment_grammar(self, tools: Sequence[type[Tool]], inputs: Sequence[PlanInput], written: str, *,
                        max_tasks: int = MAX_TASKS, sequence: Sequence[str] | None = None,
                        numbers: Sequence[str] | None = None, answer_only: bool = False) -> str | None:
        """Lark grammar (llguidance dialect) of what may follow ``written``; None when the plan must end.

        ``written`` is what the model produced so far, whole lines only. The next line may call any
        of ``tools`` whose required inputs can be filled from the inputs and the outputs of earlier
        lines. Two things real plans never do are left out, because small models loop on them: a
        tool taking the same input (file or task output) as an earlier call of that tool, and a
        tool taking its own earlier output.

        ``sequence``: the tools chosen for this request, in order (see :mod:`orchestrator.planning.tool_selection`);
        line k may then call only the k-th of them, and the plan ends after the last. Where that tool
        cannot be called (nothing of the kind it needs), the line falls back to every tool.

        ``numbers``: the numbers the request (or conversation) holds; numeric params may then take only
        these, and are not offered when there are none. A number the user never said is a guess
        (``period=200`` on a 200-point series), and the tool's default is the better one.

        ``answer_only``: the plan is a direct ``answer(...)`` (a request that asks for no tool).
        """
        if answer_only:
            return None if written.strip() else (
                f'start: answer\nanswer: "answer(" {_string_lexeme(ANSWER_MAX_CHARS)} ")"\n')
        by_name = {tool.name: tool for tool in tools}
        earlier: list[type[Tool]] = []
        consumed: dict[str, set[tuple[str, str]]] = {}  # tool -> (argument, input handle or task output)
        for line in (ln for ln in written.splitlines() if ln.strip()):
            match = _LINE.match(line.strip())
            if not match or match["tool"] not in by_name:
                return None  # an answer(...) line, or text this grammar never produced: nothing may follow
            earlier.append(by_name[match["tool"]])
            for name, value in _parse_values(match["args"], "written plan"):
                if isinstance(value, _Bare):
                    reference = _TASK_REF.match(value.text)
                    source = f"t{reference['index']}" if reference else value.text
                    consumed.setdefault(match["tool"], set()).add((name or "", source))
        index = len(earlier) + 1
        if index > min(max_tasks, MAX_TASKS):
            return None
        if sequence and index > len(sequence):
            return None
        rules: list[str] = []
        calls = []
        forced = [by_name[sequence[index - 1]]] if sequence and sequence[index - 1] in by_name else []
        for candidates in ([forced, tools] if forced else [tools]):
            for tool in candidates:
                body = self._call_rule(tool, inputs, earlier, consumed.get(tool.name, set()), numbers)
                if body is not None:
                    name = _rule_name("call", tool.name)
                    rules.append(f"{name}: {body}")
                    calls.append(name)
            if calls:
                break
        if not calls:
            return None
        # A line ends with a newline (another line follows) or with the end of the reply, as in the
        # demos. (Forcing a newline after the last line too was measured: the model then reads the
        # newline as "more follows" and runs on to the task limit.)
        # With a chosen sequence the line count is known: a newline exactly where another line must follow.
        end = '"\\n"?' if not sequence else '"\\n"' if index < len(sequence) else ""
        line = f'{_lark_literal(f"t{index} = ")} ({" | ".join(calls)}) {end}'
        if index == 1 and not sequence:
            start = f'start: line | answer\nanswer: "answer(" {_string_lexeme(ANSWER_MAX_CHARS)} ")"'
        elif index == 1 or (sequence and index <= len(sequence)):
            start = "start: line"  # the chosen tools are all called
        else:
            start = "start: line?"  # an empty next line ends the plan
        string = f"text_literal: {_string_lexeme(TEXT_MAX_CHARS)}"
        return "\n".join([start, f"line: {line}", string, r'number: /-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?/'] + rules) + "\n"

    def _call_rule(self, tool: type[Tool], inputs: Sequence[PlanInput], earlier: Sequence[type[Tool]],
                   consumed: set[tuple[str, str]], numbers: Sequence[str] | None = None) -> str | None:
        required, optional = [], []
        for name, spec in tool.inputs.items():
            options = [option for value, option in self._value_options(spec.kind, inputs, earlier, tool)
                       if value is None or (name, value) not in consumed]
            if not options:
                if spec.required:
                    return None  # cannot be called here: nothing (new) of that kind to give it
                continue
            (required if spec.required else optional).append((name, f'({" | ".join(options)})'))
        if required:
            pieces = [" ".join(f'{_lark_literal(("" if i == 0 else ", ") + n + "=")} {v}' for i, (n, v) in enumerate(required))]
            pieces += [f'({_lark_literal(", " + n + "=")} {v})?' for n, v in optional]
        elif optional:
            # Tools whose inputs are alternatives (a table as text, rows or an image): exactly one of them.
            pieces = ["(" + " | ".join(f'{_lark_literal(n + "=")} {v}' for n, v in optional) + ")"]
        else:
            return None
        for name, param in tool.params.items():
            if name in PLANNER_HIDDEN_PARAMS:
                continue
            value = self._param_value(param, numbers)
            if value is not None:
                pieces.append(f'({_lark_literal(", " + name + "=")} {value})?')
        return " ".join([_lark_literal(f"{tool.name}(")] + pieces + ['")"'])

    @staticmethod
    def _value_options(kind: ArtifactKind, inputs: Sequence[PlanInput], earlier: Sequence[type[Tool]],
                       caller: type[Tool]) -> list[tuple[str | None, str]]:
        """(what it consumes, grammar alternative) for every value an input of ``kind`` may take."""
        options = [(i.handle, _lark_literal(i.handle)) for i in inputs if i.kind is kind]
        for position, tool in enumerate(earlier, 1):
            if tool is caller:
                continue  # a tool on its own output: a loop, not a plan
            matching = [name for name, spec in tool.outputs.items() if spec.kind is kind]
            task = f"t{position}"
            if len(matching) == 1:  # the bare task id is unambiguous; naming the output is also fine
                options.append((task, _lark_literal(task)))
            options += [(task, _lark_literal(f"{task}.{name}")) for name in matching]
        if kind is ArtifactKind.TEXT:
            options.append((None, "text_literal"))
        return options

    @staticmethod
    def _param_value(param: Param, numbers: Sequence[str] | None = None) -> str | None:
        if param.choices:
            return "(" + " | ".join(_lark_literal(json.dumps(c)) for c in param.choices) + ")"
        if param.type is bool:
            return '("true" | "false")'
        if param.type in (int, float) and numbers is not None:
            allowed = [n for n in numbers if _number_fits(param, n)]
            return "(" + " | ".join(_lark_literal(n) for n in allowed) + ")" if allowed else None
        if param.type is int and param.minimum is not None and param.maximum is not None \
                and param.maximum - param.minimum < _SMALL_INT_RANGE:
            return "(" + " | ".join(f'"{v}"' for v in range(int(param.minimum), int(param.maximum) + 1)) + ")"
        if param.type in (int, float):
            return "number"
        return "text_literal"


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]*\d)")


def numbers_in(*texts: str) -> list[str]:
    """The numbers written in ``texts`` (each once, in order), as the grammar may offer them."""
    found: list[str] = []
    for text in texts:
        for match in _NUMBER_IN_TEXT.finditer(text or ""):
            if match.group(0) not in found:
                found.append(match.group(0))
    return found


def _number_fits(param: Param, text: str) -> bool:
    value = float(text)
    if param.type is int and not value.is_integer():
        return False
    return (param.minimum is None or value >= param.minimum) and (param.maximum is None or value <= param.maximum)


def first_sentence(text: str) -> str:
    """The description's first sentence: what a planner needs to pick a tool, in a fraction of the tokens."""
    for match in re.finditer(r"[.;](?=\s|$)", text):
        before = text[: match.start()].rsplit(None, 1)[-1].lstrip("(").lower() if text[: match.start()].strip() else ""
        if before in ("e.g", "i.e", "etc", "vs", "approx"):
            continue  # an abbreviation, not the end of the sentence
        return text[: match.end()]
    return text


def _strip_fence(text: str) -> str:
    fenced = re.search(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    return fenced.group(1) if fenced else text


@dataclass(frozen=True)
class _Bare:
    """An unquoted word in an argument list: an input handle or a task reference."""

    text: str


def _parse_values(source: str, where: str) -> list[tuple[str | None, Any]]:
    """``name=value, ...`` (or a single bare value) into (name, value) pairs, scanning strings properly."""
    decoder = json.JSONDecoder()
    pairs: list[tuple[str | None, Any]] = []
    position, length = 0, len(source)
    while True:
        while position < length and source[position] == " ":
            position += 1
        if position >= length:
            break
        name = None
        named = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)\s*", source[position:])
        if named:
            name = named.group(1)
            position += named.end()
        if position < length and source[position] in "\"[{":
            try:
                value, end = decoder.raw_decode(source, position)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{where}: bad quoted value at column {position + 1}: {exc.msg}") from None
            except RecursionError:  # [[[[... a thousand deep: json recurses per level
                raise InvalidInputError(f"{where}: the value at column {position + 1} is nested too deeply") from None
            position = end
        else:
            word = re.match(r"[^,\s)]+", source[position:])
            if not word:
                raise InvalidInputError(f"{where}: expected a value at column {position + 1}")
            token = word.group(0)
            position += word.end()
            if token in ("true", "false"):
                value = token == "true"
            elif token == "null":
                value = None
            elif _NUMBER.match(token):
                if len(token) > 40:  # int() refuses over 4300 digits; no argument needs more than a few
                    raise InvalidInputError(f"{where}: the number at column {position - len(token) + 1} has "
                                            f"{len(token)} characters; numbers are at most 40")
                value = float(token) if any(c in token for c in ".eE") else int(token)
            else:
                value = _Bare(token)
        pairs.append((name, value))
        while position < length and source[position] == " ":
            position += 1
        if position < length:
            if source[position] != ",":
                raise InvalidInputError(f"{where}: expected ',' between arguments at column {position + 1}")
            position += 1
    return pairs
