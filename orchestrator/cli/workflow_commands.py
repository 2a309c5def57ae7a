"""``anymoda workflow validate|run|show|list|from-run``: workflow files from the command line.

    anymoda workflow validate graphs/grounded-segmentation.yaml   # file:line errors, exit 2 when invalid
    anymoda workflow run voice-question --input image=cat.png --input question=q.wav --out out/
    anymoda workflow run image-remix --batch photos/ --out results/ --jobs 2
    anymoda workflow show grounded-segmentation -o workflow.png      # Mermaid on stdout, a PNG of the graph
    anymoda workflow from-run run-0123456789abcdef -o workflows/mine.yaml  # a planned run, re-runnable without the LLM
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..agent import Orchestrator
from ..config import current_settings
from ..errors import InvalidInputError, shown
from ..extras import installed, missing_extra
from ..storage.artifacts import ArtifactKind, is_artifact_id
from ..storage.codecs import (
    MediaLimits,
    check_input_file,
    check_output_file,
    check_output_folder,
    file_reference,
    json_argument,
    text_argument,
)
from ..workflows.definition import Workflow, WorkflowError, safe_filename

SHIPPED = Path(__file__).resolve().parents[2] / "graphs"


def shipped_workflows() -> dict[str, Path]:
    """The workflow files that come with anymoda, by name (file stem)."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.yaml"))}


def workflow_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if os.path.isfile(path):  # False, not OSError, for a name too long to be a path
        return path
    shipped = shipped_workflows()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise InvalidInputError(f"no workflow file {shown(name_or_path)}, and no shipped workflow of that name "
                            f"(shipped: {', '.join(shipped) or 'none'})")


def parse_inputs(workflow: Workflow, pairs: list[str], limits: MediaLimits | None = None) -> dict[str, Any]:
    """``--input name=value``: a file (or artifact id) for media; for text the words themselves, for json JSON
    written out, each read from a file only with ``@path`` (``@@`` starts a literal '@'), as ``anymoda tool``
    reads its arguments. Files are checked (regular, readable, within ``limits``) before they are opened."""
    limits = limits or current_settings().limits
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInputError(f"--input takes NAME=VALUE, got {shown(pair)}")
        if name not in workflow.inputs:
            raise InvalidInputError(f"workflow {workflow.name!r} has no input {shown(name)}; its inputs: "
                                    + ", ".join(f"{n} ({i.kind.value})" for n, i in workflow.inputs.items()))
        if name in values:
            raise InvalidInputError(f"input {name!r} is given twice")
        kind, what = workflow.inputs[name].kind, f"--input {name}"
        if kind is ArtifactKind.TEXT:
            values[name] = text_argument(value, what, limits)[0]
        elif kind is ArtifactKind.JSON:
            values[name] = json_argument(value, what, limits)[0]
        elif is_artifact_id(value):
            values[name] = value
        else:
            values[name] = check_input_file(file_reference(value) or value, limits.max_bytes, what)
    return values


def _orchestrator(args: argparse.Namespace) -> Orchestrator:
    return Orchestrator(planner=None, composer=None, approve_before=getattr(args, "approve_before", None) or ())


def cmd_workflow(args: argparse.Namespace) -> int:
    from .agent_commands import console, out

    if args.command == DEPRECATED_NAME:
        console.print(f"note: 'anymoda {DEPRECATED_NAME}' is now 'anymoda workflow'", highlight=False)
    try:
        return {"validate": _validate, "run": _run, "show": _show, "list": _list, "from-run": _from_run}[args.action](
            args, console, out)
    except WorkflowError as exc:
        console.print(f"[red]invalid workflow[/]\n{escape(str(exc))}", soft_wrap=True)
        return 2


def _validate(args: argparse.Namespace, console: Any, out: Any) -> int:
    failed = 0
    for name in args.files:
        try:
            workflow = Workflow.load(workflow_path(name))
        except WorkflowError as exc:
            console.print(escape(str(exc)), highlight=False, soft_wrap=True)
            failed += 1
            continue
        out.print(f"[green]ok[/] {escape(str(workflow.source))}: {escape(workflow.name)} — {len(workflow.nodes)} node(s); "
                  f"inputs {escape(', '.join(f'{n} ({i.kind.value})' for n, i in workflow.inputs.items()) or 'none')}; "
                  f"outputs {escape(', '.join(workflow.outputs) or 'none')}", soft_wrap=True)
    return 2 if failed else 0


