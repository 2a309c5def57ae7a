"""The LLM of the native path: where its weights are, loading it, and a MultimodalLM with a fresh connector on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

QWEN_DEFAULT = "Qwen/Qwen2.5-Coder-0.5B-Instruct"  # orchestrator.models.packaged_llm.QWEN_CODER_05B, without importing it early

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
    from ..models.packaged_llm import QWEN_CODER_05B, packaged_llm_locator
    from ..models.resolve import HubLocation, resolve_model

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

    from ..models.packaged_llm import QWEN_CODER_05B

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
