"""Edits and variations: what they add to a generation before it runs the same pipeline.

An edit (POST /v1/images/edits, EditImages) is a generation with input images and an optional mask;
a variation (POST /v1/images/variations) one with a single input image and no prompt. Their fields
shared with generations are validated by validation.py (as the GenerateImagesRequest of those
fields); what is theirs is checked here, before anything is reserved:
  - the model must take what was sent (edits at all, this many input images, a mask, variations),
    else 403 MODEL_NOT_ALLOWED, a capability mismatch;
  - then, in the pipeline's input step, every input image is loaded like a reference_image (bytes,
    base64, or an http(s) URL through the SSRF-checked loader) and the mask must be a PNG the size of
    the first image.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import Catalog, ModelSpec
from service.errors import BadRequest, InvalidMask, ModelNotAllowed, RequestTooLarge
from service.generation.admission import Admitted, admit_targets
from service.generation.reference_images import (
    ReferenceImage,
    ReferenceLimits,
    decode_reference,
    load_reference,
)
from service.generation.validation import EDIT, VARIATION, GenerationRequest, choice
from service.stores.base import Project

# The most input images an edit may carry (OpenAI's GPT image models take 16, the most of any
# provider); a model's catalog entry may allow fewer.
MAX_INPUT_IMAGES = 16
INPUT_FIDELITIES = ("high", "low")


def shared_fields(
    request: pb.EditImagesRequest | pb.CreateImageVariationsRequest,
) -> pb.GenerateImagesRequest:
    """The fields an edit or a variation shares with a generation (the same names, types and
    presence), for validation.py; the rest (images, mask, input_fidelity) are checked here."""
    shared = pb.GenerateImagesRequest()
    generation_fields = shared.DESCRIPTOR.fields_by_name
    for field, value in request.ListFields():
        if field.name not in generation_fields:
            continue
        if field.message_type is not None:
            getattr(shared, field.name).CopyFrom(value)
        else:
            setattr(shared, field.name, value)
    return shared


def _has_image(image: pb.InputImage) -> bool:
    return bool(image.data or image.image_url)


def check_edit(request: pb.EditImagesRequest, model: ModelSpec) -> str | None:
    """The edit's own fields against `model`; returns its input_fidelity."""
    images = len(request.images)
    if not images:
        raise BadRequest("image is required: the image (or up to 16 images) to edit.", param="image")
    if any(not _has_image(image) for image in request.images):
        raise BadRequest(
            "Every image must carry image data or an image_url (file ids of OpenAI's Files API are not "
            "supported here).",
            param="image",
        )
    if images > MAX_INPUT_IMAGES:
        raise BadRequest(
            f"At most {MAX_INPUT_IMAGES} images can be edited at once; got {images}.", param="image"
        )
    capabilities = model.capabilities
    if capabilities.max_input_images == 0:
        raise ModelNotAllowed(f"{model.id} cannot edit images.", param="model")
    if images > capabilities.max_input_images:
        raise ModelNotAllowed(
            f"{model.id} takes at most {capabilities.max_input_images} input image(s); got {images}.",
            param="image",
        )
    if request.HasField("mask"):
        if not _has_image(request.mask):
            raise BadRequest("mask must carry image data or an image_url.", param="mask")
        if not capabilities.mask:
            raise ModelNotAllowed(f"{model.id} cannot take a mask.", param="mask")
    return choice(request.input_fidelity, INPUT_FIDELITIES, "input_fidelity")


def check_variation(request: pb.CreateImageVariationsRequest, model: ModelSpec) -> None:
    if not request.HasField("image") or not _has_image(request.image):
        raise BadRequest("image is required: the image to make variations of.", param="image")
    if not model.capabilities.variations:
        raise ModelNotAllowed(f"{model.id} does not make variations.", param="model")


async def load_input(image: pb.InputImage, limits: ReferenceLimits, param: str) -> ReferenceImage:
    if image.data:
        data = image.data
        return await limits.decodes.run(lambda: decode_reference(data, limits, param))
    return await load_reference(image.image_url, limits, param)


async def load_inputs(images: Sequence[pb.InputImage], limits: ReferenceLimits) -> tuple[ReferenceImage, ...]:
    """Every input image, loaded and checked (in order; one at a time, so a request's memory grows
    by one decode at most), together within the limits' max_total_bytes."""
    loaded: list[ReferenceImage] = []
    total = 0
    for image in images:
        loaded.append(await load_input(image, limits, "image"))
        total += len(loaded[-1].data)
        if limits.max_total_bytes and total > limits.max_total_bytes:
            raise RequestTooLarge(
                f"The input images together are larger than {limits.max_total_bytes} bytes.", param="image"
            )
    return tuple(loaded)


async def load_mask(mask: pb.InputImage, first: ReferenceImage, limits: ReferenceLimits) -> ReferenceImage:
    loaded = await load_input(mask, limits, "mask")
    if loaded.media_type != "image/png":
        raise InvalidMask(
            "mask must be a PNG image (its transparent pixels mark what to edit).", param="mask"
        )
    if (loaded.width, loaded.height) != (first.width, first.height):
        raise InvalidMask(
            f"mask is {loaded.width}x{loaded.height}; it must be the size of the first image "
            f"({first.width}x{first.height}).",
            param="mask",
        )
    return loaded


def admit_edit(
    request: pb.EditImagesRequest, project: Project, catalog: Catalog, configured: Collection[str]
) -> Admitted:
    def check(model: ModelSpec, generation: GenerationRequest) -> GenerationRequest:
        return replace(generation, input_fidelity=check_edit(request, model))

    return admit_targets(shared_fields(request), project, catalog, configured, EDIT, check)


def admit_variation(
    request: pb.CreateImageVariationsRequest, project: Project, catalog: Catalog, configured: Collection[str]
) -> Admitted:
    def check(model: ModelSpec, generation: GenerationRequest) -> GenerationRequest:
        check_variation(request, model)
        return generation

    return admit_targets(shared_fields(request), project, catalog, configured, VARIATION, check)
