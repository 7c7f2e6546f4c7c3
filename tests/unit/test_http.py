"""The providers' HTTP client (service/providers/http.py) against a real loopback server."""

from __future__ import annotations

import pytest

from service.providers.capped_read import TooLarge
from service.providers.http import HttpClient, TransportError
from tests.support.image_server import serving

BODY = b"x" * 300_000


async def test_the_whole_body_comes_back_with_status_and_headers() -> None:
    client = HttpClient({"authorization": "Bearer k"}, follow_redirects=False)
    try:
        with serving({"/a": (201, {"x-request-id": "r1"}, BODY)}) as url:
            response = await client.request("GET", f"{url}/a", timeout_s=5)
        assert (response.status, response.headers["X-Request-Id"], response.content) == (201, "r1", BODY)
        assert response.is_success
    finally:
        await client.aclose()


async def test_a_body_over_the_cap_is_refused_and_one_cut_short_is_a_transport_error() -> None:
    client = HttpClient({}, follow_redirects=False)
    routes = {"/big": (200, {}, BODY), "/cut": (200, {"x-test-send": "1000", "x-test-then": "close"}, BODY)}
    try:
        with serving(routes) as url:
            with pytest.raises(TooLarge):
                await client.request("GET", f"{url}/big", timeout_s=5, max_bytes=100_000)
            with pytest.raises(TransportError):
                await client.request("GET", f"{url}/cut", timeout_s=5)
    finally:
        await client.aclose()


async def test_redirects_are_followed_only_when_asked() -> None:
    routes = {"/from": (302, {"location": "/to"}, b""), "/to": (200, {}, b"there")}
    kept, followed = HttpClient({}, follow_redirects=False), HttpClient({}, follow_redirects=True)
    try:
        with serving(routes) as url:
            assert (await kept.request("GET", f"{url}/from", timeout_s=5)).status == 302
            assert (await followed.request("GET", f"{url}/from", timeout_s=5)).content == b"there"
    finally:
        await kept.aclose()
        await followed.aclose()
