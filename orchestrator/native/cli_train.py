"""``anymoda train connector``: the command's arguments and its run; the library parts live beside it.

    anymoda train connector --task timeseries-qa --connector mlp2x_gelu --steps 200 --out runs/ts-mlp
    anymoda train connector --task speech-transcription --stage 2 --lora-r 8 --init-from runs/asr/checkpoint --out runs/asr2
    anymoda train connector --resume runs/ts-mlp --steps 400          # continue a run (its settings are reused)

The pieces, in order: the task's examples are generated and encoded (:mod:`.tasks`), the LLM is loaded and a fresh
connector put on it (:mod:`.llm`), :func:`~orchestrator.native.train.train_connector` trains and evaluates. The run
folder gets ``checkpoint/`` (what the native-chat tool loads), ``loss_curve.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..extras import missing_extra
from .llm import QWEN_DEFAULT, build_model, load_llm
from .tasks import TASKS, TIMESERIES_KINDS, TIMESERIES_LABELLED_ENCODER, prepare_task

if TYPE_CHECKING:  # the trainer imports torch: only loaded when a command runs, not when the CLI starts
    from .train import TrainConfig

CONNECTOR_PATTERN = re.compile(r"^(linear|mlp[1-9]\d*x_gelu|qformer|perceiver)$")
CONNECTOR_HELP = "linear | mlp2x_gelu (any mlpNx_gelu) | qformer | perceiver"
DEFAULT_LR_STAGE2 = 2e-4



def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _length_range(text: str) -> int | tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        values = (int(low), int(high)) if sep else (int(low),)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX (e.g. 64-256), got {text!r}") from None
    if any(value < 32 for value in values) or (sep and values[0] > values[1]):
        raise argparse.ArgumentTypeError(f"lengths must be at least 32 and MIN <= MAX, got {text!r}")
    return values if sep else values[0]


def _connector(text: str) -> str:
    if not CONNECTOR_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"unknown connector {text!r}; choose {CONNECTOR_HELP}")
    return text


def _connector_option(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+", key):
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER (e.g. num_queries=16), got {text!r}")
    try:
        return key, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: expected a whole number, got {value!r}") from None


# Settings a resumed run takes from the run it continues unless given again.
_RESUMABLE = ("task", "llm", "encoder", "connector", "connector_option", "stage", "lora_r", "steps", "batch_size", "grad_accum",
              "lr", "warmup", "eval_every", "save_every", "train_size", "eval_size", "seed", "max_new_tokens",
              "eval_generate", "qa_kinds", "series_length", "eval_subset", "final_generate")


def add_train_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train connector ...`` to the top-level subparsers (``commands``)."""
    train = commands.add_parser("train", help="train the native path's connectors, or the planner's tool selector")
    what = train.add_subparsers(dest="train_what", required=True)
    from ..cli.planner_commands import add_train_planner_parser

    add_train_planner_parser(what)
    tasks = "; ".join(f"{name}: {info.instruction} ({info.modality}, encoder {info.default_encoder})"
                      for name, info in TASKS.items())
    parser = what.add_parser(
        "connector", help="train a connector (stage 1) or connector + LoRA (stage 2) on an offline task",
        description=f"Train a connector between a frozen encoder and an LLM. Tasks: {tasks}. "
                    "Writes OUT/checkpoint (for the native-chat tool), OUT/loss_curve.png and OUT/summary.json.",
    )
    parser.add_argument("--task", choices=sorted(TASKS), help="the training task (default timeseries-qa)")
    parser.add_argument("--llm", help=f"hub id or local folder of a causal LM (default: the packaged {QWEN_DEFAULT})")
    parser.add_argument("--qa-kinds", metavar="K1,K2",
                        help="timeseries-qa: question kinds, comma-separated, from trend, seasonality, period, spike_count, "
                             f"spike_position, description (default {','.join(TIMESERIES_KINDS)})")
    parser.add_argument("--encoder", help="feature encoder name (default per task: " +
                        ", ".join(f"{n}={i.default_encoder}" for n, i in TASKS.items()) +
                        f"; timeseries-qa with a linear or MLP connector: {TIMESERIES_LABELLED_ENCODER})")
    parser.add_argument("--connector", type=_connector, help=f"{CONNECTOR_HELP} (default mlp2x_gelu)")
    parser.add_argument("--connector-option", type=_connector_option, action="append", metavar="KEY=N",
                        help="connector option, repeatable (e.g. num_queries=16, depth=2, heads=4)")
    parser.add_argument("--stage", type=int, choices=(1, 2), help="1: alignment, connector only (default); 2: instruction tuning")
    parser.add_argument("--lora-r", type=_whole(0), help="stage 2: LoRA rank (0 = connector only; default 0)")
    parser.add_argument("--steps", type=_whole(1), default=None, help="optimiser steps in total (default 200)")
    parser.add_argument("--batch-size", type=_whole(1), help="examples per micro-batch (default 4)")
    parser.add_argument("--grad-accum", type=_whole(1), help="micro-batches per optimiser step (default 1)")
    parser.add_argument("--lr", type=_learning_rate,
                        help=f"peak learning rate (default 1e-3 stage 1, {DEFAULT_LR_STAGE2:g} stage 2)")
    parser.add_argument("--warmup", type=_whole(0), help="linear warmup steps before the cosine decay (default 5%% of --steps)")
    parser.add_argument("--series-length", type=_length_range, metavar="N|MIN-MAX",
                        help="timeseries-qa: points per series, or a range each series' length is drawn from (default 256)")
    parser.add_argument("--eval-every", type=_whole(0),
                        help="a cheap held-out evaluation every N steps (default: a quarter of --steps, at least 10; "
                             "0 = at the end only)")
    parser.add_argument("--eval-subset", type=_whole(0),
                        help="held-out examples each periodic evaluation scores (default 16; 0 = all); the final one scores all")
    parser.add_argument("--save-every", type=_whole(0), help="checkpoint every N steps (default 0: at the end only)")
    parser.add_argument("--train-size", type=_whole(1), help="training examples generated (default 512)")
    parser.add_argument("--eval-size", type=_whole(1), help="held-out examples generated (default 64)")
    parser.add_argument("--eval-generate", type=_whole(0),
                        help="answers generated and graded in each periodic evaluation (default 8)")
    parser.add_argument("--final-generate", type=_whole(0),
                        help="answers generated and graded in the final evaluation (default: every held-out example)")
    parser.add_argument("--max-new-tokens", type=_whole(1), help="longest generated answer when scoring (default per task)")
    parser.add_argument("--seed", type=_whole(0), help="seed of the data, the initial weights and the batch order (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's device)")
    parser.add_argument("--autocast", choices=("auto", "bf16", "fp16", "off"), default="auto",
                        help="mixed precision on CUDA (default auto: bf16 when supported, else fp16); CPU runs fp32")
    parser.add_argument("--out", help="run folder to write (required unless --resume names one)")
    parser.add_argument("--resume", metavar="DIR", help="continue an earlier run: its folder or one of its checkpoints")
    parser.add_argument("--init-from", metavar="CHECKPOINT", help="start from a checkpoint's weights (e.g. stage 1 for stage 2)")
    parser.add_argument("--export", metavar="DIR",
                        help="also write the trained connector alone to DIR (native.json + fp16 weights, no tokenizer or "
                             "optimiser state): what anymoda ships in orchestrator/data/native_ts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=cmd_train)
    return parser


def _saved_arguments(resume: Path) -> dict[str, Any]:
    """The CLI settings recorded by the run ``resume`` belongs to."""
    from .train import find_resumable, read_trainer_state

    cli = read_trainer_state(find_resumable(resume)).get("extra", {}).get("cli")
    if not isinstance(cli, dict):
        raise InvalidInputError(f"--resume {resume}: the checkpoint records no `anymoda train connector` settings")
    return cli


def resolve_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults (from the resumed run first), check combinations and return the completed arguments."""
    values = vars(args).copy()
    if args.resume:
        resume = Path(args.resume).expanduser()
        if not resume.is_dir():
            raise InvalidInputError(f"--resume {args.resume!r} is not a folder")
        for name, saved in _saved_arguments(resume).items():
            if name in _RESUMABLE and values.get(name) is None:
                values[name] = saved
        if values.get("out") is None:
            values["out"] = str(_run_folder(resume))
        if args.init_from:
            raise InvalidInputError("--resume continues a run and --init-from starts a new one from weights; give one")
    stage = values.get("stage") or 1
    task = values.get("task") or "timeseries-qa"
    steps = values.get("steps") or 200
    if values.get("qa_kinds") is not None:
        if task != "timeseries-qa":
            raise InvalidInputError(f"--qa-kinds is for --task timeseries-qa, not {task}")
        from .datasets.timeseries import QA_KINDS

        kinds = [kind.strip() for kind in str(values["qa_kinds"]).split(",") if kind.strip()]
        unknown = [kind for kind in kinds if kind not in QA_KINDS]
        if not kinds or unknown:
            raise InvalidInputError(f"--qa-kinds: {', '.join(unknown) or 'nothing given'} not among {', '.join(QA_KINDS)}")
        values["qa_kinds"] = ",".join(kinds)
        if "description" in kinds and values.get("max_new_tokens") is None:
            values["max_new_tokens"] = 40  # a caption, not a word
    defaults = {
        "task": task, "connector": "mlp2x_gelu", "stage": stage, "lora_r": 0, "steps": steps, "batch_size": 4,
        "grad_accum": 1, "lr": TASKS[task].default_lr_stage1 if stage == 1 else DEFAULT_LR_STAGE2,
        "warmup": max(1, steps // 20) if steps > 1 else 0, "eval_every": min(steps, max(10, steps // 4)), "save_every": 0,
        "train_size": 512, "eval_size": 64, "seed": 0, "max_new_tokens": TASKS[task].default_max_new_tokens,
        "eval_subset": 16, "eval_generate": 8, "series_length": 256,
    }
    for name, default in defaults.items():
        if values.get(name) is None:
            values[name] = default
    if isinstance(values["series_length"], list):  # a range, as the resumed run's JSON record holds it
        values["series_length"] = tuple(values["series_length"])
    if values.get("encoder") is None and task == "timeseries-qa":
        # Step labels after each patch let a frozen LLM say where a spike is (0.94 against 0.28 without the
        # label's position right); they need a connector that keeps one token per patch.
        tokenwise = values["connector"] == "linear" or re.fullmatch(r"mlp\d+x_gelu", values["connector"])
        values["encoder"] = TIMESERIES_LABELLED_ENCODER if tokenwise else TASKS[task].default_encoder
    if values.get("out") is None:
        raise InvalidInputError("--out DIR is required (the run folder to write)")
    if values["lora_r"] and values["stage"] != 2:
        raise InvalidInputError("--lora-r belongs to stage 2 (instruction tuning); add --stage 2 or drop --lora-r")
    if values["warmup"] >= values["steps"] and values["steps"] > 1:
        raise InvalidInputError(f"--warmup ({values['warmup']}) must be below --steps ({values['steps']})")
    if values["eval_every"] > values["steps"]:
        raise InvalidInputError(f"--eval-every ({values['eval_every']}) is more than --steps ({values['steps']}); "
                                "use 0 to evaluate only at the end")
    if values.get("init_from") and not Path(values["init_from"]).expanduser().is_dir():
        raise InvalidInputError(f"--init-from {values['init_from']!r} is not a checkpoint folder")
    from .metadata import FINAL_CHECKPOINT
    from .train import TRAINER_STATE

    out = Path(values["out"]).expanduser()
    if not args.resume and (out / FINAL_CHECKPOINT / TRAINER_STATE).exists():
        raise InvalidInputError(f"--out {values['out']}: a finished run is already there; use --resume {values['out']} "
                                "to continue it, or another --out")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {values['out']} is a file, not a folder")
    values["connector_option"] = dict(values.get("connector_option") or [])
    return argparse.Namespace(**values)


def _run_folder(resume: Path) -> Path:
    """The run folder a --resume path belongs to (a run folder, its checkpoint, or a periodic checkpoint)."""
    from .train import TRAINER_STATE

    if (resume / TRAINER_STATE).is_file():
        return resume.parent.parent if resume.parent.name == "checkpoints" else resume.parent
    return resume


def train_config_from(args: argparse.Namespace) -> TrainConfig:
    from .train import TrainConfig

    return TrainConfig(
        stage=args.stage, max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup, lora_r=args.lora_r, eval_every=args.eval_every, save_every=args.save_every,
        eval_subset=args.eval_subset, eval_generate_limit=args.eval_generate, final_generate_limit=args.final_generate,
        max_new_tokens=args.max_new_tokens, autocast=args.autocast,
        seed=args.seed, output_dir=str(Path(args.out).expanduser()),
        resume_from=str(Path(args.resume).expanduser()) if args.resume else None,
        init_from=str(Path(args.init_from).expanduser()) if args.init_from else None,
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``anymoda train connector``; prints a summary table, returns the exit code."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..config import current_settings
    from ..models.resolve import pick_device

    console = Console(stderr=True)
    args = resolve_arguments(args)
    config = train_config_from(args)
    config.validate()
    settings = current_settings()
    device = pick_device(args.device or settings.device)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)  # [torch] threads / ANYMODA_TORCH_THREADS, as the tools use it
    progress = not args.no_progress
    console.print(f"[bold]{args.task}[/]: {args.connector} connector, stage {args.stage}"
                  + (f" + LoRA r={args.lora_r}" if args.lora_r else "") + f", {args.steps} steps on {device}")
    if args.series_length != 256 and args.task != "timeseries-qa":
        raise InvalidInputError(f"--series-length is for --task timeseries-qa, not {args.task}")
    data = prepare_task(args.task, encoder=args.encoder, train_size=args.train_size, eval_size=args.eval_size,
                        seed=args.seed, qa_kinds=tuple(args.qa_kinds.split(",")) if args.qa_kinds else None,
                        series_length=args.series_length, progress=progress)
    with console.status(f"loading the LLM {args.llm or QWEN_DEFAULT}"):
        llm = load_llm(args.llm, device=device)
    torch.manual_seed(args.seed)  # the connector's initial weights
    model = build_model(llm, data.modality, data.encoder, data.feature_dim, args.connector, args.connector_option)
    cli_record = {name: getattr(args, name) for name in _RESUMABLE}
    cli_record.update(llm=llm.model_id, encoder=data.encoder)
    extra = {"task": args.task, "llm": llm.model_id, "encoder": data.encoder, "connector": args.connector, "cli": cli_record}

    from .train import format_duration, train_connector

    result = train_connector(model, data.train, data.eval, config, grader=data.grader, extra=extra, progress=progress,
                             eval_kinds=data.eval_kinds)
    exported = None
    if args.export:
        from .checkpoint import export_connector

        exported = export_connector(result.checkpoint, args.export)

    table = Table(title=f"{args.task}: {args.connector}, stage {args.stage}, {result.steps} steps")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("trainable parameters", f"{result.trainable_parameters:,}")
    table.add_row("seconds per step", f"{result.seconds_per_step:.3f}")
    table.add_row("wall time (training + evaluation)", format_duration(result.seconds))
    table.add_row("final train loss", f"{result.final_train_loss:.4f}")
    if result.final_eval is not None:
        table.add_row("held-out loss", f"{result.final_eval.loss:.4f}")
        for name, value in result.final_eval.metrics.items():
            table.add_row(f"held-out {name}", f"{value:.3f}")
    Console().print(table)
    curve = result.loss_curve or f"not drawn ({missing_extra('drawing it', 'matplotlib')})"
    console.print(f"checkpoint: {result.checkpoint}\nloss curve: {curve}\nsummary:    {result.summary_path}"
                  + (f"\nexported:   {exported}" if exported else ""))
    return 0
