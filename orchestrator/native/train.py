"""Training the native path: connectors (stage 1) and connectors plus LoRA (stage 2) on precomputed features.

The encoders are frozen, so every example arrives with its media features already computed (through the
feature cache); one optimiser step here is ``grad_accum`` forward/backward passes of ``batch_size`` examples
through :class:`~orchestrator.native.multimodal_lm.MultimodalLM`.

What a run does, in order:

1. set up the stage: the LLM is frozen; stage 2 with ``lora_r > 0`` adds LoRA adapters (peft);
   ``init_from`` loads an earlier checkpoint's weights first (stage 1 connector -> stage 2);
2. AdamW over the trainable parameters, linear warmup then cosine decay, gradient clipping;
   bf16 autocast on a GPU that has it, else fp16 with a gradient scaler; plain fp32 on CPU;
3. every ``eval_every`` steps a cheap evaluation, with its own progress line: on the first ``eval_subset``
   held-out examples, the teacher-forced loss and ``forced_exact`` (the share of answers greedy decoding
   would write word for word: one forward pass, no generation) and, when a grader is given, metrics on
   ``eval_generate_limit`` generated answers (accuracy, word error rate...); at the end the same on every
   held-out example with ``final_generate_limit`` answers generated (default: all). An answer the forced
   pass already shows greedy decoding reproduces is graded as written, not generated again;
4. a checkpoint every ``save_every`` steps and at the end, holding the weights (through
   :func:`~orchestrator.native.checkpoint.save_checkpoint`) plus ``trainer_state.pt``: optimiser,
   scheduler, scaler, step, random states and the loss history, so a resumed run continues the same
   trajectory and the same curve;
5. a loss-curve PNG (where the ``plot`` extra is installed) and ``summary.json`` in the output folder.

The order of training examples is a pure function of (seed, position): the n-th example drawn is the
n-th entry of a stream of per-epoch permutations. A resumed run therefore needs no sampler state to
draw exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError
from ..extras import installed
from ..storage.render import pyplot
from .metadata import FINAL_CHECKPOINT

TRAINER_STATE = "trainer_state.pt"
SUMMARY_NAME = "summary.json"
LOSS_CURVE_NAME = "loss_curve.png"
PERIODIC_CHECKPOINTS = "checkpoints"
AUTOCAST_CHOICES = ("auto", "bf16", "fp16", "off")

# A grader turns one generated answer into metric values: (index into the eval examples, generated text)
# -> {"accuracy": 1.0, "accuracy/trend": 1.0} or {"wer": 0.25}. Each metric is averaged over the examples
# that report it, so per-kind accuracies come for free.
Grader = Callable[[int, str], dict[str, float]]


@dataclass
class TrainConfig:
    stage: int = 1
    max_steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.0          # the cosine ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0         # 0 turns clipping off
    lora_r: int = 0                    # stage 2 only; 0 = connector only
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    eval_every: int = 0                # 0 = evaluate only at the end
    eval_batch_size: int = 0           # 0 = batch_size
    eval_subset: int = 16              # held-out examples a periodic evaluation scores (0 = all); the final one scores all
    eval_generate_limit: int = 8       # generated answers per periodic evaluation (generation is the slow part)
    final_generate_limit: int | None = None  # generated answers at the end (None = every held-out example)
    max_new_tokens: int = 16
    save_every: int = 0                # 0 = only the final checkpoint
    keep_checkpoints: int = 2          # periodic checkpoints kept (the newest)
    autocast: str = "auto"             # auto: bf16/fp16 on CUDA, off elsewhere
    seed: int = 0
    output_dir: str | None = None      # None: nothing is written (no checkpoint, curve or summary)
    resume_from: str | None = None     # a checkpoint folder with trainer_state.pt, or an earlier output_dir
    init_from: str | None = None       # weights only (e.g. the stage 1 connector for stage 2)
    log_every: int = 1

    def validate(self) -> None:
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise InvalidInputError(f"training config: {message}")

        require(self.stage in (1, 2), f"stage must be 1 (alignment) or 2 (instruction tuning), got {self.stage!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("warmup_steps", "eval_every", "eval_batch_size", "eval_subset", "eval_generate_limit", "save_every",
                     "keep_checkpoints", "lora_r", "max_new_tokens", "seed"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                    f"{name} must be a whole number >= 0, got {value!r}")
        require(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        final = self.final_generate_limit
        require(final is None or (isinstance(final, int) and not isinstance(final, bool) and final >= 0),
                f"final_generate_limit must be None (all) or a whole number >= 0, got {final!r}")
        require(math.isfinite(self.lr) and 0 < self.lr <= 1, f"lr must be in (0, 1], got {self.lr!r}")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"weight_decay must be >= 0, got {self.weight_decay!r}")
        require(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        require(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0,
                f"max_grad_norm must be >= 0, got {self.max_grad_norm!r}")
        require(self.warmup_steps < self.max_steps or self.max_steps == 1,
                f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        require(self.lora_r == 0 or self.stage == 2, "LoRA (lora_r > 0) belongs to stage 2; stage 1 trains the connector only")
        require(self.lora_alpha >= 1, f"lora_alpha must be at least 1, got {self.lora_alpha!r}")
        require(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        require(self.autocast in AUTOCAST_CHOICES,
                f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {self.autocast!r}")
        require(self.resume_from is None or self.init_from is None,
                "give either resume_from (continue a run) or init_from (start from its weights), not both")
        for name in ("resume_from", "init_from"):
            value = getattr(self, name)
            require(value is None or Path(value).is_dir(), f"{name} {value!r} is not a folder")


@dataclass
class EvalResult:
    step: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    predictions: list[str] = field(default_factory=list)   # generated answers, in eval-example order
    examples: int = 0                  # held-out examples scored (teacher-forced)
    generated: int = 0                 # answers graded (generated, or reproduced by the forced pass)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"step": self.step, "loss": self.loss, **self.metrics, "examples": self.examples,
                "generated": self.generated, "seconds": round(self.seconds, 2)}

    def line(self, label: str = "evaluation") -> str:
        """One line for a log: the loss, forced-exact share and graded metrics, and what they cover."""
        parts = [f"held-out loss {self.loss:.4f}"]
        if "forced_exact" in self.metrics:
            parts.append(f"forced-exact {self.metrics['forced_exact']:.3f}")
        graded = [name for name in self.metrics if "/" not in name and name != "forced_exact"]
        parts += [f"{name} {self.metrics[name]:.3f}" for name in graded]
        kinds = sorted({name.split("/", 1)[1] for name in self.metrics if name.startswith(("accuracy/", "wer/"))})
        if kinds:
            parts[-1] += " (" + ", ".join(f"{kind} {self.metrics.get('accuracy/' + kind, self.metrics.get('wer/' + kind)):.2f}"
                                          for kind in kinds) + ")"
        return (f"step {self.step} {label}: " + ", ".join(parts) + f" on {self.examples} held-out examples"
                + (f", {self.generated} answers graded" if self.generated else "") + f" [{format_duration(self.seconds)}]")


@dataclass
class TrainResult:
    steps: int                         # optimiser steps done in total (including before a resume)
    history: list[dict[str, float]]    # per logged step: step, loss, lr
    evals: list[dict[str, float]]      # per evaluation: step, loss, metrics
    final_eval: EvalResult | None
    trainable_parameters: int
    seconds_per_step: float            # training time only (evaluation and saving excluded), this session
    seconds: float
    checkpoint: Path | None
    loss_curve: Path | None
    summary_path: Path | None

    @property
    def final_train_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")

    def train_loss_at(self, step: int, window: int = 5) -> float:
        """Mean train loss over the ``window`` logged steps ending at ``step`` (smooths single-batch noise)."""
        near = [entry["loss"] for entry in self.history if step - window < entry["step"] <= step]
        return float(np.mean(near)) if near else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "trainable_parameters": self.trainable_parameters,
            "seconds_per_step": round(self.seconds_per_step, 4),
            "seconds": round(self.seconds, 2),
            "final_train_loss": self.final_train_loss,
            "final_eval": self.final_eval.record() if self.final_eval else None,
            "evals": self.evals,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "loss_curve": str(self.loss_curve) if self.loss_curve else None,
        }


# ------------------------------------------------------------------------------------------------ schedule


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning-rate multiplier for optimiser step ``step`` (0-based): linear warmup, then cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # the first step already learns (a 0 multiplier would waste it)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def example_order(count: int, seed: int, start: int, length: int) -> list[int]:
    """Indices of the ``length`` examples drawn from position ``start`` of the seeded epoch stream."""
    permutations: dict[int, np.ndarray] = {}
    drawn = []
    for position in range(start, start + length):
        epoch, offset = divmod(position, count)
        if epoch not in permutations:
            permutations[epoch] = np.random.default_rng([seed, epoch]).permutation(count)
        drawn.append(int(permutations[epoch][offset]))
    return drawn


# ------------------------------------------------------------------------------------------------ precision


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None          # None: no autocast
    scaler: Any = None                 # torch.amp.GradScaler for fp16

    def autocast(self):
        if self.dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def label(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}[self.dtype]


def pick_precision(choice: str, device: torch.device) -> Precision:
    """Mixed precision on CUDA only: CPU autocast is slower than fp32 for these small matmuls and less exact."""
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return Precision(device, None)
    if device.type != "cuda":
        raise InvalidInputError(f"autocast {choice!r} needs a CUDA device; the model is on {device.type} (use 'auto' or 'off')")
    if choice == "auto":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise InvalidInputError("autocast 'bf16': this GPU does not support bfloat16; use 'fp16' or 'auto'")
        return Precision(device, torch.bfloat16)
    return Precision(device, torch.float16, torch.amp.GradScaler("cuda"))


# ------------------------------------------------------------------------------------------------ evaluation


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(move(v) for v in value)
        return value

    return move(batch) if device.type != "cpu" else batch


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@torch.no_grad()
def evaluate(
    model,
    examples: Sequence[Any],
    *,
    batch_size: int = 4,
    grader: Grader | None = None,
    generate_limit: int = 64,
    max_new_tokens: int = 16,
    precision: Precision | None = None,
    step: int = 0,
    kinds: Sequence[str] | None = None,
    progress: bool = False,
    description: str = "evaluation",
) -> EvalResult:
    """Teacher-forced loss and ``forced_exact`` on every example; with a grader, metrics on the answers to the
    first ``generate_limit`` (greedy, ``max_new_tokens`` at most).

    ``forced_exact`` is the share of examples whose every response token is the model's top choice given
    the ones before it: exactly the examples greedy decoding answers word for word (one forward pass, a
    lower bound of a grader that accepts near misses). Those answers are graded as written rather than
    generated again; only the others are generated. ``kinds`` (one per example) adds per-kind shares
    (``forced_exact/trend``). ``progress`` shows a progress line of its own (``description``).
    """
    if not examples:
        raise InvalidInputError("evaluation needs at least one held-out example")
    from tqdm.auto import tqdm

    started = time.perf_counter()
    examples = list(examples)
    device = _model_device(model)
    precision = precision or Precision(device, None)
    was_training = model.training
    model.eval()
    scored = examples[:generate_limit] if grader is not None and generate_limit > 0 else []
    regenerate = []
    bar = tqdm(total=len(examples), disable=not progress, desc=f"{description}: scoring", unit="example",
               dynamic_ncols=True, leave=False, position=1)
    try:
        total, weight = 0.0, 0
        exact: list[bool] = []
        for chunk in _batches(examples, batch_size):
            batch = model.collate(list(chunk))
            with precision.autocast():
                scores = model.score_responses(_to_device(batch, device))
            # A per-token mean over the whole split (rows weighted by their target tokens), so the held-out
            # loss does not depend on the batch size.
            total += float(scores.row_loss.sum())
            weight += int(scores.row_tokens.sum())
            exact += [bool(value) for value in scores.exact.tolist()]
            bar.update(len(chunk))
        result = EvalResult(step=step, loss=total / max(1, weight), examples=len(examples))
        metrics = {"forced_exact": sum(exact) / len(exact)}
        if kinds is not None:
            for kind in sorted(set(kinds[:len(examples)])):
                # kinds may cover more examples than these (a periodic evaluation scores a prefix).
                chosen = [hit for hit, k in zip(exact, kinds, strict=False) if k == kind]
                metrics[f"forced_exact/{kind}"] = sum(chosen) / len(chosen)
        if scored:
            answers: list[str | None] = [
                example.response if hit and _fits(model, example.response, max_new_tokens) else None
                for example, hit in zip(scored, exact, strict=False)]  # scored: the first generate_limit
            regenerate = [index for index, answer in enumerate(answers) if answer is None]
            bar.unit = "answer"
            bar.set_description(f"{description}: generating", refresh=False)
            bar.reset(total=len(regenerate))
            for chunk in _batches(regenerate, batch_size):
                prompts = [replace(scored[index], response=None) for index in chunk]
                with precision.autocast():
                    generated = model.generate(prompts, max_new_tokens=max_new_tokens)
                for index, answer in zip(chunk, generated, strict=True):
                    answers[index] = answer
                bar.update(len(chunk))
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            for index, answer in enumerate(answers):
                result.predictions.append(answer)
                for name, value in grader(index, answer).items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                    counts[name] = counts.get(name, 0) + 1
            metrics.update({name: sums[name] / counts[name] for name in sorted(sums)})
            result.generated = len(scored)
        result.metrics = metrics
        result.seconds = time.perf_counter() - started
        return result
    finally:
        bar.close()
        model.train(was_training)


def _fits(model, response: str | None, max_new_tokens: int) -> bool:
    """Whether greedy decoding within ``max_new_tokens`` has room for the whole response and its end token."""
    if not isinstance(response, str):
        return False
    return len(model.tokenizer(response, add_special_tokens=False)["input_ids"]) + 1 <= max_new_tokens


# ------------------------------------------------------------------------------------------------ checkpoints


def _rng_state() -> dict[str, Any]:
    # Plain tensors and numbers only, so the state loads with torch.load(weights_only=True) (no unpickling).
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_resumable(path: str | Path) -> Path:
    """The checkpoint to resume from: ``path`` itself, or the newest one inside an earlier run's output folder."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file():
        return path
    candidates = [p.parent for p in path.glob(f"{PERIODIC_CHECKPOINTS}/*/{TRAINER_STATE}")]
    if (path / FINAL_CHECKPOINT / TRAINER_STATE).is_file():
        candidates.append(path / FINAL_CHECKPOINT)
    if not candidates:
        raise InvalidInputError(
            f"resume: {path} holds no {TRAINER_STATE}; give a checkpoint folder written by `anymoda train connector` "
            "or the output folder of that run"
        )
    return max(candidates, key=lambda folder: _saved_step(folder))


