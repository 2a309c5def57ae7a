"""The ``anymoda`` command line.

    anymoda run "REQUEST" [--file F ...] [--out DIR]  plan, run and answer a request (live task tree)
    anymoda chat [--session ID]                   multi-turn; /attach FILE; earlier outputs stay referable
    anymoda runs list|show RUN|resume RUN         a run's plan, tasks, timings, lineage; continue a run
    anymoda workflow validate|run|show|list|from-run  workflow files: type-check, run (or --batch a folder), draw
    anymoda train connector --task T --connector C  train the native path (encoder -> connector -> LLM)
    anymoda tools [--json]                       what is registered, and whether it can run here
    anymoda models list|pull|remove              which models are here; fetch them from the hub; delete them
    anymoda tool NAME --INPUT VALUE ... [-o OUT]  run one tool on files, artifact ids or literals
    anymoda demo [--out DIR]                      the offline default experts end to end on generated inputs
    anymoda artifacts list|show|export ...        what the store holds, with lineage
    anymoda render ARTIFACT -o OUT.png            a picture of boxes, masks, audio or a time series
    anymoda config                                the settings in force
    anymoda bench planner --cases FILE.jsonl      score the planner against a naive baseline on a case file
    anymoda bench agent --cases FILE.jsonl        run requests through the whole agent and check the answers
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..config import current_settings
from ..distributed.cli_cluster import add_cluster_commands
from ..errors import AnymodaError, InvalidInputError, shown, shown_path
from ..native.cli_train import add_train_parser
from ..serving.cli import add_serving_commands
from ..storage.artifacts import Artifact, ArtifactKind, is_artifact_id
from ..storage.codecs import (
    EXTENSION_KINDS,
    check_input_file,
    check_output_file,
    check_output_folder,
    file_reference,
    json_argument,
    text_argument,
)
from ..storage.store import ArtifactStore
from ..tooling.registry import ToolRegistry
from .agent_commands import add_agent_commands, listing_limit, print_table, session_argument
from .model_commands import add_models_commands
from .workflow_commands import add_workflow_commands

CLI_SESSION = "cli"
console = Console(stderr=True)
out = Console()


def _store() -> ArtifactStore:
    from ..execution.state import open_store

    return open_store(current_settings())


# ---------------------------------------------------------------------------------------- tools


def cmd_tools(args: argparse.Namespace) -> int:
    registry = ToolRegistry.default()
    if args.json:
        out.print_json(json.dumps(registry.cards()))
        return 0
    table = Table(title=f"{len(registry)} tools", show_lines=False)
    for column in ("name", "task", "inputs -> outputs", "model", "runs here?"):
        table.add_column(column, overflow="fold")
    unavailable = False
    for tool_class in registry:
        tool = tool_class()
        availability = tool.available()  # looks, never loads or converts: the contract of available()
        unavailable = unavailable or not availability.ok
        signature = (
            ", ".join(f"{n}:{s.kind.value}" for n, s in tool_class.inputs.items())
            + " -> "
            + ", ".join(f"{n}:{s.kind.value}" for n, s in tool_class.outputs.items())
        )
        if availability.ok:
            status = "[green]yes[/]" + (f" ({escape(availability.summary)})" if availability.summary else "")
        else:
            status = f"[red]no[/]: {escape(availability.summary or availability.reason)}"
        table.add_row(tool_class.name, tool_class.task, signature, escape(tool.model_id), status)
    print_table(table, out)
    if unavailable:
        console.print("[dim]Tools marked 'weights not here' download their model on first use when the hub is reachable "
                      "(offline mode is on); `anymoda tool NAME ...` says how to get it.[/]")
    for error in registry.plugin_errors:
        console.print(f"[yellow]warning:[/] {escape(error)}")
    return 0


def tool_option(name: str) -> str:
    """The command-line spelling of a tool's input or param: dashes (``time_series`` -> ``--time-series``)."""
    return "--" + name.replace("_", "-")


