"""Reference images (`reference_image`: base64, a data: URL, or an http(s) URL), loaded safely.

URLs are fetched without letting a caller reach the gateway's own network: the host is resolved once
and every address it resolves to must be one reference_addresses allows; the connection goes to the
checked address itself (so DNS cannot change its answer between check and use), and each redirect
hop is checked the same way. Downloads are size- and time-limited. Whatever arrives must decode as
a PNG, JPEG, WebP or GIF image of at most MG_REFERENCE_MAX_PIXELS pixels (decompression bombs are
refused before they are decoded). Every refusal is a 400 naming `reference_image`.

Decoding is where a small file costs a lot of memory, so it is bounded twice: a worker runs at most
MG_REFERENCE_DECODE_CONCURRENCY decodes at once (DecodeSlots), and a request decodes its picture
once to check it and at most once more for its upstream calls, however many `n` fans out into.
"""

from __future__ import annotations

import asyncio
import binascii
import io
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import pybase64

if TYPE_CHECKING:
    import httpx
    from PIL.Image import Image as PILImage

from service.errors import BadRequest, InvalidReferenceImage
from service.generation.reference_addresses import IPAddress, IPNetwork, address_allowed
from service.providers.capped_read import TooLarge, read_capped

PARAM = "reference_image"
MAX_REDIRECTS = 3
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
T = TypeVar("T")


class DecodeSlots:
    """At most `limit` reference-image decodes at once in this worker, on threads of their own.

    A decode holds the whole picture in memory (a 4096x4096 RGBA one is 64 MiB), so a worker's
    memory must not grow with the number of requests that bring one. Decodes wait for a free slot;
    waiting holds no thread of the event loop's default pool, which other work needs."""

    def __init__(self, limit: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="mg-decode")

    def submit(self, work: Callable[[], T]) -> Future[T]:
        return self._pool.submit(work)

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit(work))


DEFAULT_DECODE_SLOTS = 2
_default_slots = DecodeSlots(DEFAULT_DECODE_SLOTS)


@dataclass(frozen=True)
class ReferenceImage:
    """The caller's picture, checked once; what the upstream calls derive from it (a re-encoding, a
    scaled copy) is decoded at most once per request, in a decode slot, and shared by every call of
    a fanned-out request (they all hold this same object)."""

    data: bytes
    media_type: str
    width: int
    height: int
    decodes: DecodeSlots = field(default=_default_slots, compare=False, repr=False)
    _derived: dict[object, Future[Any]] = field(default_factory=dict, init=False, compare=False, repr=False)
    _derived_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, compare=False, repr=False
    )

    def _shared(self, key: object, derive: Callable[[], T]) -> Future[T]:
        """The one decode that makes `key`: started by the first call that asks, joined by the rest."""
        with self._derived_lock:
            future = self._derived.get(key)
            if future is None:
                future = self._derived[key] = self.decodes.submit(derive)
        return future

    def in_formats(self, accepted: Collection[str]) -> tuple[bytes, str]:
        """(bytes, media type) in a format the provider takes: as is when it takes this one, else
        re-encoded as PNG (first frame, with alpha). Providers differ mostly on GIF."""
        if self.media_type in accepted:
            return self.data, self.media_type
        return self._shared("png", lambda: png_with_alpha(self.data)).result(), "image/png"

    async def scaled_alpha(self, width: int, height: int) -> PILImage:
        """The picture's alpha channel ("L"; opaque 255), resized to width x height (for masks)."""
        shared = self._shared(("alpha", width, height), lambda: _scaled_alpha(self.data, width, height))
        return await asyncio.shield(asyncio.wrap_future(shared))

    async def scaled_rgb(self, width: int, height: int) -> PILImage:
        """The picture as RGB, resized to width x height (for image-to-image renders)."""
        shared = self._shared(("rgb", width, height), lambda: _scaled_rgb(self.data, width, height))
        # shielded: one call that is cancelled must not cancel the decode the others wait for
        return await asyncio.shield(asyncio.wrap_future(shared))


def _scaled_alpha(data: bytes, width: int, height: int) -> PILImage:
    from PIL import Image  # on first use, see decode_reference

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").getchannel("A").resize((width, height))


def png_with_alpha(data: bytes) -> bytes:
    from PIL import Image  # on first use, see decode_reference

    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGBA").save(out, format="PNG")
    return out.getvalue()


def _scaled_rgb(data: bytes, width: int, height: int) -> PILImage:
    from PIL import Image  # on first use, see decode_reference

    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (width, height))  # JPEG decodes at a fraction of its size when that is enough
        if image.mode in ("L", "RGB"):  # the same pixels either way; smaller first, then converted
            return image.resize((width, height)).convert("RGB")
        return image.convert("RGB").resize((width, height))


