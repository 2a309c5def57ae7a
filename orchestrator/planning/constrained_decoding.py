"""Greedy decoding of a causal LM under a grammar, built for small planners on a CPU.

Why not ``model.generate`` with a logits processor: on a 2-core CPU a 0.5B model spends ~50-130 ms
on every forward pass, and a plan is mostly text the model has no choice about. So this decoder

* keeps the KV cache of the previous call and reuses its longest common prefix with the next
  prompt (the system prompt with the tool list is shared by every plan, and a repair turn shares
  everything before it), so only the new part of a prompt is prefilled;
* feeds the tokens a grammar forces (the rest of a tool name once it is unambiguous, ``", text="``)
  in one forward pass instead of one pass each;
* drafts the continuation from the prompt when the last generated tokens occur there (a plan copies
  quoted text and file names from the request) and verifies the whole draft in one pass: exact under
  greedy decoding, so the output is the same as token-by-token decoding, only faster.

Grammars are llguidance's Lark dialect, given one *segment* at a time by a callback that sees the
text so far: the plan grammar of :mod:`orchestrator.planning.plan_syntax` changes after each line, because
which task outputs a later line may use depends on the tools the earlier lines chose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AnymodaError

SegmentGrammar = Callable[[str], "str | None"]  # text so far -> grammar of what may follow, None: stop


class GrammarError(AnymodaError):
    """A grammar could not be compiled, or decoding reached a state the grammar cannot leave."""


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: tuple[int, ...]
    tokens: int  # generated tokens, forced ones included
    forced_tokens: int  # tokens the grammar forced (no choice, fed without a decision)
    drafted_tokens: int  # tokens accepted from prompt-lookup drafts
    forward_passes: int
    prefill_tokens: int  # prompt tokens that were not already in the cache
    seconds: float
    stopped_by: str  # "grammar", "eos" or "length"


class GrammarDecoder:
    """One model + tokenizer; :meth:`generate` is serialised, since the cache is shared state."""

    def __init__(self, model, tokenizer, *, draft_tokens: int = 6, draft_ngram: int = 2):
        import torch

        from .chat_tokens import end_of_turn_ids

        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.draft_tokens = draft_tokens
        self.draft_ngram = draft_ngram
        self.vocab_size = int(model.config.get_text_config().vocab_size)
        self.stop_ids = end_of_turn_ids(model, tokenizer)  # the first one is what grammars end with
        if not self.stop_ids:
            raise GrammarError("the model has no end-of-sequence token; constrained decoding needs one to stop")
        self._lock = threading.Lock()
        self._cache = None
        self._cached_ids: list[int] = []
        self._spare: tuple[list[int], Any] | None = None  # (ids, cache) of the other recent prompt
        self._ll_tokenizer = None

    # ------------------------------------------------------------------ public

    def generate(self, prompt_ids: Sequence[int], *, segments: SegmentGrammar | None = None,
                 max_new_tokens: int = 256, stop_bias: Callable[[str], float] | None = None,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Greedy continuation of ``prompt_ids``; ``stop_bias(text so far)`` is added to the end-of-turn logit
        at the first decision of each segment (a length prior: positive favours ending the output there).
        ``on_text`` receives each new piece of text as it is decided (for streaming answers)."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        with self._lock, self.torch.inference_mode():
            return self._generate(list(prompt_ids), segments, max_new_tokens, stop_bias, on_text)

    def prefill(self, prompt_ids: Sequence[int]) -> None:
        """Put a prompt prefix in the cache now (e.g. the planner's system prompt, at start-up)."""
        with self._lock, self.torch.inference_mode():
            self._prefill(list(prompt_ids))

    # ------------------------------------------------------------------ the loop

    def _generate(self, prompt: list[int], segments: SegmentGrammar | None, max_new_tokens: int,
                  stop_bias: Callable[[str], float] | None, on_text: Callable[[str], None] | None = None) -> Generation:
        started = time.perf_counter()
        streamed = ""

        def stream() -> None:
            nonlocal streamed
            if on_text is None:
                return
            text = self._decode(generated)
            # A multi-byte character can span tokens: hold back a trailing replacement character.
            if text.startswith(streamed) and not text.endswith("\ufffd") and len(text) > len(streamed):
                on_text(text[len(streamed):])
                streamed = text

        stats = {"forced": 0, "drafted": 0, "passes": 0}
        logits, prefilled = self._prefill(prompt)
        stats["passes"] += 1
        generated: list[int] = []
        matcher = self._matcher(segments(""), "") if segments else None
        stopped_by = "length"
        while len(generated) < max_new_tokens:
            if matcher is not None:
                if matcher.is_error():
                    raise GrammarError(f"decoding left the grammar: {matcher.get_error()[:300]}")
                forced = matcher.compute_ff_tokens()[: max_new_tokens - len(generated)]
                if forced:
                    if not matcher.consume_tokens(forced):
                        raise GrammarError(f"the grammar refused its own forced tokens: {matcher.get_error()[:300]}")
                    logits = self._forward(forced, keep=1)[-1]
                    generated += forced
                    stream()
                    stats["forced"] += len(forced)
                    stats["passes"] += 1
                    continue
                allowed = self._allowed(matcher)
                if _only(allowed, self.stop_ids):  # this segment is complete: ask for the next one
                    written = self._decode(generated)
                    grammar = segments(written)
                    if grammar is None:
                        stopped_by = "grammar"
                        break
                    matcher = self._matcher(grammar, written)
                    bias = stop_bias(written) if stop_bias is not None else 0.0
                    if bias:
                        logits = logits.clone()
                        logits[self.stop_ids[0]] += bias
                    continue
                token = self._pick(logits, allowed)
            else:
                token = int(logits.argmax())
            if token in self.stop_ids:
                stopped_by = "eos"
                break
            if matcher is not None and not matcher.consume_token(token):
                raise GrammarError(f"the grammar refused a token it allowed: {matcher.get_error()[:300]}")
            generated.append(token)
            draft = self._draft(prompt, generated, max_new_tokens - len(generated))
            outputs = self._forward([token] + draft, keep=1 + len(draft))
            stats["passes"] += 1
            accepted = 0
            for position, proposed in enumerate(draft):
                if matcher is not None:
                    allowed = self._allowed(matcher)
                    if _only(allowed, self.stop_ids) or self._pick(outputs[position], allowed) != proposed:
                        break
                    matcher.consume_token(proposed)
                elif int(outputs[position].argmax()) != proposed:
                    break
                generated.append(proposed)
                accepted += 1
            stream()
            if accepted < len(draft):  # forget what the model saw of the rejected part of the draft
                self._truncate(len(self._cached_ids) - (len(draft) - accepted))
            stats["drafted"] += accepted
            logits = outputs[accepted]
        return Generation(
            text=self._decode(generated), token_ids=tuple(generated), tokens=len(generated), forced_tokens=stats["forced"],
            drafted_tokens=stats["drafted"], forward_passes=stats["passes"], prefill_tokens=prefilled,
            seconds=time.perf_counter() - started, stopped_by=stopped_by,
        )

    # ------------------------------------------------------------------ model and cache

    def _prefill(self, prompt: list[int]):
        """Reuse the cached prefix, run the rest; returns the next-token logits and how much was run."""
        from transformers import DynamicCache

        def shared(ids: list[int]) -> int:
            common, limit = 0, min(len(ids), len(prompt) - 1)  # at least one token must run, for its logits
            while common < limit and ids[common] == prompt[common]:
                common += 1
            return common

        # Two prompts alternate in an agent (the planner's and the composer's): a second cache keeps the
        # other one's prefix, so neither re-runs its long system prompt every turn.
        if self._spare is not None and shared(self._spare[0]) > shared(self._cached_ids):
            (self._spare, (self._cached_ids, self._cache)) = ((self._cached_ids, self._cache), self._spare)
        common = shared(self._cached_ids)
        if self._cache is None or common == 0:
            if self._cache is not None and self._cached_ids:
                self._spare = (self._cached_ids, self._cache)
            self._cache, self._cached_ids = DynamicCache(config=self.model.config), []
        else:
            self._truncate(common)
        rest = prompt[common:]
        return self._forward(rest, keep=1)[-1], len(rest)

    def _truncate(self, length: int) -> None:
        surplus = len(self._cached_ids) - length
        if surplus > 0:
            self._cache.crop(-surplus)  # transformers 5: a negative count removes that many positions
            del self._cached_ids[length:]

    def _forward(self, tokens: list[int], *, keep: int):
        ids = self.torch.tensor([tokens], dtype=self.torch.long, device=self.model.device)
        out = self.model(input_ids=ids, cache=self._cache, use_cache=True, logits_to_keep=keep)
        self._cached_ids += tokens
        return out.logits[0].float()

    def _pick(self, logits, allowed: np.ndarray) -> int:
        if allowed.size == 0:
            raise GrammarError("the grammar allows no token here")
        candidates = self.torch.from_numpy(allowed)
        return int(candidates[int(logits[candidates].argmax())])

    def _draft(self, prompt: list[int], generated: list[int], room: int) -> list[int]:
        """Prompt lookup: if the last tokens also occur in the prompt, propose what followed them there."""
        n = self.draft_ngram
        if self.draft_tokens <= 0 or room <= 1 or len(generated) < n:
            return []
        tail = generated[-n:]
        window = prompt[-2048:]  # the request is at the end; the shared system prompt rarely helps
        for start in range(len(window) - n - 1, -1, -1):
            if window[start : start + n] == tail:
                return window[start + n : start + n + min(self.draft_tokens, room - 1)]
        return []

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # ------------------------------------------------------------------ grammar

    def _matcher(self, grammar: str | None, written: str):
        import llguidance

        if grammar is None:
            raise GrammarError("no grammar for the start of the output")
        if self._ll_tokenizer is None:
            import llguidance.hf

            self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size,
                                                              eos_token=self.stop_ids[0])
        matcher = llguidance.LLMatcher(self._ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar))
        if matcher.is_error():
            raise GrammarError(f"grammar after {written[-80:]!r} does not compile: {matcher.get_error()[:500]}")
        return matcher

    def _allowed(self, matcher) -> np.ndarray:
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        return np.flatnonzero(bits[: self.vocab_size])


def _only(allowed: np.ndarray, stop_ids: Sequence[int]) -> bool:
    return allowed.size > 0 and all(int(token) in stop_ids for token in allowed)
