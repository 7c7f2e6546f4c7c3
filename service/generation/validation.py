"""Request validation: a wire request becomes a `GenerationRequest` or a 400/403/404 with `param`.

Everything here runs before any enforcement that costs money and before any upstream call, so bad
input changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import ModelSpec
from service.catalog.sizes import Size, parse_size
from service.errors import (
    BadRequest,
    InvalidValue,
    ModelNotAllowed,
    PromptTooLong,
    UnsupportedQuality,
    UnsupportedSize,
)
from service.generation.reference_images import ReferenceImage
from service.providers.base import CallWarning, unsupported

MAX_PROMPT_CHARS = 8000
MAX_N = 8
MAX_USER_CHARS = 256
MAX_PARTIAL_IMAGES = 3
RESPONSE_FORMATS = ("b64_json", "url")
STYLES = ("vivid", "natural")
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATIONS = ("low", "auto")
OUTPUT_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request, provider-neutral."""

    model_name: str  # as the caller wrote it (echoed back in the response)
    model: ModelSpec
    prompt: str
    n: int
    size: Size
    response_format: str
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    # The caller's reference_image, loaded and checked by the pipeline's input step (which reads it
    # from the request message: the raw text is not kept here). For an edit: its first input image.
    reference: ReferenceImage | None = None
    # The providerOptions entry of the model's provider; other providers' entries are dropped.
    provider_options: Mapping[str, object] = field(default_factory=dict)
    warnings: tuple[CallWarning, ...] = ()
    # What is asked: GENERATE, EDIT or VARIATION.
    operation: str = "generate"
    # Every input image, in order (`reference` is the first; set one or the other), and an edit's mask.
    inputs: tuple[ReferenceImage, ...] = ()
    mask: ReferenceImage | None = None
    input_fidelity: str | None = None

    def __post_init__(self) -> None:
        if self.inputs and self.reference is None:
            object.__setattr__(self, "reference", self.inputs[0])
        elif self.reference is not None and not self.inputs:
            object.__setattr__(self, "inputs", (self.reference,))

    @property
    def input_pictures(self) -> int:
        """How many pictures each upstream call sends the provider (input images and mask)."""
        return len(self.inputs) + (self.mask is not None)

    # Streamed calls only: how many partial images the caller wants before each final one.
    partial_images: int = 0

    @property
    def images_per_call(self) -> int:
        """How many images one upstream call makes: the model's most, or one when partial images
        are streamed (each call's partial images are then its one image's, and a provider's streamed
        answer holds one completed event, with that image's usage)."""
        return 1 if self.partial_images else self.model.capabilities.max_images_per_call


