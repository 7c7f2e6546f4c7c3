"""The clouds' edits through the whole gateway: the OpenAI SDK -> Envoy -> gRPC -> the Bedrock and
Vertex AI adapters -> their fakes (which check Nova's INPAINTING / IMAGE_VARIATION bodies and
Imagen's RAW + MASK references), each edit charged its catalog price."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import ExitStack

import openai
import pytest
from PIL import Image
from ulid import ULID

from tests.fakes import environment
from tests.fakes.base import png
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client

Stack = tuple[GatewayProcess, FakeBedrock, FakeVertex]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ExitStack() as running:
        bedrock = running.enter_context(FakeBedrock().running())
        vertex = running.enter_context(FakeVertex().running())
        assert isinstance(bedrock, FakeBedrock) and isinstance(vertex, FakeVertex)
        env = {**environment(bedrock), **environment(vertex), "AWS_EC2_METADATA_DISABLED": "true"}
        gateway = GatewayProcess(tmp_path_factory.mktemp("cloud-edits"), env).start()
        running.callback(gateway.stop)
        yield gateway, bedrock, vertex


@pytest.fixture
def fakes(stack: Stack) -> Stack:
    stack[1].reset()
    stack[2].reset()
    return stack


def mask_png(width: int, height: int) -> bytes:
    """An OpenAI mask: opaque left half (kept), transparent right half (changed)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def cost_micros(gateway: GatewayProcess, project: str) -> int:
    rows = gateway.usage(project)
    return sum(row["cost_micros"] for row in rows)


def test_a_nova_canvas_edit_with_a_mask_is_inpainting_charged_per_image(fakes: Stack) -> None:
    gateway, bedrock, _ = fakes
    sdk = openai_client(f"{gateway.http_url}/v1", gateway.new_key(project := f"nova-{ULID()}"))
    result = sdk.images.edit(
        model="bedrock/amazon.nova-canvas-v1:0",
        image=("in.png", png(512, 512, (10, 200, 90)), "image/png"),
        mask=("mask.png", mask_png(512, 512), "image/png"),
        prompt="a red door",
        size="512x512",
        n=2,
    )
    assert result.data is not None and len(result.data) == 2 and result.data[0].b64_json
    (sent,) = bedrock.generation_requests()
    assert sent.json is not None and sent.json["taskType"] == "INPAINTING"
    ((task, mask),) = bedrock.masks
    assert task == "INPAINTING"
    assert mask.convert("RGB").getpixel((400, 256)) == (0, 0, 0)  # transparent: black, changed
    assert cost_micros(gateway, project) == 2 * 40_000  # Nova standard up to 1024x1024: $0.04 each


def test_a_nova_canvas_variation_is_an_image_variation(fakes: Stack) -> None:
    gateway, bedrock, _ = fakes
    sdk = openai_client(f"{gateway.http_url}/v1", gateway.key)
    with pytest.warns(DeprecationWarning):
        result = sdk.images.create_variation(
            model="bedrock/amazon.nova-canvas-v1:0",
            image=("in.png", png(64, 64), "image/png"),
            size="1024x1024",
        )
    assert result.data is not None and len(result.data) == 1
    (sent,) = bedrock.generation_requests()
    assert sent.json is not None and sent.json["taskType"] == "IMAGE_VARIATION"
    assert "text" not in sent.json["imageVariationParams"]


def test_an_imagen_edit_on_vertex_sends_raw_and_mask_references(fakes: Stack) -> None:
    gateway, _, vertex = fakes
    sdk = openai_client(f"{gateway.http_url}/v1", gateway.new_key(project := f"imagen-{ULID()}"))
    result = sdk.images.edit(
        model="vertex/imagen-3.0-capability-001",
        image=("in.png", png(64, 64), "image/png"),
        mask=("mask.png", mask_png(64, 64), "image/png"),
        prompt="a red door",
        extra_body={"providerOptions": json.dumps({"vertex": {"editMode": "EDIT_MODE_INPAINT_REMOVAL"}})},
    )
    assert result.data is not None and len(result.data) == 1 and result.data[0].b64_json
    ((raw, mask, parameters),) = vertex.edits
    assert raw.size == (64, 64) and mask is not None
    assert (mask.getpixel((8, 32)), mask.getpixel((56, 32))) == (0, 255)  # white where to change
    assert parameters["editMode"] == "EDIT_MODE_INPAINT_REMOVAL"
    assert cost_micros(gateway, project) == 40_000


def test_a_model_that_does_not_edit_is_refused_before_any_call(fakes: Stack) -> None:
    gateway, bedrock, _ = fakes
    sdk = openai_client(f"{gateway.http_url}/v1", gateway.key)
    with pytest.raises(openai.PermissionDeniedError):
        sdk.images.edit(
            model="bedrock/stability.stable-image-ultra-v1:1",
            image=("in.png", png(64, 64), "image/png"),
            prompt="a red door",
        )
    assert bedrock.generation_requests() == []
