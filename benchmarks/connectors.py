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

Published claim tested: an MLP connector converges faster than a Q-Former with far fewer parameters
(LLaVA-1.5 vs BLIP-2 style). Target: the trained native path beats the text-only baseline at equal LLM size.

    python benchmarks/connectors.py                 # default sizes: about 20-25 min on 2 CPU cores with the 0.5B
    python benchmarks/connectors.py --quick         # about 8 min: 8 steps, 9 held-out questions, no speech
    python benchmarks/connectors.py --steps 500 --train-size 2000 --eval-size 150 --speech-steps 300   # on a GPU

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


def workload_text(args: argparse.Namespace) -> str:
    return (
        f"workload: time-series attribute QA ({', '.join(TS_KINDS)}), series of {args.series_length} points, "
        f"{args.train_size} train / {args.eval_size} held-out examples (seed {args.seed}); stage 1, LLM frozen; "
        f"{args.steps} steps x batch {args.batch_size}, lr {args.lr:g}, warmup {args.warmup}; connectors: "
        f"{', '.join(args.connectors)}; LLM: {args.llm or 'packaged Qwen2.5-Coder-0.5B-Instruct'}; "
        f"text baseline: zero-shot" + (f" + LoRA {args.text_lora_steps} steps" if args.text_lora_steps else "")
        + (f"; speech: {args.speech_steps} steps, {args.speech_train} train / {args.speech_eval} held-out sentences"
           if args.speech_steps else "; speech: skipped")
    )


# ------------------------------------------------------------------------------------------------ native rows