def _run(args: argparse.Namespace, console: Any, out: Any) -> int:
    from ..workflows.batch import run_batch, save_outputs
    from .agent_commands import show_run
    from .approval import ask_approval

    if args.out is not None:  # before any work: a file or a FIFO here failed after the run, in a traceback
        check_output_folder(args.out, "--out")
    orchestrator = _orchestrator(args)
    workflow = Workflow.load(workflow_path(args.workflow), orchestrator.registry)
    inputs = parse_inputs(workflow, args.input or [])
    if args.batch:
        if not args.out:
            raise InvalidInputError("--batch needs --out, the folder for the results")
        return _batch(orchestrator, workflow, inputs, args, console, out, run_batch)
    events = orchestrator.stream_workflow(workflow, inputs, session=args.session)
    view = show_run(events, live=not args.json, request=f"workflow {workflow.name}")
    result = orchestrator.result(view.run_id)
    while result.status == "awaiting_approval" and not args.json:
        decision = True if args.yes else ask_approval(list(result.pending_approval), console)
        if not decision and not args.yes:
            break
        show_run(orchestrator.resume_stream(view.run_id, approve=decision), request=f"workflow {workflow.name}")
        result = orchestrator.result(view.run_id)
    saved = save_outputs(orchestrator.store, result, Path(args.out)) if args.out else {}
    if args.json:
        out.print_json(json.dumps({"run": result.run_id, "status": result.status, "outputs": result.outputs,
                                   "saved": saved, "failures": list(result.failures), "error": result.error}))
    else:
        for name, value in result.outputs.items():
            out.print(f"[bold]{escape(name)}[/]: {escape(_shown(orchestrator, result, value))}")
        for value in saved.values():
            for path in value["files"]:
                console.print(f"saved {escape(path)}")
    if result.status == "awaiting_approval":
        console.print(f"[magenta]waiting for approval[/]: anymoda runs resume {result.run_id} --approve (or --deny)")
        return 3
    if result.error or result.failures:
        console.print(f"[red]failed:[/] {escape(result.error or '; '.join(result.failures))}")
        return 1
    return 0


def _shown(orchestrator: Orchestrator, result: Any, value: Any) -> str:
    if value is None:
        return "(not produced)"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(orchestrator, result, v) for v in value) + "]"
    artifact = orchestrator.store.get(value, session=result.session)
    if artifact.kind is ArtifactKind.TEXT:
        return repr(str(orchestrator.store.load(value, session=result.session))[:300])
    return f"{value} ({artifact.describe()})"


