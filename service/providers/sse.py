"""Server-sent events from a provider's streamed answer (OpenAI's `stream: true`), read as they come.

Frames end with a blank line; each has `event:` and `data:` lines (several data lines join with a
newline; comments and other fields are ignored). Each frame goes to `on_event(event, data)` as soon
as it has arrived, so a partial image can reach the caller while the provider is still working.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable

EventSink = Callable[[str, bytes], None]


class TooLong(Exception):
    """The stream went on past its byte limit."""


async def read_events(chunks: AsyncIterable[bytes], on_event: EventSink, max_bytes: int) -> None:
    buffer = bytearray()
    total = 0
    scanned = 0  # where the search for the next frame's end resumes
    held = b""  # a chunk's last "\r", which may start a "\r\n" the next chunk ends
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise TooLong(f"the event stream passed {max_bytes} bytes")
        chunk = held + chunk
        held = b"\r" if chunk.endswith(b"\r") else b""
        buffer += chunk[: len(chunk) - len(held)].replace(b"\r\n", b"\n")
        while (end := buffer.find(b"\n\n", scanned)) >= 0:
            _dispatch(bytes(buffer[:end]), on_event)
            del buffer[: end + 2]
            scanned = 0
        scanned = max(0, len(buffer) - 1)
    buffer += held
    if buffer.strip():
        _dispatch(bytes(buffer), on_event)


def _dispatch(frame: bytes, on_event: EventSink) -> None:
    event, data = "message", []
    for line in frame.split(b"\n"):
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"data":
            data.append(value)
    if data:
        on_event(event, b"\n".join(data))
