"""Prompt token counts for `usage.input_tokens` when the provider reports none.

Counted with OpenAI's o200k_base BPE (the encoding of the GPT image models) through tiktoken. The
vocabulary ships in service/data (tiktoken would otherwise download it at run time, which a
self-hosted gateway must not depend on) and is checked against tiktoken's published SHA-256.
It is loaded on first use: it costs ~75 MB per process, which gateways whose providers all report
usage never pay.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
from pathlib import Path

import tiktoken

VOCABULARY = Path(__file__).with_name("data") / "o200k_base.tiktoken.gz"
# tiktoken_ext.openai_public: expected_hash of o200k_base.tiktoken
VOCABULARY_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# tiktoken_ext.openai_public: o200k_base pat_str
PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


@functools.cache
def _encoding() -> tiktoken.Encoding:
    contents = gzip.decompress(VOCABULARY.read_bytes())
    if hashlib.sha256(contents).hexdigest() != VOCABULARY_SHA256:
        raise RuntimeError(f"{VOCABULARY} is corrupt (SHA-256 mismatch)")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in contents.splitlines() if line)
    }
    return tiktoken.Encoding(name="o200k_base", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})


def count_prompt_tokens(text: str) -> int:
    # disallowed_special=(): a prompt is text; "<|endoftext|>" in it is counted, not refused.
    return len(_encoding().encode(text, disallowed_special=()))
