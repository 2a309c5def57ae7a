"""Asking a trained native checkpoint about media: the core of the ``native-chat`` tool, and the planner's perception.

A checkpoint (``anymoda train connector --out RUN``) names its LLM, its frozen encoders and its connectors; the
``native-chat`` tool (``tools/native_chat.py``) loads all three through the model pool into a :class:`NativeModel`,
and :func:`ask` puts one question about some media to it. :func:`planner_perception` gives the planner a look at
attached media through the same tool, reached through the registry (:func:`~orchestrator.tooling.registry.builtin_tool`),
so the engine never imports the ``tools`` package. Nothing here imports torch until a model is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AnymodaError, InvalidInputError, ModelNotAvailableError
from ..models.pool import measure_size
from ..storage.artifacts import Artifact, ArtifactKind
from ..tooling.registry import builtin_tool

TOOL = "native-chat"  # the built-in tool that loads checkpoints (through the model pool)
# Tool input name -> (modality of the native path, artifact kind); the order placeholders take in the prompt.
MEDIA_INPUTS = {"image": ("image", ArtifactKind.IMAGE), "audio": ("audio", ArtifactKind.AUDIO),
                "time_series": ("ts", ArtifactKind.TIME_SERIES)}
MODALITY_INPUT = {modality: name for name, (modality, _) in MEDIA_INPUTS.items()}


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint inside ``path``: the folder itself, or a training run's ``checkpoint/``."""
    from .metadata import FINAL_CHECKPOINT, METADATA_FILE

    path = Path(path).expanduser()
    if (path / METADATA_FILE).is_file():
        return path
    if (path / FINAL_CHECKPOINT / METADATA_FILE).is_file():
        return path / FINAL_CHECKPOINT
    raise ModelNotAvailableError(
        f"tool 'native-chat': {str(path)!r} is not a native checkpoint (no {METADATA_FILE} in it or in its "
        f"{FINAL_CHECKPOINT}/ folder); give the folder `anymoda train connector --out` wrote"
    )


@dataclass
class NativeModel:
    """A loaded checkpoint: what the native-chat tool keeps in the model pool."""

    model: Any                      # MultimodalLM, in eval mode
    encoders: dict[str, Any]        # modality -> frozen FeatureEncoder
    metadata: dict[str, Any]        # the checkpoint's native.json
    folder: Path

    @property
    def anymoda_size_bytes(self) -> int | None:
        return measure_size(self.model)

    @property
    def modalities(self) -> list[str]:
        return sorted(self.encoders)

    @property
    def extra(self) -> dict[str, Any]:
        return self.metadata.get("extra") or {}


def ask(native: NativeModel, question: str, media: dict[str, Any], *, max_new_tokens: int = 32) -> str:
    """One question about ``media`` (tool input name -> value) through the loaded native model.

    The prompt has the layout training used: the media placeholders, a newline, the question.
    """
    from .feature_cache import encode_cached
    from .multimodal_lm import PLACEHOLDERS, Example, escape_placeholders

    features, placeholders = [], []
    for name, (modality, _) in MEDIA_INPUTS.items():
        if name not in media:
            continue
        if modality not in native.encoders:
            perceived = ", ".join(MODALITY_INPUT[m] for m in native.modalities)
            raise InvalidInputError(
                f"tool 'native-chat': the checkpoint {native.folder} perceives {perceived} only; "
                f"it cannot look at the {name} input"
            )
        features.append(encode_cached(native.encoders[modality], media[name], None))
        placeholders.append(PLACEHOLDERS[modality])
    prompt = "".join(placeholders) + "\n" + escape_placeholders(" ".join(question.split()))
    return native.model.generate([Example(prompt, features)], max_new_tokens=max_new_tokens)[0]


# ------------------------------------------------------------------------------------------------ planner perception

# What the planner is told about an attached item, by the task the checkpoint was trained on: the
# questions asked (as the training data phrased them) and the label of each answer.
_TIMESERIES_LABELS = {"trend": "trend", "seasonality": "repeating cycle", "period": "period (steps)",
                      "spike_count": "spikes", "spike_position": "spike at step", "description": "summary"}


