"""Connector benchmark: which connector lets a frozen LLM read a time series best, for the same budget?

Workload (printed at the start of every run):

- Task: ChatTS-style time-series attribute QA (``orchestrator.native.datasets.timeseries``), three question
  kinds in equal shares: trend direction (up/down/flat, exact), has-seasonality (yes/no), spike position
  (step index within +-8 steps). Series of ``--series-length`` points, encoded by the frozen ``ts-patch``
  encoder (patches of 16 steps, values normalised; the offset and scale are told to the LLM as text).
- The same generated train split, held-out split, step count, batch size, learning rate, warmup and seed
  for every connector; stage 1 (the LLM frozen, the connector alone trains).
- Per connector: trainable parameters, seconds per optimiser step, final train loss, train loss at a fixed
  early step (mean of the 5 steps ending there: how fast it converges), held-out accuracy per kind from
  greedy generated answers.
- Baseline: the same LLM without a connector, given the series as text (values rounded to 2 significant
  decimals) and the same question with the answer format spelled out (one word / yes-no / a step index,
  which the trained rows learn from their data), zero-shot; optionally (``--text-lora-steps``) LoRA-tuned on the same
  train split as text.
- Speech section (``--speech-steps``, 0 skips it): sentences spoken by the packaged Piper voice, encoded by
  the packaged Whisper tiny.en encoder, connector trained to emit the transcript; word error rate on
  held-out sentences.
- End to end on users' files (``--csv-eval``, 0 skips it): held-out series of other lengths (``--csv-length``)
  written to CSV the way people write them (a header, a date column, values to 2 decimals, about 4% of the
  cells empty or NA), read by the store like any attached file and asked through the ``native-chat`` tool with
  questions worded unlike the training data ("What is the trend?", "Where is the spike?"): trend and spike
  position, scored like the rest. Each trained row's checkpoint is asked, and any ``--native-checkpoint`` (the
  shipped connector: ``--native-checkpoint shipped``); the text baseline reads the same files' values. Each
  trained row also reports its training wall time (training and its evaluation, as ``anymoda train connector``
  runs them).

Published claim tested: an MLP connector converges faster than a Q-Former with far fewer parameters
(LLaVA-1.5 vs BLIP-2 style). Target: the trained native path beats the text-only baseline at equal LLM size.

    python benchmarks/connectors.py                 # default sizes: about 20-25 min on 2 CPU cores with the 0.5B
    python benchmarks/connectors.py --quick         # about 8 min: 8 steps, 9 held-out questions, no speech
    python benchmarks/connectors.py --steps 500 --train-size 2000 --eval-size 150 --speech-steps 300   # on a GPU
    python benchmarks/connectors.py --native-checkpoint shipped --connectors none --csv-eval 60   # the shipped connector

Measured cost on the shared 2-core CPU with the packaged 0.5B: 9-25 s per optimiser step at batch 4 (the
backward pass runs through every frozen LLM layer, since the connector sits at the input), so the CPU
defaults train for ~30 steps: enough to rank convergence speed and cost, too few for high accuracy.
    python benchmarks/connectors.py --llm PATH --steps 200 --connectors mlp2x_gelu,qformer

Nothing here is tuned on the held-out split: it is only generated, answered and scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.errors import InvalidInputError  # noqa: E402

TS_KINDS = ("trend", "seasonality", "spike_position")
ALL_CONNECTORS = ("linear", "mlp2x_gelu", "qformer", "perceiver")
CSV_KINDS = ("trend", "spike_position")
# Users' wording, none of it the training data's: the check is on questions the connector was not trained on.
CSV_QUESTIONS = {"trend": ("What is the trend?", "Is it going up, down or flat?"),
                 "spike_position": ("Where is the spike?", "At which step does the spike happen?")}
CSV_SEED = 9_000_011  # a stream of its own: no CSV series is a training or held-out one


def workload_text(args: argparse.Namespace) -> str:
    return (
        f"workload: time-series attribute QA ({', '.join(args.kinds)}), series of {_length_text(args.series_length)} points, "
        f"{args.train_size} train / {args.eval_size} held-out examples (seed {args.seed}); stage 1, LLM frozen; "
        f"{args.steps} steps x batch {args.batch_size}, lr {args.lr:g}, warmup {args.warmup}; connectors: "
        f"{', '.join(args.connectors) or 'none trained'}"
        + (f" (asked as trained: {', '.join(args.native_checkpoint)})" if args.native_checkpoint else "")
        + f"; LLM: {args.llm or 'packaged Qwen2.5-Coder-0.5B-Instruct'}; "
        f"encoder {args.encoder}; text baseline: zero-shot" + (f" + LoRA {args.text_lora_steps} steps" if args.text_lora_steps else "")
        + (f"; end to end: {args.csv_eval} CSV files of {_length_text(args.csv_length)} rows ({', '.join(CSV_KINDS)})"
           if args.csv_eval else "; end to end on CSV: skipped")
        + (f"; speech: {args.speech_steps} steps, {args.speech_train} train / {args.speech_eval} held-out sentences"
           if args.speech_steps else "; speech: skipped")
    )


def _length_text(length) -> str:
    return f"{length[0]}-{length[1]}" if isinstance(length, tuple) else str(length)


def _length(text: str):
    low, sep, high = text.partition("-")
    return (int(low), int(high)) if sep else int(low)


# ------------------------------------------------------------------------------------------------ users' CSV files


def write_user_csv(values, path: Path, rng, keep: set[int] = frozenset()) -> Path:
    """A series as a person's export: a header, one ISO date per row, values to 2 decimals, ~4% of the cells
    empty or NA (never the first, the last, or a row in ``keep``)."""
    import datetime

    start = datetime.date(2022, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 700)))
    name = str(rng.choice(["sales", "visitors", "temperature", "load_kw", "orders"]))
    lines = [f"date,{name}"]
    for index, value in enumerate(values):
        day = start + datetime.timedelta(days=index)
        missing = rng.random() < 0.04 and 0 < index < len(values) - 1 and index not in keep
        cell = ("" if rng.random() < 0.5 else "NA") if missing else f"{value:.2f}"
        lines.append(f"{day.isoformat()},{cell}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def csv_cases(count: int, length, folder: Path, seed: int):
    """``count`` held-out (CSV file, question, QA item) for CSV_KINDS, kinds in equal shares, files written to ``folder``."""
    import numpy as np

    from orchestrator.native.datasets.timeseries import timeseries_qa

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([CSV_SEED, seed])
    cases = []
    asked = {kind: 0 for kind in CSV_KINDS}
    for index, (values, item) in enumerate(timeseries_qa(count, CSV_SEED + seed, length, kinds=CSV_KINDS)):
        # A spike's cell is never missing (the codec would fill it in, and the right answer would change).
        spikes = {position for position, _ in item.attributes["spikes"]}
        path = write_user_csv(values, folder / f"series-{index:03d}.csv", rng, spikes)
        wordings = CSV_QUESTIONS[item.kind]
        cases.append((path, wordings[asked[item.kind] % len(wordings)], item))
        asked[item.kind] += 1
    return cases


def store_for(folder: Path):
    from orchestrator.storage.store import ArtifactStore

    return ArtifactStore(folder)


def native_chat_on_csv(checkpoint: str, cases, store, label: str, args: argparse.Namespace) -> dict[str, Any]:
    """Each CSV file ingested like an attached file and asked through the native-chat tool; scored per kind."""
    from tqdm.auto import tqdm

    from orchestrator.storage.artifacts import ArtifactKind
    from orchestrator.tooling.invoke import run_tool
    from orchestrator.native.datasets.timeseries import score_answer
    from tools.native_chat import NativeChat

    tool = NativeChat(model=checkpoint)
    answers, hits = [], {}
    started = time.perf_counter()
    for path, question, item in tqdm(cases, desc=f"{label}: native-chat on CSV", disable=args.no_progress):
        stored = store.ingest_file(path, ArtifactKind.TIME_SERIES)
        answer = run_tool(tool, {"time_series": stored.id, "question": question, "max_new_tokens": 8}, store=store).values["answer"]
        answers.append(answer)
        hits.setdefault(item.kind, []).append(bool(score_answer(item, answer)))
    return _csv_row(label, hits, answers, time.perf_counter() - started, len(cases))


def _csv_row(label: str, hits: dict[str, list[bool]], answers: list[str], seconds: float, count: int) -> dict[str, Any]:
    every = [hit for kind_hits in hits.values() for hit in kind_hits]
    metrics = {"accuracy": sum(every) / max(1, len(every)),
               **{f"accuracy/{kind}": sum(v) / len(v) for kind, v in sorted(hits.items())}}
    return {"row": label, "metrics": metrics, "answers": answers, "seconds_per_answer": seconds / max(1, count)}


def text_baseline_on_csv(llm, cases, store, args: argparse.Namespace) -> dict[str, Any]:
    """The LLM alone, given the same files' values as text (as decoded: gaps filled) and the answer format."""
    from tqdm.auto import tqdm

    from orchestrator.storage.artifacts import ArtifactKind
    from orchestrator.native.datasets.timeseries import score_answer

    answers, hits = [], {}
    started = time.perf_counter()
    for path, question, item in tqdm(cases, desc="text baseline on CSV", disable=args.no_progress):
        series = store.decode(store.ingest_file(path, ArtifactKind.TIME_SERIES))
        answer = _zero_shot_answer(llm, series.values.reshape(-1), f"{question} {ANSWER_FORMAT[item.kind]}", 16)
        answers.append(answer)
        hits.setdefault(item.kind, []).append(bool(score_answer(item, answer)))
    return _csv_row("text baseline (zero-shot)", hits, answers, time.perf_counter() - started, len(cases))


