"""``anymoda train planner``: retrain the planner's tool selector from phrasings (argument parsing only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import current_settings
from ..errors import InvalidInputError, shown_path
from ..planning.planner_retrieval import PHRASES_FILE
from ..planning.tool_selection import HEAD_FILE, train_tool_selector
from ..storage.codecs import check_output_file, read_input_file

MAX_PHRASES_BYTES = 16 * 1024 * 1024  # the shipped file is about 100 KB


def add_train_planner_parser(what: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = what.add_parser(
        "planner", help="train the planner's tool selector (which tools a request asks for) from phrasings",
        description="Embed every phrasing of data/tool_phrases.json (or --phrases) in request-like frames with the packaged "
                    "MiniLM, train a softmax head over the embeddings, report accuracy on held-out phrasings, and save the "
                    "head the planner loads. Embeddings are cached by text under <home>/cache, so a rerun (or a run cut "
                    "off) only embeds what changed. Under a minute on 2 idle CPU cores from an empty cache.")
    parser.add_argument("--phrases", default=str(PHRASES_FILE), help="JSON {tool: [phrasing, ...], '_none': [...]} "
                                                                      "(default: the shipped file)")
    parser.add_argument("--out", default=str(HEAD_FILE), help="where to write the head (default: the shipped file, "
                                                              "which the planner loads)")
    parser.add_argument("--epochs", type=int, default=400, help="full-batch Adam epochs (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the held-out split")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=cmd_train_planner)
    return parser


def cmd_train_planner(args: argparse.Namespace) -> int:
    from ..planning.planner_retrieval import minilm_embedder

    # Both checked before the embedder loads: a FIFO, /proc, a folder or a name too long, each in one line.
    out = check_output_file(args.out, "--out")
    if out.is_dir():
        raise InvalidInputError(f"--out {shown_path(args.out)} is a folder; name the head's file, e.g. {out / 'head.npz'}")
    phrases = Path(args.phrases).expanduser()
    raw = read_input_file(phrases, MAX_PHRASES_BYTES, "--phrases")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"--phrases {args.phrases}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                                             for k, v in data.items() if not k.startswith("_c")):
        raise InvalidInputError(f"--phrases {args.phrases}: expected {{tool: [phrasing, ...]}}")
    if not 1 <= args.epochs <= 100_000:
        raise InvalidInputError("--epochs must be between 1 and 100000")
    embedder = minilm_embedder()
    if embedder is None:
        raise InvalidInputError("the tool selector is trained on MiniLM embeddings; install them with "
                                "pip install 'anymoda[offline]'")
    shown: dict[str, int] = {}

    def progress(stage: str, done: int, total: int, loss: float) -> None:
        # One line per stage and tenth, so a log or a pipe shows progress without carriage-return noise.
        tenth = done * 10 // max(total, 1)
        if shown.get(stage) != tenth:
            shown[stage] = tenth
            print(f"{stage}: {done}/{total}" + (f" loss {loss:.3f}" if loss else ""), file=sys.stderr, flush=True)

    report = train_tool_selector(embedder, out, phrases_file=phrases, epochs=args.epochs,
                                 seed=args.seed, cache_dir=current_settings().cache_dir / "tool-selector",
                                 progress=progress)
    summary = {"examples": report.examples, "labels": report.labels, "final_loss": round(report.loss, 4),
               "train_accuracy": round(report.train_accuracy, 4),
               "heldout_phrasing_accuracy": None if report.heldout_accuracy is None else round(report.heldout_accuracy, 4),
               "seconds": round(report.seconds, 1), "out": str(report.path), "bytes": report.path.stat().st_size}
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0
