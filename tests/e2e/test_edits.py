"""Edits and variations as the official SDKs send them: openai-python (sync and async) -> Envoy
(the raw multipart body through the transcoder) -> gRPC -> the offline provider, or the fake OpenAI
Images API (which checks the form it receives against OpenAI's schema)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import openai
import pytest
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc
from PIL import Image
from ulid import ULID

from tests.fakes import environment
from tests.fakes.openai import FakeOpenAI
from tests.support.checks import assert_error, decode_png, validate
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client


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
                model="local/canvas",
                image=("a.png", png(), "image/png"),
                size="64x64",  # type: ignore[arg-type]
            )
    assert edited.data is not None and len(edited.data) == 2
    assert varied.data is not None and len(varied.data) == 1


def test_sdk_variation(client: openai.OpenAI) -> None:
    with pytest.warns(DeprecationWarning):  # the SDK marks variations deprecated; they still work
        result = client.images.create_variation(
            model="local/canvas",
            image=("in.png", png(), "image/png"),
            size="128x128",  # type: ignore[arg-type]
            n=2,
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
        ("openai/dall-e-3", {"size": "1024x1024"}, 403, "MODEL_NOT_ALLOWED", "model"),  # no edits
        ("local/sketch", {"size": "256x256", "image": [("a.png", png(), "image/png")] * 5}, 403,
         "MODEL_NOT_ALLOWED", "image"),  # at most 4
        ("stability/stable-image-ultra", {"size": "1024x1024", "mask": ("m.png", mask_png(), "image/png")},
         403, "MODEL_NOT_ALLOWED", "mask"),  # an image, but no mask
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
        client.images.edit(  # type: ignore[call-overload]
            model=model, prompt="p", **{"size": "64x64", "image": ("a.png", png(), "image/png"), **kwargs}
        )
    assert caught.value.status_code == status
    assert caught.value.body["code"] == code and caught.value.body["param"] == param  # type: ignore[index]


# --- through a provider: the fake OpenAI Images API, which checks the form it receives


@pytest.fixture(scope="module")
def openai_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeOpenAI]]:
    with FakeOpenAI().running() as fake:
        gateway = GatewayProcess(tmp_path_factory.mktemp("edits-openai"), environment(fake)).start()
        try:
            yield gateway, fake  # type: ignore[misc]
        finally:
            gateway.stop()


@pytest.fixture
def fake_openai(openai_stack: tuple[GatewayProcess, FakeOpenAI]) -> FakeOpenAI:
    openai_stack[1].reset()
    return openai_stack[1]


def project_money(gateway: GatewayProcess, project: str) -> tuple[float, float]:
    shown = gateway.project(project)
    return shown["spent_usd"], shown["reserved_usd"]


def test_gpt_image_edit_with_several_images_and_a_mask_is_charged_its_tokens(
    openai_stack: tuple[GatewayProcess, FakeOpenAI], fake_openai: FakeOpenAI
) -> None:
    gateway, _ = openai_stack
    key = gateway.new_key(project := f"edit-{ULID()}")
    sdk = openai_client(f"{gateway.http_url}/v1", key)
    images = [("a.png", png(), "image/png"), ("b.png", png(color=(0, 0, 255, 255)), "image/png")]
    result = sdk.images.edit(
        model="openai/gpt-image-1", image=images, mask=("m.png", mask_png(), "image/png"), prompt="p"
    )
    assert result.data is not None and len(result.data) == 1
    assert fake_openai.edited == [png(), png(color=(0, 0, 255, 255))]
    # The fake bills 12 text tokens, 194 per input image and 4160 output tokens, at gpt-image-1's
    # $5 / $10 / $40 per million.
    (row,) = gateway.usage(project)
    assert row["cost_micros"] == 12 * 5 + 2 * 194 * 10 + 4160 * 40
    assert result.usage is not None and result.usage.input_tokens_details.image_tokens == 2 * 194


def test_dalle2_variation_through_the_gateway(
    openai_stack: tuple[GatewayProcess, FakeOpenAI], fake_openai: FakeOpenAI
) -> None:
    gateway, _ = openai_stack
    sdk = openai_client(f"{gateway.http_url}/v1", gateway.key)
    with pytest.warns(DeprecationWarning):
        result = sdk.images.create_variation(
            model="openai/dall-e-2", image=("a.png", png(), "image/png"), size="256x256", n=2
        )
    assert result.data is not None and len(result.data) == 2
    (sent,) = fake_openai.generation_requests()
    assert sent.path == "/v1/images/variations"


def test_an_edit_past_the_spend_cap_is_402_and_the_provider_is_never_called(
    openai_stack: tuple[GatewayProcess, FakeOpenAI], fake_openai: FakeOpenAI
) -> None:
    gateway, _ = openai_stack
    key = gateway.new_key(project := f"edit-cap-{ULID()}", "--budget-usd", "0.01")
    sdk = openai_client(f"{gateway.http_url}/v1", key)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.images.edit(model="openai/gpt-image-1", image=("a.png", png(), "image/png"), prompt="p")
    assert caught.value.status_code == 402
    assert fake_openai.generation_requests() == []
    assert project_money(gateway, project) == (0.0, 0.0)


def test_an_edit_is_replayed_by_its_idempotency_key(
    openai_stack: tuple[GatewayProcess, FakeOpenAI], fake_openai: FakeOpenAI
) -> None:
    gateway, _ = openai_stack
    key = gateway.new_key(project := f"edit-idem-{ULID()}")
    sdk = openai_client(f"{gateway.http_url}/v1", key)
    headers = {"Idempotency-Key": f"k-{ULID()}"}
    image = ("a.png", png(), "image/png")
    first = sdk.images.with_raw_response.edit(
        model="openai/gpt-image-1", image=image, prompt="p", extra_headers=headers
    )
    # The SDK sends another multipart boundary each time: the key still matches the same edit.
    again = sdk.images.with_raw_response.edit(
        model="openai/gpt-image-1", image=image, prompt="p", extra_headers=headers
    )
    assert again.headers["x-mg-idempotent-replay"] == "true"
    assert again.parse().model_dump() == first.parse().model_dump()
    assert len(fake_openai.generation_requests()) == 1
    (row,) = gateway.usage(project)
    assert row["requests"] == 1
    with pytest.raises(openai.UnprocessableEntityError):  # the same key for another edit
        sdk.images.edit(model="openai/gpt-image-1", image=image, prompt="other", extra_headers=headers)


def test_a_duplicate_edit_in_flight_joins_the_first(gateway: GatewayProcess) -> None:
    key = gateway.new_key(project := f"edit-join-{ULID()}")
    sdk = openai_client(f"{gateway.http_url}/v1", key)
    headers = {"Idempotency-Key": f"k-{ULID()}"}

    def edit() -> tuple[Any, float]:
        answer = sdk.images.with_raw_response.edit(
            model="local/canvas", image=("a.png", png(), "image/png"), prompt="slow", size="64x64",
            extra_headers=headers, extra_body={"providerOptions": json.dumps({"local": {"delay_ms": 1500}})},
        )  # fmt: skip
        return answer, time.monotonic()

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(edit)
        time.sleep(0.5)  # the first has claimed the key and is rendering
        second = pool.submit(edit)
        (answer, first_done), (joined, second_done) = first.result(), second.result()
    answers = [answer, joined]
    # Each answer's own time, not the whole exchange's (the callers' side of it stretches on a loaded
    # machine): the first rendered slowly (the option reached it), and the second answered with it,
    # not a rendering (1.5 s) later.
    assert first_done - started >= 1.5
    assert second_done - first_done < 1.5
    assert answers[0].parse().model_dump() == answers[1].parse().model_dump()
    assert answers[1].headers.get("x-mg-idempotent-replay") == "true"
    (row,) = gateway.usage(project)
    assert (row["requests"], row["images"]) == (1, 1)


# --- uploads that do not read: a 4xx envelope, nothing charged, the server still up


def post_raw(gateway: GatewayProcess, key: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.http_url}/v1/images/edits",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": content_type},
        timeout=60,
    )


def form(boundary: str, *parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "\r\nContent-Type: image/png" if filename else ""
        out += f"--{boundary}\r\nContent-Disposition: {disposition}{kind}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


GOOD = (("model", None, b"local/canvas"), ("prompt", None, b"p"), ("size", None, b"64x64"))


B0 = "multipart/form-data; boundary=b0"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "param"),
    [
        (form("b0", *GOOD, ("image", "a.png", png()))[:-40], B0, 400, "BAD_REQUEST", None),
        (form("b0", *GOOD, ("image", "a.png", png())), B0.replace("b0", "other"), 400, "BAD_REQUEST", None),
        (form("b0", *GOOD, ("image", "a.png", png())), "multipart/form-data", 400, "BAD_REQUEST", None),
        (form("b0", *GOOD, ("image", "a.png", b"%PDF-1.4")), B0, 400, "INVALID_REFERENCE_IMAGE", "image"),
        (form("b0", *GOOD, ("n", None, b"two"), ("image", "a.png", png())), B0, 400, "BAD_REQUEST", "n"),
        (form("b0", *GOOD, ("image", "a.png", b"\0" * (21 * 1024 * 1024))), B0, 413, "REQUEST_TOO_LARGE",
         "image"),
        (form("b0", *GOOD, *[("image[]", "a.png", b"\0" * (17 * 1024 * 1024))] * 2), B0, 413,
         "REQUEST_TOO_LARGE", None),
        (b'{"model": "local/canvas", "prompt": "p", "images": [{"image_url": 5}]}', "application/json", 400,
         "BAD_REQUEST", None),
        (b"model=local/canvas", "application/x-www-form-urlencoded", 400, "BAD_REQUEST", None),
        (b'{"model": "local/canvas", "prompt": "p", "images": [{"file_id": "file-abc"}]}', "application/json",
         400, "BAD_REQUEST", "image"),
        (form("b0", *GOOD, ("stream", None, b"true"), ("partial_images", None, b"4"),
              ("image", "a.png", png())), B0, 400, "BAD_REQUEST", "partial_images"),
        (b'{"model": "local/canvas", "prompt": "p", "images": [{"image_url": "http://127.0.0.1:9/a.png"}]}',
         "application/json", 400, "INVALID_REFERENCE_IMAGE", "image"),
        (b'{"model": "local/canvas", "prompt": "p", "images": [{"image_url": "data:image/png;base64,' +
         base64.b64encode(png()) + b'"}], "mask": {"image_url": "http://169.254.169.254/m.png"}}',
         "application/json", 400, "INVALID_REFERENCE_IMAGE", "mask"),
    ],
    ids=["truncated", "wrong-boundary", "no-boundary", "not-an-image", "not-an-integer", "huge-part",
         "huge-body", "json-wrong-type", "urlencoded", "file-id", "too-many-partials", "loopback-url",
         "metadata-url-mask"],
)  # fmt: skip
def test_uploads_that_do_not_read_are_refused_and_cost_nothing(
    gateway: GatewayProcess, body: bytes, content_type: str, status: int, code: str, param: str | None
) -> None:
    key = gateway.new_key(project := f"bad-upload-{ULID()}")
    response = post_raw(gateway, key, body, content_type)
    assert_error(response, status, code, param)
    assert gateway.usage(project) == [] or gateway.usage(project)[0]["cost_micros"] == 0
    assert project_money(gateway, project) == (0.0, 0.0)
    ok = post_raw(
        gateway, key, form("b1", *GOOD, ("image", "a.png", png())), "multipart/form-data; boundary=b1"
    )
    assert ok.status_code == 200, ok.text


# --- gRPC callers: the typed methods, image bytes raw


def test_grpc_edit_and_variation(grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess) -> None:
    metadata = (("authorization", f"Bearer {gateway.key}"),)
    edited = grpc_stub.EditImages(
        pb.EditImagesRequest(
            model="local/canvas",
            prompt="p",
            size="64x64",
            images=[pb.InputImage(data=png()), pb.InputImage(data=png(color=(0, 0, 255, 255)))],
            mask=pb.InputImage(data=mask_png()),
        ),
        metadata=metadata,
        timeout=30,
    )
    assert decode_png(edited.data[0].b64_json).size == (64, 64)
    varied = grpc_stub.CreateImageVariations(
        pb.CreateImageVariationsRequest(
            model="local/canvas", image=pb.InputImage(data=png()), size="64x64", n=2
        ),
        metadata=metadata,
        timeout=30,
    )
    assert len(varied.data) == 2 and varied.usage.output_images == 2
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.CreateImageVariations(
            pb.CreateImageVariationsRequest(model="local/sketch", image=pb.InputImage(data=png())),
            metadata=metadata,
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_models_say_what_each_model_takes_for_edits(client: openai.OpenAI) -> None:
    models = {model.id: model.model_dump() for model in client.models.list()}
    canvas, sketch = models["local/canvas"]["capabilities"], models["local/sketch"]["capabilities"]
    assert (canvas["max_input_images"], canvas["mask"], canvas["variations"]) == (16, True, True)
    assert (sketch["max_input_images"], sketch["mask"], sketch["variations"]) == (4, True, False)
    inpaint = models["stability/inpaint"]["capabilities"]
    assert (inpaint["max_input_images"], inpaint["mask"], inpaint["generations"]) == (1, True, False)
    assert canvas["generations"] is True
    gpt = models["openai/gpt-image-1.5"]
    assert gpt["capabilities"]["max_input_images"] == 16 and gpt["price"]["per_input_image_micros"] == 52_000
    assert models["openai/dall-e-2"]["capabilities"]["variations"] is True