def _batch(orchestrator: Orchestrator, workflow: Workflow, inputs: dict[str, Any], args: argparse.Namespace,
           console: Any, out: Any, run_batch: Any) -> int:
    from ..workflows.batch import batch_files

    total = len(batch_files(args.batch, args.glob))
    counts = {"done": 0, "failed": 0, "skipped": 0}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[counts]}"), console=console) as progress:
        bar = progress.add_task(f"{workflow.name}", total=total, counts="")

        def advance(row: Any) -> None:
            counts[row.status] = counts.get(row.status, 0) + 1
            progress.update(bar, advance=1, counts=" ".join(f"{k} {v}" for k, v in counts.items() if v))

        report = run_batch(orchestrator, workflow, args.batch, args.out, fixed_inputs=inputs,
                           input_name=args.batch_input, jobs=args.jobs, pattern=args.glob, on_row=advance)
    table = Table(title=f"{workflow.name}: {len(report.rows)} file(s)")
    for column in ("file", "status", "seconds", "outputs", "error"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        shown = "; ".join(f"{n}: {v['text'] if 'text' in v else ', '.join(Path(p).name for p in v['files'])}"
                          for n, v in row.outputs.items())
        style = {"failed": "red", "skipped": "dim"}.get(row.status, "")
        table.add_row(escape(row.file), f"[{style}]{row.status}[/]" if style else row.status, f"{row.seconds:.2f}",
                      escape(shown[:200]), escape((row.error or "")[:200]))
    out.print(table)
    console.print(f"results: {escape(str(report.csv_path))}, {escape(str(report.jsonl_path))}")
    return 1 if report.failed else 0


def _show(args: argparse.Namespace, console: Any, out: Any) -> int:
    from ..workflows.graph_drawing import draw_png, to_mermaid

    workflow = Workflow.load(workflow_path(args.workflow))
    nodes, edges = workflow.drawing()
    title = workflow.name + (f" — {workflow.description}" if workflow.description else "")
    out.print(to_mermaid(nodes, edges, title=workflow.name), markup=False, highlight=False, soft_wrap=True)
    if not args.no_png and not args.output and not installed("matplotlib"):
        # The picture is drawn by default; without the plot extra the Mermaid text is the answer (an -o asked for
        # one, and is refused below in one line naming the extra).
        console.print(f"no picture: {escape(str(missing_extra('a workflow picture', 'matplotlib')))}")
        return 0
    if not args.no_png:
        # The name comes from the file, which may be someone else's: never a path of its own, and never a
        # file already here ('name: holiday' must not replace ./holiday.png). An -o is the owner's to choose.
        destination = args.output
        if destination:
            check_output_file(destination, "-o")
        else:
            stem = safe_filename(workflow.name)
            destination, n = f"{stem}.png", 2
            while os.path.lexists(destination):
                destination, n = f"{stem}-{n}.png", n + 1
        path = draw_png(nodes, edges, destination, title=title)
        console.print(f"picture: {escape(str(path))}")
    return 0


def _list(args: argparse.Namespace, console: Any, out: Any) -> int:
    table = Table(title="shipped workflows (anymoda workflow run NAME ...)")
    for column in ("name", "inputs", "nodes", "outputs", "description"):
        table.add_column(column, overflow="fold")
    for name, path in shipped_workflows().items():
        workflow = Workflow.load(path)
        table.add_row(name, ", ".join(f"{n} ({i.kind.value})" for n, i in workflow.inputs.items()),
                      " -> ".join(n.tool for n in workflow.nodes.values()), ", ".join(workflow.outputs),
                      escape(workflow.description))
    out.print(table)
    return 0


def _from_run(args: argparse.Namespace, console: Any, out: Any) -> int:
    orchestrator = _orchestrator(args)
    record = orchestrator.journal.get_run(args.run)
    if not record.plan or "tasks" not in record.plan or not record.plan["tasks"]:
        raise InvalidInputError(f"run {args.run} has no planned tasks to save (it was answered directly, or is a workflow run)")
    inputs = [orchestrator.store.get(a, session=record.session) for a in record.inputs]
    workflow = Workflow.from_plan(record.plan, inputs, orchestrator.registry, name=args.name or f"from-{record.id}",
                                  description=f"saved from {record.id}: {record.request}"[:300])
    path = workflow.save(args.output)
    out.print(f"saved {escape(str(path))}: inputs {', '.join(workflow.inputs) or 'none'}; "
              f"run it with: anymoda workflow run {escape(str(path))} "
              + " ".join(f"--input {n}=..." for n in workflow.inputs), soft_wrap=True)
    return 0


DEPRECATED_NAME = "graph"


def add_workflow_commands(commands: argparse._SubParsersAction) -> None:
    workflow = commands.add_parser("workflow", aliases=[DEPRECATED_NAME],
                                   help="workflow files: validate, run (one input or a folder), show, list")
    actions = workflow.add_subparsers(dest="action", required=True)
    validate = actions.add_parser("validate", help="type-check workflow files against the tools (file:line errors)")
    validate.add_argument("files", nargs="+", help="workflow files or shipped workflow names")
    run = actions.add_parser("run", help="run a workflow on inputs, or over every file of a folder with --batch")
    run.add_argument("workflow", help="a workflow file or a shipped workflow's name (anymoda workflow list)")
    run.add_argument("--input", "-i", action="append", metavar="NAME=VALUE",
                     help="an input: a file (or artifact id) for media; the text itself for text and JSON written "
                          "out for json, or @FILE to read either from a file (@@ starts a literal @) (repeatable)")
    run.add_argument("--out", help="save the outputs here (with --batch: one folder per file, plus results.csv/.jsonl)")
    run.add_argument("--session", help="run in this session (default: a session of its own)")
    run.add_argument("--json", action="store_true", help="print the result as JSON, no live display")
    run.add_argument("--approve-before", action="append", metavar="TOOL", help="ask before running this tool")
    run.add_argument("--yes", action="store_true", help="approve every approval request")
    run.add_argument("--batch", metavar="FOLDER", help="run once per file of FOLDER")
    run.add_argument("--batch-input", metavar="NAME", help="the input the folder's files fill (default: the only one left)")
    run.add_argument("--jobs", type=int, default=2, help="files run at once in a batch (default 2)")
    run.add_argument("--glob", default="*", help="which files of the batch folder (default '*')")
    show = actions.add_parser("show", help="print the workflow as Mermaid and draw it as a PNG")
    show.add_argument("workflow")
    show.add_argument("--output", "-o",
                      help="the PNG's path (default NAME.png in this folder, the name made safe as a file name; "
                           "NAME-2.png... when taken)")
    show.add_argument("--no-png", action="store_true", help="only print the Mermaid text")
    actions.add_parser("list", help="the shipped workflows")
    from_run = actions.add_parser("from-run", help="save a planned run as a workflow file, to re-run without the LLM")
    from_run.add_argument("run")
    from_run.add_argument("--output", "-o", required=True, help="the workflow file to write")
    from_run.add_argument("--name", help="the workflow's name")
    workflow.set_defaults(handler=cmd_workflow)
