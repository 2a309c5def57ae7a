"""native-chat: ask an LLM that perceives media directly (a connector trained with ``anymoda train connector``).

The model is a checkpoint folder, configured like any tool's model: ``[models] native-chat = "runs/ts/checkpoint"``
(or ``ANYMODA_MODEL_NATIVE_CHAT``, or ``--model`` on the command line). The checkpoint names its LLM, its
frozen encoders and its connectors; loading rebuilds all three and goes through the model pool, so the
planner's perception (:func:`describe_media_for_planner`) and the tool share one loaded copy. Asking a loaded
checkpoint and the planner's perception are the native path's code (:mod:`orchestrator.native.chat`); this module
is the tool around them.

Without one configured, the tool uses the connector anymoda ships (:data:`SHIPPED_CONNECTOR`, in
``orchestrator/data/native_ts``): time-series trend and spike-position questions through the packaged
Qwen2.5-Coder-0.5B, offline. The planner is shown what a native model perceives only when a checkpoint is
configured (:func:`planner_perception`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInputError, ModelNotAvailableError
from orchestrator.extras import installed, missing_extra
from orchestrator.models.resolve import HubLocation, ModelSource
from orchestrator.native.chat import (  # the native path's own code; named here too, where callers have found them
    MEDIA_INPUTS,
    MODALITY_INPUT,
    NativeModel,
    ask,
    checkpoint_folder,
    describe_media_for_planner,
    perceives,
    planner_perception,
)
from orchestrator.storage.artifacts import ArtifactKind
from orchestrator.tooling.tool import (
    Availability,
    Input,
    Output,
    OutputValue,
    Param,
    Tool,
)

__all__ = ["MEDIA_INPUTS", "MODALITY_INPUT", "NO_CHECKPOINT", "NOT_CONFIGURED", "SHIPPED_CONNECTOR", "NativeChat",
           "NativeModel", "ask", "checkpoint_folder", "describe_media_for_planner", "perceives", "planner_perception",
           "shipped_connector_folder"]

NO_CHECKPOINT = "trained-native-checkpoint"  # the "model" when none ships: a reminder that one must be trained first
# The connector that ships with anymoda (package data): trained by the command in the README's native-path section.
SHIPPED_CONNECTOR = "anymoda/native-ts-qwen2.5-coder-0.5b"
SHIPPED_FOLDER = ("data", "native_ts")
NOT_CONFIGURED = (
    "no trained native checkpoint is configured: train one with `anymoda train connector --task ... --out RUN` and set "
    "`[models] native-chat = \"RUN/checkpoint\"` in the config (or ANYMODA_MODEL_NATIVE_CHAT=RUN/checkpoint, or pass --model)"
)


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
        if metadata.get("lora") is not None and not installed("peft"):  # a stage-2 checkpoint carries a LoRA adapter
            return Availability(False, str(missing_extra("loading a checkpoint with a LoRA adapter", "peft")),
                                summary="needs peft")
        return availability

    def load(self, source: ModelSource, device: str) -> NativeModel:
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
        return NativeModel(model, encoders, metadata, source.path)

    def validate(self, inputs: dict[str, Any], params: dict[str, Any]) -> None:
        question = inputs.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError(f"tool {self.name!r}: input 'question' is empty")
        if not any(name in inputs for name in MEDIA_INPUTS):
            raise InvalidInputError(
                f"tool {self.name!r} needs at least one media input to look at: {', '.join(MEDIA_INPUTS)}"
            )

    def run(self, native: NativeModel, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
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
