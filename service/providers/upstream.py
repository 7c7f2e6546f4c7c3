"""HTTP access to one provider, shared by every call to it.

- One connection pool per provider (http.py): connections are kept alive across requests.
- Retryable failures (429, 500/502/503/504, connection errors) are retried with exponential backoff
  (and the provider's Retry-After) while the call's deadline allows; then they become errors. A
  connection that drops after a POST went out is not retried: the provider may have it, and the
  failure is `billed` like every other failure after the provider had the request.
- Every non-2xx answer becomes an `MgError` in one place (`upstream_error`), with the provider's own
  message kept; adapters only say how their provider signals a content refusal.
- Answers are parsed with orjson and images decoded with pybase64: a provider's JSON can be tens of
  MB of base64, which the stdlib parses at ~1 ms and decodes at ~4 ms per MB.
- Images behind provider URLs are downloaded with a size and time limit and checked to be images,
  so responses never depend on a provider URL that expires.

The HTTP client (http.py, on aiohttp) is imported when the first Upstream is made, not with this
module: adapter modules import this one for their declarations, which `mg serve`'s supervisor
reads to load settings without ever calling a provider.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pybase64

from service.config import ProviderConfig, Settings
from service.errors import (
    ContentPolicyViolation,
    MgError,
    ProviderRejectedRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from service.providers.capped_read import TooLarge
from service.providers.media import sniff_media_type

if TYPE_CHECKING:
    from service.providers.http import HttpResponse

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Methods safe to send again when a connection dropped after the request went out (RFC 9110
# 9.2.2): a status poll or a download. A POST the provider may already have is never sent twice.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
BACKOFF_BASE_S = 0.5
MAX_RETRY_AFTER_S = 20.0

# (status, parsed JSON body or None, text) -> is this a content refusal?
RefusalTest = Callable[[int, Any, str], bool]


def provider_message(body: Any, text: str) -> str:
    """The provider's own error message, wherever its envelope keeps it."""
    if isinstance(body, dict):
        for path in (("error", "message"), ("message",), ("detail",), ("error",), ("errors",), ("name",)):
            value: Any = body
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:
                return "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
    return text.strip()[:500] or "no message"


