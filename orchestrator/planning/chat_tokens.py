"""Which tokens end a chat model's turn.

Some checkpoints list only ``<|endoftext|>`` as eos in their generation config while their chat
template closes every turn with ``<|im_end|>``; without the template's own end-of-turn token a reply
runs on into an invented next turn. Shared by the chat/text tools and the local planner.
"""

from __future__ import annotations

from typing import Any

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that should stop a reply; the template's end-of-turn token, where it has one, comes first."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens) | {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    ids = [int(vocab[token]) for token in END_OF_TURN_TOKENS if token in vocab and token in special]
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids += [value for value in (configured if isinstance(configured, list) else [configured]) if isinstance(value, int)]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))
