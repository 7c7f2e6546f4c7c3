"""Upstream.download (images behind provider URLs) against a real HTTP server: size-limited whether
or not the server declares a length, redirects followed, only images accepted."""

from __future__ import annotations

import time

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from service.errors import UpstreamError
from service.providers.upstream import Upstream
from tests.fakes.base import png

LIMIT = 4096


async def serve(request: web.BaseRequest) -> web.StreamResponse:
    image = png(64, 64) + bytes(LIMIT)  # a PNG signature, padded past the limit
    if request.path == "/small.png":
        return web.Response(body=png(8, 8), content_type="image/png")
    if request.path == "/moved":
        raise web.HTTPFound("/small.png")
    if request.path == "/declared.png":
        return web.Response(body=image, content_type="image/png")
    if request.path == "/streamed.png":  # chunked: no content-length to refuse up front
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(image), 1024):
            await response.write(image[start : start + 1024])
        await response.write_eof()
        return response
    return web.Response(text="<html>not an image</html>", content_type="text/html")


async def download(path: str) -> tuple[bytes, str]:
    async with RawTestServer(serve) as server:
        upstream = Upstream("fake", str(server.make_url("/")), {}, lambda *_: False, max_download_bytes=LIMIT)
        try:
            return await upstream.download(str(server.make_url(path)), time.monotonic() + 10)
        finally:
            await upstream.aclose()


async def test_an_image_under_the_limit_arrives_sniffed_and_redirects_are_followed() -> None:
    assert await download("/small.png") == (png(8, 8), "image/png")
    assert await download("/moved") == (png(8, 8), "image/png")


@pytest.mark.parametrize("path", ["/declared.png", "/streamed.png"])
async def test_an_image_over_the_limit_is_refused(path: str) -> None:
    with pytest.raises(UpstreamError, match=f"larger than {LIMIT} bytes"):
        await download(path)


async def test_what_is_not_an_image_is_refused() -> None:
    with pytest.raises(UpstreamError, match="did not serve an image"):
        await download("/page.html")
