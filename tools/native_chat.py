"""native-chat: ask an LLM that perceives media directly (a connector trained with ``anymoda train connector``).

The model is a checkpoint folder, configured like any tool's model: ``[models] native-chat = "runs/ts/checkpoint"``
(or ``ANYMODA_MODEL_NATIVE_CHAT``, or ``--model`` on the command line). The checkpoint names its LLM, its
frozen encoders and its connectors; loading rebuilds all three and goes through the model pool, so the
planner's perception (:func:`describe_media_for_planner`) and the tool share one loaded copy.

Without one configured, the tool uses the connector anymoda ships (:data:`SHIPPED_CONNECTOR`, in
``orchestrator/data/native_ts``): time-series trend and spike-position questions through the packaged
Qwen2.5-Coder-0.5B, offline. The planner is shown what a native model perceives only when a checkpoint is
configured (:func:`planner_perception`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.models.pool import measure_size
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.storage.artifacts import Artifact, ArtifactKind
from orchestrator.tooling.tool import (
    Availability,
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

NO_CHECKPOINT = "trained-native-checkpoint"  # the "model" when none ships: a reminder that one must be trained first
# The connector that ships with anymoda (package data): trained by the command in the README's native-path section.
SHIPPED_CONNECTOR = "anymoda/native-ts-qwen2.5-coder-0.5b"
SHIPPED_FOLDER = ("data", "native_ts")
# Tool input name -> (modality of the native path, artifact kind); the order placeholders take in the prompt.
MEDIA_INPUTS = {"image": ("image", ArtifactKind.IMAGE), "audio": ("audio", ArtifactKind.AUDIO),
                "time_series": ("ts", ArtifactKind.TIME_SERIES)}
MODALITY_INPUT = {modality: name for name, (modality, _) in MEDIA_INPUTS.items()}
NOT_CONFIGURED = (
    "no trained native checkpoint is configured: train one with `anymoda train connector --task ... --out RUN` and set "
    "`[models] native-chat = \"RUN/checkpoint\"` in the config (or ANYMODA_MODEL_NATIVE_CHAT=RUN/checkpoint, or pass --model)"
)


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint inside ``path``: the folder itself, or a training run's ``checkpoint/``."""
    from orchestrator.native.metadata import FINAL_CHECKPOINT, METADATA_FILE

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
class _Native:
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


def shipped_connector_folder() -> Path | None:
    """Where the shipped connector lies (None when this installation has none)."""
    import orchestrator

    folder = Path(orchestrator.__file__).resolve().parent.joinpath(*SHIPPED_FOLDER)
    return folder if (folder / "native.json").is_file() else None


