"""The messages of a streamed call, written as they come.

A streamed method (GenerateImagesStream and EditImagesStream, and the REST bindings
GenerateImagesJson and EditImagesHttp) runs its chain of interceptors as one call that returns the
final ImagesResponse, as GenerateImages does; this module writes what the caller sees on the call's
context, in the method's encoding:
  - GenerateImagesStream, EditImagesStream: ImageGenerationEvent messages;
  - the REST bindings, `stream` unset: one HttpBody, the ImagesResponse JSON;
  - the REST bindings, `"stream": true`: HttpBody server-sent events (`event: <type>`,
    `data: <ImageGenerationEvent JSON>`), which Envoy's transcoder passes on as they come.
Partial images are written as the provider makes them, by a writer task of their own, so a slow
reader never holds up the work (nor the provider's stream). The final response (a replayed one
included) becomes the completed event. Until something is queued the call can still fail with a
status (the usual error envelope); after that the REST stream ends with an `error` event, the gRPC
one with the status (error_rendering.py decides, through `end_with`).

The event names' prefix is the method's: image_generation for generations, image_edit for edits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from mg.v1 import image_generation_pb2 as pb

from service.api.interceptors.request_context import RequestContext
from service.api.responses import completed_events, partial_event
from service.api.rest_json import as_http_body, as_sse_http_body, sse_http_body
from service.errors import MgError, stream_error_event
from service.generation.validation import GenerationRequest
from service.providers.base import PartialImage

ERROR_EVENT = "error"


@dataclass(frozen=True)
class Encoding:
    """How one method's answer goes on the wire (each message already serialized)."""

    # Events (partial images, completed); else one message holding the response.
    events: bool
    event_prefix: str
    # gRPC event messages (errors are the call's status) rather than REST server-sent events.
    grpc: bool = False

    def partial(self, generation: GenerationRequest, image: PartialImage) -> bytes:
        return self._event(partial_event(self.event_prefix, generation, image))

    def final(self, response: pb.ImagesResponse) -> list[bytes]:
        if not self.events:
            return [as_http_body(response)]
        return [self._event(event) for event in completed_events(self.event_prefix, response)]

    def error(self, error: MgError) -> bytes | None:
        """The event that ends the stream with `error`; None where the status says it."""
        return None if self.grpc else sse_http_body(ERROR_EVENT, stream_error_event(error))

    def _event(self, event: pb.ImageGenerationEvent) -> bytes:
        return event.SerializeToString() if self.grpc else as_sse_http_body(event.type, event)


def encoding_for(method: str, request: Any) -> Encoding:
    """The encoding of a streamed method's answer; edits' events are named image_edit.*."""
    event_prefix = "image_edit" if "/EditImages" in method else "image_generation"
    if method.endswith("Stream"):
        return Encoding(events=True, event_prefix=event_prefix, grpc=True)
    return Encoding(events=bool(getattr(request, "stream", False)), event_prefix=event_prefix)


class EventStream:
    """The messages of one streamed call. `committed` once anything was queued: from then on the
    caller has (or will have) a 200 and messages, so an error must come as the stream's end."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], ctx: RequestContext, encoding: Encoding):
        self._context = context
        self._ctx = ctx
        self.encoding = encoding
        # Made with the writer, by the first message queued: most calls (every unstreamed one) never
        # queue one, and a queue is ~3 KB held for the whole call.
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def committed(self) -> bool:
        return self._writer is not None

    def partial_sink(self) -> Callable[[GenerationRequest, PartialImage], None] | None:
        """What the pipeline hands partial images to; None when the caller wants no events."""
        return self._partial if self.encoding.events else None

    def _partial(self, generation: GenerationRequest, image: PartialImage) -> None:
        if not self._closed:  # (a caller that left, or a stream already ended: dropped)
            self._put(self.encoding.partial(generation, image))

    async def finish(self, response: pb.ImagesResponse) -> None:
        """Write the final response (after any partial images still queued), and end."""
        messages = self.encoding.final(response)
        if self._writer is None:  # nothing queued before (every unstreamed call): no writer task
            self._closed = True
            await self._ctx.send_headers(self._context)
            for message in messages:
                await self._context.write(message)
            return
        for message in messages:
            self._put(message)
        await self._drain()

    async def end_with(self, error: MgError) -> bool:
        """After the first message: end the stream with `error` as an event, if the encoding has
        one (True), after what is queued. False: the caller gets the error as the call's status."""
        if not self.committed:
            self.close()
            return False
        event = self.encoding.error(error)
        if event is not None:
            self._put(event)
        await self._drain()
        return event is not None

    def close(self) -> None:
        """Nothing more is written (a caller that left; the call's end)."""
        self._closed = True
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def _put(self, message: bytes) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._writer = asyncio.create_task(self._write(self._queue))
            self._writer.add_done_callback(_written)
        self._queue.put_nowait(message)

    async def _drain(self) -> None:
        """Until everything queued is written (or the writer stopped: the caller left)."""
        self._closed = True
        if self._queue is not None and self._writer is not None:
            self._queue.put_nowait(None)
            await asyncio.wait({self._writer})

    async def _write(self, queue: asyncio.Queue[bytes | None]) -> None:
        await self._ctx.send_headers(self._context)
        while (message := await queue.get()) is not None:
            await self._context.write(message)


def _written(writer: asyncio.Task[None]) -> None:
    # A write that failed is a caller that left: the call's own outcome says so, not this task.
    if not writer.cancelled():
        writer.exception()
