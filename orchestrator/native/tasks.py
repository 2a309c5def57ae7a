"""The native path's offline training tasks: examples generated from a seed, their media encoded once, graders.

``timeseries-qa`` (trend, seasonality and spike-position questions about generated series), ``speech-transcription``
(Piper-spoken sentences) and ``scenes`` (drawn scenes with questions and captions). :func:`prepare_task` is what
``anymoda train connector``, the connector benchmark and the native-chat tool's perception questions share.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:  # the trainer imports torch: only loaded when a task is prepared
    from .train import Grader


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
SPEECH_PROMPT = "Transcribe the speech."
# What timeseries-qa encodes with by default for a tokenwise connector (linear, mlpNx_gelu); resamplers get ts-patch.
TIMESERIES_LABELLED_ENCODER = "ts-patch@steps-after"
# The attribute questions of the issue: trend direction, has-seasonality, spike position (within a tolerance).
TIMESERIES_KINDS = ("trend", "seasonality", "spike_position")

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
