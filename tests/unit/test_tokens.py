"""Prompt token counts: the same as tiktoken's own o200k_base Encoding, loaded once, off the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import tiktoken

from service.generation.tokens import PATTERN, PromptTokenizer, count_prompt_tokens, read_ranks

TEXTS = [
    "",
    "a cat",
    "a lighthouse at dusk, photorealistic",
    "   leading and trailing spaces   \n\n\tand tabs",
    "<|endoftext|> is text in a prompt, not a special token",
    "東京の夜景、ネオン、雨 — 写真のように",
    "emoji 🐈‍⬛🌃 and numbers 1234567.89",
    "don't, we'll, they've, I'M, it's",
    "word " * 2000,
]


@pytest.fixture(scope="module")
def reference() -> Iterator[tiktoken.Encoding]:
    yield tiktoken.Encoding(
        name="o200k_base", pat_str=PATTERN, mergeable_ranks=read_ranks(), special_tokens={}
    )


@pytest.mark.parametrize("text", TEXTS)
async def test_counts_are_tiktokens_own(reference: tiktoken.Encoding, text: str) -> None:
    assert await count_prompt_tokens(text) == len(reference.encode(text, disallowed_special=()))


async def test_lone_surrogates_are_counted_as_tiktoken_counts_them(reference: tiktoken.Encoding) -> None:
    text = "broken \ud800 pair"
    assert await count_prompt_tokens(text) == len(reference.encode(text, disallowed_special=())) > 0


async def test_the_first_count_loads_the_vocabulary_off_the_event_loop() -> None:
    tokenizer = PromptTokenizer()
    ticks = 0
    counting = True

    async def ticker() -> None:
        nonlocal ticks
        while counting:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    started = time.monotonic()
    counts = await asyncio.gather(*(tokenizer.count("a lighthouse at dusk") for _ in range(3)))
    took = time.monotonic() - started
    during = ticks - before
    counting = False
    await task
    assert counts == [4, 4, 4] and tokenizer.loaded
    # Loaded on the event loop, the count would not yield once (no ticks). The Rust tables are
    # built holding the GIL (~0.1 s of ~0.3 s here), so the loop runs for the rest of it.
    assert during >= 3, f"the loop ran {during} times in the {took:.2f} s load"
