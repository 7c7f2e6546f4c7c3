"""Reading server-sent events from a provider as they arrive (service/providers/sse.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.providers.sse import TooLong, read_events

STREAM = (
    b'event: image_generation.partial_image\ndata: {"i":0}\n\n'
    b': a comment\r\nevent: image_generation.completed\r\ndata: {"i":\r\ndata: 1}\r\n\r\n'
    b"data: last, unterminated"
)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def events(size: int, max_bytes: int = 10_000) -> list[tuple[str, bytes]]:
    seen: list[tuple[str, bytes]] = []
    asyncio.run(read_events(pieces(STREAM, size), lambda event, data: seen.append((event, data)), max_bytes))
    return seen


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_frames_are_read_however_the_bytes_are_cut(size: int) -> None:
    assert events(size) == [
        ("image_generation.partial_image", b'{"i":0}'),
        ("image_generation.completed", b'{"i":\n1}'),
        ("message", b"last, unterminated"),
    ]


def test_a_stream_past_its_limit_stops() -> None:
    with pytest.raises(TooLong):
        events(10, max_bytes=60)
