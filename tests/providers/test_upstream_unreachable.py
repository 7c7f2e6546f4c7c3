"""A provider that cannot be reached is a 502 naming the provider, never where it lives: the
connection error (host, port, addresses) goes to the log only. Reproduced against a closed loopback
port, so nothing leaves the machine."""

from __future__ import annotations

import logging
import time

import pytest

from service.errors import UpstreamError
from service.providers.upstream import Upstream
from tests.support.ports import free_port


def closed_port_upstream() -> tuple[Upstream, int]:
    port = free_port()  # nothing listens on it: the connection is refused
    return Upstream("xai", f"http://127.0.0.1:{port}/v1", {}, lambda *_: False, attempts=1), port


async def test_a_refused_connection_says_which_provider_and_logs_where(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream, port = closed_port_upstream()
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(UpstreamError) as caught:
            await upstream.request("POST", "/images/generations", time.monotonic() + 10, json={})
    finally:
        await upstream.aclose()
    assert caught.value.message == "Could not reach xai."
    assert str(port) in caplog.text and "127.0.0.1" in caplog.text


async def test_an_image_url_that_cannot_be_reached_names_no_host(caplog: pytest.LogCaptureFixture) -> None:
    upstream, port = closed_port_upstream()
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(UpstreamError) as caught:
            await upstream.download(f"http://127.0.0.1:{port}/img.png", time.monotonic() + 10)
    finally:
        await upstream.aclose()
    assert caught.value.message == "Could not download the image from xai."
    assert str(port) in caplog.text
