"""``anymoda models list|pull|remove``: which models are here, fetching them from the hub, deleting them.

    anymoda models list [--json]                        every tool's model, where it comes from, its size
    anymoda models pull text-to-image                   a tool's model (or a hub id: org/name[@revision])
    anymoda models pull --all                           every tool's model that is not here
    anymoda models remove text-to-image [--yes]         delete it from the Hugging Face cache
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import AnymodaError, InvalidInputError
from ..tooling.model_store import (
    HUB_CACHE,
    LOCAL_PATH,
    NOT_HERE,
    PACKAGED,
    ModelStatus,
    PullResult,
    check_target,
    fetch_command,
    list_models,
    plan_removal,
    pull,
    pull_all,
)

NOTE_MIN_WIDTH = 24  # below this the commands in the note column would be cut into unreadable pieces


def add_models_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="which models are here; pull them from the hub; remove them")
    actions = models.add_subparsers(dest="models_action", required=True)
    listing = actions.add_parser("list", help="every tool's model: packaged, local path, hub cache or not here")
    listing.add_argument("--json", action="store_true", help="one JSON object per tool, sizes in bytes")
    pulling = actions.add_parser("pull", help="fetch models from the Hugging Face hub into its cache")
    pulling.add_argument("targets", nargs="*", metavar="TARGET",
                         help="a tool name (pulls its model) or a hub model id, org/name[@revision]")
    pulling.add_argument("--all", action="store_true", help="every tool's model that is not here")
    removing = actions.add_parser("remove", help="delete models from the Hugging Face cache")
    removing.add_argument("targets", nargs="+", metavar="TARGET", help="a tool name or a hub model id[@revision]")
    removing.add_argument("-y", "--yes", action="store_true", help="do not ask before deleting")
    models.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    try:
        return {"list": _list, "pull": _pull, "remove": _remove}[args.models_action](args)
    except AnymodaError as exc:
        # main() would print this through rich, which breaks a long message over lines off a terminal;
        # it strips --debug from the argv it parses, so the process's own argv is where the flag survives.
        if "--debug" in sys.argv[1:]:
            raise
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr, flush=True)
        return 2


# ------------------------------------------------------------------------------------------ list


def _list(args: argparse.Namespace) -> int:
    statuses = list_models()
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=2, ensure_ascii=False))
        return 0
    header = ("tool", "capability", "model", "source", "size", "to get it / note")
    rows = [(s.tool, s.capability, s.model_id, s.source, human_size(s.size_bytes), _note(s)) for s in statuses]
    out = Console()
    if out.is_terminal:
        out.print(_terminal_table(header, rows, statuses, out.width))
    else:
        print(plain_table(header, rows), flush=True)  # piped: whole names, one line per tool, nothing padded after
    missing = sum(1 for s in statuses if not s.here and s.on_hub)
    if missing:
        print(f"{missing} tools' models are not here: `anymoda models pull --all` fetches them all (many GB), "
              "`anymoda models pull TOOL` one.", file=sys.stderr, flush=True)
    return 0


def _terminal_table(header: tuple[str, ...], rows: list[tuple[str, ...]], statuses: list[ModelStatus],
                    width: int) -> Table:
    """Names and ids unbroken, the note (commands to copy included) in what width is left; on a narrow
    terminal the capability column goes first, then ids may fold."""
    columns = list(range(len(header)))
    needed = sum(max(len(row[i]) for row in [header, *rows]) + 2 for i in columns[:-1]) + NOTE_MIN_WIDTH
    if needed > width:
        columns.remove(header.index("capability"))
        needed -= max(len(row[1]) for row in [header, *rows]) + 2
    table = Table(title=f"models of {len(statuses)} tools", box=box.SIMPLE_HEAD, pad_edge=False)
    for i in columns:
        last = i == columns[-1]
        table.add_column(header[i], no_wrap=not last and needed <= width, overflow="fold",
                         min_width=NOTE_MIN_WIDTH if last else None, justify="right" if header[i] == "size" else "left")
    for status, row in zip(statuses, rows):
        cells = [escape(cell) for cell in row]
        cells[3] = f"[{'yellow' if status.source == NOT_HERE else 'green'}]{cells[3]}[/]"
        table.add_row(*(cells[i] for i in columns))
    return table


def plain_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns aligned with spaces, never wrapped; the last column is not padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
                     for row in [header, *rows])


def _note(status: ModelStatus) -> str:
    parts = []
    if status.fetch:
        parts.append(status.fetch)
    if status.source == PACKAGED and status.package and status.package != "anymoda":
        parts.append(f"pip package {status.package}")
    if status.note:
        parts.append(status.note)
    return "; ".join(parts)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------ pull


def _pull(args: argparse.Namespace) -> int:
    if args.all and args.targets:
        raise InvalidInputError("give TARGETs or --all, not both")
    if not args.all and not args.targets:
        raise InvalidInputError("say what to pull: a tool name, a hub model id (org/name), or --all")
    progress = _download_bar()
    if args.all:
        failed = 0
        for result in pull_all(progress=progress):
            failed += result.action == "failed"
            _report_pull(result)
        return 1 if failed else 0
    for target in args.targets:  # every target is checked before anything is fetched
        check_target(target)
    for target in args.targets:
        started = time.monotonic()
        _report_pull(pull(target, progress=progress), time.monotonic() - started)
    return 0


def _report_pull(result: PullResult, seconds: float | None = None) -> None:
    tools = ", ".join(result.tools) or "no tool"
    if result.action == "pulled":
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        print(f"pulled {result.model_id} ({tools}): {human_size(result.size_bytes)}{took} -> {result.path}", flush=True)
        for tool in result.tools:
            needed = fetch_command(tool)
            if needed:
                print(f"  {tool} also needs: {needed}", flush=True)
    elif result.action == PACKAGED:
        print(f"{result.model_id} ({tools}) is packaged ({result.detail}): nothing to pull", flush=True)
    elif result.action == LOCAL_PATH:
        print(f"{result.model_id} ({tools}) is a local folder: nothing to pull", flush=True)
    elif result.action == HUB_CACHE:
        print(f"{result.model_id} ({tools}) is already in the hub cache ({human_size(result.size_bytes)})", flush=True)
    elif result.action == "failed":
        print(f"failed: {' '.join(result.detail.splitlines())}", file=sys.stderr, flush=True)
    else:
        print(f"{result.model_id} ({tools}): {result.action}" + (f" ({result.detail})" if result.detail else ""),
              flush=True)


def _download_bar() -> type:
    from huggingface_hub.utils import tqdm as hub_tqdm

    class DownloadBar(hub_tqdm):
        """huggingface_hub's byte bars (off when stderr is not a terminal or HF_HUB_DISABLE_PROGRESS_BARS is set),
        cleared when done so that the 'pulled' line stands alone."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("disable", None)  # tqdm's "only on a terminal"; huggingface_hub omits it for the file count
            kwargs.setdefault("leave", False)
            kwargs.setdefault("dynamic_ncols", True)
            super().__init__(*args, **kwargs)

    return DownloadBar


# ------------------------------------------------------------------------------------------ remove


def _remove(args: argparse.Namespace) -> int:
    removals = {}
    for target in args.targets:  # every target is checked before anything is deleted
        removal = plan_removal(target)
        removals.setdefault(removal.model_id, removal)
    for removal in removals.values():
        print(f"{removal.model_id} ({', '.join(removal.tools) or 'no tool'}): {len(removal.revisions)} revision(s), "
              f"{human_size(removal.size_bytes)} in {removal.path}", flush=True)
    if not args.yes and sys.stdin.isatty():
        answer = input(f"Delete {'them' if len(removals) > 1 else 'it'}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    for removal in removals.values():
        freed = removal.execute()
        print(f"removed {removal.model_id}: freed {human_size(freed)} ({freed:,} bytes)", flush=True)
    return 0
