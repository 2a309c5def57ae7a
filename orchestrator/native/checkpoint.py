"""Checkpoints of a MultimodalLM's trained parts, and rebuilding a whole model from one.

A checkpoint is a folder:

- ``native.json``: format version, every connector's spec, encoder identities, the LLM's identity
  (name or path, hidden size, vocabulary size), the placeholders, LoRA settings, the step, caller extras;
- ``connectors.safetensors``: connector weights (no pickle anywhere);
- ``lora/``: the LoRA adapter, saved and loaded by peft, when stage 2 enabled one;
- ``tokenizer/``: the tokenizer the prompts were built with (chat template included);
- ``optimizer.safetensors`` + ``optimizer.json``: optimizer (and scheduler) state for resuming, when given.

Loading never re-initialises silently: a different connector kind or shape, a different LLM width or
vocabulary, a different encoder, or a different LoRA shape is a :class:`CheckpointMismatchError` that
names the modality, the field and both values.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import AnymodaError, InvalidInputError
from ..extras import import_extra
from .connectors import connector_from_spec
from .metadata import CHECKPOINT_FORMAT, FORMAT_VERSION, METADATA_FILE, read_metadata
from .multimodal_lm import PLACEHOLDERS, MultimodalLM

CONNECTORS_FILE = "connectors.safetensors"
LORA_FOLDER = "lora"
TOKENIZER_FOLDER = "tokenizer"
OPTIMIZER_TENSORS_FILE = "optimizer.safetensors"
OPTIMIZER_STATE_FILE = "optimizer.json"


class CheckpointMismatchError(AnymodaError, ValueError):
    """A checkpoint does not fit the model it is loaded into; the message names what differs."""


def save_checkpoint(path: Path | str, model: MultimodalLM, *, extra: dict[str, Any] | None = None,
                    step: int | None = None, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, save_tokenizer: bool = True) -> Path:
    """Write a checkpoint folder at ``path`` (replacing one already there, atomically) and return it."""
    if not isinstance(model, MultimodalLM):
        raise InvalidInputError(f"save_checkpoint needs a MultimodalLM, got {type(model).__name__}")
    extra = dict(extra or {})
    step = extra.get("step") if step is None else step
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        from safetensors.torch import save_file

        weights = {key: tensor.detach().to("cpu").contiguous() for key, tensor in model.connectors.state_dict().items()}
        save_file(weights, str(staging / CONNECTORS_FILE))
        if model.lora_settings is not None:
            model.llm.save_pretrained(str(staging / LORA_FOLDER))  # peft: adapter_config.json + safetensors
        if save_tokenizer:
            model.tokenizer.save_pretrained(str(staging / TOKENIZER_FOLDER))
        if optimizer is not None:
            _save_optimizer(staging, optimizer, scheduler)
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "version": FORMAT_VERSION,
            "step": step,
            "connectors": {modality: connector.spec() for modality, connector in model.connectors.items()},
            "connector_parameters": {modality: connector.num_parameters()
                                     for modality, connector in model.connectors.items()},
            "encoders": dict(model.encoder_identities),
            "llm": model.llm_identity(),
            "placeholders": dict(PLACEHOLDERS),
            "lora": model.lora_settings,
            "extra": extra,
        }
        try:
            text = json.dumps(metadata, indent=2, sort_keys=True)
        except TypeError as error:
            raise InvalidInputError(f"checkpoint extra must be JSON-serialisable: {error}") from None
        (staging / METADATA_FILE).write_text(text + "\n", encoding="utf-8")
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_checkpoint(path: Path | str, model: MultimodalLM, *, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None) -> dict[str, Any]:
    """Load the connectors (and LoRA, optimizer, scheduler state) into ``model``; return the metadata.

    A model without LoRA gets the checkpoint's adapter attached; a model whose LoRA was enabled before
    loading a stage-1 checkpoint (which has none) keeps its own fresh adapter.
    """
    folder = Path(path)
    metadata = read_metadata(folder)
    _check_llm(folder, metadata["llm"], model.llm_identity())
    _check_connectors(folder, metadata["connectors"], model)
    _check_encoders(folder, metadata["encoders"], model)
    _check_placeholders(folder, metadata.get("placeholders", PLACEHOLDERS))
    _load_connector_weights(folder, model)
    if metadata.get("lora") is not None:
        _load_lora(folder, metadata["lora"], model)
    if optimizer is not None:
        _load_optimizer(folder, optimizer, scheduler)
    return metadata


def load_multimodal_lm(path: Path | str, llm: Any | None = None, tokenizer: Any | None = None, *,
                       device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MultimodalLM:
    """A ready MultimodalLM from a checkpoint folder, in eval mode.

    Without ``llm`` the LLM is loaded from the recorded path, else the recorded model id (a path, then
    packaged weights, then the Hugging Face cache). Without ``tokenizer`` the checkpoint's own copy is used.
    """
    folder = Path(path)
    metadata = read_metadata(folder)
    if tokenizer is None:
        from transformers import AutoTokenizer

        saved = folder / TOKENIZER_FOLDER
        tokenizer = AutoTokenizer.from_pretrained(str(saved if saved.is_dir() else _llm_location(metadata["llm"])))
    if llm is None:
        from transformers import AutoModelForCausalLM

        options = {} if dtype is None else {"dtype": dtype}
        llm = AutoModelForCausalLM.from_pretrained(str(_llm_location(metadata["llm"])), **options)
    elif dtype is not None:
        llm = llm.to(dtype=dtype)
    if device is not None:
        llm = llm.to(device)
    connectors = {modality: connector_from_spec(spec) for modality, spec in metadata["connectors"].items()}
    model = MultimodalLM(llm, tokenizer, connectors, encoder_identities=metadata["encoders"])
    load_checkpoint(folder, model)
    return model.eval()


def export_connector(checkpoint: Path | str, destination: Path | str, *, dtype: torch.dtype = torch.float16) -> Path:
    """A checkpoint's trained parts alone, small enough to ship: ``native.json`` and the connector weights in
    ``dtype`` (and ``lora/`` when it has one); no tokenizer (the LLM's own is used) and no optimiser or trainer
    state. Loads like any checkpoint (the weights are cast back to the connector's dtype on loading)."""
    from safetensors.torch import load_file, save_file

    source = Path(checkpoint)
    metadata = read_metadata(source)
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        weights = {key: tensor.to(dtype).contiguous() for key, tensor in load_file(str(source / CONNECTORS_FILE)).items()}
        save_file(weights, str(staging / CONNECTORS_FILE), metadata={"dtype": str(dtype).removeprefix("torch.")})
        if metadata.get("lora") is not None:
            shutil.copytree(source / LORA_FOLDER, staging / LORA_FOLDER)
        extra = dict(metadata.get("extra") or {})
        extra.pop("train_config", None)
        metadata["extra"] = extra
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _readable_by_all(staging)  # mkdtemp makes it private; what is exported is meant to be shipped
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _readable_by_all(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)


# --------------------------------------------------------------------------- checks
def _mismatch(folder: Path, subject: str, field: str, in_checkpoint: Any, in_model: Any) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"checkpoint {folder}: {subject}: field {field!r} is {in_checkpoint!r} in the checkpoint "
        f"but {in_model!r} in the model")


def _check_llm(folder: Path, recorded: dict[str, Any], actual: dict[str, Any]) -> None:
    # The name may legitimately differ (another machine, another copy); the shapes the connectors feed may not.
    for field in ("hidden_size", "vocab_size"):
        if recorded.get(field) != actual[field]:
            raise _mismatch(folder, "LLM", field, recorded.get(field), actual[field])


def _check_connectors(folder: Path, recorded: dict[str, dict[str, Any]], model: MultimodalLM) -> None:
    present = set(model.connectors)
    if set(recorded) != present:
        raise CheckpointMismatchError(
            f"checkpoint {folder}: it has connectors for {sorted(recorded)} but the model has {sorted(present)}")
    for modality, spec in recorded.items():
        actual = model.connectors[modality].spec()
        for field in ["kind", "in_dim", "out_dim", *sorted((set(spec) | set(actual)) - {"kind", "in_dim", "out_dim"})]:
            if spec.get(field) != actual.get(field):
                raise _mismatch(folder, f"{modality} connector", field, spec.get(field), actual.get(field))


def _check_encoders(folder: Path, recorded: dict[str, str], model: MultimodalLM) -> None:
    for modality, identity in recorded.items():
        current = model.encoder_identities.get(modality)
        if current is None:
            model.encoder_identities[modality] = identity  # the model did not say; the checkpoint does
        elif current != identity:
            raise _mismatch(folder, f"{modality} encoder", "identity", identity, current)


def _check_placeholders(folder: Path, recorded: Any) -> None:
    if recorded != PLACEHOLDERS:
        raise CheckpointMismatchError(
            f"checkpoint {folder}: it was trained with placeholders {recorded!r}, this anymoda uses {PLACEHOLDERS!r}")


def _load_connector_weights(folder: Path, model: MultimodalLM) -> None:
    from safetensors.torch import load_file

    weights_file = folder / CONNECTORS_FILE
    if not weights_file.is_file():
        raise InvalidInputError(f"checkpoint {folder}: {CONNECTORS_FILE} is missing")
    saved = load_file(str(weights_file))
    expected = model.connectors.state_dict()
    for key in sorted(set(saved) | set(expected)):
        modality = key.split(".", 1)[0]
        if key not in saved:
            raise CheckpointMismatchError(f"checkpoint {folder}: {modality} connector: weight {key!r} is missing")
        if key not in expected:
            raise CheckpointMismatchError(f"checkpoint {folder}: {modality} connector: unexpected weight {key!r}")
        if tuple(saved[key].shape) != tuple(expected[key].shape):
            raise _mismatch(folder, f"{modality} connector", f"shape of {key}",
                            list(saved[key].shape), list(expected[key].shape))
    # load_state_dict copies into the existing parameters, keeping their device and dtype.
    model.connectors.load_state_dict(saved, strict=True)


def _load_lora(folder: Path, recorded: dict[str, Any], model: MultimodalLM) -> None:
    lora_folder = folder / LORA_FOLDER
    if not lora_folder.is_dir():
        raise InvalidInputError(f"checkpoint {folder}: it records LoRA settings but {LORA_FOLDER}/ is missing")
    peft = import_extra("peft", "loading a checkpoint with a LoRA adapter")
    if model.lora_settings is None:
        model.llm = peft.PeftModel.from_pretrained(model.llm, str(lora_folder), is_trainable=True)
        model.lora_settings = dict(recorded)
        return
    for field in ("r", "alpha", "target_modules"):
        if recorded.get(field) != model.lora_settings.get(field):
            raise _mismatch(folder, "LoRA adapter", field, recorded.get(field), model.lora_settings.get(field))
    from peft.utils import load_peft_weights

    result = peft.set_peft_model_state_dict(model.llm, load_peft_weights(str(lora_folder), device="cpu"))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointMismatchError(f"checkpoint {folder}: LoRA adapter: weights the model has no place for: {unexpected[:5]}")


# --------------------------------------------------------------------------- optimizer state, without pickle
def _save_optimizer(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any | None) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_file(tensors, str(folder / OPTIMIZER_TENSORS_FILE))
    record = {"param_groups": state["param_groups"], "scalars": scalars,
              "scheduler": None if scheduler is None else scheduler.state_dict()}
    try:
        text = json.dumps(record, indent=1)
    except TypeError as error:
        raise InvalidInputError(f"optimizer or scheduler state is not JSON-serialisable: {error}") from None
    (folder / OPTIMIZER_STATE_FILE).write_text(text + "\n", encoding="utf-8")


def _load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any | None) -> None:
    from safetensors.torch import load_file

    tensors_file, state_file = folder / OPTIMIZER_TENSORS_FILE, folder / OPTIMIZER_STATE_FILE
    if not tensors_file.is_file() or not state_file.is_file():
        raise InvalidInputError(f"checkpoint {folder}: no optimizer state was saved in it")
    record = json.loads(state_file.read_text(encoding="utf-8"))
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in load_file(str(tensors_file)).items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in record["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    saved_sizes = [len(group["params"]) for group in record["param_groups"]]
    current_sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != current_sizes:
        raise _mismatch(folder, "optimizer", "parameters per group", saved_sizes, current_sizes)
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    if scheduler is not None:
        if record.get("scheduler") is None:
            raise InvalidInputError(f"checkpoint {folder}: no scheduler state was saved in it")
        scheduler.load_state_dict(record["scheduler"])


def _replace_folder(staging: Path, target: Path) -> None:
    """Swap ``staging`` in at ``target``: a crash leaves either the old or the new checkpoint whole."""
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        target.rename(previous)
    staging.rename(target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _llm_location(recorded: dict[str, Any]) -> Path:
    """Where to load the recorded LLM from on this machine."""
    from ..config import current_settings
    from ..errors import ModelNotAvailableError
    from ..models.packaged_llm import QWEN_CODER_05B, packaged_llm_locator
    from ..models.resolve import HubLocation, resolve_model

    candidates = [value for value in (recorded.get("name_or_path"), recorded.get("model_id")) if value]
    if not candidates:
        raise InvalidInputError("the checkpoint records no LLM name or path: pass the LLM explicitly")
    settings = current_settings()
    last_error: Exception | None = None
    for candidate in candidates:
        if Path(candidate).expanduser().exists():
            return Path(candidate).expanduser()
        try:
            source = resolve_model(candidate, tool="native-lm", packaged={QWEN_CODER_05B: packaged_llm_locator(settings)},
                                   hub=HubLocation(candidate), offline=settings.offline)
        except (ModelNotAvailableError, InvalidInputError) as error:
            last_error = error
            continue
        return source.path
    raise ModelNotAvailableError(f"cannot find the checkpoint's LLM ({' or '.join(candidates)}): {last_error}")