# ------------------------------------------------------------------------------------------------ native rows


def run_connector(kind: str, llm, data, args: argparse.Namespace, *, steps: int, max_new_tokens: int) -> dict[str, Any]:
    import torch

    from orchestrator.native.llm import build_model
    from orchestrator.native.train import TrainConfig, train_connector

    torch.manual_seed(args.seed)
    model = build_model(llm, data.modality, data.encoder, data.feature_dim, kind, {})  # each at its published default shape (Q-Former 32 queries, Perceiver 64 latents)
    config = TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=min(args.warmup, steps - 1),
                         eval_every=0, max_new_tokens=max_new_tokens, seed=args.seed,
                         output_dir=str(Path(args.out) / f"{data.task}-{kind}"))
    extra = {"task": data.task, "benchmark": "connectors", "llm": llm.model_id, "encoder": data.encoder,
             "cli": {"qa_kinds": ",".join(args.kinds)} if data.task == "timeseries-qa" else {}}
    result = train_connector(model, data.train, data.eval, config, grader=data.grader, extra=extra,
                             progress=not args.no_progress, eval_kinds=data.eval_kinds)
    fixed = max(5, steps // 3)
    row = {
        "connector": kind, "trainable_parameters": result.trainable_parameters,
        "seconds_per_step": result.seconds_per_step, "final_train_loss": result.train_loss_at(steps),
        "fixed_step": fixed, "loss_at_fixed_step": result.train_loss_at(fixed),
        "eval_loss": result.final_eval.loss, "metrics": result.final_eval.metrics,
        "predictions": result.final_eval.predictions, "wall_seconds": result.seconds,
        "checkpoint": str(result.checkpoint),
    }
    # The LLM object is shared by every row: drop this row's connector before the next one.
    del model
    return row


# ------------------------------------------------------------------------------------------------ text baseline


def series_as_text(values) -> str:
    import numpy as np

    return ", ".join("nan" if np.isnan(v) else f"{v:.2f}" for v in np.asarray(values, dtype=float))


def text_prompt(values, question: str) -> str:
    return f"Here is a time series of {len(values)} values, in order (step 0 first):\n{series_as_text(values)}\n{question}"


# The trained rows learn the answer format from their training answers; zero-shot, the LLM is told it
# instead, so that a long-winded reply cut at the token limit does not count as a wrong one.
ANSWER_FORMAT = {"trend": "Answer with one word: up, down or flat.", "seasonality": "Answer yes or no.",
                 "spike_position": "Answer with the step index only."}


def text_baseline_zero_shot(llm, data, args: argparse.Namespace, max_new_tokens: int) -> dict[str, Any]:
    """The same LLM reading the numbers: greedy answers to the same held-out questions, scored the same way."""
    from tqdm.auto import tqdm

    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    predictions = []
    started = time.perf_counter()
    for index in tqdm(range(len(data.eval)), desc="text baseline (zero-shot)", disable=args.no_progress):
        reference = data.eval_references[index]
        answer = _zero_shot_answer(llm, data.eval_inputs[index],
                                   f"{reference.question} {ANSWER_FORMAT.get(reference.kind, '')}".strip(), max_new_tokens)
        predictions.append(answer)
        for name, value in data.grader(index, answer).items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    return {"connector": "text baseline (zero-shot)", "trainable_parameters": 0, "seconds_per_step": None,
            "final_train_loss": None, "loss_at_fixed_step": None, "eval_loss": None,
            "seconds_per_answer": (time.perf_counter() - started) / max(1, len(data.eval)),
            "metrics": {k: sums[k] / counts[k] for k in sorted(sums)}, "predictions": predictions}


def _zero_shot_answer(llm, values, question: str, max_new_tokens: int) -> str:
    import torch

    tokenizer, model = llm.tokenizer, llm.model
    prompt = text_prompt(values, question)
    text = (tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            if getattr(tokenizer, "chat_template", None) else prompt + "\n")
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                top_k=None, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def text_baseline_lora(llm_name: str | None, data, args: argparse.Namespace, max_new_tokens: int, device: str) -> dict[str, Any]:
    """LoRA on the same LLM, trained on the same split with the numbers as text (no connector is used)."""
    import torch

    from orchestrator.native.llm import build_model, load_llm
    from orchestrator.native.multimodal_lm import Example
    from orchestrator.native.train import TrainConfig, train_connector

    fresh = load_llm(llm_name, device=device)  # LoRA changes the LLM in place: a copy of its own
    torch.manual_seed(args.seed)
    # The connector is never fed (no media in these examples) and so never updated; only LoRA learns.
    model = build_model(fresh, data.modality, data.encoder, data.feature_dim, "linear")

    def as_text(example, values) -> Example:
        question = example.prompt.split("\n", 1)[1]
        return Example(text_prompt(values, question), [], example.response)

    train = [as_text(e, v) for e, v in zip(data.train, data.train_inputs)]
    held_out = [as_text(e, v) for e, v in zip(data.eval, data.eval_inputs)]
    config = TrainConfig(stage=2, lora_r=8, max_steps=args.text_lora_steps, batch_size=args.batch_size, lr=2e-4,
                         warmup_steps=min(args.warmup, args.text_lora_steps - 1), eval_generate_limit=len(held_out),
                         max_new_tokens=max_new_tokens, seed=args.seed, output_dir=str(Path(args.out) / "text-lora"))
    result = train_connector(model, train, held_out, config, grader=data.grader, progress=not args.no_progress)
    lora = result.trainable_parameters - model.connectors["ts"].num_parameters()
    return {"connector": f"text baseline (LoRA r=8, {args.text_lora_steps} steps)", "trainable_parameters": lora,
            "seconds_per_step": result.seconds_per_step, "final_train_loss": result.train_loss_at(args.text_lora_steps),
            "loss_at_fixed_step": None, "eval_loss": result.final_eval.loss, "metrics": result.final_eval.metrics,
            "predictions": result.final_eval.predictions}


# ------------------------------------------------------------------------------------------------ report


def format_table(rows: list[dict[str, Any]], kinds: tuple[str, ...]) -> str:
    csv = any(row.get("csv") for row in rows)
    headers = ["connector", "trainable", "s/step", "train wall", "final loss", "loss@step", "held-out loss", "accuracy",
               *[f"acc {k}" for k in kinds], *(["CSV e2e", *[f"CSV {k}" for k in CSV_KINDS]] if csv else [])]

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = []
    for row in rows:
        metrics = row["metrics"]
        fixed = f"{cell(row.get('loss_at_fixed_step'), '.3f')}" + (f" (@{row['fixed_step']})" if row.get("fixed_step") else "")
        wall = row.get("wall_seconds")
        on_csv = (row.get("csv") or {}).get("metrics", {})
        lines.append([row["connector"], cell(row.get("trainable_parameters"), ","), cell(row.get("seconds_per_step"), ".2f"),
                      "-" if wall is None else format_duration(wall),
                      cell(row.get("final_train_loss"), ".3f"), fixed, cell(row.get("eval_loss"), ".3f"),
                      cell(metrics.get("accuracy"), ".3f"), *[cell(metrics.get(f"accuracy/{k}"), ".3f") for k in kinds],
                      *([cell(on_csv.get("accuracy"), ".3f"), *[cell(on_csv.get(f"accuracy/{k}"), ".3f") for k in CSV_KINDS]]
                        if csv else [])])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    render = lambda values: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))  # noqa: E731
    return "\n".join([render(headers), render(["-" * w for w in widths]), *(render(line) for line in lines)])


