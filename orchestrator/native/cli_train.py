"""``anymoda train connector``: train a connector (and optional LoRA) on an offline task, end to end.

    anymoda train connector --task timeseries-qa --connector mlp2x_gelu --steps 200 --out runs/ts-mlp
    anymoda train connector --task speech-transcription --stage 2 --lora-r 8 --init-from runs/asr/checkpoint --out runs/asr2
    anymoda train connector --resume runs/ts-mlp --steps 400          # continue a run (its settings are reused)

The pieces, in order: the task's examples are generated (deterministically from the seed), their media
encoded once through the frozen encoder and the feature cache; the LLM is loaded (default: the packaged
Qwen2.5-Coder-0.5B-Instruct, or any hub id / local folder); a fresh connector maps the encoder's
features to the LLM's width; :func:`~orchestrator.native.train.train_connector` trains and evaluates.
The run folder gets ``checkpoint/`` (what the native-chat tool loads), ``loss_curve.png`` and
``summary.json``. :func:`prepare_task` and :func:`load_llm` are shared with ``benchmarks/connectors.py``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:  # the trainer imports torch: only loaded when a command runs, not when the CLI starts
    from .train import Grader, TrainConfig

QWEN_DEFAULT = "Qwen/Qwen2.5-Coder-0.5B-Instruct"  # orchestrator.packaged_llm.QWEN_CODER_05B, without importing it early


@dataclass(frozen=True)
class TaskInfo:
    modality: str
    default_encoder: str
    instruction: str          # what the default prompts ask (for the help text)
    default_lr_stage1: float
    default_max_new_tokens: int


TASKS: dict[str, TaskInfo] = {
    "timeseries-qa": TaskInfo("ts", "ts-patch", "questions about a series' trend, seasonality and spikes", 1e-3, 8),
    "speech-transcription": TaskInfo("audio", "whisper-ct2", "transcribe the spoken sentence", 1e-3, 40),
    "scenes": TaskInfo("image", "efficientnet-lite0", "questions and captions about drawn scenes", 1e-3, 16),
}
CONNECTOR_PATTERN = re.compile(r"^(linear|mlp[1-9]\d*x_gelu|qformer|perceiver)$")
CONNECTOR_HELP = "linear | mlp2x_gelu (any mlpNx_gelu) | qformer | perceiver"
SPEECH_PROMPT = "Transcribe the speech."
# What timeseries-qa encodes with by default for a tokenwise connector (linear, mlpNx_gelu); resamplers get ts-patch.
TIMESERIES_LABELLED_ENCODER = "ts-patch@steps-after"
# The attribute questions of the issue: trend direction, has-seasonality, spike position (within a tolerance).
TIMESERIES_KINDS = ("trend", "seasonality", "spike_position")
DEFAULT_LR_STAGE2 = 2e-4


# ------------------------------------------------------------------------------------------------ task data


@dataclass
class TaskData:
    """Examples with precomputed features, plus a grader of generated answers for the held-out split."""

    task: str
    modality: str
    encoder: str                  # the encoder's identity (rebuilds it with build_encoder)
    feature_dim: int
    train: list[Any]              # list[Example]
    eval: list[Any]
    grader: Grader
    eval_kinds: list[str] = field(default_factory=list)       # the question kind of each eval example
    eval_references: list[Any] = field(default_factory=list)  # the QA item / transcript each eval example is graded on
    eval_inputs: list[Any] = field(default_factory=list)      # the raw media of each eval example (series, audio, image)
    train_inputs: list[Any] = field(default_factory=list)     # the raw media of each train example


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length, on lowercased words without punctuation."""
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", text.lower())

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
        previous = current
    return previous[-1] / len(ref)


