"""Building the OpenAI-shaped `ImagesResponse` from a generation result."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence

from mg.v1 import image_generation_pb2 as pb
from ulid import ULID

from service.catalog.catalog import Catalog, ModelSpec
from service.generation.pipeline import Delivered
from service.generation.validation import GenerationRequest
from service.providers.base import PartialImage

# The official ImagesResponse schema allows only these echo values; others are left out, not sent.
ECHO_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})
ECHO_QUALITIES = frozenset({"low", "medium", "high"})
ECHO_BACKGROUNDS = frozenset({"transparent", "opaque"})
ECHO_OUTPUT_FORMATS = frozenset({"png", "jpeg", "webp"})


def new_image_id() -> str:
    return f"img_{ULID()}"


def _echo(value: str | None, allowed: frozenset[str]) -> str | None:
    return value if value in allowed else None


def _usage(delivered: Delivered) -> pb.Usage:
    usage = delivered.usage
    return pb.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_tokens_details=pb.InputTokensDetails(
            # (a provider may count more image tokens than input tokens; pricing.py reads it so too)
            text_tokens=max(0, usage.input_tokens - usage.input_image_tokens),
            image_tokens=usage.input_image_tokens,
        ),
        output_images=len(delivered.images),
    )


def images_response(delivered: Delivered) -> pb.ImagesResponse:
    """The response: the images' bytes, or their hosted URLs when the request asked for URLs."""
    request, images, urls = delivered.request, delivered.images, delivered.urls
    output_format = request.output_format or images[0].media_type.removeprefix("image/")
    response = pb.ImagesResponse(
        id=new_image_id(),
        created=int(time.time()),
        model=request.model_name,
        usage=_usage(delivered),
        size=_echo(str(request.size), ECHO_SIZES),
        quality=_echo(request.quality, ECHO_QUALITIES),
        background=_echo(request.background, ECHO_BACKGROUNDS),
        output_format=_echo(output_format, ECHO_OUTPUT_FORMATS),
    )
    # Added in place: a message passed to the constructor is copied in, image bytes and all.
    for index, image in enumerate(images):
        item = (
            response.data.add(url=urls[index]) if urls is not None else response.data.add(b64_json=image.data)
        )
        if image.revised_prompt is not None:
            item.revised_prompt = image.revised_prompt
    return response


# Stream events always carry the echo fields; where the request's value is not one the official
# event schema allows, they say "auto".
PARTIAL_IMAGE = "partial_image"
COMPLETED = "completed"


def _event_echo(value: str | None, allowed: frozenset[str]) -> str:
    return value if value in allowed else "auto"


def partial_event(
    prefix: str, generation: GenerationRequest, partial: PartialImage
) -> pb.ImageGenerationEvent:
    """`<prefix>.partial_image` (prefix: image_generation, image_edit): one partial image."""
    return pb.ImageGenerationEvent(
        type=f"{prefix}.{PARTIAL_IMAGE}",
        b64_json=partial.data,
        created_at=int(time.time()),
        size=_event_echo(str(generation.size), ECHO_SIZES),
        quality=_event_echo(generation.quality, ECHO_QUALITIES),
        background=_event_echo(generation.background, ECHO_BACKGROUNDS),
        output_format=_echo(partial.media_type.removeprefix("image/"), ECHO_OUTPUT_FORMATS) or "png",
        partial_image_index=partial.index,
    )


def completed_events(prefix: str, response: pb.ImagesResponse) -> list[pb.ImageGenerationEvent]:
    """`<prefix>.completed` for each image of a response (a streamed request makes one; a replayed
    one is the stored response), with the request's usage."""
    events = []
    for image in response.data:
        event = pb.ImageGenerationEvent(
            type=f"{prefix}.{COMPLETED}",
            b64_json=image.b64_json,
            url=image.url,
            created_at=response.created,
            size=_event_echo(response.size if response.HasField("size") else None, ECHO_SIZES),
            quality=_event_echo(response.quality if response.HasField("quality") else None, ECHO_QUALITIES),
            background=_event_echo(
                response.background if response.HasField("background") else None, ECHO_BACKGROUNDS
            ),
            output_format=response.output_format if response.HasField("output_format") else "png",
        )
        event.usage.CopyFrom(response.usage)
        if image.HasField("revised_prompt"):
            event.revised_prompt = image.revised_prompt
        events.append(event)
    return events


def _capabilities(model: ModelSpec) -> pb.ModelCapabilities:
    caps = model.capabilities
    rule = caps.size_rule
    return pb.ModelCapabilities(
        sizes=[str(s) for s in caps.sizes],
        size_rule=pb.SizeRule(
            min_width=rule.min_width,
            max_width=rule.max_width,
            min_height=rule.min_height,
            max_height=rule.max_height,
            multiple_of=rule.multiple_of,
        )
        if rule
        else None,
        default_size=str(caps.default_size),
        max_images=caps.max_images,
        max_images_per_call=caps.max_images_per_call,
        qualities=caps.qualities,
        styles=caps.styles,
        output_formats=caps.output_formats,
        reference_image=caps.reference_image,
        max_prompt_chars=caps.max_prompt_chars,
        max_input_images=caps.max_input_images,
        mask=caps.mask,
        variations=caps.variations,
        generations=caps.generations,
    )


def _price(model: ModelSpec) -> pb.ModelPrice:
    price, tokens = model.price, model.price.tokens
    return pb.ModelPrice(
        per_image_micros={"default": price.default_micros, **price.overrides},
        per_million_tokens_micros=pb.TokenPrices(
            text_input=tokens.text_input, image_input=tokens.image_input, output=tokens.output
        )
        if tokens
        else None,
        per_input_image_micros=price.input_image_micros or None,
    )


def model_entry(catalog: Catalog, model: ModelSpec, available_providers: Collection[str]) -> pb.Model:
    return pb.Model(
        id=model.id,
        object="model",
        created=model.created,
        owned_by=model.provider,
        capabilities=_capabilities(model),
        price=_price(model),
        available=model.provider in available_providers,
        aliases=catalog.aliases_of(model.id),
    )


def alias_entry(
    catalog: Catalog, alias: str, model: ModelSpec, available_providers: Collection[str]
) -> pb.Model:
    """An alias as an entry of its own: the model's entry under the alias's name, saying which it is."""
    entry = model_entry(catalog, model, available_providers)
    entry.id = alias
    entry.alias_of = model.id
    return entry


def route_entry(
    catalog: Catalog, name: str, targets: Sequence[ModelSpec], available_providers: Collection[str]
) -> pb.Model:
    """A route as an entry of its own: its first target's entry under the route's name, listing the
    targets it tries."""
    entry = model_entry(catalog, targets[0], available_providers)
    entry.id = name
    entry.ClearField("aliases")
    entry.route.extend(target.id for target in targets)
    entry.available = any(target.provider in available_providers for target in targets)
    return entry


def models_response(
    catalog: Catalog,
    models: Iterable[ModelSpec],
    available_providers: Collection[str],
    routes: Iterable[tuple[str, Sequence[ModelSpec]]] = (),
) -> pb.ListModelsResponse:
    """The models, then the aliases of those models, each an entry of its own, then `routes`."""
    shown = list(models)
    ids = {model.id for model in shown}
    return pb.ListModelsResponse(
        object="list",
        data=[
            *(model_entry(catalog, model, available_providers) for model in shown),
            *(
                alias_entry(catalog, alias, model, available_providers)
                for alias, model in catalog.aliases()
                if model.id in ids
            ),
            *(route_entry(catalog, name, targets, available_providers) for name, targets in routes),
        ],
    )
