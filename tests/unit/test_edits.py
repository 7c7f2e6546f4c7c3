"""What edits and variations add to a generation: the shared fields, and their own checks."""

from __future__ import annotations

import base64
import io

import pytest
from google.protobuf import struct_pb2
from mg.v1 import image_generation_pb2 as pb
from PIL import Image

from service.catalog.catalog import load_catalog
from service.errors import BadRequest, ModelNotAllowed, RequestTooLarge
from service.generation.edits import check_edit, check_variation, load_inputs, shared_fields
from service.generation.reference_images import ReferenceLimits

CATALOG = load_catalog()
EDIT_ONLY = {"images", "mask", "input_fidelity"}


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("message", [pb.EditImagesRequest, pb.CreateImageVariationsRequest])
def test_every_field_is_a_generation_field_of_the_same_type_or_its_own(
    message: type[pb.EditImagesRequest] | type[pb.CreateImageVariationsRequest],
) -> None:
    generation = pb.GenerateImagesRequest.DESCRIPTOR.fields_by_name
    for field in message.DESCRIPTOR.fields:
        if field.name in EDIT_ONLY | {"image"}:
            continue
        twin = generation[field.name]
        assert (twin.type, twin.has_presence) == (field.type, field.has_presence), field.name


def test_shared_fields_carry_every_value_over() -> None:
    options = struct_pb2.Struct()
    options.update({"openai": {"quality": "high"}})
    edit = pb.EditImagesRequest(
        model="m", prompt="p", n=0, size="64x64", quality="low", response_format="url", user="u",
        background="transparent", output_format="webp", output_compression=0, moderation="low", stream=True,
        partial_images=2, provider_options=options, images=[pb.InputImage(data=b"x")], input_fidelity="high",
    )  # fmt: skip
    shared = shared_fields(edit)
    assert shared == pb.GenerateImagesRequest(
        model="m", prompt="p", n=0, size="64x64", quality="low", response_format="url", user="u",
        background="transparent", output_format="webp", output_compression=0, moderation="low", stream=True,
        partial_images=2, provider_options=options,
    )  # fmt: skip
    assert shared.HasField("n") and shared.HasField("output_compression")  # zero, but set


def test_edit_capabilities_are_checked_against_the_model() -> None:
    image = pb.InputImage(data=b"x")
    canvas, sketch = CATALOG.resolve("local/canvas"), CATALOG.resolve("openai/dall-e-2")
    assert check_edit(pb.EditImagesRequest(images=[image] * 16, input_fidelity="low"), canvas) == "low"
    with pytest.raises(ModelNotAllowed, match="at most 1 input image") as caught:
        check_edit(pb.EditImagesRequest(images=[image] * 2), sketch)
    assert caught.value.param == "image"
    with pytest.raises(ModelNotAllowed, match="cannot edit"):
        check_edit(pb.EditImagesRequest(images=[image]), CATALOG.resolve("stability/stable-image-core"))
    with pytest.raises(ModelNotAllowed, match="mask"):
        check_edit(
            pb.EditImagesRequest(images=[image], mask=image), CATALOG.resolve("bytedance/seedream-4.0")
        )
    with pytest.raises(BadRequest, match="At most 16"):
        check_edit(pb.EditImagesRequest(images=[image] * 17), canvas)
    with pytest.raises(BadRequest) as missing:
        check_edit(pb.EditImagesRequest(), canvas)
    assert missing.value.param == "image"
    with pytest.raises(BadRequest) as fidelity:
        check_edit(pb.EditImagesRequest(images=[image], input_fidelity="max"), canvas)
    assert fidelity.value.param == "input_fidelity"


def test_variations_need_a_model_that_makes_them() -> None:
    request = pb.CreateImageVariationsRequest(image=pb.InputImage(data=b"x"))
    check_variation(request, CATALOG.resolve("openai/dall-e-2"))
    with pytest.raises(ModelNotAllowed):
        check_variation(request, CATALOG.resolve("openai/gpt-image-1"))
    with pytest.raises(BadRequest):
        check_variation(pb.CreateImageVariationsRequest(), CATALOG.resolve("openai/dall-e-2"))


async def test_input_images_together_stay_within_the_body_limit() -> None:
    picture = png_bytes()
    limits = ReferenceLimits(len(picture), 64 * 64, 5.0, max_total_bytes=2 * len(picture))
    loaded = await load_inputs([pb.InputImage(data=picture)] * 2, limits)
    assert len(loaded) == 2
    with pytest.raises(RequestTooLarge) as caught:
        await load_inputs([pb.InputImage(image_url=base64.b64encode(picture).decode())] * 3, limits)
    assert caught.value.param == "image"
