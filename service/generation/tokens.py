"""Prompt token counts: the spend estimate of token-priced models, and `usage.input_tokens` when
the provider reports none.

Counted with OpenAI's o200k_base BPE (the encoding of the GPT image models) by tiktoken's Rust
core. The vocabulary ships in service/generation/data (tiktoken would otherwise download it at run time, which
a self-hosted gateway must not depend on) and is checked against tiktoken's published SHA-256.

It is loaded on first use, on a worker thread: building it takes ~0.3 s of CPU, which would
otherwise stall every call the worker is serving (the Rust tables are built holding the GIL, so
~0.1 s of it still does). tiktoken's `Encoding` keeps a Python dict of the 200k ranks beside the
Rust tables; only the Rust core is kept here, and the memory the load frees is returned: a worker
grows by ~48 MB on its first count instead of ~77 MB.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import gzip
import hashlib
import threading
from pathlib import Path
from typing import Any

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


def read_ranks(vocabulary: Path = VOCABULARY) -> dict[bytes, int]:
    """token bytes -> rank, from a .tiktoken file (gzipped here), checked against its SHA-256."""
    contents = gzip.decompress(vocabulary.read_bytes())
    if hashlib.sha256(contents).hexdigest() != VOCABULARY_SHA256:
        raise RuntimeError(f"{vocabulary} is corrupt (SHA-256 mismatch)")
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in contents.splitlines() if line)
    }


class PromptTokenizer:
    """o200k_base token counts; the vocabulary is loaded once, by the first count, off the loop."""

    def __init__(self, vocabulary: Path = VOCABULARY) -> None:
        self._vocabulary = vocabulary
        self._core: Any = None  # tiktoken's CoreBPE (untyped)
        self._lock = threading.Lock()  # concurrent first counts load it once

    @property
    def loaded(self) -> bool:
        return self._core is not None

    async def count(self, text: str) -> int:
        core = self._core if self._core is not None else await asyncio.to_thread(self._load)
        try:
            return len(core.encode_ordinary(text))
        except UnicodeEncodeError:
            # Lone surrogates (not valid UTF-8): replaced, as tiktoken's Encoding does.
            return len(
                core.encode_ordinary(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
            )

    def _load(self) -> Any:
        with self._lock:
            if self._core is None:
                # The Rust core behind tiktoken.Encoding (which builds it the same way); pinned in
                # pyproject.toml, and tests/unit/test_tokens.py holds its counts to Encoding's.
                # Imported here, with the vocabulary: a worker that never counts a prompt is
                # spared its ~1.3 MB.
                from tiktoken import _tiktoken  # type: ignore[attr-defined]

                # The ranks dict is dropped once the Rust core has copied it.
                self._core = _tiktoken.CoreBPE(read_ranks(self._vocabulary), {}, PATTERN)
                _return_freed_memory()
            return self._core


def _return_freed_memory() -> None:
    """Hand the ~30 MB the load just freed (the file, the ranks dict) back to the kernel. Workers
    keep freed heap for reuse (supervisor.MALLOC_TUNING: trimmed only past 128 MB free), which suits
    image buffers, not a one-off like this: without the trim a worker stays ~10 MB larger."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


_O200K = PromptTokenizer()


async def count_prompt_tokens(text: str) -> int:
    # encode_ordinary: a prompt is text; "<|endoftext|>" in it is counted as text, not refused.
    return await _O200K.count(text)
