"""Reading a streamed HTTP body whole, up to a size cap: for provider answers (aiohttp) and
reference-image downloads (httpx), so neither client's caller can be made to buffer without end."""

from __future__ import annotations

from collections.abc import AsyncIterable


class TooLarge(Exception):
    """The body is (or says it is) larger than the cap."""


async def read_capped(chunks: AsyncIterable[bytes], max_bytes: int, content_length: str | None) -> bytes:
    """The body from its chunks; TooLarge as soon as it declares or passes `max_bytes`."""
    if int(content_length or 0) > max_bytes:
        raise TooLarge
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge
        parts.append(chunk)
    return b"".join(parts)
