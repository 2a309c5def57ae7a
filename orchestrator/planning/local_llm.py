"""A planner backend that runs a causal LM in this process, with grammar-constrained decoding.

The default model is the packaged Qwen2.5-Coder-0.5B-Instruct (:mod:`orchestrator.models.packaged_llm`),
so planning works offline; any transformers causal LM with a chat template works by hub id or path.

Constrained decoding uses llguidance, picked with ``benchmarks/constrained_decoding.py`` (plan JSON
Schema of 32 tools, Qwen tokenizer, 2-core CPU): llguidance compiles it in 0.04 s and a per-line plan
grammar in 0.01 s, with masks in 0.2-0.5 ms per token (under 1 % of a 40-130 ms forward pass);
xgrammar computes masks faster (0.04 ms) but compiles in 0.6 s, which the planner would pay on every
line, and its wheel requires triton (~1 GB) on Linux; outlines-core did not finish indexing the
schema within 180 s. llguidance is a 3 MB wheel with no dependencies and takes Lark grammars.

On a CPU the model's linear layers are quantised to int8 (``quantize="auto"``): decoding is memory
bound and int8 weights make each forward pass ~3x faster (measured 129 -> 42 ms per token for the
0.5B model on 2 cores); the packaged weights were 4-bit to begin with, so little is lost.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings, current_settings
from ..errors import InvalidInputError
from ..models.packaged_llm import QWEN_CODER_05B, packaged_llm_locator
from ..models.resolve import HubLocation, resolve_model
from .constrained_decoding import Generation, GrammarDecoder

QUANTIZE_CHOICES = ("auto", "int8", "none")


@dataclass
class LocalLLMBackend:
    """``complete()`` runs the model here; ``grammar`` (a per-segment Lark callback) or ``schema`` constrain it."""

    model: str = QWEN_CODER_05B
    device: str = "cpu"
    quantize: str = "auto"
    max_new_tokens: int = 320
    settings: Settings | None = None
    name: str = "local"
    accepts_grammar: bool = True
    streams: bool = True  # complete() takes on_text= and calls it with each new piece of text
    last_generation: Generation | None = field(default=None, init=False)
    _decoder: GrammarDecoder | None = field(default=None, init=False, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_CHOICES:
            raise InvalidInputError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {self.quantize!r}")
        if self.max_new_tokens < 1:
            raise InvalidInputError("max_new_tokens must be at least 1")

    @property
    def decoder(self) -> GrammarDecoder:
        with self._load_lock:
            if self._decoder is None:
                self._decoder = self._load()
            return self._decoder

    def _load(self) -> GrammarDecoder:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        settings = self.settings or current_settings()
        source = resolve_model(self.model, tool="planner", packaged={QWEN_CODER_05B: packaged_llm_locator(settings)},
                               hub=HubLocation(self.model), offline=settings.offline)
        transformers_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(source.path))
        if tokenizer.chat_template is None:
            raise InvalidInputError(f"planner model {self.model!r} has no chat template; use an instruct/chat model")
        dtype = torch.float32 if self.device == "cpu" else torch.float16
        model = AutoModelForCausalLM.from_pretrained(str(source.path), dtype=dtype).to(self.device).eval()
        if self.device == "cpu" and self.quantize in ("auto", "int8"):
            with warnings.catch_warnings():
                # torch 2.13 announces that its quantized tensor constructors will move to torchao; the int8
                # layers still work, and the notice otherwise greets every user of `anymoda run` on stderr.
                warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return GrammarDecoder(model, tokenizer)

    def prompt_ids(self, messages: list[dict[str, str]], *, generation: bool = True) -> list[int]:
        rendered = self.decoder.tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)
        return self.decoder.tokenizer(rendered, add_special_tokens=False)["input_ids"]

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                 grammar: Callable[[str], str | None] | None = None,
                 stop_bias: Callable[[str], float] | None = None, on_text: Callable[[str], None] | None = None,
                 max_new_tokens: int | None = None) -> str:
        segments = grammar
        if segments is None and schema is not None:
            lark = "start: %json " + json.dumps(schema)
            segments = lambda written: None if written else lark  # noqa: E731  one segment: the whole JSON
        generation = self.decoder.generate(self.prompt_ids(messages), segments=segments,
                                           max_new_tokens=max_new_tokens or self.max_new_tokens, stop_bias=stop_bias,
                                           on_text=on_text)
        self.last_generation = generation
        if grammar is not None and generation.stopped_by == "length" and "\n" in generation.text:
            # Cut off mid-line: every whole line was valid under its grammar, the partial one is not.
            return generation.text.rsplit("\n", 1)[0]
        return generation.text

    def warm_up(self, messages: list[dict[str, str]]) -> None:
        """Prefill a prompt prefix (the planner's system message) so the first plan does not pay for it."""
        self.decoder.prefill(self.prompt_ids(messages, generation=False))
