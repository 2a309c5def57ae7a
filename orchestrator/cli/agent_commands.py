"""The agent's commands: ``anymoda run``, ``anymoda chat`` and ``anymoda runs list|show|resume``.

A run is shown live as a task tree (status, time, progress per task) with the answer streaming in
below it; afterwards the answer is printed and its artifacts are saved to ``--out``, each named by
what it is (a file never overwrites another: later ones get a number; chat turns are prefixed with
the turn). A task whose tool cannot run here is shown as unavailable, with the command that fetches
what it needs; a repaired task shows its first call's error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..agent import Orchestrator, RunResult
from ..errors import InvalidInputError, shown, shown_path
from ..execution.compose import file_phrase
from ..execution.events import Event
from ..execution.journal import check_session_id
from ..storage.store import extension_for
from .approval import ask_approval

console = Console(stderr=True)
out = Console()

_MARKS = {"waiting": "[dim]·[/]", "running": "[yellow]▶[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]",
          "skipped": "[dim]↷[/]", "cancelled": "[dim]■[/]", "awaiting_approval": "[magenta]?[/]", "retrying": "[yellow]↻[/]",
          "repairing": "[yellow]⟲[/]", "unavailable": "[magenta]⊘[/]"}


class RunView:
    """Folds events into what the live display shows."""

    def __init__(self, request: str = ""):
        self.request = request
        self.run_id = ""
        self.tasks: dict[str, dict[str, Any]] = {}
        self.answer = ""
        self.status = "planning"
        self.planner_note = ""
        self.plan_text = ""  # the plan as the planner writes it, shown until the plan is ready

    def apply(self, event: Event) -> None:
        self.run_id = event.run
        data = event.data
        if event.type == "run_started":
            self.request = data.get("request", self.request)
        elif event.type == "plan_token":
            self.plan_text += data.get("text", "")
        elif event.type == "plan_ready":
            self.status = "running"
            self.plan_text = ""
            planner = data.get("planner") or {}
            if planner:
                self.planner_note = f"planned in {planner.get('seconds', 0):.1f} s, {planner.get('attempts', 1)} attempt(s)"
            for task in data["plan"]["tasks"]:
                self.tasks.setdefault(task["id"], {"tool": task["tool"], "status": "waiting", "args": task["args"]})
        elif event.task is not None:
            task = self.tasks.setdefault(event.task, {"tool": data.get("tool", "?"), "status": "waiting"})
            if event.type == "task_started":
                task.update(status="running", started=event.time, progress=None)
            elif event.type == "task_progress":
                task["progress"] = (data.get("done"), data.get("total"), data.get("message", ""))
            elif event.type == "task_retry":
                if data.get("repair"):
                    replacement = data.get("replacement") or {}
                    task.update(status="repairing", error=data.get("error"), repaired_from=data.get("error"),
                                tool=replacement.get("tool", task["tool"]))
                else:
                    task.update(status="retrying", error=data.get("error"))
            elif event.type in ("task_finished", "task_failed", "task_skipped", "task_cancelled"):
                status = {"task_finished": "done", "task_failed": "failed", "task_skipped": "skipped",
                          "task_cancelled": "cancelled"}[event.type]
                if data.get("unavailable"):
                    status = "unavailable"
                task.update(status=status, seconds=data.get("seconds"), outputs=data.get("outputs", {}),
                            error=data.get("error"), resumed=data.get("resumed", False),
                            unavailable=data.get("unavailable"))
        elif event.type == "approval_needed":
            self.status = "awaiting approval"
            for waiting in data["tasks"]:
                self.tasks.setdefault(waiting["id"], {"tool": waiting["tool"]})["status"] = "awaiting_approval"
        elif event.type == "answer_token":
            self.answer += data.get("text", "")
        elif event.type == "answer":
            self.answer = data.get("text", self.answer)
        elif event.type in ("run_finished", "run_failed", "run_interrupted"):
            self.status = {"run_finished": "finished", "run_failed": "failed", "run_interrupted": "waiting"}[event.type]

    def render(self) -> Group:
        tree = Tree(f"[bold]{escape(self.run_id or 'run')}[/] {escape(self.request[:100])} [dim]{self.status}"
                    + (f", {self.planner_note}" if self.planner_note else "") + "[/]")
        now = time.time()
        for task_id, task in self.tasks.items():
            status = task.get("status", "waiting")
            line = f"{_MARKS.get(status, '')} [bold]{escape(task_id)}[/] {escape(task['tool'])}"
            if status == "running":
                line += f" [dim]{now - task.get('started', now):.1f} s[/]"
                progress = task.get("progress")
                if progress and progress[1]:
                    line += f" {100 * (progress[0] or 0) / progress[1]:.0f}%"
                if progress and progress[2]:
                    line += f" [dim]{escape(str(progress[2]))}[/]"
            elif status == "done":
                line += f" [dim]{task.get('seconds') or 0:.2f} s{' (from before the resume)' if task.get('resumed') else ''}[/]"
                outputs = task.get("outputs") or {}
                if outputs:
                    line += " → " + ", ".join(f"{escape(n)} [cyan]{escape(a)}[/]" for n, a in outputs.items())
            elif status == "unavailable":
                missing = task.get("unavailable") or {}
                line += (f" [magenta]cannot run here: needs {escape(str(missing.get('model', '?')))}[/]"
                         + (f" [dim]fetch: {escape(str(missing['fetch_command']))}[/]" if missing.get("fetch_command") else ""))
            elif status == "repairing":
                line += f" [yellow]repairing after: {escape(str(task['error'])[:140])}[/]"
            elif status in ("failed", "skipped", "cancelled", "retrying") and task.get("error"):
                line += f" [red]{escape(str(task['error'])[:160])}[/]"
            if status == "done" and task.get("repaired_from"):
                line += f" [dim](repaired after: {escape(str(task['repaired_from'])[:100])})[/]"
            elif status == "awaiting_approval":
                line += " [magenta]waiting for approval[/]"
            tree.add(line)
        parts: list[Any] = [tree]
        if self.plan_text and not self.tasks:
            parts.append(Panel(Text(self.plan_text), title="planning", border_style="dim"))
        if self.answer:
            parts.append(Panel(Text(self.answer), title="answer", border_style="green"))
        return Group(*parts)


def print_table(table: Table, console: Console) -> None:
    """A table as wide as its contents where no terminal reads it (a pipe, a file): wrapped at 80 columns,
    a name broken mid-word would no longer be found by grep."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    width = console.width
    console.width = max(width, natural)  # print(width=...) cannot go beyond the console's own width
    try:
        console.print(table)
    finally:
        console.width = width


