"""EventStream: what a streamed call writes, in which order, and what it drops."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

from google.api import httpbody_pb2
from mg.v1 import image_generation_pb2 as pb

from service.api.events import Encoding, EventStream
from service.api.interceptors.request_context import RequestContext
from service.catalog.sizes import Size
from service.errors import UpstreamTimeout
from service.generation.validation import GenerationRequest
from service.providers.base import PartialImage

GENERATION = cast(GenerationRequest, SimpleNamespace(size=Size(256, 256), quality=None, background=None))
RESPONSE = pb.ImagesResponse(id="img_1", created=7, data=[pb.Image(b64_json=b"final")])
SSE = Encoding(events=True, event_prefix="image_generation")
GRPC = Encoding(events=True, event_prefix="image_generation", grpc=True)


class Context:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.sent.append(("headers", dict(metadata)))

    async def write(self, message: bytes) -> None:
        self.sent.append(message)


def stream(encoding: Encoding) -> tuple[EventStream, Context]:
    context = Context()
    ctx = RequestContext("req-1", "m", time.monotonic(), time.monotonic() + 10)
    return EventStream(cast(Any, context), ctx, encoding), context


def sse(message: bytes) -> str:
    body = httpbody_pb2.HttpBody.FromString(message)
    assert body.content_type == "text/event-stream"
    first_line: str = body.data.decode().split("\n", 1)[0]
    return first_line


async def test_partials_then_the_completed_event_after_the_headers() -> None:
    events, context = stream(SSE)
    sink = events.partial_sink()
    assert sink is not None
    sink(GENERATION, PartialImage(b"coarse", 0))
    assert events.committed
    await events.finish(RESPONSE)
    assert context.sent[0] == ("headers", {"x-request-id": "req-1"})
    assert [sse(message) for message in context.sent[1:]] == [
        "event: image_generation.partial_image",
        "event: image_generation.completed",
    ]


async def test_an_error_before_anything_is_the_status_and_later_partials_are_dropped() -> None:
    events, context = stream(SSE)
    assert await events.end_with(UpstreamTimeout("late")) is False
    sink = events.partial_sink()
    assert sink is not None
    sink(GENERATION, PartialImage(b"coarse", 0))  # (the work goes on for a caller that left)
    assert context.sent == [] and not events.committed


async def test_an_error_after_the_first_event_is_an_error_event_on_rest_and_the_status_on_grpc() -> None:
    for encoding, ended_by_event in ((SSE, True), (GRPC, False)):
        events, context = stream(encoding)
        sink = events.partial_sink()
        assert sink is not None
        sink(GENERATION, PartialImage(b"coarse", 0))
        assert await events.end_with(UpstreamTimeout("late")) is ended_by_event
        written = [message for message in context.sent if isinstance(message, bytes)]
        assert len(written) == (2 if ended_by_event else 1)
        if ended_by_event:
            assert sse(written[1]) == "event: error"
            assert b'"code":"UPSTREAM_TIMEOUT"' in httpbody_pb2.HttpBody.FromString(written[1]).data


async def test_an_unstreamed_call_writes_one_json_body_and_takes_no_partials() -> None:
    events, context = stream(Encoding(events=False, event_prefix="image_generation"))
    assert events.partial_sink() is None
    await events.finish(RESPONSE)
    (headers, body) = context.sent
    assert headers == ("headers", {"x-request-id": "req-1"})
    assert httpbody_pb2.HttpBody.FromString(body).content_type == "application/json"
