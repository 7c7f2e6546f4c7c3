"""Reference images: decoding limits, and the SSRF guard against real local HTTP servers."""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import socket

import httpx
import pytest
from PIL import Image

from service.errors import BadRequest
from service.generation.reference_addresses import address_allowed, parse_networks
from service.generation.reference_images import ReferenceLimits, decode_reference, load_reference
from tests.fakes.base import jpeg, png
from tests.support.image_server import serving

LIMITS = ReferenceLimits(max_bytes=1_000_000, max_pixels=4_000_000, timeout_s=5)


def load(value: str, limits: ReferenceLimits = LIMITS):
    return asyncio.run(load_reference(value, limits))


def refused(value: str, match: str, limits: ReferenceLimits = LIMITS) -> None:
    with pytest.raises(BadRequest, match=match) as caught:
        load(value, limits)
    assert caught.value.param == "reference_image"


def test_base64_and_data_urls_decode() -> None:
    image = load(base64.b64encode(png(20, 10)).decode())
    assert (image.media_type, image.width, image.height) == ("image/png", 20, 10)
    assert load("data:image/jpeg;base64," + base64.b64encode(jpeg()).decode()).media_type == "image/jpeg"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("not base64 at all!", "neither base64"),
        (base64.b64encode(b"plain text, not an image").decode(), "not a readable image"),
        (base64.b64encode(png()[:40]).decode(), "not a readable image"),  # truncated
        ("file:///etc/passwd", "must be http"),
        ("ftp://example.com/x.png", "must be http"),
        ("data:image/png,rawbytes", "must be base64"),
    ],
)
def test_bad_inline_images_are_400(value: str, match: str) -> None:
    refused(value, match)


def test_decompression_bombs_are_refused_before_decoding() -> None:
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")  # 400 M pixels in a few kB
    assert len(out.getvalue()) < 200_000
    with pytest.raises(BadRequest, match="pixels"):
        decode_reference(out.getvalue(), LIMITS)


def test_oversized_images_are_refused() -> None:
    with pytest.raises(BadRequest, match="larger than"):
        decode_reference(b"x" * 2_000_000, LIMITS)


# A deny list once let shared address space (100.64.0.0/10), 6to4 forms of private addresses,
# site-local, 192.0.0.0/24 and documentation addresses through; the rest are refused by any check.
NON_PUBLIC = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "fc00::1",
    "::ffff:127.0.0.1", "0.0.0.0", "100.100.100.200", "224.0.0.1",
    "100.64.0.1", "100.127.255.254", "2002:7f00:1::", "2002:a01:203::", "fec0::1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:80ff:fffe", "64:ff9b:1::1",
    "192.0.0.8", "198.18.0.1", "3fff::1", "::7f00:1", "ff0e::1", "168.63.129.16",
]  # fmt: skip
# Public hosts, bare and in each IPv6 form that carries an IPv4 address (93.184.216.34)
PUBLIC = ["93.184.216.34", "2606:4700::1", "::ffff:93.184.216.34", "2002:5db8:d822::", "64:ff9b::5db8:d822"]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), ())


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), ())


def test_allowed_networks_open_chosen_ranges_in_every_form() -> None:
    allow = parse_networks("10.0.0.0/8, 100.64.0.0/10, fec0::/10")
    for address in ("10.1.2.3", "::ffff:10.1.2.3", "2002:a01:203::", "100.64.0.1", "fec0::1"):
        assert address_allowed(ipaddress.ip_address(address), allow), address
    assert not address_allowed(ipaddress.ip_address("127.0.0.1"), allow)


class StubbedNetwork:
    """A resolver that answers from a table and a connector that records where it would connect,
    serving one PNG: the checks run as for a real fetch, and nothing leaves the machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> None:
        self.connected_to: list[str] = []

        async def getaddrinfo(loop: object, host: str, port: int, **_: object) -> list[tuple[object, ...]]:
            address = ipaddress.ip_address(answers[host])
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sockaddr = (str(address), port, 0, 0) if address.version == 6 else (str(address), port)
            return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

        async def send(client: httpx.AsyncClient, request: httpx.Request, **_: object) -> httpx.Response:
            self.connected_to.append(f"{request.url.host} (Host: {request.headers['host']})")
            return httpx.Response(200, content=png(9, 9), request=request)

        monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(httpx.AsyncClient, "send", send)


@pytest.mark.parametrize("address", ["100.64.0.1", "2002:7f00:1::", "fec0::1", "64:ff9b::a00:1"])
def test_a_url_resolving_to_a_non_public_address_is_never_fetched(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    network = StubbedNetwork(monkeypatch, {"images.example": address})
    refused("http://images.example/cat.png", "non-public address")
    assert network.connected_to == []


def test_a_url_resolving_to_a_public_address_is_fetched_from_that_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = StubbedNetwork(monkeypatch, {"images.example": "93.184.216.34"})
    assert load("http://images.example/cat.png").width == 9
    assert network.connected_to == ["93.184.216.34 (Host: images.example)"]


def test_urls_to_loopback_are_refused_unless_allowed() -> None:
    with serving({"/cat.png": (200, {"content-type": "image/png"}, png(30, 30))}) as base:
        refused(f"{base}/cat.png", "non-public address")
        refused(f"{base.replace('127.0.0.1', 'localhost')}/cat.png", "non-public address")
        allowed = ReferenceLimits(1_000_000, 4_000_000, 5, parse_networks("127.0.0.1/32"))
        assert load(f"{base}/cat.png", allowed).width == 30


def test_a_redirect_to_a_refused_address_is_refused() -> None:
    allowed = ReferenceLimits(1_000_000, 4_000_000, 5, parse_networks("127.0.0.2/32"))
    with serving({"/cat.png": (200, {}, png())}) as inside:
        routes = {"/go": (302, {"location": f"{inside}/cat.png"}, b""), "/ok": (200, {}, png(12, 12))}
        with serving(routes, host="127.0.0.2") as outside:
            assert load(f"{outside}/ok", allowed).width == 12
            refused(f"{outside}/go", "non-public address")


def test_download_limits_and_http_errors() -> None:
    big = ReferenceLimits(1000, 4_000_000, 5, parse_networks("127.0.0.1/32"))
    with serving({"/big.png": (200, {}, b"x" * 5000), "/gone.png": (404, {}, b"")}) as base:
        refused(f"{base}/big.png", "larger than", big)
        refused(f"{base}/gone.png", "HTTP 404", big)
        refused("http://nonexistent.invalid/x.png", "does not resolve")


def test_bodies_that_stall_or_break_off_are_refused() -> None:
    # headers and half the body arrive, then nothing (past the 1 s download limit), or a closed socket
    quick = ReferenceLimits(1_000_000, 4_000_000, 1, parse_networks("127.0.0.1/32"))
    image = png(40, 40)
    half = {"x-test-send": str(len(image) // 2)}
    routes = {
        "/stalls.png": (200, {**half, "x-test-then": "stall"}, image),
        "/breaks.png": (200, {**half, "x-test-then": "close"}, image),
    }
    with serving(routes) as base:
        refused(f"{base}/stalls.png", "took longer than 1 s", quick)
        refused(f"{base}/breaks.png", "could not be downloaded", quick)
