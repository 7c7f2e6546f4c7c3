"""Ideogram's remix and edit endpoints through the whole gateway: the OpenAI SDK -> Envoy -> gRPC ->
the Ideogram adapter -> the fake Ideogram API (which checks each form against Ideogram's document)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from tests.fakes import environment
from tests.fakes.base import png
from tests.fakes.ideogram import FakeIdeogram
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeIdeogram]]:
    with FakeIdeogram().running() as running:
        fake = running
        assert isinstance(fake, FakeIdeogram)
        gateway = GatewayProcess(tmp_path_factory.mktemp("ideogram"), environment(fake)).start()
        try:
            yield gateway, fake
        finally:
            gateway.stop()


@pytest.fixture
def fake(stack: tuple[GatewayProcess, FakeIdeogram]) -> FakeIdeogram:
    stack[1].reset()
    return stack[1]


@pytest.fixture
def sdk(stack: tuple[GatewayProcess, FakeIdeogram], fake: FakeIdeogram) -> openai.OpenAI:
    return openai_client(f"{stack[0].http_url}/v1", stack[0].key)


def mask_png(side: int) -> bytes:
    """An OpenAI mask: opaque left half (kept), transparent right half (changed)."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (side // 2, 0, side, side))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_an_sdk_edit_with_a_mask_reaches_ideograms_edit_endpoint(
    sdk: openai.OpenAI, fake: FakeIdeogram
) -> None:
    picture = png(64, 64, (10, 200, 90))
    result = sdk.images.edit(
        model="ideogram/v3",
        image=("in.png", picture, "image/png"),
        mask=("mask.png", mask_png(64), "image/png"),
        prompt="a red door",
        n=2,
        quality="high",
    )
    assert result.data is not None and len(result.data) == 2 and result.data[0].b64_json
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/ideogram-v3/edit"
    assert sent.form.items() >= {"image": picture, "num_images": "2", "rendering_speed": "QUALITY"}.items()
    with Image.open(io.BytesIO(fake.masks[0])) as mask:
        assert (mask.getpixel((8, 32)), mask.getpixel((56, 32))) == (255, 0)  # black where to change


def test_a_reference_image_is_a_remix(sdk: openai.OpenAI, fake: FakeIdeogram) -> None:
    picture = png(64, 64, (200, 10, 90))
    result = sdk.images.generate(
        model="ideogram/v3",
        prompt="the same, as a poster",
        size="1312x736",
        extra_body={
            "reference_image": base64.b64encode(picture).decode(),
            "providerOptions": {"ideogram": {"image_weight": 80}},
        },
    )
    assert result.data is not None and len(result.data) == 1 and result.data[0].b64_json
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/ideogram-v3/remix"
    assert sent.form.items() >= {"image": picture, "resolution": "1312x736", "image_weight": "80"}.items()


def test_a_call_whose_every_image_is_unsafe_is_a_content_policy_violation(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(model="ideogram/v3", prompt="UNSAFE_ALL harbour", n=2)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "CONTENT_POLICY_VIOLATION"