def show_run(events: Iterator[Event], *, live: bool = True, request: str = "") -> RunView:
    view = RunView(request)
    if not live:
        for event in events:
            view.apply(event)
        return view
    finished = False
    try:
        with Live(view.render(), console=console, refresh_per_second=8, transient=False) as display:
            for event in events:
                view.apply(event)
                display.update(view.render())
        finished = True
    finally:
        # Off a terminal, Live leaves the cursor at the end of the tree's last line; an error raised from the
        # stream is printed next and must not land on that line. (A terminal's Live ends its own line.)
        if finished or not console.is_terminal:
            console.print()
    return view


def save_artifacts(orchestrator: Orchestrator, result: RunResult, destination: str | None, *,
                   prefix: str = "") -> list[Path]:
    """Each delivered artifact as ``<prefix><task>-<output><ext>`` in ``destination``; a name already taken
    gets ``-2``, ``-3``..., so nothing saved earlier is overwritten."""
    if not destination or not result.artifacts:
        return []
    folder = Path(destination).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # checked before the run (_check_out); no permission, a full disk
        raise InvalidInputError(f"--out: cannot make {shown_path(destination)} ({exc.strerror or exc})") from None
    saved = []
    for artifact in result.artifacts:
        task = (artifact.task or "").rsplit("/", 1)[-1] or "input"
        stem, extension = f"{prefix}{task}-{artifact.metadata.get('output', artifact.kind.value)}", extension_for(artifact.mime)
        path, n = folder / f"{stem}{extension}", 1
        while path.exists():
            n += 1
            path = folder / f"{stem}-{n}{extension}"
        saved.append(orchestrator.store.export(artifact.id, path, session=result.session))
    return saved


def _print_saved(orchestrator: Orchestrator, result: RunResult, paths: list[Path]) -> None:
    if not paths:
        return  # nothing saved (no --out)
    for artifact, path in zip(result.artifacts, paths, strict=True):
        what = file_phrase(orchestrator.store, result.session, artifact.id, orchestrator.registry)
        console.print(f"saved {escape(str(path))} [dim]({escape(what)})[/]")


def _orchestrator(args: argparse.Namespace) -> Orchestrator:
    settings = None
    if getattr(args, "planner", None):
        import dataclasses

        from ..config import LLMSettings, current_settings

        # --planner replaces [planner] for this command; the composer follows it unless [composer] is set.
        settings = dataclasses.replace(current_settings(), planner=LLMSettings.parse(args.planner, "--planner"))
    return Orchestrator(approve_before=args.approve_before or (), settings=settings)


