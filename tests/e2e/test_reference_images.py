"""reference_image through the whole stack, with the offline image-to-image model (local/canvas)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import httpx
from PIL import Image

from tests.fakes.base import png
from tests.support.checks import assert_error, decode_png
from tests.support.gateway import GatewayProcess
from tests.support.image_server import serving

BODY = {"model": "local/canvas", "prompt": "over a red square", "size": "256x256"}


def post(gw: GatewayProcess, key: str, body: Mapping[str, object]) -> httpx.Response:
    return gw.generate(body, key)


def test_a_base64_reference_changes_the_image(gateway: GatewayProcess) -> None:
    plain = post(gateway, gateway.key, BODY)
    edited = post(gateway, gateway.key, {**BODY, "reference_image": base64.b64encode(png(64, 64)).decode()})
    assert plain.status_code == edited.status_code == 200, edited.text
    (image,) = [base64.b64decode(d["b64_json"]) for d in edited.json()["data"]]
    assert decode_png(image).size == (256, 256)
    assert image != base64.b64decode(plain.json()["data"][0]["b64_json"])


def test_refused_references_are_400_and_charge_nothing(gateway: GatewayProcess) -> None:
    key = gateway.new_key("references-refused")
    with serving({"/cat.png": (200, {"content-type": "image/png"}, png())}) as base:
        for reference, match in (
            (f"{base}/cat.png", "non-public address"),  # the gateway's own loopback
            ("aGVsbG8gd29ybGQ=", "not a readable image"),
            ("gopher://example.com/x", "must be http"),
        ):
            error = assert_error(
                post(gateway, key, {**BODY, "reference_image": reference}),
                400,
                "INVALID_REFERENCE_IMAGE",
                "reference_image",
            )
            assert match in error["message"]
    assert gateway.usage("references-refused") == []


def test_a_model_without_edit_support_is_403(gateway: GatewayProcess) -> None:
    reference = base64.b64encode(png()).decode()
    body = {**BODY, "model": "stability/stable-image-core", "reference_image": reference}
    assert_error(post(gateway, gateway.key, body), 403, "MODEL_NOT_ALLOWED", "reference_image")


def test_a_picture_over_4096x4096_is_refused_from_its_header(gateway: GatewayProcess) -> None:
    """A 17 kB PNG of 4097x4096 pixels: over what any provider takes (the default limit was once
    50 M pixels, and a 7000x7000 picture sent with n=8 took a worker from 184 MB to 1.3 GB)."""
    out = io.BytesIO()
    Image.new("L", (4097, 4096)).save(out, format="PNG")
    key = gateway.new_key("references-too-many-pixels")
    body = {**BODY, "n": 8, "reference_image": base64.b64encode(out.getvalue()).decode()}
    error = assert_error(post(gateway, key, body), 400, "INVALID_REFERENCE_IMAGE", "reference_image")
    assert "4097x4096 pixels; the limit is 16777216" in error["message"]
    assert gateway.usage("references-too-many-pixels") == []