def run_connector(kind: str, llm, data, args: argparse.Namespace, *, steps: int, max_new_tokens: int) -> dict[str, Any]:
    import torch

    from orchestrator.native.cli_train import build_model
    from orchestrator.native.train import TrainConfig, train_connector

    torch.manual_seed(args.seed)
    model = build_model(llm, data.modality, data.encoder, data.feature_dim, kind, {})  # each at its published default shape (Q-Former 32 queries, Perceiver 64 latents)
    config = TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=min(args.warmup, steps - 1),
                         eval_every=0, eval_generate_limit=len(data.eval), max_new_tokens=max_new_tokens, seed=args.seed,
                         output_dir=str(Path(args.out) / f"{data.task}-{kind}"))
    result = train_connector(model, data.train, data.eval, config, grader=data.grader,
                             extra={"task": data.task, "benchmark": "connectors"}, progress=not args.no_progress)
    fixed = max(5, steps // 3)
    row = {
        "connector": kind, "trainable_parameters": result.trainable_parameters,
        "seconds_per_step": result.seconds_per_step, "final_train_loss": result.train_loss_at(steps),
        "fixed_step": fixed, "loss_at_fixed_step": result.train_loss_at(fixed),
        "eval_loss": result.final_eval.loss, "metrics": result.final_eval.metrics,
        "predictions": result.final_eval.predictions,
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
    import torch
    from tqdm.auto import tqdm

    tokenizer, model = llm.tokenizer, llm.model
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    predictions = []
    started = time.perf_counter()
    for index in tqdm(range(len(data.eval)), desc="text baseline (zero-shot)", disable=args.no_progress):
        reference = data.eval_references[index]
        prompt = text_prompt(data.eval_inputs[index], f"{reference.question} {ANSWER_FORMAT.get(reference.kind, '')}".strip())
        text = (tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
                if getattr(tokenizer, "chat_template", None) else prompt + "\n")
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                    top_k=None, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        predictions.append(answer)
        for name, value in data.grader(index, answer).items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    return {"connector": "text baseline (zero-shot)", "trainable_parameters": 0, "seconds_per_step": None,
            "final_train_loss": None, "loss_at_fixed_step": None, "eval_loss": None,
            "seconds_per_answer": (time.perf_counter() - started) / max(1, len(data.eval)),
            "metrics": {k: sums[k] / counts[k] for k in sorted(sums)}, "predictions": predictions}


def text_baseline_lora(llm_name: str | None, data, args: argparse.Namespace, max_new_tokens: int, device: str) -> dict[str, Any]:
    """LoRA on the same LLM, trained on the same split with the numbers as text (no connector is used)."""
    import torch

    from orchestrator.native.cli_train import build_model, load_llm
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
    headers = ["connector", "trainable", "s/step", "final loss", "loss@step", "held-out loss", "accuracy",
               *[f"acc {k}" for k in kinds]]

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = []
    for row in rows:
        metrics = row["metrics"]
        fixed = f"{cell(row.get('loss_at_fixed_step'), '.3f')}" + (f" (@{row['fixed_step']})" if row.get("fixed_step") else "")
        lines.append([row["connector"], f"{row['trainable_parameters']:,}", cell(row.get("seconds_per_step"), ".2f"),
                      cell(row.get("final_train_loss"), ".3f"), fixed, cell(row.get("eval_loss"), ".3f"),
                      cell(metrics.get("accuracy"), ".3f"), *[cell(metrics.get(f"accuracy/{k}"), ".3f") for k in kinds]])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    render = lambda values: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))  # noqa: E731
    return "\n".join([render(headers), render(["-" * w for w in widths]), *(render(line) for line in lines)])


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
    parser.add_argument("--series-length", type=int, default=128)
    parser.add_argument("--text-lora-steps", type=int, default=0, help="also LoRA-tune the text baseline this many steps")
    parser.add_argument("--no-text-baseline", action="store_true", help="skip the zero-shot text baseline")
    parser.add_argument("--speech-steps", type=int, help="steps per connector for speech (default 20; --quick 0 = skip)")
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
    args.speech_steps = args.speech_steps if args.speech_steps is not None else (0 if quick else 20)
    args.connectors = [c.strip() for c in args.connectors.split(",") if c.strip()]
    args.speech_connectors = [c.strip() for c in args.speech_connectors.split(",") if c.strip()]
    for name in ("steps", "batch_size", "train_size", "eval_size", "series_length", "speech_train", "speech_eval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("text_lora_steps", "speech_steps", "warmup", "seed"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be at least 0")
    if not 0 < args.lr <= 1:
        parser.error("--lr must be in (0, 1]")
    if args.series_length < 32:
        parser.error("--series-length must be at least 32")
    if not args.connectors:
        parser.error("--connectors names none")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from orchestrator.native.cli_train import corpus_word_error_rate, load_llm, prepare_task
    from orchestrator.resolve import pick_device

    args = parse_arguments(argv)
    print(workload_text(args), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    started = time.perf_counter()

    data = prepare_task("timeseries-qa", train_size=args.train_size, eval_size=args.eval_size, seed=args.seed,
                        qa_kinds=TS_KINDS, series_length=args.series_length, progress=not args.no_progress)
    llm = load_llm(args.llm, device=device)
    print(f"LLM {llm.model_id} loaded from {llm.path} on {device}", flush=True)
    rows = []
    for kind in args.connectors:
        try:
            rows.append(run_connector(kind, llm, data, args, steps=args.steps, max_new_tokens=8))
        except InvalidInputError as exc:
            print(f"{kind}: skipped ({exc})", flush=True)
            continue
        print(f"{kind}: done, {rows[-1]['metrics']}", flush=True)
    if not args.no_text_baseline:
        rows.append(text_baseline_zero_shot(llm, data, args, max_new_tokens=16))
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
    print(format_table(rows, TS_KINDS))
    if speech_rows:
        print("\nspeech -> transcript through the connector (held-out sentences)")
        print(format_speech(speech_rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; per-row checkpoints and loss curves under {out}/")
    (out / "results.json").write_text(json.dumps({"workload": workload_text(args), "timeseries": rows, "speech": speech_rows,
                                                  "torch_threads": torch.get_num_threads()}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