def _report(orchestrator: Orchestrator, result: RunResult, args: argparse.Namespace) -> int:
    saved = save_artifacts(orchestrator, result, args.out)
    if getattr(args, "json", False):
        report = result.to_json()
        report["saved"] = [str(p) for p in saved]
        out.print_json(json.dumps(report, default=str))
    else:
        if result.answer:
            out.print(result.answer, markup=False, highlight=False)
        if not saved:
            for artifact in result.artifacts:
                what = file_phrase(orchestrator.store, result.session, artifact.id, orchestrator.registry)
                console.print(f"  [cyan]{artifact.id}[/] {escape(what)}")
        _print_saved(orchestrator, result, saved)
        if result.status in ("partial", "failed") and not result.error:
            console.print(f"[yellow]run {result.status}[/]: {len(result.failures)} step(s) not completed"
                          + (f", {len(result.unavailable)} of them cannot run on this machine" if result.unavailable else ""))
    if result.status == "awaiting_approval":
        console.print(f"[magenta]waiting for approval[/]: anymoda runs resume {result.run_id} --approve (or --deny)")
        return 3
    if result.error:
        console.print(f"[red]run failed:[/] {escape(result.error)}")
        return 1
    return 0 if not result.failures else 1


def _checked_files(paths: list[str], what: str) -> list[str]:
    """Files to attach, each refused before any planning unless it is a readable regular file within the limits."""
    from ..config import current_settings
    from ..storage.codecs import check_input_file

    limit = current_settings().limits.max_bytes
    return [str(check_input_file(path, limit, what)) for path in paths]


def _check_out(args: argparse.Namespace) -> None:
    """--out is checked before any work: a file, a FIFO, /proc or a name too long failed after the run, in a traceback."""
    if getattr(args, "out", None) is not None:
        from ..storage.codecs import check_output_folder

        check_output_folder(args.out, "--out")


def cmd_run(args: argparse.Namespace) -> int:
    _check_out(args)
    args.file = _checked_files(args.file or [], "--file")
    orchestrator = _orchestrator(args)
    events = orchestrator.stream(args.request, files=args.file or [], session=args.session)
    run_id = ""
    try:
        view = show_run(events, live=not args.json, request=args.request)
        run_id = view.run_id
    except KeyboardInterrupt:
        console.print("interrupted: `anymoda runs resume RUN_ID` continues the run (see `anymoda runs list`)")
        return 130
    result = orchestrator.result(run_id)
    while result.status == "awaiting_approval" and not args.json:
        decision = True if args.yes else ask_approval(list(result.pending_approval), console)
        if not decision and not sys.stdin.isatty() and not args.yes:
            break
        show_run(orchestrator.resume_stream(run_id, approve=decision), request=args.request)
        result = orchestrator.result(run_id)
    return _report(orchestrator, result, args)


CHAT_COMMANDS = "/attach FILE, /artifacts, /history, /save ID PATH, /quit"


def cmd_chat(args: argparse.Namespace) -> int:
    _check_out(args)
    orchestrator = _orchestrator(args)
    session = orchestrator.session(args.session)
    attached: list[str] = []
    console.print(f"[bold]anymoda chat[/] session [cyan]{escape(session.id)}[/]. {CHAT_COMMANDS}")
    while True:
        try:
            line = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        command = re.match(r"/([A-Za-z]+)(?:\s|$)", line)  # '/etc/hosts: what is this?' is a request
        if command and command[1] not in ("attach", "artifacts", "history", "save", "quit", "exit"):
            name = command[1] if len(command[1]) <= 40 else command[1][:40] + "…"
            console.print(f"[red]error:[/] unknown command /{name}; the commands: {CHAT_COMMANDS}")
            continue
        if line in ("/attach", "/save"):
            console.print("usage: /attach FILE" if line == "/attach" else "usage: /save ARTIFACT_ID PATH")
            continue
        if line.startswith("/attach "):
            try:
                for artifact in session.attach(_checked_files([line.split(" ", 1)[1].strip()], "/attach")):
                    attached.append(artifact.id)
                    console.print(f"attached {artifact.describe()}")
            except Exception as exc:  # noqa: BLE001 - a bad file should not end the chat
                console.print(f"[red]error:[/] {escape(str(exc))}")
            continue
        if line == "/artifacts":
            for artifact in session.artifacts():
                console.print(f"  [cyan]{artifact.id}[/] {escape(artifact.describe())}")
            continue
        if line == "/history":
            for record in session.history():
                console.print(f"[dim]{record.id} {record.status}[/] you: {escape(record.request)}\n  anymoda: "
                              f"{escape((record.answer or '')[:300])}")
            continue
        if line.startswith("/save "):
            bits = line.split()
            if len(bits) != 3:
                console.print("usage: /save ARTIFACT_ID PATH")
                continue
            try:
                console.print(f"saved {orchestrator.store.export(bits[1], bits[2], session=session.id)}")
            except Exception as exc:  # noqa: BLE001
                console.print(f"[red]error:[/] {escape(str(exc))}")
            continue
        try:
            view = show_run(session.stream(line, files=attached), request=line)
        except Exception as exc:  # noqa: BLE001 - one failed turn should not end the conversation
            console.print(f"[red]error:[/] {escape(str(exc))}")
            continue
        attached = []
        result = orchestrator.result(view.run_id)
        while result.status == "awaiting_approval":
            decision = ask_approval(list(result.pending_approval), console)
            show_run(orchestrator.resume_stream(view.run_id, approve=decision), request=line)
            result = orchestrator.result(view.run_id)
        turn = len(session.history())  # this turn's number in the conversation: files of every turn are kept
        _print_saved(orchestrator, result, save_artifacts(orchestrator, result, args.out, prefix=f"turn{turn}-"))