def dashed_tool_options(argv: list[str], tool_class: type) -> list[str]:
    """``argv`` with the underscore spelling of any of the tool's options (``--time_series``, ``--max_new_tokens=4``)
    written as its dashed one: both spellings are accepted for every tool, the help shows the dashed one."""
    known = {tool_option(name) for name in (*tool_class.inputs, *tool_class.params)}
    spelled = []
    for arg in argv:
        option, sep, value = arg.partition("=")
        dashed = option.replace("_", "-")
        spelled.append(dashed + sep + value if arg.startswith("--") and dashed != option and dashed in known else arg)
    return spelled


def _tool_parser(tool_class: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"anymoda tool {tool_class.name}",
        description=f"{tool_class.description} [task: {tool_class.task}; default model: {tool_class.default_model}]",
    )
    group = parser.add_argument_group(
        "inputs", "media: a file or an artifact id. text: the words themselves, or @FILE to read a file (@@ starts "
                  "a text with one @). json: JSON written out, or @FILE. Files are read only when asked for.")
    for name, spec in tool_class.inputs.items():
        kind = spec.kind.value.upper()
        metavar = f"{kind}|@FILE" if spec.kind in (ArtifactKind.TEXT, ArtifactKind.JSON) else "FILE|ID"
        group.add_argument(tool_option(name), dest=name, metavar=metavar, required=spec.required,
                           help=f"({spec.kind.value}) {spec.description}")
    params = parser.add_argument_group("params")
    for name, spec in tool_class.params.items():
        bounds = []
        if spec.minimum is not None:
            bounds.append(f">= {spec.minimum}")
        if spec.maximum is not None:
            bounds.append(f"<= {spec.maximum}")
        if spec.choices:
            bounds.append("one of " + ", ".join(map(str, spec.choices)))
        extra = f" ({'; '.join(bounds)})" if bounds else ""
        params.add_argument(tool_option(name), dest=f"param__{name}", metavar=spec.type.__name__.upper(),
                            help=f"{spec.description}{extra}; default {spec.default!r}")
    parser.add_argument("--model", help="hub id or local path of the model to use instead of the default")
    parser.add_argument("-o", "--output", help="save the output here: a file (its extension picks the output) or a directory")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _input_argument(store: ArtifactStore, name: str, kind: ArtifactKind, value: str) -> Any:
    """What ``--NAME VALUE`` stands for: an artifact id; for text and json the value itself or, with ``@path``,
    a file's contents; for media a file (a leading @ is allowed there too)."""
    if is_artifact_id(value):
        return value
    what = f"--{name}"
    if kind in (ArtifactKind.TEXT, ArtifactKind.JSON):
        if kind is ArtifactKind.TEXT:
            text, file_name = text_argument(value, what, store.limits)
            if not text.strip():  # refused here, before anything is stored for it (no tool reads an empty text)
                raise InvalidInputError(f"{what} is empty" + (f" (the file {file_name!r} has no text)" if file_name else ""))
            if file_name is None:
                _hint_if_file(what, value)
                return text
            return store.put_value(kind, text, metadata={"name": file_name}, session=CLI_SESSION).id
        try:
            parsed, file_name = json_argument(value, what, store.limits)
        except InvalidInputError as exc:
            if file_reference(value) is None and _names_a_file(value):
                raise InvalidInputError(f"{exc}; to read the file {shown(value)}, write {what} @{value}") from None
            raise
        if file_name is None:
            return parsed
        return store.put_value(kind, parsed, metadata={"name": file_name}, session=CLI_SESSION).id
    path = check_input_file(file_reference(value) or value, store.limits.max_bytes, what)
    return store.ingest_file(path, kind, session=CLI_SESSION).id


def _names_a_file(value: str) -> bool:
    if len(value) > 1024 or "\n" in value:
        return False
    try:
        return Path(value).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: words, not a path
        return False


def _hint_if_file(what: str, value: str) -> None:
    """A text that names an existing file was probably meant as that file: say how to read it, use the words."""
    if _names_a_file(value):
        console.print(f"[dim]note: {escape(what)} is the text {escape(shown(value))}; to read that file, write "
                      f"{escape(what)} @{escape(value)}[/]", highlight=False)