def _saved_step(folder: Path) -> int:
    return int(read_trainer_state(folder)["step"])


def read_trainer_state(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's trainer state (step, history, the ``extra`` record of the run...); plain data, no unpickling."""
    path = Path(folder) / TRAINER_STATE
    if not path.is_file():
        raise InvalidInputError(f"{folder} holds no {TRAINER_STATE} (not a checkpoint written by the trainer)")
    return torch.load(path, map_location="cpu", weights_only=True)


class _Run:
    """The mutable state of one training run, saved to and restored from ``trainer_state.pt``."""

    def __init__(self, model, config: TrainConfig, parameters: list[torch.nn.Parameter], precision: Precision):
        self.model = model
        self.config = config
        self.parameters = parameters
        self.precision = precision
        self.optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: warmup_cosine(step, config.warmup_steps, config.max_steps, config.min_lr_ratio),
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.extra: dict[str, Any] = {}

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            "rng": _rng_state(),
            "history": self.history,
            "evals": self.evals,
            "config": asdict(self.config),
            "extra": self.extra,
        }

    def restore(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        for name in ("stage", "lora_r", "batch_size", "grad_accum", "seed"):
            if saved.get(name) != getattr(self.config, name):
                raise InvalidInputError(
                    f"resume: the checkpoint was trained with {name}={saved.get(name)!r}, this run asks for "
                    f"{name}={getattr(self.config, name)!r}; a resumed run must keep it "
                    "(or use init_from to start fresh from the weights)"
                )
        if state["step"] >= self.config.max_steps:
            raise InvalidInputError(
                f"resume: the checkpoint is at step {state['step']}, which already reaches max_steps={self.config.max_steps}; "
                "raise the step count to train further"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler is not None and state.get("scaler") is not None:
            self.precision.scaler.load_state_dict(state["scaler"])
        _restore_rng(state["rng"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.evals = list(state["evals"])


def _save(run: _Run, folder: Path, extra: dict[str, Any]) -> Path:
    from .checkpoint import save_checkpoint

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(partial, run.model, extra={**extra, "step": run.step, "stage": run.config.stage,
                                               "train_config": asdict(run.config)})
    torch.save(run.state(), partial / TRAINER_STATE)
    # Swapped in whole, so a crash mid-save never leaves a half-written checkpoint where a good one was.
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def _prune_periodic(root: Path, keep: int) -> None:
    saved = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: p.name)
    for old in saved[: max(0, len(saved) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the loop


def prepare_stage(model, config: TrainConfig) -> None:
    """Freeze what the stage keeps fixed, load ``init_from`` weights, and add LoRA for stage 2."""
    model.freeze_llm()
    if config.init_from is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(config.init_from, model)
    if config.stage == 2 and config.lora_r > 0:
        model.enable_lora(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)


def train_connector(
    model,
    train_examples: Sequence[Any],
    eval_examples: Sequence[Any],
    config: TrainConfig,
    *,
    grader: Grader | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    eval_kinds: Sequence[str] | None = None,
) -> TrainResult:
    """Train ``model``'s connectors (and LoRA in stage 2) on ``train_examples``; see the module docstring.

    ``extra`` is recorded in every checkpoint (task, encoder identity, ...). ``eval_kinds`` (the question
    kind of each held-out example) adds per-kind forced-exact shares. The progress bar shows the time the
    rest of the run will take, evaluations included. Returns the history and, when ``config.output_dir``
    is set, where the checkpoint, loss curve and summary were written.
    """
    config.validate()
    if not train_examples:
        raise InvalidInputError("training needs at least one training example")
    if any(example.response is None for example in train_examples):
        raise InvalidInputError("every training example needs a response (the target text)")
    if config.save_every and config.output_dir is None:
        raise InvalidInputError("training config: save_every needs an output_dir to save into")
    if config.resume_from is not None and config.output_dir is None:
        raise InvalidInputError("training config: resume_from needs an output_dir to continue writing into")
    output_dir = Path(config.output_dir) if config.output_dir else None
    extra = dict(extra or {})

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    prepare_stage(model, config)
    resume_folder = find_resumable(config.resume_from) if config.resume_from else None
    if resume_folder is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(resume_folder, model)

    parameters = [p for p in model.trainable_parameters() if p.requires_grad]
    if not parameters:
        raise InvalidInputError("the model has no trainable parameters (is there a connector?)")
    device = _model_device(model)
    precision = pick_precision(config.autocast, device)
    run = _Run(model, config, parameters, precision)
    run.extra = extra
    earlier_seconds = 0.0  # wall time of the sessions a resumed run continues
    if resume_folder is not None:
        state = read_trainer_state(resume_folder)
        run.restore(state)
        earlier_seconds = float((state.get("extra") or {}).get("wall_seconds") or 0.0)
    trainable = sum(p.numel() for p in parameters)
    eval_batch = config.eval_batch_size or config.batch_size
    periodic_examples = list(eval_examples)[:config.eval_subset] if config.eval_subset else list(eval_examples)
    final_generate = len(eval_examples) if config.final_generate_limit is None else config.final_generate_limit
    clock = _Clock(config, len(periodic_examples), min(config.eval_generate_limit, len(periodic_examples)),
                   len(eval_examples), min(final_generate, len(eval_examples)), has_grader=grader is not None)

    from tqdm.auto import tqdm

    def run_eval(final: bool) -> EvalResult:
        chosen = list(eval_examples) if final else periodic_examples
        label = f"{'final evaluation' if final else 'evaluation'} @ step {run.step}"
        result = evaluate(model, chosen, batch_size=eval_batch, grader=grader,
                          generate_limit=final_generate if final else config.eval_generate_limit,
                          max_new_tokens=config.max_new_tokens, precision=precision, step=run.step,
                          kinds=eval_kinds, progress=progress, description=label)
        clock.evaluated(result)
        record = result.record() | ({"final": True} if final else {})
        run.evals = [e for e in run.evals if e["step"] != run.step or e.get("final") != record.get("final")] + [record]
        if progress:
            tqdm.write(result.line("final evaluation" if final else "evaluation"), file=sys.stderr)
        return result

    model.train()
    started = time.perf_counter()
    train_seconds, trained_steps = 0.0, 0
    final_eval: EvalResult | None = None
    bar = tqdm(total=config.max_steps, initial=run.step, disable=not progress, desc=f"stage {config.stage}", unit="step",
               dynamic_ncols=True, bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar}| [{elapsed}, {rate_fmt}]{postfix}")
    try:
        while run.step < config.max_steps:
            step_started = time.perf_counter()
            loss = _optimiser_step(run, train_examples)
            elapsed = time.perf_counter() - step_started
            train_seconds += elapsed
            trained_steps += 1
            clock.stepped(elapsed)
            run.step += 1
            lr = run.scheduler.get_last_lr()[0]
            if run.step % config.log_every == 0 or run.step == config.max_steps:
                run.history.append({"step": run.step, "loss": loss, "lr": lr})
            postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
            if run.evals:
                postfix["eval"] = f"{run.evals[-1]['loss']:.4f}"
            postfix["left"] = clock.left(run.step, eval_examples_given=bool(eval_examples))
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if eval_examples and config.eval_every and run.step % config.eval_every == 0 and run.step < config.max_steps:
                result = run_eval(final=False)
                postfix.update(eval=f"{result.loss:.4f}", left=clock.left(run.step, eval_examples_given=True))
                bar.set_postfix(postfix)
            if output_dir is not None and config.save_every and run.step % config.save_every == 0 and run.step < config.max_steps:
                periodic = output_dir / PERIODIC_CHECKPOINTS
                _save(run, periodic / f"step-{run.step:07d}", extra)
                _prune_periodic(periodic, config.keep_checkpoints)
        if eval_examples:
            final_eval = run_eval(final=True)
            bar.set_postfix({"loss": f"{run.history[-1]['loss']:.4f}" if run.history else "-", "eval": f"{final_eval.loss:.4f}"})
    finally:
        bar.close()

    checkpoint = loss_curve = summary_path = None
    result = TrainResult(
        steps=run.step, history=run.history, evals=run.evals, final_eval=final_eval, trainable_parameters=trainable,
        seconds_per_step=train_seconds / max(1, trained_steps), seconds=time.perf_counter() - started,
        checkpoint=None, loss_curve=None, summary_path=None,
    )
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics = final_eval.record() if final_eval else {}
        run.extra = {**extra, "wall_seconds": round(earlier_seconds + result.seconds, 1)}
        checkpoint = _save(run, output_dir / FINAL_CHECKPOINT, {**run.extra, "eval": metrics})
        if installed("matplotlib"):  # the picture is the `plot` extra's; the run's numbers are in summary.json anyway
            loss_curve = plot_loss_curve(run.history, run.evals, output_dir / LOSS_CURVE_NAME,
                                         title=f"stage {config.stage}, {trainable:,} trainable parameters")
        result.checkpoint, result.loss_curve = checkpoint, loss_curve
        summary_path = output_dir / SUMMARY_NAME
        result.summary_path = summary_path
        summary = {**result.summary(), "config": asdict(config), **{k: v for k, v in run.extra.items() if k not in ("eval",)}}
        summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return result


class _Clock:
    """How long the rest of a run will take: training steps at their measured pace, plus the evaluations
    still due. An evaluation is priced by a guess from the step time (scoring an example is a forward pass,
    about a third of a training example's cost; generating an answer is its prefill plus a quarter of that
    per new token), scaled by how far the last evaluation's measured time was from its own guess."""

    def __init__(self, config: TrainConfig, periodic_examples: int, periodic_generate: int, final_examples: int,
                 final_generate: int, *, has_grader: bool):
        self.config = config
        self.periodic = (periodic_examples, periodic_generate if has_grader else 0)
        self.final = (final_examples, final_generate if has_grader else 0)
        self.step_seconds: list[float] = []
        self.calibration: float | None = None   # measured / guessed seconds of the last evaluation

    def stepped(self, seconds: float) -> None:
        self.step_seconds.append(seconds)

    def evaluated(self, result: EvalResult) -> None:
        guessed = self._guess(result.examples, result.generated)
        if guessed > 0:
            self.calibration = result.seconds / guessed

    def _step(self) -> float:
        recent = self.step_seconds[-20:]
        return float(np.median(recent)) if recent else 0.0

    def _guess(self, examples: int, generated: int) -> float:
        per_example = self._step() / (3 * self.config.batch_size * self.config.grad_accum)
        return examples * per_example + generated * per_example * (1 + 0.25 * self.config.max_new_tokens)

    def _evaluation(self, examples: int, generated: int) -> float:
        return self._guess(examples, generated) * (self.calibration or 1.0)

    def left(self, step: int, *, eval_examples_given: bool) -> str:
        """``4m10s incl. 3 eval``: the rest of the run; ``~`` while no evaluation has been timed yet."""
        if not self.step_seconds:
            return "?"
        seconds = (self.config.max_steps - step) * self._step()
        evaluations = 0
        if eval_examples_given:
            if self.config.eval_every:
                evaluations = sum(1 for s in range(step + 1, self.config.max_steps) if s % self.config.eval_every == 0)
                seconds += evaluations * self._evaluation(*self.periodic)
            seconds += self._evaluation(*self.final)
            evaluations += 1
        guessed = self.calibration is None and eval_examples_given
        return ("~" if guessed else "") + format_duration(seconds) + (f" incl. {evaluations} eval" if evaluations else "")


def _optimiser_step(run: _Run, examples: Sequence[Any]) -> float:
    """One optimiser step over ``grad_accum`` micro-batches; returns their mean loss."""
    config, model, precision = run.config, run.model, run.precision
    device = _model_device(model)
    first = run.step * config.grad_accum * config.batch_size
    order = example_order(len(examples), config.seed, first, config.grad_accum * config.batch_size)
    run.optimizer.zero_grad(set_to_none=True)
    losses = []
    for micro in range(config.grad_accum):
        chosen = [examples[i] for i in order[micro * config.batch_size:(micro + 1) * config.batch_size]]
        with precision.autocast():
            loss = model.score_responses(_to_device(model.collate(chosen), device)).loss.float()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {float(loss)} at step {run.step + 1}; lower the learning rate")
        losses.append(float(loss.detach()))
        scaled = loss / config.grad_accum
        if precision.scaler is not None:
            precision.scaler.scale(scaled).backward()
        else:
            scaled.backward()
    if precision.scaler is not None:
        precision.scaler.unscale_(run.optimizer)
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.parameters, config.max_grad_norm)
    if precision.scaler is not None:
        precision.scaler.step(run.optimizer)
        precision.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    return float(np.mean(losses))


# ------------------------------------------------------------------------------------------------ the curve


def plot_loss_curve(history: Sequence[dict[str, float]], evals: Sequence[dict[str, float]], path: Path,
                    *, title: str = "") -> Path:
    """Train loss per step (raw and smoothed) and held-out loss at each evaluation, as a PNG (the ``plot`` extra)."""
    plt = pyplot("the loss curve")

    figure, axis = plt.subplots(figsize=(8, 4.5))
    if history:
        steps = [entry["step"] for entry in history]
        losses = [entry["loss"] for entry in history]
        axis.plot(steps, losses, color="#1f77b4", alpha=0.3, linewidth=1, label="train loss (per step)")
        if len(losses) >= 20:
            # Exponential moving average: the trend without single-batch noise. Its memory grows with the
            # run (about a tenth of it), so a short run's curve does not lag far behind its losses.
            beta = min(0.9, 1.0 - 10.0 / len(losses))
            smoothed, level = [], losses[0]
            for value in losses:
                level = beta * level + (1.0 - beta) * value
                smoothed.append(level)
            axis.plot(steps, smoothed, color="#1f77b4", linewidth=2, label="train loss (smoothed)")
    if evals:
        axis.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", color="#d62728", linewidth=1.5,
                  label="held-out loss")
    axis.set_xlabel("optimiser step")
    axis.set_ylabel("cross-entropy loss")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right")
    if title:
        axis.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
