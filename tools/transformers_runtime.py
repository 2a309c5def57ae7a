"""Transformers details several adapters share: which files of a hub repository to fetch, a checkpoint's model
type, its tokenizer (with the missing package named), the longest input it takes, and a quiet loading bar."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import ToolUnavailableError
from orchestrator.models.resolve import HubLocation, ModelSource

UNBOUNDED_TOKENIZER_LENGTH = 1_000_000  # tokenizers without a known limit report ~1e30

# What from_pretrained reads: configs, tokenizer files and PyTorch weights, not the TF / Flax / ONNX / Rust copies
# many repositories also carry. Both weight formats are allowed because some checkpoints (e.g. ViLT's) have
# only pytorch_model.bin; a repository with both costs a second download of the weights.
TRANSFORMERS_FILES = ("*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin")


def transformers_hub_location(model_id: str) -> HubLocation:
    return HubLocation(model_id, allow_patterns=TRANSFORMERS_FILES)


def model_type(path: Any) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path)).model_type


def quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a per-tensor loading bar is noise in the CLI's output


def load_tokenizer(source: ModelSource, tool: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source.path))
    except (ImportError, ValueError, OSError) as exc:
        message = str(exc)
        missing = next((name for name in ("sentencepiece", "protobuf", "tiktoken") if name in message.lower()), None)
        if missing:
            # Marian (opus-mt), M2M100 and T5-era slow tokenizers need sentencepiece at load time.
            raise ToolUnavailableError(
                f"tool {tool!r}: the tokenizer of {source.model_id} needs the Python package {missing}; "
                f"install it with pip install {missing}"
            ) from exc
        raise


def max_input_tokens(tokenizer: Any, config: Any, fallback: int = 512) -> int:
    """The longest input the model accepts, from the tokenizer's limit and the position embeddings."""
    limits = []
    if 0 < (tokenizer.model_max_length or 0) < UNBOUNDED_TOKENIZER_LENGTH:
        limits.append(int(tokenizer.model_max_length))
    for name in ("max_position_embeddings", "n_positions", "max_source_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
                # RoBERTa numbers positions from padding_idx + 1: 514 embeddings hold 512 tokens.
                value -= (getattr(config, "pad_token_id", None) or 1) + 1
            limits.append(value)
    return min(limits) if limits else fallback
