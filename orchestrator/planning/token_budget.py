"""How many tokens a text will cost an LLM, estimated without loading a tokenizer, and the request limit.

The planner's tokenizer is not loaded to refuse a request (loading the packaged LLM takes seconds to
minutes); the estimate counts words in pieces of at most six letters and every punctuation mark, which
is at or above what byte-pair tokenizers (Qwen, Llama, GPT) give for English prose, so a request under
the limit by this count is under it for the model too.
"""

from __future__ import annotations

import re

from ..errors import InvalidInputError

_PIECE = re.compile(r"\w{1,6}|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate of the tokens ``text`` costs an LLM."""
    return len(_PIECE.findall(text))


def check_request_size(request: str, max_tokens: int) -> None:
    """Refuse a request longer than ``max_tokens`` (estimated), naming the setting that changes it."""
    if len(request) <= max_tokens:  # fewer characters than the limit: fewer tokens too
        return
    tokens = estimate_tokens(request)
    if tokens > max_tokens:
        raise InvalidInputError(
            f"the request is about {tokens:,} tokens; at most {max_tokens:,} are accepted (put a long text in a file "
            f"and attach it, or raise [limits] max_request_tokens / ANYMODA_LIMIT_MAX_REQUEST_TOKENS)")