def corpus_word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Total word edits over total reference words (what ASR papers report), not a mean of per-sentence rates."""
    edits = sum(word_error_rate(r, h) * max(1, len(re.findall(r"[a-z0-9']+", r.lower()))) for r, h in zip(references, hypotheses))
    words = sum(max(1, len(re.findall(r"[a-z0-9']+", r.lower()))) for r in references)
    return edits / max(1, words)


def prepare_task(
    task: str,
    *,
    encoder: str | None = None,
    train_size: int,
    eval_size: int,
    seed: int = 0,
    cache: Any = None,
    data_dir: str | Path | None = None,
    qa_kinds: tuple[str, ...] | None = None,
    series_length: int | tuple[int, int] = 256,
    progress: bool = True,
) -> TaskData:
    """Generate ``task``'s train and held-out examples and encode their media once (through ``cache``).

    The held-out split comes from a different seed stream than the training split, so no item is shared.
    ``data_dir`` holds generated files where a task needs them (speech recordings). ``qa_kinds`` limits
    the time-series questions (default :data:`TIMESERIES_KINDS`); ``series_length`` is a length or a
    ``(shortest, longest)`` range each series' length is drawn from.
    """
    from .encoders import build_encoder
    from .feature_cache import FeatureCache, encode_all

    if task not in TASKS:
        raise InvalidInputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    info = TASKS[task]
    for name, value in (("train_size", train_size), ("eval_size", eval_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}")
    built = build_encoder(encoder or info.default_encoder)
    if built.modality != info.modality:
        raise InvalidInputError(
            f"encoder {encoder!r} reads {built.modality} but task {task!r} needs a {info.modality} encoder "
            f"(e.g. {info.default_encoder})"
        )
    cache = cache if cache is not None else FeatureCache()
    train_seed, eval_seed = _split_seeds(seed)

    def encode(values: list[Any], split: str) -> list[Any]:
        return encode_all(built, values, cache, progress=progress, description=f"{task} {split}: encoding with {built.identity}")

    if task == "timeseries-qa":
        return _timeseries_task(built, encode, train_size, eval_size, train_seed, eval_seed, qa_kinds or TIMESERIES_KINDS,
                                series_length)
    if task == "speech-transcription":
        return _speech_task(built, encode, train_size, eval_size, seed, Path(data_dir) if data_dir else None, progress)
    return _scenes_task(built, encode, train_size, eval_size, train_seed, eval_seed)


def _split_seeds(seed: int) -> tuple[int, int]:
    # Far-apart seeds for the two splits: the generators draw from independent streams.
    return seed * 2 + 1, seed * 2 + 2 + 1_000_003


def accuracy_grader(items: list[Any], score_answer: Callable[[Any, str], bool]) -> Callable[[int, str], dict[str, float]]:
    """Grade generated answers to QA items: overall accuracy and accuracy per question kind."""

    def grade(index: int, predicted: str) -> dict[str, float]:
        item = items[index]
        correct = float(bool(score_answer(item, predicted)))
        return {"accuracy": correct, f"accuracy/{item.kind}": correct}

    return grade


def _timeseries_task(encoder, encode, train_size, eval_size, train_seed, eval_seed, kinds, length) -> TaskData:
    from .datasets.timeseries import score_answer, timeseries_qa
    from .multimodal_lm import Example

    def target(item) -> str:
        # With step labels the encoder places a spike to its patch, and the label is what the LLM can copy:
        # spike positions are taught as the centre step of the patch holding the spike (within the grader's
        # tolerance of half a patch). The held-out answers are still graded against the exact step.
        if item.kind == "spike_position" and getattr(encoder, "step_labels", False):
            return str(encoder.centre_step(int(item.answer), int(item.attributes["length"])))
        return item.answer

    splits = {}
    for split, size, seed in (("train", train_size, train_seed), ("eval", eval_size, eval_seed)):
        pairs = timeseries_qa(size, seed, length, kinds=tuple(kinds))
        features = encode([series for series, _ in pairs], split)
        splits[split] = ([Example(f"<ts>\n{item.question}", [feature], target(item)) for (_, item), feature in zip(pairs, features)],
                         [item for _, item in pairs], [series for series, _ in pairs])
    eval_items = splits["eval"][1]
    grade = accuracy_grader(eval_items, score_answer)
    return TaskData("timeseries-qa", "ts", encoder.identity, encoder.feature_dim, splits["train"][0], splits["eval"][0], grade,
                    [item.kind for item in eval_items], eval_items, splits["eval"][2], splits["train"][2])


def _speech_task(encoder, encode, train_size, eval_size, seed, folder: Path | None, progress: bool) -> TaskData:
    from .datasets.speech import spoken_sentences
    from .multimodal_lm import Example

    # One draw without repetition, then split: the sentence pool is finite, and two separate draws
    # would put the same sentence in both splits.
    spoken = spoken_sentences(train_size + eval_size, seed, folder, progress=progress)
    features = encode([str(item.path) for item in spoken], "train + eval")
    examples = [Example(f"<audio>\n{SPEECH_PROMPT}", [feature], item.transcript) for item, feature in zip(spoken, features)]
    references = [item.transcript for item in spoken[train_size:]]

    def grade(index: int, predicted: str) -> dict[str, float]:
        return {"wer": word_error_rate(references[index], predicted)}

    return TaskData("speech-transcription", "audio", encoder.identity, encoder.feature_dim, examples[:train_size],
                    examples[train_size:], grade, ["transcript"] * len(references), references,
                    [item.path for item in spoken[train_size:]], [item.path for item in spoken[:train_size]])


def _scenes_task(encoder, encode, train_size, eval_size, train_seed, eval_seed) -> TaskData:
    from .datasets.scenes import scene_examples, score_answer
    from .multimodal_lm import Example

    splits = {}
    for split, size, seed in (("train", train_size, train_seed), ("eval", eval_size, eval_seed)):
        scenes = scene_examples(size, seed)  # every question of every scene; the scene's features are shared
        features = encode([scene.image for scene in scenes], split)
        pairs = [(scene.image, feature, item) for scene, feature in zip(scenes, features) for item in scene.qa]
        splits[split] = ([Example(f"<image>\n{item.question}", [feature], item.answer) for _, feature, item in pairs],
                         [item for _, _, item in pairs], [image for image, _, _ in pairs])
    eval_items = splits["eval"][1]
    grade = accuracy_grader(eval_items, score_answer)
    return TaskData("scenes", "image", encoder.identity, encoder.feature_dim, splits["train"][0], splits["eval"][0], grade,
                    [item.kind for item in eval_items], eval_items, splits["eval"][2], splits["train"][2])


# ------------------------------------------------------------------------------------------------ the LLM


@dataclass
class LoadedLLM:
    model: Any
    tokenizer: Any
    model_id: str       # what the user named (a hub id, or a path)
    path: Path          # where the weights were read from


def find_llm(name: str | None = None, *, purpose: str = "train connector", progress: Callable | None = None,
             download: bool = True) -> Any:
    """Where an LLM's weights are (a ModelSource): a local folder, the packaged Qwen, or the hub. With
    ``download=False`` nothing is downloaded, joined or converted (the packaged Qwen is only peeked at)."""
    from ..config import current_settings
    from ..packaged_llm import QWEN_CODER_05B, packaged_llm_locator
    from ..resolve import HubLocation, resolve_model

    settings = current_settings()
    model_id = (name or QWEN_CODER_05B).strip()
    return resolve_model(model_id, tool=purpose, packaged={QWEN_CODER_05B: packaged_llm_locator(settings, progress)},
                         hub=HubLocation(model_id) if not Path(model_id).expanduser().exists() else None,
                         offline=settings.offline, download=download)


def load_llm(name: str | None = None, *, device: str = "cpu", progress: Callable | None = None,
             purpose: str = "train connector") -> LoadedLLM:
    """A causal LM and its tokenizer: the packaged Qwen2.5-Coder-0.5B by default, else a hub id or local folder.

    On CUDA the frozen weights are held in bf16 (fp16 without bf16 support); connectors and LoRA stay fp32
    and autocast does the rest. On CPU everything is fp32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..packaged_llm import QWEN_CODER_05B

    model_id = (name or QWEN_CODER_05B).strip()
    source = find_llm(model_id, purpose=purpose, progress=progress)
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path))
        model = AutoModelForCausalLM.from_pretrained(str(source.path), dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{purpose}: LLM {model_id!r}: {source.path} is not a causal language model ({exc})") from None
    return LoadedLLM(model.to(device), tokenizer, model_id, source.path)


def build_model(llm: LoadedLLM, data_modality: str, encoder_identity: str, feature_dim: int, connector: str,
                connector_options: dict[str, Any] | None = None):
    """A MultimodalLM with one fresh connector from the encoder's width to the LLM's (fp32 master weights)."""
    import torch

    from .connectors import build_connector
    from .multimodal_lm import MultimodalLM

    hidden = llm.model.get_input_embeddings().embedding_dim
    built = build_connector(connector, feature_dim, hidden, **(connector_options or {}))
    return MultimodalLM(llm.model, llm.tokenizer, {data_modality: built}, encoder_identities={data_modality: encoder_identity},
                        connector_dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ argparse


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
    from ..cli_planner import add_train_planner_parser

    add_train_planner_parser(what)
    tasks = "; ".join(f"{name}: {info.instruction} ({info.modality}, encoder {info.default_encoder})" for name, info in TASKS.items())
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
    parser.add_argument("--lr", type=_learning_rate, help=f"peak learning rate (default 1e-3 stage 1, {DEFAULT_LR_STAGE2:g} stage 2)")
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
    from .train import FINAL_CHECKPOINT, TRAINER_STATE

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
    from ..resolve import pick_device

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
    console.print(f"checkpoint: {result.checkpoint}\nloss curve: {result.loss_curve}\nsummary:    {result.summary_path}"
                  + (f"\nexported:   {exported}" if exported else ""))
    return 0
