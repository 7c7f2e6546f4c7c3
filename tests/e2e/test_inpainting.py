"""Edits with a mask as the OpenAI SDK sends them (`images.edit(image=..., mask=...)`), through real
Envoy: on the offline local/sketch (streamed and not), and on the inpainting models of the fake
Stability API (/edit/inpaint) and the fake BFL API (FLUX.1 Fill [pro]), which check the mask they
receive. The gateway's mask is OpenAI's (transparent = change); the providers get theirs (white =
change), checked here pixel by pixel, and each inpainting is charged its catalog price."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image
from ulid import ULID

from service.catalog.catalog import MICROS_PER_USD, load_catalog
from tests.fakes import environment
from tests.fakes.bfl import FakeBFL
from tests.fakes.stability import FakeStability
from tests.support.checks import decode_png
from tests.support.gateway import GatewayProcess
from tests.support.pictures import transparent_right_half
from tests.support.sdk import openai_client

PARTIAL, COMPLETED = "image_edit.partial_image", "image_edit.completed"
CATALOG = load_catalog()
Stack = tuple[GatewayProcess, FakeStability, FakeBFL]


def picture(width: int, height: int, color: tuple[int, int, int, int] = (10, 200, 10, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def png_file(name: str, data: bytes) -> tuple[str, bytes, str]:
    return name, data, "image/png"


def first_image(result: openai.types.ImagesResponse) -> Image.Image:
    assert result.data is not None and result.data[0].b64_json is not None
    return Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))


def price_micros(model_id: str) -> int:
    return CATALOG.resolve(model_id).price.per_image(None)


def project_client(gateway: GatewayProcess, prefix: str) -> tuple[openai.OpenAI, str]:
    """An SDK client with a key of a new project of its own, and the project's name."""
    project = f"{prefix}-{ULID()}"
    return openai_client(f"{gateway.http_url}/v1", gateway.new_key(project)), project


def masked_edit(sdk: openai.OpenAI, model: str, width: int, height: int, **fields: Any) -> Any:
    """images.edit of a green width x height picture whose right half the mask marks to change."""
    return sdk.images.edit(
        model=model,
        image=png_file("in.png", picture(width, height)),
        mask=png_file("mask.png", transparent_right_half(width, height)),
        **fields,
    )


# --- local/sketch: edits offline, with the OpenAI SDK


def test_sketch_edit_with_a_mask_renders_only_where_the_mask_is_transparent(client: openai.OpenAI) -> None:
    result = masked_edit(client, "local/sketch", 64, 64, prompt="a red sun", size="256x256")
    image = first_image(result).convert("RGB")
    assert image.size == (256, 256)  # the input, scaled to the asked size
    assert image.getpixel((10, 100)) == (10, 200, 10)  # kept: the mask is opaque there
    assert image.getpixel((250, 100)) != (10, 200, 10)  # rendered: the mask is transparent there
    # The same edit without the mask renders everywhere (the input only shows through).
    plain = client.images.edit(
        model="local/sketch", image=png_file("in.png", picture(64, 64)), prompt="a red sun", size="256x256"
    )
    unmasked = first_image(plain).convert("RGB")
    assert unmasked.getpixel((10, 100)) != (10, 200, 10)


def test_sketch_edit_with_several_images_is_deterministic(client: openai.OpenAI) -> None:
    images = [png_file("a.png", picture(32, 32)), png_file("b.png", picture(32, 32, (0, 0, 255, 255)))]

    def edit() -> bytes:
        result = client.images.edit(model="local/sketch", image=images, prompt="two", size="256x256", n=2)
        assert result.data is not None and len(result.data) == 2
        return base64.b64decode(result.data[0].b64_json or "")

    assert edit() == edit()