def format_duration(seconds: float) -> str:
    from orchestrator.native.train import format_duration as duration

    return duration(seconds)


def checkpoint_row(checkpoint: str, cases, store, args: argparse.Namespace) -> dict[str, Any]:
    """A row for an already trained checkpoint (the shipped connector): its held-out CSV accuracy, and the
    training wall time and accuracy it recorded."""
    from orchestrator.native.checkpoint import read_metadata
    from tools.native_chat import (
        SHIPPED_CONNECTOR,
        checkpoint_folder,
        shipped_connector_folder,
    )

    shipped = checkpoint in ("shipped", SHIPPED_CONNECTOR)
    folder = shipped_connector_folder() if shipped else checkpoint_folder(checkpoint)
    if folder is None:
        raise InvalidInputError("--native-checkpoint shipped: this installation ships no connector")
    metadata = read_metadata(folder)
    extra = metadata.get("extra") or {}
    label = "shipped connector" if shipped else f"checkpoint {checkpoint}"
    row = {"connector": f"{label} ({metadata['connectors']['ts']['kind']}, {metadata['step']} steps)",
           "trainable_parameters": metadata["connector_parameters"]["ts"], "seconds_per_step": None,
           "final_train_loss": None, "loss_at_fixed_step": None, "eval_loss": None, "metrics": {},
           "wall_seconds": extra.get("wall_seconds"), "recorded_eval": extra.get("eval")}
    if cases:
        row["csv"] = native_chat_on_csv(str(folder), cases, store, label, args)
    return row