def _output_choice(outputs: dict[str, ArtifactKind], destination: str) -> str | None:
    """Which output ``-o destination`` saves: one output's name for a file, None for a folder (all of them).
    Known from the tool's declared outputs, so a destination that fits none is refused before the tool runs."""
    target = check_output_file(destination, "-o")  # a FIFO, a device, a name too long: refused before running
    if not target.suffix or target.is_dir() or destination.endswith(("/", os.sep)):
        return None
    wanted = EXTENSION_KINDS.get(target.suffix.lower())
    matching = [n for n, kind in outputs.items() if kind is wanted] or (
        [n for n, kind in outputs.items() if kind is ArtifactKind.TEXT] if target.suffix.lower() in (".txt", ".md") else [])
    if not matching:
        kinds = ", ".join(f"{n} ({kind.value})" for n, kind in outputs.items())
        raise InvalidInputError(f"-o {shown_path(destination)}: no output fits a {shown(target.suffix)} file; outputs: {kinds}")
    return matching[0]


def _save_outputs(store: ArtifactStore, outputs: dict[str, Artifact], destination: str) -> list[Path]:
    chosen = _output_choice({n: a.kind for n, a in outputs.items()}, destination)
    target = Path(destination).expanduser()
    if chosen is not None:
        return [store.export(outputs[chosen].id, target, session=CLI_SESSION)]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"-o {shown_path(destination)}: cannot make that folder ({exc.strerror or exc})") from None
    return [store.export(a.id, target, session=CLI_SESSION) for a in outputs.values()]


