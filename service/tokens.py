"""Prompt token counts for `usage.input_tokens` when the provider reports none.

Until the offline tokenizer lands (enforcement issue), this counts pre-tokenizer pieces with the
split pattern OpenAI's BPE encodings use (words with their leading space, numbers in runs of up to
three digits, punctuation runs). BPE merges can only split such pieces further, so this is a lower
bound close to the real count for English prose, not a character estimate.
"""

from __future__ import annotations

import re

_PIECES = re.compile(
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+""",
    re.IGNORECASE,
)


def count_prompt_tokens(text: str) -> int:
    return len(_PIECES.findall(text))
