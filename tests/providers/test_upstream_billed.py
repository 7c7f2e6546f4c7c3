"""Which upstream failures the provider bills (`MgError.billed`): those after it had the request.

A request that went out and whose answer did not come in time, a connection that dropped once a
POST went out (which is not sent again), an answer stream that broke off once under way, a success
answer the gateway cannot use, and an image the provider answered with that could not be downloaded,
are billed; a connection that was refused, or not even made before the deadline, is not. Against
real loopback sockets: a server that reads the request and never answers, one that reads it and
drops the connection, and a listening socket whose accept queue is full, so a connection to it
hangs.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import pytest

from service.errors import MgError, UpstreamError, UpstreamTimeout
from service.providers.upstream import Upstream, decode_image
from tests.support.image_server import serving
from tests.support.ports import free_port


def upstream(base_url: str, attempts: int = 1) -> Upstream:
    return Upstream("xai", base_url, {}, lambda *_: False, attempts=attempts)


@asynccontextmanager
async def never_answering() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A server that reads each request and never answers; the event is set once one arrived."""
    arrived, finished = asyncio.Event(), asyncio.Event()
    held: list[asyncio.Task[None]] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            arrived.set()
            await finished.wait()
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", arrived
    finally:
        finished.set()
        await asyncio.gather(*held, return_exceptions=True)
        server.close()
        await server.wait_closed()


def full_accept_queue(stack: ExitStack) -> int:
    """A listening port whose accept queue is full: a further connection's SYN is dropped."""
    listener = stack.enter_context(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    for _ in range(4):  # more than the queue holds (a backlog of 0 holds one on Linux)
        waiting = stack.enter_context(socket.socket())
        waiting.setblocking(False)
        waiting.connect_ex(("127.0.0.1", port))
    time.sleep(0.05)
    return port


async def failure_of(base_url: str, expected: type[MgError], within_s: float = 1.0) -> MgError:
    """What a generation request to `base_url` fails with."""
    provider = upstream(base_url)
    try:
        with pytest.raises(expected) as caught:
            await provider.request("POST", "/images/generations", time.monotonic() + within_s, json={})
    finally:
        await provider.aclose()
    return caught.value


async def test_a_request_that_went_out_and_got_no_answer_in_time_is_billed() -> None:
    async with never_answering() as (url, arrived):
        failure = await failure_of(url, UpstreamTimeout)
    assert arrived.is_set() and failure.billed


async def test_a_connection_not_made_before_the_deadline_is_not_billed() -> None:
    with ExitStack() as stack:
        failure = await failure_of(f"http://127.0.0.1:{full_accept_queue(stack)}/v1", UpstreamTimeout)
    assert not failure.billed


async def test_a_refused_connection_is_not_billed() -> None:
    failure = await failure_of(f"http://127.0.0.1:{free_port()}/v1", UpstreamError, within_s=5)
    assert not failure.billed


@pytest.mark.parametrize(
    ("route", "failure"),
    [
        ((404, {}, b"gone"), UpstreamError),
        ((200, {}, b"<html>not an image</html>"), UpstreamError),
        ((200, {"x-test-send": "10", "x-test-then": "stall"}, b"\x89PNG" + b"x" * 5000), UpstreamTimeout),
    ],
)
async def test_an_image_the_provider_answered_with_that_cannot_be_fetched_is_billed(
    route: tuple[int, dict[str, str], bytes], failure: type[Exception]
) -> None:
    provider = upstream("http://127.0.0.1:1/v1")
    try:
        with serving({"/img.png": route}) as url, pytest.raises(failure) as caught:
            await provider.download(f"{url}/img.png", time.monotonic() + 0.5)
    finally:
        await provider.aclose()
    assert getattr(caught.value, "billed", None) is True


async def test_an_answer_stream_that_breaks_off_is_billed() -> None:
    events = b'event: image_generation.partial_image\ndata: {"partial_image_index": 0}\n\n' * 3
    route = (200, {"content-type": "text/event-stream", "x-test-send": "90", "x-test-then": "close"}, events)
    seen: list[str] = []
    with serving({"/v1/images/generations": route}) as url:
        provider = upstream(f"{url}/v1")
        try:
            with pytest.raises(UpstreamError) as caught:
                await provider.request(
                    "POST",
                    "/images/generations",
                    time.monotonic() + 5,
                    json={},
                    on_event=lambda name, _data: seen.append(name),
                )
        finally:
            await provider.aclose()
    assert seen == ["image_generation.partial_image"]  # under way when it broke off
    assert caught.value.billed and "broke off" in caught.value.message


@asynccontextmanager
async def dropping(drops: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A server that reads each whole request, then resets the connection for the first `drops`
    requests and answers the rest with `{}`; yields its URL and the methods of the requests it read."""
    arrived: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        arrived.append(head.split(b" ")[0].decode())
        if len(arrived) <= drops:
            writer.transport.abort()  # a reset, not an answer
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", arrived
    finally:
        server.close()
        await server.wait_closed()


async def test_a_post_whose_connection_drops_after_it_went_out_is_billed_and_never_sent_again() -> None:
    async with dropping(drops=3) as (url, arrived):
        provider = upstream(url, attempts=3)
        try:
            with pytest.raises(UpstreamError) as caught:
                await provider.request("POST", "/images/generations", time.monotonic() + 5, json={})
        finally:
            await provider.aclose()
    assert arrived == ["POST"]  # a second POST could be a second generation the provider bills
    assert caught.value.billed and "after the request went out" in caught.value.message


async def test_a_status_poll_whose_connection_drops_is_sent_again() -> None:
    async with dropping(drops=1) as (url, arrived):
        provider = upstream(url, attempts=3)
        try:
            answer = await provider.json("GET", "/jobs/1", time.monotonic() + 5)
        finally:
            await provider.aclose()
    assert arrived == ["GET", "GET"] and answer == {}


async def test_a_success_answer_cut_short_is_billed_and_never_sent_again() -> None:
    route = (
        200,
        {"content-type": "application/json", "x-test-send": "10", "x-test-then": "close"},
        b"{}" * 100,
    )
    with serving({"/v1/images/generations": route}) as url:
        provider = upstream(f"{url}/v1", attempts=3)
        try:
            with pytest.raises(UpstreamError) as caught:
                await provider.request("POST", "/images/generations", time.monotonic() + 5, json={})
        finally:
            await provider.aclose()
    assert caught.value.billed


async def test_a_success_answer_the_gateway_cannot_use_is_billed() -> None:
    route = (200, {"content-type": "application/json"}, b"<html>an error page, with a 200</html>")
    with serving({"/v1/images/generations": route}) as url:
        provider = upstream(f"{url}/v1")
        try:
            with pytest.raises(UpstreamError) as caught:
                await provider.json("POST", "/images/generations", time.monotonic() + 5, json={})
        finally:
            await provider.aclose()
    assert caught.value.billed and "unusable" in caught.value.message
    for data in ("not base64!", "aGVsbG8="):  # not base64; base64 of something that is not an image
        with pytest.raises(UpstreamError) as undecodable:
            decode_image("xai", data)
        assert undecodable.value.billed