def format_speech(rows: list[dict[str, Any]]) -> str:
    headers = ["connector", "trainable", "s/step", "final loss", "held-out loss", "WER (corpus)"]
    lines = [[r["connector"], f"{r['trainable_parameters']:,}", f"{r['seconds_per_step']:.2f}", f"{r['final_train_loss']:.3f}",
              f"{r['eval_loss']:.3f}", f"{r['corpus_wer']:.3f}"] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    render = lambda values: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))  # noqa: E731
    return "\n".join([render(headers), render(["-" * w for w in widths]), *(render(line) for line in lines)])


# ------------------------------------------------------------------------------------------------ main


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", help="hub id or local folder (default: the packaged Qwen2.5-Coder-0.5B-Instruct)")
    parser.add_argument("--connectors", default=",".join(ALL_CONNECTORS), help="comma-separated connector kinds")
    parser.add_argument("--steps", type=int, help="optimiser steps per connector (default 30; --quick 8)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train-size", type=int, help="train examples (default 120; --quick 32)")
    parser.add_argument("--eval-size", type=int, help="held-out examples (default 24; --quick 9)")
    parser.add_argument("--series-length", type=_length, default=128, help="points per series, or MIN-MAX (default 128)")
    parser.add_argument("--kinds", default=",".join(TS_KINDS), help=f"question kinds (default {','.join(TS_KINDS)})")
    parser.add_argument("--encoder", default="ts-patch", help="time-series encoder (ts-patch, or ts-patch@steps: patches labelled "
                                                              "with their centre step)")
    parser.add_argument("--csv-eval", type=int, help="held-out CSV files asked end to end through native-chat "
                                                     "(default 24; --quick 6; 0 skips)")
    parser.add_argument("--csv-length", type=_length, default=(90, 240), help="rows per CSV file, N or MIN-MAX (default 90-240)")
    parser.add_argument("--native-checkpoint", action="append", default=[], metavar="DIR",
                        help="also ask this checkpoint end to end on the CSV files ('shipped': the connector anymoda ships); "
                             "repeatable")
    parser.add_argument("--text-lora-steps", type=int, default=0, help="also LoRA-tune the text baseline this many steps")
    parser.add_argument("--no-text-baseline", action="store_true", help="skip the zero-shot text baseline")
    parser.add_argument("--speech-steps", type=int, help="steps per connector for speech (default 20; --quick or "
                                                         "--connectors none: 0 = skip)")
    parser.add_argument("--speech-connectors", default="mlp2x_gelu")
    parser.add_argument("--speech-train", type=int, default=40)
    parser.add_argument("--speech-eval", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmark-connectors", help="folder for checkpoints, curves and results.json")
    parser.add_argument("--quick", action="store_true", help="fewer steps and examples (a few minutes on CPU)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.steps = args.steps if args.steps is not None else (8 if quick else 30)
    args.train_size = args.train_size if args.train_size is not None else (32 if quick else 120)
    args.eval_size = args.eval_size if args.eval_size is not None else (9 if quick else 24)
    args.csv_eval = args.csv_eval if args.csv_eval is not None else (6 if quick else 24)
    args.connectors = [c.strip() for c in args.connectors.split(",") if c.strip() and c.strip() != "none"]
    # Nothing trained here (--connectors none: a checkpoint is only asked): no speech section unless asked for.
    args.speech_steps = args.speech_steps if args.speech_steps is not None else (0 if quick or not args.connectors else 20)
    args.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    args.speech_connectors = [c.strip() for c in args.speech_connectors.split(",") if c.strip()]
    for name in ("steps", "batch_size", "train_size", "eval_size", "speech_train", "speech_eval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("text_lora_steps", "speech_steps", "warmup", "seed", "csv_eval"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be at least 0")
    if not 0 < args.lr <= 1:
        parser.error("--lr must be in (0, 1]")
    for name in ("series_length", "csv_length"):
        value = getattr(args, name)
        if min(value if isinstance(value, tuple) else (value,)) < 32:
            parser.error(f"--{name.replace('_', '-')} must be at least 32")
    if not args.connectors and not args.native_checkpoint:
        parser.error("--connectors names none (and no --native-checkpoint is given)")
    from orchestrator.native.datasets.timeseries import QA_KINDS

    if not args.kinds or set(args.kinds) - set(QA_KINDS):
        parser.error(f"--kinds must be among {', '.join(QA_KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from orchestrator.native.llm import load_llm
    from orchestrator.native.tasks import corpus_word_error_rate, prepare_task
    from orchestrator.models.resolve import pick_device

    args = parse_arguments(argv)
    print(workload_text(args), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    started = time.perf_counter()

    data = prepare_task("timeseries-qa", encoder=args.encoder, train_size=args.train_size, eval_size=args.eval_size,
                        seed=args.seed, qa_kinds=args.kinds, series_length=args.series_length, progress=not args.no_progress)
    llm = load_llm(args.llm, device=device)
    print(f"LLM {llm.model_id} loaded from {llm.path} on {device}", flush=True)
    cases = csv_cases(args.csv_eval, args.csv_length, out / "csv", args.seed) if args.csv_eval else []
    store = store_for(out / "store") if cases else None
    rows = []
    for kind in args.connectors:
        try:
            rows.append(run_connector(kind, llm, data, args, steps=args.steps, max_new_tokens=8))
        except InvalidInputError as exc:
            print(f"{kind}: skipped ({exc})", flush=True)
            continue
        print(f"{kind}: done, {rows[-1]['metrics']}", flush=True)
        if cases:
            rows[-1]["csv"] = native_chat_on_csv(rows[-1]["checkpoint"], cases, store, kind, args)
            print(f"{kind}: end to end on CSV files, {rows[-1]['csv']['metrics']}", flush=True)
    for checkpoint in args.native_checkpoint:
        rows.append(checkpoint_row(checkpoint, cases, store, args))
    if not args.no_text_baseline:
        rows.append(text_baseline_zero_shot(llm, data, args, max_new_tokens=16))
        if cases:
            rows[-1]["csv"] = text_baseline_on_csv(llm, cases, store, args)
    if args.text_lora_steps:
        rows.append(text_baseline_lora(args.llm, data, args, 8, device))

    speech_rows = []
    if args.speech_steps:
        try:
            speech = prepare_task("speech-transcription", train_size=args.speech_train, eval_size=args.speech_eval,
                                  seed=args.seed, progress=not args.no_progress)
        except Exception as exc:  # the offline extra (piper, faster-whisper) may be missing: report, keep the TS table
            print(f"speech section skipped: {type(exc).__name__}: {exc}", flush=True)
        else:
            for kind in args.speech_connectors:
                row = run_connector(kind, llm, speech, args, steps=args.speech_steps, max_new_tokens=32)
                row["corpus_wer"] = corpus_word_error_rate(speech.eval_references, row["predictions"])
                speech_rows.append(row)

    print()
    print(workload_text(args))
    print(format_table(rows, args.kinds))
    if cases:
        print(f"CSV e2e: {len(cases)} held-out series written as users' CSV files ({_length_text(args.csv_length)} rows, a date "
              f"column, ~4% of cells missing), asked through native-chat in words unlike the training data; "
              f"train wall: training and evaluation, as `anymoda train connector` runs them")
    if speech_rows:
        print("\nspeech -> transcript through the connector (held-out sentences)")
        print(format_speech(speech_rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; per-row checkpoints and loss curves under {out}/")
    (out / "results.json").write_text(json.dumps({"workload": workload_text(args), "timeseries": rows, "speech": speech_rows,
                                                  "torch_threads": torch.get_num_threads()}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
