"""How many tokens a text will cost an LLM, estimated without loading a tokenizer, and the request limit.

The planner's tokenizer is not loaded to refuse a request (loading the packaged LLM takes seconds to
minutes). The estimate leans high against byte-pair tokenizers (Qwen, Llama, GPT): a run of ASCII letters
costs one token per six letters (with the space before it; cut where the case changes), every digit one
(Qwen splits numbers digit by digit), every punctuation mark and every other whitespace character one,
and every other character (CJK, emoji, accents) one. Counting words alone let 80,000 characters of mixed
whitespace through as "8 tokens" (62,066 for the model), and undercounted digits six-fold.

Checked against Qwen's tokenizer: prose 1.05x the real count, code 1.5x, digits and emoji 1.0x, whitespace
1.35x, common CJK 2.1x, Arabic 2.5x; below it only for text no vocabulary holds (random ASCII 0.9x, random
mixed-case letters 0.6x, random lowercase 0.3x, rare CJK 0.6x). The estimate is never below one token per six
characters, so such text costs the model a few times the limit at most, never the 7,700x of a word count.
"""

from __future__ import annotations

import re

from ..errors import InvalidInputError

# A word takes the single space before it along (byte-pair vocabularies hold " word" as one piece).
# Letters are cut where their case changes ("HelloWorld", and the random mixed case no vocabulary holds).
_PIECE = re.compile(r" ?(?:[A-Z]?[a-z]+|[A-Z]+(?![a-z]))|[0-9]|\s+|[^\x00-\x7f]+|.", re.DOTALL)


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate of the tokens ``text`` costs an LLM (at most one per character)."""
    tokens = 0
    for match in _PIECE.finditer(text):
        piece = match.group(0)
        if piece.isspace():
            tokens += len(piece)
        elif piece.isascii() and piece.lstrip(" ").isalpha():
            tokens += -(-len(piece.lstrip(" ")) // 6)
        elif not piece.isascii():
            tokens += len(piece)
        else:
            tokens += 1  # a digit, a punctuation mark, an underscore
    return tokens


def check_request_size(request: str, max_tokens: int) -> None:
    """Refuse a request longer than ``max_tokens`` (estimated), naming the setting that changes it."""
    if len(request) <= max_tokens:  # the estimate is at most one token per character
        return
    tokens = estimate_tokens(request)
    if tokens > max_tokens:
        raise InvalidInputError(
            f"the request is about {tokens:,} tokens; at most {max_tokens:,} are accepted (put a long text in a file "
            f"and attach it, or raise [limits] max_request_tokens / ANYMODA_LIMIT_MAX_REQUEST_TOKENS)")