def _json_or_none(response: HttpResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _never(status: int, body: Any, text: str) -> bool:
    return False


class CredentialRejected(UpstreamError):
    """The provider rejected the key the call carried. The caller sees a 502 UPSTREAM_ERROR, as for
    any provider failure (the same kind, not a code of its own); a provider with several keys takes
    that key out (credentials.py)."""


def upstream_error(
    provider: str,
    response: HttpResponse,
    is_refusal: RefusalTest,
    is_credential_error: RefusalTest = _never,
) -> MgError:
    """The one mapping from a provider's error answer to what the caller sees. `is_credential_error`
    is for providers that reject a bad key with something other than 401/403."""
    status, body, text = response.status, _json_or_none(response), response.text
    message = f"{provider}: {provider_message(body, text)}"
    if is_refusal(status, body, text):
        return ContentPolicyViolation(message)
    if status == 429:
        wait = _retry_after(response)
        return UpstreamRateLimited(message, retry_after_s=math.ceil(wait) if wait else 10)
    if status in (401, 403) or is_credential_error(status, body, text):
        return CredentialRejected(f"{provider} rejected the gateway's credentials ({status}): {message}")
    if status in (400, 404, 413, 422):
        return ProviderRejectedRequest(message)
    return UpstreamError(f"{message} (HTTP {status})")


def json_object_of(provider: str, response: HttpResponse) -> dict[str, Any]:
    """The JSON object a response holds; anything else is a 502."""
    payload = _json_or_none(response)
    if not isinstance(payload, dict):
        raise malformed(provider, f"not a JSON object: {response.text[:200]!r}")
    return payload


def malformed(provider: str, detail: str) -> UpstreamError:
    """A success answer the gateway cannot use (not JSON, no images, undecodable image data). It is
    `billed`: the provider answered the request as done, and bills it."""
    return UpstreamError(f"{provider} answered with something unusable: {detail}", billed=True)


def _retry_after(response: HttpResponse) -> float | None:
    """The seconds the provider asks to wait: `retry-after-ms` where it sends one (Azure does, in
    milliseconds, and the official OpenAI SDKs read it before `retry-after`), else `retry-after`."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(name)
        try:
            seconds = float(value) * scale if value else None
        except ValueError:
            continue
        if seconds is not None and math.isfinite(seconds):
            return max(0.0, seconds)
    return None


class Upstream:
    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        is_refusal: RefusalTest,
        *,
        attempts: int = 3,
        max_download_bytes: int = 50 * 1024 * 1024,
        is_credential_error: RefusalTest = _never,
        retry_rate_limits: bool = True,
    ) -> None:
        self.provider = provider
        self._base_url = base_url.rstrip("/")
        self._is_refusal = is_refusal
        self._is_credential_error = is_credential_error
        self._attempts = max(1, attempts)
        self._retry_rate_limits = retry_rate_limits
        self._max_download_bytes = max_download_bytes
        from service.providers import http  # see the module docstring

        self._transport_error = http.TransportError
        self._stream_broken = http.StreamBroken
        self._dropped_after_send = http.DroppedAfterSend
        self._answer_timeout = http.AnswerTimeout
        self._client = http.HttpClient(headers, follow_redirects=False)
        # Image URLs are other hosts (CDNs, signed storage) and redirect; they get no credentials.
        self._downloads = http.HttpClient({}, follow_redirects=True)

    @classmethod
    def from_config(
        cls,
        config: ProviderConfig,
        settings: Settings,
        headers: Mapping[str, str],
        is_refusal: RefusalTest,
        is_credential_error: RefusalTest = _never,
    ) -> Upstream:
        return cls(
            config.name,
            config.base_url,
            headers,
            is_refusal,
            attempts=settings.upstream_attempts,
            max_download_bytes=settings.max_download_bytes,
            is_credential_error=is_credential_error,
            retry_rate_limits=not config.pooled,  # (another key serves the call at once)
        )

    def url(self, path: str) -> str:
        """`path` under the provider's base URL; an absolute URL (a polling URL) as it is."""
        return path if path.startswith(("https://", "http://")) else self._base_url + path

    def on_base_host(self, url: object, fallback: str) -> str:
        """`url` (an address the provider answered with, such as a job's status URL) if it is on the
        base URL's scheme and host, where the credentials may travel; else `fallback`, a path under
        the base URL."""
        if isinstance(url, str):
            theirs, ours = urlsplit(url), urlsplit(self._base_url)
            if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
                return url
        return fallback

    async def request(self, method: str, path: str, deadline: float, **kwargs: Any) -> HttpResponse:
        """A 2xx response, or the mapped error once retries are used up or the deadline is near.
        `kwargs`: json=, data= and files= (a multipart form), headers=, on_event= (see http.py)."""
        for attempt in range(1, self._attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamTimeout(f"{self.provider} did not answer in time.")
            try:
                response = await self._client.request(method, self.url(path), remaining, **kwargs)
            except TimeoutError as exc:
                # (sent: the provider has it; not sent: the connection was not even made in time)
                sent = isinstance(exc, self._answer_timeout)
                raise UpstreamTimeout(f"{self.provider} did not answer in time.", billed=sent) from exc
            except self._stream_broken as exc:
                message = f"The answer from {self.provider} broke off."
                raise self._unreachable(exc, message, billed=True) from None
            except self._transport_error as exc:
                if isinstance(exc, self._dropped_after_send) and method not in IDEMPOTENT_METHODS:
                    message = f"The connection to {self.provider} broke off after the request went out."
                    raise self._unreachable(exc, message, billed=True) from None
                error: MgError = self._unreachable(exc, f"Could not reach {self.provider}.")
                pause = self._backoff(attempt, None)
            else:
                if response.is_success:
                    return response
                error = upstream_error(self.provider, response, self._is_refusal, self._is_credential_error)
                if response.status not in RETRYABLE_STATUS or isinstance(error, ContentPolicyViolation):
                    raise error
                if response.status == 429 and not self._retry_rate_limits:
                    raise error
                pause = self._backoff(attempt, _retry_after(response))
            if attempt == self._attempts or time.monotonic() + pause >= deadline:
                raise error
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _unreachable(self, exc: Exception, message: str, *, billed: bool = False) -> UpstreamError:
        """A connection failure as the caller sees it: which provider, not where it lives. The
        exception names the provider's (or its CDN's) host, port and addresses, which are the
        operator's business: they go to the log only."""
        log.warning("%s (%r)", message, exc)
        return UpstreamError(message, billed=billed)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return float(BACKOFF_BASE_S * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))

    async def json(self, method: str, path: str, deadline: float, **kwargs: Any) -> Any:
        """`request`, with the body parsed as JSON (garbage is a 502 with what arrived)."""
        response = await self.request(method, path, deadline, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise malformed(self.provider, f"not JSON: {response.text[:200]!r}") from None

    async def json_object(
        self, method: str, path: str, deadline: float, **kwargs: Any
    ) -> tuple[dict[str, Any], HttpResponse]:
        """(the JSON object answered, the response for its headers); anything else is a 502."""
        response = await self.request(method, path, deadline, **kwargs)
        return json_object_of(self.provider, response), response

    async def download(self, url: str, deadline: float) -> tuple[bytes, str]:
        """(bytes, media type) of an image at a provider URL; size-limited, time-limited, sniffed.
        Its failures are `billed`: the provider made the image it answered with."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout(f"No time left to download the image from {self.provider}.", billed=True)
        try:
            response = await self._downloads.request(
                "GET", url, remaining, max_bytes=self._max_download_bytes
            )
        except TooLarge:
            raise UpstreamError(
                f"{self.provider} image is larger than {self._max_download_bytes} bytes.", billed=True
            ) from None
        except TimeoutError as exc:
            message = f"Downloading the image from {self.provider} timed out."
            raise UpstreamTimeout(message, billed=True) from exc
        except (self._transport_error, ValueError) as exc:  # ValueError: not a URL
            message = f"Could not download the image from {self.provider}."
            raise self._unreachable(exc, message, billed=True) from None
        if not response.is_success:
            message = f"{self.provider} image download failed (HTTP {response.status})."
            raise UpstreamError(message, billed=True)
        media_type = sniff_media_type(response.content)
        if media_type is None:
            raise malformed(self.provider, "the image URL did not serve an image")
        return response.content, media_type

    async def image(self, url: str, deadline: float) -> tuple[bytes, str]:
        """(bytes, media type) of an output file a provider answered with: a data: URL decoded, any
        other URL downloaded."""
        if url.startswith("data:"):
            return decode_image(self.provider, url)
        return await self.download(url, deadline)

    async def item_image(self, item: dict[str, Any], deadline: float) -> tuple[bytes, str]:
        """(bytes, media type) of an OpenAI-style image item: its b64_json decoded, else its url
        fetched."""
        if item.get("b64_json"):
            return decode_image(self.provider, item["b64_json"])
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self.image(url, deadline)
        raise malformed(self.provider, "an image item with neither b64_json nor url")

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._downloads.aclose()


def data_items(provider: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The `data` list of an OpenAI-style images answer, checked to be a list of objects."""
    items = payload.get("data")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise malformed(provider, "no list of images under `data`")
    return items


def revised_prompt(item: dict[str, Any]) -> str | None:
    """An OpenAI-style image item's `revised_prompt`, when it is text (anything else is not one,
    and must not fail a call whose image exists)."""
    value = item.get("revised_prompt")
    return value if isinstance(value, str) and value else None


def decode_image(provider: str, b64: object) -> tuple[bytes, str]:
    """(bytes, media type) from a provider's base64 field; anything else is a 502."""
    if not isinstance(b64, str) or not b64:
        raise malformed(provider, "an image without data")
    if b64.startswith("data:"):
        b64 = b64.partition(",")[2]
    try:
        data = pybase64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise malformed(provider, "image data that is not base64") from None
    media_type = sniff_media_type(data)
    if media_type is None:
        raise malformed(provider, "image data that is not an image")
    return data, media_type
