"""Torch details every transformers / diffusers adapter needs alike: the dtype for a device, seeded sampling."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Sampling in generate() and similar draws from torch's global generators (they take no Generator), so
# seeded sections are serialised process-wide and the global state is restored afterwards.
_GLOBAL_RNG = threading.Lock()


def torch_dtype(device: str, *, allow_bf16: bool = False) -> Any:
    """fp16 on CUDA (bf16 where allowed and supported), fp32 elsewhere.

    bf16 keeps fp32's range: LLM and T5 checkpoints are trained in it and some overflow in fp16.
    """
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    if allow_bf16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@contextmanager
def seeded_torch(seed: int, device: str) -> Iterator[None]:
    """Run a block with torch's global generators seeded, leaving them as they were afterwards."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with _GLOBAL_RNG, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