def _perception_questions(native: NativeModel) -> list[tuple[str, str]]:
    task = native.extra.get("task")
    if task == "timeseries-qa":
        from .datasets.timeseries import timeseries_qa
        from .tasks import TIMESERIES_KINDS

        recorded = (native.extra.get("cli") or {}).get("qa_kinds")
        kinds = tuple(recorded.split(",")) if recorded else TIMESERIES_KINDS
        # One question per kind in the training data's own phrasing (drawn from its generator, fixed seed).
        return [(_TIMESERIES_LABELS.get(kind, kind), timeseries_qa(1, 0, kinds=(kind,))[0][1].question) for kind in kinds]
    if task == "speech-transcription":
        from .tasks import SPEECH_PROMPT

        return [("speech", SPEECH_PROMPT)]
    return [("content", "Describe it in one sentence.")]


def describe_media_for_planner(checkpoint: str | Path, artifact: Artifact | Any, *, store: Any = None,
                               tool: Any = None, max_new_tokens: int = 24) -> str:
    """One line about an attached media item, as the trained native model perceives it.

    ``artifact`` is a stored :class:`Artifact` (then ``store`` decodes it) or a value (PIL image,
    AudioClip, TimeSeries). The model loads through the pool like the tool does (``tool``: a native-chat
    tool instance; by default the built-in one on ``checkpoint``). Raises InvalidInputError when the
    checkpoint does not perceive that kind of media (see :func:`perceives`).
    """
    tool = tool or builtin_tool(TOOL, required=True)(model=str(checkpoint))
    if isinstance(artifact, Artifact):
        if store is None:
            raise InvalidInputError("describe_media_for_planner: a stored artifact needs the store to read it from")
        value, kind, label = store.decode(artifact), artifact.kind, artifact.id
    else:
        value, kind, label = artifact, _kind_of(artifact), "the attachment"
    name = next((n for n, (_, k) in MEDIA_INPUTS.items() if k is kind), None)
    if name is None:
        raise InvalidInputError(f"describe_media_for_planner: {kind.value} is not media the native path perceives")
    with tool.loaded_model() as native:
        answers = [f"{label_text}: {ask(native, question, {name: value}, max_new_tokens=max_new_tokens)}"
                   for label_text, question in _perception_questions(native)]
    return f"{label} ({kind.value}) as the trained native model perceives it: " + "; ".join(answers)


def perceives(checkpoint: str | Path) -> set[ArtifactKind]:
    """The artifact kinds a checkpoint can look at (read from its metadata; nothing is loaded)."""
    from .metadata import read_metadata

    encoders = read_metadata(checkpoint_folder(checkpoint))["encoders"]
    return {kind for modality, kind in MEDIA_INPUTS.values() if modality in encoders}


def _kind_of(value: Any) -> ArtifactKind:
    from PIL import Image

    from ..storage.media import AudioClip, TimeSeries

    if isinstance(value, Image.Image):
        return ArtifactKind.IMAGE
    if isinstance(value, AudioClip):
        return ArtifactKind.AUDIO
    if isinstance(value, TimeSeries):
        return ArtifactKind.TIME_SERIES
    raise InvalidInputError(f"describe_media_for_planner: expected an image, AudioClip or TimeSeries, got {type(value).__name__}")


def planner_perception(settings: Any, store: Any, pool: Any = None) -> Any:
    """The planner's eyes on attached media, when a trained native checkpoint is configured
    (``[models] native-chat``): a function from an attached artifact to a short note of what the model
    perceives in it (None for kinds it does not perceive, or when it fails: the plan goes on without).
    None when nothing is configured, or when the built-in native-chat tool is not installed. Notes are kept
    per artifact id, so a re-plan asks again for nothing."""
    checkpoint = settings.models.get(TOOL)
    tool_class = builtin_tool(TOOL) if checkpoint else None
    if tool_class is None:
        return None
    try:
        kinds = perceives(checkpoint)
    except AnymodaError:
        return None
    tool = tool_class(settings=settings, pool=pool)
    notes: dict[str, str | None] = {}

    def perceive(artifact: Artifact) -> str | None:
        if artifact.kind not in kinds:
            return None
        if artifact.id not in notes:
            try:
                line = describe_media_for_planner(checkpoint, artifact, store=store, tool=tool)
                notes[artifact.id] = " ".join(line.split(" perceives it: ", 1)[-1].split())[:240]
            except AnymodaError:
                notes[artifact.id] = None
        return notes[artifact.id]

    return perceive