class NativeChat(Tool):
    name = "native-chat"
    task = "multimodal-chat"
    description = (
        "Answer a question about an attached time series, audio clip or image with a language model that perceives "
        "the media directly through a trained connector (no intermediate caption or transcript). Only works with a "
        "checkpoint trained by `anymoda train connector` for that kind of media (time-series attribute questions, "
        "speech transcription, scene questions)."
    )
    inputs = {
        "question": Input(ArtifactKind.TEXT, "the question or instruction about the media"),
        "image": Input(ArtifactKind.IMAGE, "an image (if the checkpoint perceives images)", required=False),
        "audio": Input(ArtifactKind.AUDIO, "an audio clip (if the checkpoint perceives audio)", required=False),
        "time_series": Input(ArtifactKind.TIME_SERIES, "a single-channel time series (if the checkpoint perceives series)",
                             required=False),
    }
    outputs = {"answer": Output(ArtifactKind.TEXT, "the model's answer")}
    params = {"max_new_tokens": Param(int, 32, "longest answer in tokens", minimum=1, maximum=512)}
    default_model = SHIPPED_CONNECTOR if shipped_connector_folder() is not None else NO_CHECKPOINT
    requires = ("torch", "transformers")
    uses_torch_device = True
    thread_safe = False  # one generate at a time on a shared model

    def hub_location(self, model_id: str) -> HubLocation | None:
        return None  # checkpoints are made here, never downloaded

    def packaged_weights(self) -> dict[str, Any]:
        return {SHIPPED_CONNECTOR: shipped_connector_folder}

    def _resolve(self, download: bool) -> ModelSource:
        if self.model_id == NO_CHECKPOINT:
            raise ModelNotAvailableError(f"tool {self.name!r}: {NOT_CONFIGURED}")
        source = super()._resolve(download)
        return ModelSource(source.model_id, checkpoint_folder(source.path), source.origin)

    def available(self) -> Availability:
        if self.model_id == NO_CHECKPOINT:
            return Availability(False, NOT_CONFIGURED, summary="no trained checkpoint configured")
        availability = super().available()
        if not availability or availability.source is None:
            return availability
        # The connector is only half of it: its LLM must be here too (looked for, never converted or downloaded).
        from orchestrator.native.llm import find_llm
        from orchestrator.native.metadata import read_metadata

        try:
            metadata = read_metadata(availability.source.path)
            find_llm(_recorded_llm(metadata), purpose=self.name, download=False)
        except (ModelNotAvailableError, InvalidInputError) as exc:
            return Availability(False, f"the checkpoint's LLM is not here: {exc}", summary="its LLM is not here")
        return availability

    def load(self, source: ModelSource, device: str) -> _Native:
        from orchestrator.native.checkpoint import (
            TOKENIZER_FOLDER,
            load_multimodal_lm,
            read_metadata,
        )
        from orchestrator.native.encoders import build_encoder
        from orchestrator.native.llm import load_llm

        metadata = read_metadata(source.path)
        llm_name = _recorded_llm(metadata)
        if not llm_name:
            raise InvalidInputError(f"tool {self.name!r}: checkpoint {source.path} records no LLM")
        llm = load_llm(llm_name, device=device, purpose=self.name)
        # A shipped (exported) connector carries no tokenizer: the LLM's own is the one it was trained with.
        own_tokenizer = (source.path / TOKENIZER_FOLDER).is_dir()
        model = load_multimodal_lm(source.path, llm=llm.model, tokenizer=None if own_tokenizer else llm.tokenizer,
                                   device=device)
        encoders = {modality: build_encoder(identity) for modality, identity in metadata["encoders"].items()}
        missing = sorted(set(metadata["connectors"]) - set(encoders))
        if missing:
            raise InvalidInputError(f"tool {self.name!r}: checkpoint {source.path} records no encoder for {', '.join(missing)}")
        return _Native(model, encoders, metadata, source.path)

    def validate(self, inputs: dict[str, Any], params: dict[str, Any]) -> None:
        question = inputs.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError(f"tool {self.name!r}: input 'question' is empty")
        if not any(name in inputs for name in MEDIA_INPUTS):
            raise InvalidInputError(
                f"tool {self.name!r} needs at least one media input to look at: {', '.join(MEDIA_INPUTS)}"
            )

    def run(self, native: _Native, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self.validate(inputs, params)
        answer = ask(native, inputs["question"], {name: inputs[name] for name in MEDIA_INPUTS if name in inputs},
                     max_new_tokens=params["max_new_tokens"])
        metadata = {"checkpoint": str(native.folder), "task": native.extra.get("task"),
                    "connectors": {m: spec["kind"] for m, spec in native.metadata["connectors"].items()},
                    "llm": native.extra.get("llm") or native.metadata["llm"].get("name_or_path")}
        return {"answer": OutputValue(answer, metadata)}


def _recorded_llm(metadata: dict[str, Any]) -> str | None:
    # The id the run was started with (e.g. the packaged Qwen's hub id) finds the LLM on any machine;
    # the recorded path only on the one it was trained on.
    return (metadata.get("extra") or {}).get("llm") or metadata["llm"].get("name_or_path")


def ask(native: _Native, question: str, media: dict[str, Any], *, max_new_tokens: int = 32) -> str:
    """One question about ``media`` (tool input name -> value) through the loaded native model.

    The prompt has the layout training used: the media placeholders, a newline, the question.
    """
    from orchestrator.native.feature_cache import encode_cached
    from orchestrator.native.multimodal_lm import (
        PLACEHOLDERS,
        Example,
        escape_placeholders,
    )

    features, placeholders = [], []
    for name, (modality, _) in MEDIA_INPUTS.items():
        if name not in media:
            continue
        if modality not in native.encoders:
            perceived = ", ".join(MODALITY_INPUT[m] for m in native.modalities)
            raise InvalidInputError(
                f"tool 'native-chat': the checkpoint {native.folder} perceives {perceived} only; it cannot look at the {name} input"
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


def _perception_questions(native: _Native) -> list[tuple[str, str]]:
    task = native.extra.get("task")
    if task == "timeseries-qa":
        from orchestrator.native.datasets.timeseries import timeseries_qa
        from orchestrator.native.tasks import TIMESERIES_KINDS

        recorded = (native.extra.get("cli") or {}).get("qa_kinds")
        kinds = tuple(recorded.split(",")) if recorded else TIMESERIES_KINDS
        # One question per kind in the training data's own phrasing (drawn from its generator, fixed seed).
        return [(_TIMESERIES_LABELS.get(kind, kind), timeseries_qa(1, 0, kinds=(kind,))[0][1].question) for kind in kinds]
    if task == "speech-transcription":
        from orchestrator.native.tasks import SPEECH_PROMPT

        return [("speech", SPEECH_PROMPT)]
    return [("content", "Describe it in one sentence.")]


def describe_media_for_planner(checkpoint: str | Path, artifact: Artifact | Any, *, store: Any = None,
                               tool: NativeChat | None = None, max_new_tokens: int = 24) -> str:
    """One line about an attached media item, as the trained native model perceives it.

    ``artifact`` is a stored :class:`Artifact` (then ``store`` decodes it) or a value (PIL image,
    AudioClip, TimeSeries). The model loads through the pool like the tool does. Raises
    InvalidInputError when the checkpoint does not perceive that kind of media (see :func:`perceives`).
    """
    tool = tool or NativeChat(model=str(checkpoint))
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
    from orchestrator.native.metadata import read_metadata

    encoders = read_metadata(checkpoint_folder(checkpoint))["encoders"]
    return {kind for modality, kind in MEDIA_INPUTS.values() if modality in encoders}


def _kind_of(value: Any) -> ArtifactKind:
    from PIL import Image

    from orchestrator.storage.media import AudioClip, TimeSeries

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
    None when nothing is configured. Notes are kept per artifact id, so a re-plan asks again for nothing."""
    from orchestrator.errors import AnymodaError

    checkpoint = settings.models.get(NativeChat.name)
    if not checkpoint:
        return None
    try:
        kinds = perceives(checkpoint)
    except AnymodaError:
        return None
    tool = NativeChat(settings=settings, pool=pool)
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
