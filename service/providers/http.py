"""The HTTP client under every provider adapter: aiohttp, one kept-alive connection pool per provider.

Why aiohttp and not httpx (which the gateway still uses for reference-image fetches): measured on
loopback against the benchmark's fake upstream, one httpx call cost 0.72 ms of CPU for a tiny answer
and 8 ms for a 1.5 MB one; aiohttp (C HTTP parser, large reads) 0.25 ms and 2.6 ms. The provider
call is on the hot path of every request, so it decided the gateway's throughput.

Adapters never see aiohttp: they get `HttpResponse` (status, headers, the whole body) and pass
request bodies as `json=`, as a multipart form of `data=` fields and `files=` parts, or as the exact
bytes to send (`content=`: a signed request must send the bytes it signed). `encoded=True` sends the
URL's path as written: otherwise it is normalised (`%3A` becomes `:`), which breaks a signature made
over the encoded path.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import yarl

from service.providers import json_payload
from service.providers.capped_read import read_capped
from service.providers.sse import EventSink, TooLong, read_events

# A multipart file part: (filename or None for a plain field, content, content type or None).
FilePart = tuple[str | None, str | bytes, str | None]
Files = Mapping[str, FilePart] | Iterable[tuple[str, FilePart]]

TransportError = aiohttp.ClientError  # connection refused/reset, malformed HTTP, too many redirects
# Shorter than the idle timeouts of common servers and load balancers (60 s and up), so a kept
# connection is almost never one the server is closing as it is reused: a POST whose connection
# drops once it was written is not retried (DroppedAfterSend), so such a race would fail the call.
KEEPALIVE_S = 15.0
READ_CHUNK = 256 * 1024
MAX_EVENT_STREAM_BYTES = 256 * 1024 * 1024


class StreamBroken(Exception):
    """A 2xx event stream that broke off or overflowed once under way. Not retried: the provider
    was already working on (and billing) the request."""


class DroppedAfterSend(TransportError):
    """The connection failed (reset, closed, a malformed or cut-off answer) after the request went
    out: the server may have it and be working on (and billing) it, so it is not a safe retry for
    a method that is not idempotent."""


class AnswerTimeout(TimeoutError):
    """The request went out (its headers were written) and its whole answer did not come in time:
    unlike a timeout while connecting, the server has it and may be working on (and billing) it."""


class _Progress:
    """Whether a request's headers were written: set by the session's trace (`_sent_trace`)."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


async def _headers_sent(_session: object, context: Any, _params: object) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.sent = True


def _sent_trace() -> aiohttp.TraceConfig:
    # (the trace costs ~15-20 us of CPU a request, measured against a loopback server: under 1 % of
    # a generation's)
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    return trace


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; orjson.JSONDecodeError (a ValueError) if it is not."""
        return json_payload.loads(self.content)


def form(data: Mapping[str, object] | None, files: Files | None) -> aiohttp.FormData:
    """multipart/form-data of text fields and file parts (always multipart, never urlencoded)."""
    body = aiohttp.FormData(default_to_multipart=True)
    for name, value in (data or {}).items():
        body.add_field(name, str(value))
    parts = files.items() if isinstance(files, Mapping) else (files or ())
    for name, (filename, content, content_type) in parts:
        body.add_field(name, content, filename=filename, content_type=content_type)
    return body


class HttpClient:
    """A connection pool with default headers; created lazily inside the running event loop."""

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        follow_redirects: bool,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._headers = dict(headers)
        self._follow_redirects = follow_redirects
        self._verify: ssl.SSLContext | bool = True if verify is None else verify  # True: aiohttp's default
        self._session: aiohttp.ClientSession | None = None

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S, ssl=self._verify),
                cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies
                json_serialize=lambda value: orjson.dumps(value).decode(),
                trace_configs=[_sent_trace()],
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        timeout_s: float,
        *,
        json: Any = None,
        data: Mapping[str, object] | None = None,
        files: Files | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        content: bytes | None = None,
        encoded: bool = False,
        on_event: EventSink | None = None,
    ) -> HttpResponse:
        """The whole response. Raises TimeoutError (AnswerTimeout once the request went out),
        TransportError (DroppedAfterSend once it went out), or TooLarge past `max_bytes`.
        With `on_event`, a 2xx `text/event-stream` answer goes to it event by event as it arrives
        (sse.py), and the response's content is left empty; a break in it is StreamBroken."""
        body = form(data, files) if data is not None or files is not None else content
        progress = _Progress()
        try:
            async with self._pool().request(
                method,
                yarl.URL(url, encoded=True) if encoded else url,
                json=json,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=self._follow_redirects,
                trace_request_ctx=progress,
            ) as response:
                return await _read(response, max_bytes, on_event)
        except TimeoutError as exc:
            if progress.sent:
                raise AnswerTimeout(str(exc)) from exc
            raise
        except TransportError as exc:
            if progress.sent and not isinstance(exc, DroppedAfterSend):
                raise DroppedAfterSend(str(exc)) from exc
            raise

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read(
    response: aiohttp.ClientResponse, max_bytes: int | None, on_event: EventSink | None
) -> HttpResponse:
    if on_event is not None and response.status < 300 and response.content_type == "text/event-stream":
        try:
            await read_events(
                response.content.iter_chunked(READ_CHUNK), on_event, max_bytes or MAX_EVENT_STREAM_BYTES
            )
        except (TransportError, TooLong) as exc:
            raise StreamBroken(str(exc)) from exc
        return HttpResponse(response.status, response.headers, b"")
    if max_bytes is None:
        content = await response.read()
    else:
        length = response.headers.get("content-length")
        content = await read_capped(response.content.iter_chunked(READ_CHUNK), max_bytes, length)
    return HttpResponse(response.status, response.headers, content)
