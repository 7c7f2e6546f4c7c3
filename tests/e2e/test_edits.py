"""Edits and variations as the official SDKs send them: openai-python (sync and async) -> Envoy
(the raw multipart body through the transcoder) -> gRPC -> the offline provider."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.support.checks import decode_png, validate
from tests.support.gateway import GatewayProcess


def png(width: int = 64, height: int = 64, color: tuple[int, ...] = (200, 30, 30, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def mask_png(width: int = 64, height: int = 64) -> bytes:
    """Opaque left half (kept), transparent right half (edited)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def first_image(result: openai.types.ImagesResponse) -> Image.Image:
    assert result.data is not None and result.data[0].b64_json is not None
    return decode_png(base64.b64decode(result.data[0].b64_json))


def test_sdk_edit_with_one_image(client: openai.OpenAI, openai_schema: dict[str, object]) -> None:
    result = client.images.edit(
        model="local/canvas", image=("in.png", png(), "image/png"), prompt="make it blue", size="256x256"
    )
    assert first_image(result).size == (256, 256)
    validate(result.model_dump(exclude_none=True), openai_schema, "ImagesResponse")


def test_sdk_edit_with_several_images_differs_from_one(client: openai.OpenAI) -> None:
    one = client.images.edit(
        model="local/canvas", image=("a.png", png(), "image/png"), prompt="p", size="64x64"
    )
    several = client.images.edit(
        model="local/canvas",
        image=[("a.png", png(), "image/png"), ("b.png", png(color=(0, 0, 255, 255)), "image/png")],
        prompt="p",
        size="64x64",
    )
    assert first_image(one).tobytes() != first_image(several).tobytes()


def test_sdk_edit_with_a_mask_keeps_the_opaque_area(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model="local/canvas",
        image=("in.png", png(color=(10, 200, 10, 255)), "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="a red sun",
        size="64x64",
    )
    image = first_image(result).convert("RGB")
    assert image.getpixel((5, 5)) == (10, 200, 10)  # kept: the mask is opaque there
    assert image.getpixel((60, 5)) != (10, 200, 10)  # rendered: the mask is transparent there


async def test_async_sdk_edit_and_variation(gateway: GatewayProcess) -> None:
    base_url = f"{gateway.http_url}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key=gateway.key, max_retries=0) as sdk:
        edited = await sdk.images.edit(
            model="local/canvas", image=[("a.png", png(), "image/png")] * 3, prompt="three", size="64x64", n=2
        )
        with pytest.warns(DeprecationWarning):  # the SDK marks variations deprecated; they still work
            varied = await sdk.images.create_variation(
                model="local/canvas", image=("a.png", png(), "image/png"), size="64x64"
            )
    assert edited.data is not None and len(edited.data) == 2
    assert varied.data is not None and len(varied.data) == 1


def test_sdk_variation(client: openai.OpenAI) -> None:
    with pytest.warns(DeprecationWarning):  # the SDK marks variations deprecated; they still work
        result = client.images.create_variation(
            model="local/canvas", image=("in.png", png(), "image/png"), size="128x128", n=2
        )
    assert result.data is not None and len(result.data) == 2
    assert first_image(result).size == (128, 128)


def test_json_edit_with_image_urls(gateway: GatewayProcess) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    response = httpx.post(
        f"{gateway.http_url}/v1/images/edits",
        headers={"authorization": f"Bearer {gateway.key}"},
        json={"model": "local/canvas", "prompt": "p", "size": "64x64", "images": [{"image_url": data_url}],
              "mask": {"image_url": "data:image/png;base64," + base64.b64encode(mask_png()).decode()}},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


@pytest.mark.parametrize(
    ("model", "kwargs", "status", "code", "param"),
    [
        ("local/sketch", {"size": "256x256"}, 403, "MODEL_NOT_ALLOWED", "model"),
        ("local/canvas", {"image": [("a.png", png(), "image/png")] * 17}, 400, "BAD_REQUEST", "image"),
        ("local/canvas", {"image": ("a.txt", b"not an image", "text/plain")}, 400, "INVALID_REFERENCE_IMAGE",
         "image"),
        ("local/canvas", {"mask": ("m.png", png(32, 32), "image/png")}, 400, "INVALID_MASK", "mask"),
    ],
)  # fmt: skip
def test_edits_the_model_cannot_take_are_refused(
    client: openai.OpenAI, model: str, kwargs: dict[str, object], status: int, code: str, param: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.edit(
            model=model, prompt="p", **{"size": "64x64", "image": ("a.png", png(), "image/png"), **kwargs}
        )
    assert caught.value.status_code == status
    assert caught.value.body["code"] == code and caught.value.body["param"] == param  # type: ignore[index]