def test_sketch_edit_streams_partial_images_then_the_masked_edit(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {
        "model": "local/sketch",
        "image": png_file("in.png", picture(64, 64)),
        "mask": png_file("mask.png", transparent_right_half(64, 64)),
        "prompt": "streamed sketch edit",
        "size": "256x256",
    }
    events = list(client.images.edit(stream=True, partial_images=2, **fields))
    assert [event.type for event in events] == [PARTIAL, PARTIAL, COMPLETED]
    final = decode_png(base64.b64decode(events[-1].b64_json)).convert("RGB")
    assert final.getpixel((10, 100)) == (10, 200, 10) and final.getpixel((250, 100)) != (10, 200, 10)
    plain = client.images.edit(**fields)
    assert plain.data is not None and base64.b64decode(plain.data[0].b64_json or "") == base64.b64decode(
        events[-1].b64_json
    )


# --- the inpainting models of the fake Stability and BFL APIs


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with FakeStability().running() as stability, FakeBFL().running() as bfl:
        variables = {**environment(stability), **environment(bfl)}
        gateway = GatewayProcess(tmp_path_factory.mktemp("inpainting"), variables).start()
        try:
            yield gateway, stability, bfl  # type: ignore[misc]
        finally:
            gateway.stop()


@pytest.fixture
def fakes(stack: Stack) -> Stack:
    stack[1].reset()
    stack[2].reset()
    return stack


def white_where_changed(mask_png: bytes, width: int, height: int) -> None:
    with Image.open(io.BytesIO(mask_png)) as mask:
        assert mask.size == (width, height)
        grey = mask.convert("L")
        assert grey.getpixel((width - 2, height // 2)) == 255  # the OpenAI mask's transparent half
        assert grey.getpixel((1, height // 2)) == 0  # its opaque half


def test_stability_inpaint_through_the_sdk(fakes: Stack) -> None:
    gateway, stability, _ = fakes
    sdk, project = project_client(gateway, "inpaint")
    options = {"providerOptions": json.dumps({"stability": {"grow_mask": 3}})}
    result = masked_edit(
        sdk, "stability/inpaint", 96, 64, prompt="a boat", size="1024x1024", extra_body=options
    )
    assert first_image(result).size == (96, 64)  # the input's size, whatever was asked
    (sent,) = stability.generation_requests()
    assert sent.path == "/v2beta/stable-image/edit/inpaint" and sent.form["grow_mask"] == "3"
    assert stability.received == [picture(96, 64)]
    white_where_changed(stability.masks[0], 96, 64)
    (row,) = gateway.usage(project)
    assert row["cost_micros"] == price_micros("stability/inpaint") == MICROS_PER_USD * 5 // 100


def test_a_stability_moderation_refusal_is_a_400_and_costs_nothing(fakes: Stack) -> None:
    gateway, stability, _ = fakes
    sdk, project = project_client(gateway, "inpaint-blocked")
    with pytest.raises(openai.BadRequestError) as caught:
        masked_edit(sdk, "stability/inpaint", 64, 64, prompt="BLOCKME")
    assert caught.value.body["code"] == "CONTENT_POLICY_VIOLATION"  # type: ignore[index]
    assert len(stability.generation_requests()) == 1
    assert sum(row["cost_micros"] for row in gateway.usage(project)) == 0


def test_bfl_fill_through_the_sdk_with_the_images_own_transparency(fakes: Stack) -> None:
    gateway, _, bfl = fakes
    sdk, project = project_client(gateway, "fill")
    # No mask: the image's own transparent half is what to fill (OpenAI's rule for dall-e-2).
    result = sdk.images.edit(
        model="bfl/flux-pro-1.0-fill", image=png_file("in.png", transparent_right_half(32, 32)), prompt="p"
    )
    assert result.data is not None and len(result.data) == 1
    (task,) = bfl.tasks.values()
    assert task.endpoint == "flux-pro-1.0-fill" and task.inputs["image"] == transparent_right_half(32, 32)
    white_where_changed(task.inputs["mask"], 32, 32)
    (row,) = gateway.usage(project)
    assert row["cost_micros"] == price_micros("bfl/flux-pro-1.0-fill") == MICROS_PER_USD * 5 // 100


def test_bfl_fill_with_a_mask_streams_its_completed_event(fakes: Stack) -> None:
    gateway, _, bfl = fakes
    sdk = openai_client(f"{gateway.http_url}/v1", gateway.key)
    events = list(
        masked_edit(sdk, "bfl/flux-pro-1.0-fill", 32, 32, prompt="p", stream=True, partial_images=2)
    )
    assert [event.type for event in events] == [COMPLETED]  # BFL makes no partial images
    (task,) = bfl.tasks.values()
    white_where_changed(task.inputs["mask"], 32, 32)


def test_inpainting_refusals_before_any_call(fakes: Stack) -> None:
    gateway, stability, bfl = fakes
    sdk, project = project_client(gateway, "inpaint-refused")
    image, mask = png_file("a.png", picture(64, 64)), png_file("m.png", transparent_right_half(64, 64))
    cases: list[tuple[Any, int, str, str]] = [
        # an edit-only model asked to generate
        (lambda: sdk.images.generate(model="stability/inpaint", prompt="p"), 403, "MODEL_NOT_ALLOWED",
         "model"),
        # an opaque image and no mask: nothing marks what to change
        (lambda: sdk.images.edit(model="bfl/flux-pro-1.0-fill", image=image, prompt="p"), 400, "INVALID_MASK",
         "image"),
        # two images to a model that takes one
        (lambda: sdk.images.edit(model="stability/inpaint", image=[image, image], prompt="p"), 403,
         "MODEL_NOT_ALLOWED", "image"),
        # a mask to a model that takes none
        (lambda: sdk.images.edit(model="stability/sd3.5-large", image=image, mask=mask, prompt="p",
                                 size="1024x1024"), 403, "MODEL_NOT_ALLOWED", "mask"),
    ]  # fmt: skip
    for attempt, status, code, param in cases:
        with pytest.raises(openai.APIStatusError) as caught:
            attempt()
        assert caught.value.status_code == status
        assert caught.value.body["code"] == code and caught.value.body["param"] == param  # type: ignore[index]
    assert stability.requests == [] and bfl.tasks == {}
    assert sum(row["cost_micros"] for row in gateway.usage(project)) == 0