MAX_LISTED = 100_000


def listing_limit(text: str) -> int:
    """A listing's --limit: a whole number from 1 to :data:`MAX_LISTED` (a 20-digit one overflowed SQLite
    in a traceback; -1 listed everything)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number is expected, got {shown(text)}") from None
    if not 1 <= value <= MAX_LISTED:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LISTED:,}, got {shown(text)}")
    return value


def session_argument(text: str) -> str:
    """A --session that filters a listing: a session id, checked like any other before the lookup."""
    try:
        return check_session_id(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_runs(args: argparse.Namespace) -> int:
    _check_out(args)
    orchestrator = _orchestrator(args)
    if args.action == "list":
        table = Table(title="runs (newest last)")
        for column in ("run", "session", "status", "request", "answer"):
            table.add_column(column, overflow="fold")
        for record in orchestrator.journal.runs(session=args.session, limit=args.limit):
            table.add_row(record.id, record.session, record.status, escape(record.request[:60]),
                          escape((record.answer or record.error or "")[:60]))
        print_table(table, out)
        return 0
    if args.action == "show":
        return _show(orchestrator, args)
    if args.action == "cancel":
        record = orchestrator.journal.get_run(args.run)
        if record.status in ("done", "partial", "failed", "cancelled"):
            out.print(f"{record.id} has already ended ({record.status}); nothing to cancel")
            return 0
        orchestrator.cancel(record.id)
        out.print(f"asked the process driving {record.id} to cancel it; `anymoda runs resume {record.id}` continues it")
        return 0
    decision = True if args.approve else False if args.deny else None
    # A run another live process drives is refused before the live tree is drawn: one line, exit 2.
    orchestrator.journal.check_not_driven(args.run, orchestrator.settings.run_lease_s)
    view = show_run(orchestrator.resume_stream(args.run, approve=decision))
    result = orchestrator.result(view.run_id or args.run)
    return _report(orchestrator, result, args)


def _show(orchestrator: Orchestrator, args: argparse.Namespace) -> int:
    record = orchestrator.journal.get_run(args.run)
    if args.json:
        out.print_json(json.dumps({
            "run": record.id, "session": record.session, "request": record.request, "status": record.status,
            "inputs": list(record.inputs), "plan": record.plan, "answer": record.answer,
            "answer_artifacts": list(record.answer_artifacts), "error": record.error,
            "answer_id": record.answer_id, "unavailable": record.unavailable,
            "tasks": [{"task": t.task, "tool": t.tool, "status": t.status, "attempts": t.attempts, "seconds": t.seconds,
                       "arguments": t.arguments, "outputs": t.outputs, "model": t.model, "error": t.error,
                       **({"unavailable": t.detail["unavailable"]} if t.detail.get("unavailable") else {}),
                       **({"repairs": t.detail["repairs"]} if t.detail.get("repairs") else {})}
                      for t in record.tasks]}))
        return 0
    out.print(f"[bold]{record.id}[/] session [cyan]{escape(record.session)}[/] status [bold]{record.status}[/]")
    out.print(f"request: {escape(record.request)}")
    for artifact_id in record.inputs:
        out.print(f"  input [cyan]{artifact_id}[/] {escape(orchestrator.store.get(artifact_id).describe())}")
    table = Table(title="tasks")
    for column in ("task", "tool", "status", "tries", "seconds", "inputs", "outputs (lineage)", "error"):
        table.add_column(column, overflow="fold")
    planned = [t["id"] for t in (record.plan or {}).get("tasks", [])]
    by_id = {t.task: t for t in record.tasks}
    for task_id in planned or list(by_id):
        task = by_id.get(task_id)
        planned_task = next((t for t in (record.plan or {}).get("tasks", []) if t["id"] == task_id), {})
        if task is None:
            table.add_row(task_id, planned_task.get("tool", "?"), "not started", "", "", "", "", "")
            continue
        inputs = ", ".join(f"{k}={v}" for k, v in (task.arguments or planned_task.get("args", {})).items())
        lineage = []
        for name, artifact_id in task.outputs.items():
            parents = orchestrator.store.get(artifact_id).parents if orchestrator.store.exists(artifact_id) else ()
            lineage.append(f"{name}={artifact_id}" + (f" <- {', '.join(parents)}" if parents else ""))
        note = task.error or ""
        if task.detail.get("unavailable"):
            missing = task.detail["unavailable"]
            note = f"cannot run here: needs {missing.get('model')}; fetch: {missing.get('fetch_command')}"
        for earlier in task.detail.get("repairs", []):
            call = ", ".join(f"{k}={v}" for k, v in (earlier.get("arguments") or {}).items())
            note += f"\nrepaired; first call {earlier.get('tool')}({call[:120]}) failed: {earlier.get('error')}"
        table.add_row(task.task, task.tool, task.status, str(task.attempts),
                      f"{task.seconds:.2f}" if task.seconds is not None else "", escape(inputs[:200]),
                      escape("\n".join(lineage)), escape(note.strip()))
    print_table(table, out)
    if record.answer:
        out.print(Panel(Text(record.answer), title="answer", border_style="green"))
    if record.error:
        out.print(f"[red]error:[/] {escape(record.error)}")
    return 0


def add_agent_commands(commands: argparse._SubParsersAction) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--approve-before", action="append", metavar="TOOL",
                            help="ask before running this tool (repeatable), e.g. text-to-video")
        parser.add_argument("--out", help="save the answer's artifacts in this folder")
        parser.add_argument("--planner", metavar="SPEC",
                            help="the planning LLM for this command: local, local:MODEL (hub id or folder), or "
                                 "openai:BASE_URL#MODEL (key from OPENAI_API_KEY, or [planner] api_key_env); default: "
                                 "[planner] in the config, else the packaged Qwen2.5-Coder-0.5B")

    run = commands.add_parser("run", help="answer a request with the tools: plan, run, respond")
    run.add_argument("request", help="what you want, in words")
    run.add_argument("--file", "-f", action="append", help="an input file (repeatable)")
    run.add_argument("--session", help="continue this conversation (default: the run is a conversation of its own)")
    run.add_argument("--yes", action="store_true", help="approve every approval request")
    run.add_argument("--json", action="store_true", help="print the result as JSON, no live display")
    common(run)
    run.set_defaults(handler=cmd_run)
    chat = commands.add_parser("chat", help="talk with the agent over several turns (/attach FILE to add inputs)")
    chat.add_argument("--session", default="chat", help="the conversation to continue (default 'chat')")
    common(chat)
    chat.set_defaults(handler=cmd_chat)
    runs = commands.add_parser("runs", help="list, show or resume runs")
    actions = runs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the latest runs")
    listing.add_argument("--session", type=session_argument)
    listing.add_argument("--limit", type=listing_limit, default=30, help="how many (1 to 100,000; default 30)")
    show = actions.add_parser("show", help="a run's plan, tasks (status, timings, inputs, outputs, lineage), answer")
    show.add_argument("run")
    show.add_argument("--json", action="store_true")
    resume = actions.add_parser("resume", help="continue a run that crashed, was interrupted or waits for approval")
    resume.add_argument("run")
    decision = resume.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve the tasks it waits for")
    decision.add_argument("--deny", action="store_true", help="decline them (they and their dependants are skipped)")
    cancel = actions.add_parser("cancel", help="stop a run, wherever it is driven (it stays resumable)")
    cancel.add_argument("run")
    for parser in (listing, show, resume, cancel):
        parser.set_defaults(approve_before=None, out=None)
    resume.add_argument("--out", help="save the answer's artifacts in this folder")
    runs.set_defaults(handler=cmd_runs)