@dataclass(frozen=True)
class ReferenceLimits:
    max_bytes: int
    max_pixels: int
    timeout_s: float
    allow_networks: tuple[IPNetwork, ...] = ()
    decodes: DecodeSlots = field(default=_default_slots, compare=False)
    # The most an edit's input pictures may hold together (0: no limit beyond max_bytes each): the
    # body limit, so pictures fetched from URLs weigh no more than an upload could.
    max_total_bytes: int = 0


def refused(message: str, param: str = PARAM) -> InvalidReferenceImage:
    return InvalidReferenceImage(message, param=param)


def decode_reference(data: bytes, limits: ReferenceLimits, param: str = PARAM) -> ReferenceImage:
    """The image, checked to decode, within the pixel limit; a 400 naming `param` otherwise."""
    # Pillow is imported by the first reference image, not with the module: a worker that never
    # sees one is spared its ~2 MB.
    from PIL import Image

    if len(data) > limits.max_bytes:
        raise refused(f"{param} is larger than {limits.max_bytes} bytes.", param)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > limits.max_pixels:
                raise refused(
                    f"{param} has {width}x{height} pixels; the limit is {limits.max_pixels}.", param
                )
            media_type = FORMATS.get(image.format or "")
            if media_type is None:
                raise refused(f"{param} must be PNG, JPEG, WebP or GIF, not {image.format}.", param)
            image.load()  # decodes every pixel: truncated or corrupt images fail here
    except BadRequest:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise refused(f"{param} is not a readable image ({exc}).", param) from None
    return ReferenceImage(data, media_type, width, height, limits.decodes)


def _decode_base64(value: str, param: str) -> bytes:
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise refused(f"A data: URL {param} must be base64-encoded.", param)
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise refused(f"{param} is neither base64 image data nor an http(s) URL.", param) from None


async def _checked_address(host: str, port: int, allow: Sequence[IPNetwork], param: str) -> IPAddress:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise refused(f"{param} host {host!r} does not resolve.", param) from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not address_allowed(address, allow):
            raise refused(
                f"{param} host {host!r} resolves to a non-public address ({address}); refused.",
                param,
            )
    return addresses[0]


async def _fetch_once(
    client: httpx.AsyncClient, url: str, limits: ReferenceLimits, deadline: float, param: str
) -> httpx.Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refused(f"{param} URLs must be http(s) with a host.", param)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await _checked_address(parts.hostname, port, limits.allow_networks, param)
    # Connect to the address just checked; the Host header and TLS name stay the original host.
    host = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))
    request = client.build_request(
        "GET",
        pinned,
        headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
        extensions={"sni_hostname": parts.hostname, "timeout": _timeouts(deadline)},
    )
    return await client.send(request, stream=True)


def _remaining(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def _timeouts(deadline: float) -> dict[str, float]:
    remaining = _remaining(deadline)
    return {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}


async def fetch_reference(url: str, limits: ReferenceLimits, param: str = PARAM) -> bytes:
    import httpx  # here, not at the top: most workers never fetch a URL, and it costs 3.4 MB each

    deadline = time.monotonic() + limits.timeout_s
    async with httpx.AsyncClient(follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                # One deadline for every hop and the body: httpx's timeouts are per read.
                async with asyncio.timeout(_remaining(deadline)):
                    response = await _fetch_once(client, url, limits, deadline, param)
                    try:
                        if response.is_redirect:
                            url = urljoin(url, response.headers.get("location", ""))
                            continue
                        if not response.is_success:
                            raise refused(f"{param} URL answered HTTP {response.status_code}.", param)
                        length = response.headers.get("content-length")
                        return await read_capped(response.aiter_bytes(), limits.max_bytes, length)
                    finally:
                        await response.aclose()
            except TooLarge:
                raise refused(f"{param} is larger than {limits.max_bytes} bytes.", param) from None
            except (TimeoutError, httpx.TimeoutException):
                raise refused(f"{param} download took longer than {limits.timeout_s:g} s.", param) from None
            except httpx.HTTPError as exc:  # refused, reset or broken off, before or during the body
                raise refused(f"{param} could not be downloaded ({exc.__class__.__name__}).", param) from None
    raise refused(f"{param} URL redirected more than {MAX_REDIRECTS} times.", param)


async def load_reference(value: str, limits: ReferenceLimits, param: str = PARAM) -> ReferenceImage:
    """The image `value` is (base64, a data: URL, or an http(s) URL), loaded and checked; refusals
    name `param` (reference_image, or an edit's image / mask)."""
    lowered = value[:8].lower()
    if lowered.startswith(("http://", "https://")):
        data = await fetch_reference(value, limits, param)
    elif "://" in value[:16]:
        raise refused(f"{param} URLs must be http(s).", param)
    else:
        data = _decode_base64(value, param)
    return await limits.decodes.run(lambda: decode_reference(data, limits, param))