def _records_table(title: str, records: list[dict[str, Any]], limit: int = 50) -> Table:
    """A list of JSON objects as a table; nested values are summarised, not dumped."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for record in records[:limit]:
        cells = []
        for column in columns:
            cell = record.get(column, "")
            if isinstance(cell, (list, dict)):
                cell = f"[{len(cell)} items]" if isinstance(cell, list) else json.dumps(cell)[:60]
            cells.append(escape(str(cell)))
        table.add_row(*cells)
    if len(records) > limit:
        table.caption = f"{len(records) - limit} more not shown (see `anymoda artifacts export`)"
    return table


def print_outputs(run: Any, outputs: dict[str, Artifact], values: dict[str, Any]) -> None:
    for name, artifact in outputs.items():
        value = values[name]
        header = f"[bold]{name}[/] [dim]{artifact.id}[/]"
        if artifact.kind is ArtifactKind.TEXT:
            out.print(header)
            out.print(value, markup=False, highlight=False, soft_wrap=True)  # a pipe gets the lines as written
        elif artifact.kind is ArtifactKind.DETECTIONS:
            table = Table(title=escape(f"{name}: {len(value)} detection(s) [{artifact.id}]"))
            for column in ("label", "score", "box (x0, y0, x1, y1)"):
                table.add_column(column)
            for box, label, score in zip(value.boxes, value.labels, value.scores, strict=True):
                table.add_row(escape(label), f"{score:.3f}", ", ".join(f"{v:.0f}" for v in box))
            print_table(table, out)
        elif artifact.kind is ArtifactKind.JSON:
            if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
                print_table(_records_table(escape(f"{name} [{artifact.id}]"), value), out)
            else:
                out.print(header)
                text = json.dumps(value, ensure_ascii=False)
                out.print(text if len(text) < 2000 else text[:2000] + " ...", markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(f"{header} {artifact.describe()}")


def cmd_tool(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        console.print("usage: anymoda tool NAME [--INPUT VALUE ...] [-o OUT]   (anymoda tools lists the names)")
        return 2
    registry = ToolRegistry.default()
    tool_class = registry.get(argv[0])
    args = _tool_parser(tool_class).parse_args(dashed_tool_options(argv[1:], tool_class))
    if args.output:  # before the inputs are stored or the model loads
        _output_choice({n: spec.kind for n, spec in tool_class.outputs.items()}, args.output)
    store = _store()
    arguments: dict[str, Any] = {}
    for name, spec in tool_class.inputs.items():
        value = getattr(args, name)
        if value is not None:
            arguments[name] = _input_argument(store, name, spec.kind, value)
    for name in tool_class.params:
        value = getattr(args, f"param__{name}")
        if value is not None:
            arguments[name] = value
    tool = tool_class(model=args.model)
    from ..tooling.invoke import run_tool

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task(f"{tool.name} ({tool.model_id})", total=None)

        def show_progress(done: float, total: float | None, message: str) -> None:
            progress.update(bar, completed=done, total=total, description=f"{tool.name}: {message}" if message else tool.name)

        tool.progress_callback = show_progress
        run = run_tool(tool, arguments, store=store, session=CLI_SESSION)
    if args.json:
        out.print_json(json.dumps({"tool": run.tool, "model": run.model, "seconds": run.seconds,
                                   "outputs": {n: a.to_dict() for n, a in run.outputs.items()}}))
    else:
        print_outputs(run, run.outputs, run.values)
        console.print(f"[dim]{run.tool} with {run.model} in {run.seconds:.2f} s[/]")
    if args.output:
        for path in _save_outputs(store, run.outputs, args.output):
            console.print(f"saved {path}")
    return 0


# ---------------------------------------------------------------------------------------- artifacts


def cmd_artifacts(args: argparse.Namespace) -> int:
    store = _store()
    if args.action == "list":
        table = Table(title=f"artifacts (the latest {args.limit})")
        for column in ("id", "kind", "size", "task/tool", "session", "summary"):
            table.add_column(column, overflow="fold")
        for artifact in store.list(session=args.session, kind=args.kind, limit=args.limit, newest=True):
            summary = artifact.metadata.get("name") or artifact.metadata.get("preview") or ""
            table.add_row(artifact.id, artifact.kind.value, f"{artifact.size:,}", artifact.metadata.get("tool", "input"),
                          artifact.session or "-", escape(str(summary)))
        print_table(table, out)
    elif args.action == "show":
        artifact = store.get(args.id)
        out.print_json(json.dumps(artifact.to_dict()))
        for ancestor in store.ancestors(artifact.id):
            out.print(f"  derived from {ancestor.describe()}")
    elif args.action == "export":
        console.print(f"saved {store.export(args.id, args.destination)}")
    return 0


# What a picture may be saved as (Pillow picks the format by the extension).
_PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".gif": "GIF",
                    ".tif": "TIFF", ".tiff": "TIFF"}


def _picture_destination(destination: str) -> tuple[Path, str]:
    """Where ``render -o`` writes and in which format; refused before anything is loaded or drawn."""
    target = check_output_file(destination, "-o")
    picture_format = _PICTURE_FORMATS.get(target.suffix.lower())
    if destination.endswith(("/", os.sep)) or target.is_dir():
        raise InvalidInputError(f"-o {shown_path(destination)} is a folder; name the picture file, e.g. {target / 'picture.png'}")
    if picture_format is None:
        raise InvalidInputError(f"-o {shown_path(destination)}: a picture is written as {', '.join(_PICTURE_FORMATS)}; "
                                f"{shown(target.suffix or 'no extension')} is none of them")
    folder = target.parent
    if not folder.is_dir():
        raise InvalidInputError(f"-o {shown_path(destination)}: the folder {shown_path(str(folder))} does not exist")
    return target, picture_format


def cmd_render(args: argparse.Namespace) -> int:
    from ..storage import render

    target, picture_format = _picture_destination(args.output)
    store = _store()
    artifact = store.get(args.id)
    if artifact.kind not in (ArtifactKind.DETECTIONS, ArtifactKind.MASKS, ArtifactKind.AUDIO, ArtifactKind.TIME_SERIES,
                             ArtifactKind.IMAGE):
        raise InvalidInputError(f"{artifact.kind.value} artifacts are read, not rendered; use `anymoda artifacts show`")
    value = store.load(artifact.id)
    if artifact.kind in (ArtifactKind.DETECTIONS, ArtifactKind.MASKS):
        image_parent = next((a for a in store.ancestors(artifact.id) if a.kind is ArtifactKind.IMAGE), None)
        if image_parent is None:
            raise InvalidInputError(f"{artifact.id} has no image among its ancestors to draw on")
        image = store.load(image_parent.id)
        if artifact.kind is ArtifactKind.DETECTIONS:
            picture = render.draw_detections(image, value)
        else:
            picture = render.overlay_masks(image, value)
    elif artifact.kind is ArtifactKind.AUDIO:
        picture = render.spectrogram(value, title=artifact.id)
    elif artifact.kind is ArtifactKind.TIME_SERIES:
        picture = render.plot_time_series(value, title=artifact.id)
    else:
        picture = value
    if picture_format == "JPEG" and picture.mode not in ("RGB", "L"):
        picture = picture.convert("RGB")  # JPEG has no alpha channel or palette
    try:
        picture.save(target, format=picture_format)
    except OSError as exc:
        raise InvalidInputError(f"-o {shown_path(args.output)}: cannot write the picture ({exc.strerror or exc})") from None
    console.print(f"saved {escape(str(target))}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = current_settings()
    out.print_json(json.dumps({
        "home": str(settings.home), "device": settings.device, "memory_budget": settings.memory_budget,
        "offline": settings.offline, "models": settings.models, "limits": settings.limits.__dict__,
        "torch_threads": settings.torch_threads,
        "store": settings.store or str(settings.store_dir), "database": _shown_database(settings.database),
        "runner": dataclasses.asdict(settings.runner) if settings.runner else {"kind": "local"},
    }, default=str))
    return 0


def _shown_database(url: str) -> str:
    from .backends.locations import shown_database

    return shown_database(url) if url else "sqlite (files in the home)"


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(check_output_folder(args.out, "--out"))  # a file or a FIFO here was a traceback


def cmd_bench_planner(args: argparse.Namespace) -> int:
    from ..planning.bench_planner import planner_from_spec, run_benchmark
    from ..planning.plan_metrics import (
        format_comparison,
        load_cases,
        save_predictions,
        score,
    )

    # Checked first: a FIFO or /dev/zero as --cases hung, a folder or a missing file was a traceback.
    check_input_file(args.cases, 64 * 1024 * 1024, "--cases")
    if args.save_predictions:
        check_output_file(args.save_predictions, "--save-predictions")
    cases = load_cases(args.cases)
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidInputError("--limit must be at least 1")
        cases = cases[: args.limit]
    if not cases:
        raise InvalidInputError(f"{args.cases} holds no cases")
    registry = ToolRegistry.default()
    backends: dict = {}
    specs = [args.planner] + ([] if args.baseline == "none" else [args.baseline])
    planners = [planner_from_spec(spec, registry, backends) for spec in specs]
    scores = {}
    for index, named in enumerate(planners):
        label = ("baseline " if index else "") + named.label
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            bar = progress.add_task(f"{label}: loading", total=len(cases))
            named.planner.warm_up()

            def advance(position: int, result, bar=bar, label=label) -> None:
                mark = "valid" if result.valid else ("parsed" if result.parsed else "unparsed")
                progress.update(bar, completed=position + 1,
                                description=f"{label}: case {result.case.id} {mark} {result.seconds:.1f} s")
                if not console.is_terminal:  # a log or a pipe gets one plain line per case instead of a bar
                    print(f"{label}: {position + 1}/{len(cases)} case {result.case.id} {mark} {result.seconds:.1f} s",
                          file=sys.stderr, flush=True)

            results = run_benchmark(named.planner, cases, registry, advance)
        scores[label] = score(results)
        if args.save_predictions:
            target = Path(args.save_predictions)
            if index:
                target = target.with_name(f"{target.stem}.baseline{target.suffix or '.jsonl'}")
            save_predictions(target, results)
            console.print(f"predictions of {label} -> {target}")
    print(format_comparison(scores), flush=True)  # plain: a table that must not be re-wrapped
    return 0


def cmd_bench_agent(args: argparse.Namespace) -> int:
    from .bench_agent import run_command

    return run_command(args.cases, save=args.save, limit=args.limit, only=args.only or (),
                       echo=lambda line: print(line, file=sys.stderr, flush=True))


# ---------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anymoda", description="Any-to-any multimodal orchestrator.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    add_agent_commands(commands)
    add_workflow_commands(commands)
    add_train_parser(commands)
    add_models_commands(commands)
    add_serving_commands(commands)
    add_cluster_commands(commands)
    tools = commands.add_parser("tools", help="list tools, their types, models and whether they run here")
    tools.add_argument("--json", action="store_true", help="print full tool cards with JSON schemas")
    tools.set_defaults(handler=cmd_tools)
    commands.add_parser("tool", help="run one tool: anymoda tool NAME --INPUT VALUE ... (NAME --help for its options)",
                        add_help=False)
    demo = commands.add_parser("demo", help="run the offline default experts end to end on generated inputs")
    demo.add_argument("--out", default="anymoda-demo", help="folder for the inputs and outputs (default ./anymoda-demo)")
    demo.set_defaults(handler=cmd_demo)
    artifacts = commands.add_parser("artifacts", help="list, show or export stored artifacts")
    actions = artifacts.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list")
    listing.add_argument("--session", type=session_argument)
    listing.add_argument("--kind")
    listing.add_argument("--limit", type=listing_limit, default=50, help="how many (1 to 100,000; default 50)")
    show = actions.add_parser("show")
    show.add_argument("id")
    export = actions.add_parser("export", help="copy an artifact out to a file, or into a folder (a name ending in / "
                                               "or an existing folder) as <id><ext>")
    export.add_argument("id")
    export.add_argument("destination")
    artifacts.set_defaults(handler=cmd_artifacts)
    render = commands.add_parser("render", help="draw detections/masks over their image, a spectrogram or a series plot")
    render.add_argument("id")
    render.add_argument("-o", "--output", required=True,
                        help="the picture file to write, in an existing folder: .png, .jpg, .webp, .bmp, .gif or .tiff")
    render.set_defaults(handler=cmd_render)
    config = commands.add_parser("config", help="print the settings in force")
    config.set_defaults(handler=cmd_config)
    bench = commands.add_parser("bench", help="benchmarks that run inside the product")
    benches = bench.add_subparsers(dest="bench", required=True)
    planner = benches.add_parser("planner", help="plan every case of a JSONL file and score it TaskBench-style")
    planner.add_argument("--cases", required=True, help="JSONL cases: request, files [{name, kind}], gold {nodes, links}")
    planner.add_argument("--planner", default="local",
                         help="local[:MODEL] (default), naive[:MODEL] or openai:BASE_URL#MODEL")
    planner.add_argument("--baseline", default="naive",
                         help="planner run beside it for comparison (default naive: same LLM, plain prompt, "
                              "no constraint, no repair); 'none' to skip")
    planner.add_argument("--limit", type=int, help="only the first N cases")
    planner.add_argument("--save-predictions", metavar="FILE",
                         help="one JSON line per case in the gold format (the baseline's beside it, *.baseline.jsonl)")
    planner.set_defaults(handler=cmd_bench_planner)
    agent = benches.add_parser("agent", help="run every case of a JSONL file through the agent and check what comes back")
    agent.add_argument("--cases", required=True,
                       help="JSONL cases: id, request, files, session?, expect {answer_any, answer_none, outputs, "
                            "tools_all, unavailable_any}")
    agent.add_argument("--save", metavar="FILE", help="one JSON line per case: checks, plan, answer, seconds, outputs")
    agent.add_argument("--limit", type=int, help="only the first N cases")
    agent.add_argument("--only", nargs="+", metavar="ID", help="only these cases (with the earlier turns of their sessions)")
    agent.set_defaults(handler=cmd_bench_agent)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv and argv[0] == "tool":
            return cmd_tool(argv[1:])
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except AnymodaError as exc:
        if debug:
            raise
        # One line however long (a log or a pipe would otherwise get it cut at 80 columns); bounded at the source.
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130