def choice(value: str, allowed: tuple[str, ...], param: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise InvalidValue(f"Invalid {param} {value!r}: expected one of {', '.join(allowed)}.", param=param)
    return value


GENERATE, EDIT, VARIATION = "generate", "edit", "variation"


def _prompt(request: pb.GenerateImagesRequest, model: ModelSpec, operation: str) -> str:
    if operation == VARIATION:
        return ""  # variations take no prompt
    if not request.prompt.strip():
        raise BadRequest("prompt is required and must not be blank.", param="prompt")
    limit = min(MAX_PROMPT_CHARS, model.capabilities.max_prompt_chars)
    if len(request.prompt) > limit:
        raise PromptTooLong(
            f"prompt is {len(request.prompt)} characters; the limit for {model.id} is {limit}.",
            param="prompt",
        )
    return request.prompt


def _n(request: pb.GenerateImagesRequest, model: ModelSpec) -> int:
    n = request.n if request.HasField("n") else 1
    limit = min(MAX_N, model.capabilities.max_images)
    if not 1 <= n <= limit:
        raise BadRequest(f"n must be between 1 and {limit} for {model.id}; got {n}.", param="n")
    return n


def _size(request: pb.GenerateImagesRequest, model: ModelSpec) -> Size:
    capabilities = model.capabilities
    if not request.size or request.size == "auto":
        return capabilities.default_size
    size = parse_size(request.size)
    if not capabilities.offers(size):
        raise UnsupportedSize(
            f"Size {size} is not offered by {model.id}; it offers {capabilities.describe_sizes()}.",
            param="size",
        )
    return size


def _quality(request: pb.GenerateImagesRequest, model: ModelSpec) -> str | None:
    qualities = model.capabilities.qualities
    if request.quality and qualities and request.quality not in qualities:
        raise UnsupportedQuality(
            f"Quality {request.quality!r} is not offered by {model.id}; it offers {', '.join(qualities)}.",
            param="quality",
        )
    return request.quality or None


def _output_format(request: pb.GenerateImagesRequest, model: ModelSpec) -> str | None:
    output_format = choice(request.output_format, OUTPUT_FORMATS, "output_format")
    offered = model.capabilities.output_formats
    if output_format is not None and output_format not in offered:
        raise BadRequest(
            f"output_format {output_format!r} is not offered by {model.id}; it offers {', '.join(offered)}.",
            param="output_format",
        )
    return output_format


def _output_compression(request: pb.GenerateImagesRequest) -> int | None:
    if not request.HasField("output_compression"):
        return None
    if not 0 <= request.output_compression <= 100:
        raise BadRequest("output_compression must be between 0 and 100.", param="output_compression")
    return request.output_compression


def _partial_images(request: pb.GenerateImagesRequest, streamed: bool) -> int:
    """How many partial images to stream for each image: `partial_images` (0-3) on a streamed call,
    0 otherwise. A streamed call may make several images (`n`), as OpenAI's schema allows: each
    image's events come as it is made (an event carries no image position, as OpenAI's)."""
    if request.HasField("partial_images") and not 0 <= request.partial_images <= MAX_PARTIAL_IMAGES:
        raise BadRequest(
            f"partial_images must be between 0 and {MAX_PARTIAL_IMAGES}.", param="partial_images"
        )
    if request.stream and not streamed:
        raise BadRequest(
            "stream: true is answered by the REST routes and by GenerateImagesStream and "
            "EditImagesStream (gRPC); GenerateImages and EditImages answer once.",
            param="stream",
        )
    return request.partial_images if streamed else 0


def _provider_options(request: pb.GenerateImagesRequest, model: ModelSpec) -> Mapping[str, object]:
    if not request.HasField("provider_options"):
        return {}
    entry = _whole_numbers(json_format.MessageToDict(request.provider_options)).get(model.provider, {})
    if not isinstance(entry, dict):
        raise BadRequest(
            f"providerOptions.{model.provider} must be an object.", param=f"providerOptions.{model.provider}"
        )
    return entry


def _whole_numbers(value: Any) -> Any:
    """JSON numbers arrive through google.protobuf.Struct as floats; give whole ones back as ints,
    so every adapter sees `"seed": 42` as the caller wrote it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _check_reference_image(request: pb.GenerateImagesRequest, model: ModelSpec, operation: str) -> None:
    if request.reference_image and not model.capabilities.reference_image:
        raise ModelNotAllowed(
            f"{model.id} cannot take a reference_image (no edit / image-to-image support).",
            param="reference_image",
        )
    if operation == GENERATE and not request.reference_image and not model.capabilities.generations:
        raise ModelNotAllowed(
            f"{model.id} only edits images: send the image (and a mask) to POST /v1/images/edits.",
            param="model",
        )


def validate(
    request: pb.GenerateImagesRequest, model: ModelSpec, operation: str = GENERATE, streamed: bool = False
) -> GenerationRequest:
    """The request checked against `model` (the catalog entry its `model` field resolved to). Edits
    and variations come here as the GenerateImagesRequest of their common fields (edits.py).
    `streamed`: the call answers with events (partial images, then the completed one)."""
    prompt = _prompt(request, model, operation)
    if len(request.user) > MAX_USER_CHARS:
        raise BadRequest(f"user must be at most {MAX_USER_CHARS} characters.", param="user")
    style = choice(request.style, STYLES, "style")
    warnings: list[CallWarning] = []
    if style is not None and style not in model.capabilities.styles:
        warnings.append(unsupported("style", f"{style!r} asked; {model.id} has no styles"))
        style = None
    _check_reference_image(request, model, operation)
    n = _n(request, model)
    partial_images = _partial_images(request, streamed)
    return GenerationRequest(
        model_name=request.model,
        model=model,
        prompt=prompt,
        n=n,
        size=_size(request, model),
        response_format=choice(request.response_format, RESPONSE_FORMATS, "response_format") or "b64_json",
        quality=_quality(request, model),
        style=style,
        user=request.user or None,
        background=choice(request.background, BACKGROUNDS, "background"),
        moderation=choice(request.moderation, MODERATIONS, "moderation"),
        output_format=_output_format(request, model),
        output_compression=_output_compression(request),
        provider_options=_provider_options(request, model),
        warnings=tuple(warnings),
        operation=operation,
        partial_images=partial_images,
    )
