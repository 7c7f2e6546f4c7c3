"""What edits and variations reserve and charge: every input picture counts, per upstream call."""

from __future__ import annotations

from dataclasses import replace

from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import Catalog, load_catalog
from service.generation.pricing import charge, estimate_micros
from service.generation.reference_images import ReferenceImage
from service.generation.validation import EDIT, GenerationRequest, validate
from service.providers.base import ProviderUsage

CATALOG = load_catalog()
# gpt-image-1.5 as if it made one image per call, so n fans out
ONE_PER_CALL = load_catalog(overrides={"openai/gpt-image-1.5": {"max_images_per_call": 1}})
PICTURE = ReferenceImage(b"", "image/png", 8, 8)


def edit(
    model: str, images: int, mask: bool = False, n: int = 1, catalog: Catalog = CATALOG
) -> GenerationRequest:
    request = validate(pb.GenerateImagesRequest(model=model, prompt="x", n=n), catalog.resolve(model), EDIT)
    return replace(request, inputs=(PICTURE,) * images, mask=PICTURE if mask else None)


def test_token_billed_edits_reserve_the_most_tokens_each_input_picture_can_cost() -> None:
    one = estimate_micros(edit("openai/gpt-image-1", 1), prompt_tokens=10)
    three_and_a_mask = estimate_micros(edit("openai/gpt-image-1", 3, mask=True), prompt_tokens=10)
    # 4,160 output tokens at $40/M, (10 + 64) prompt tokens at $5/M, 6,500 per picture at $10/M
    assert one == 4_160 * 40 + 74 * 5 + 65_000
    assert three_and_a_mask == one + 3 * 65_000


def test_token_billed_edits_are_charged_their_reported_image_tokens() -> None:
    request = edit("openai/gpt-image-1", 2)
    usage = ProviderUsage(input_tokens=12 + 388, output_tokens=4_160, input_image_tokens=388)
    owed = charge(request, images=1, calls=1, usage=usage, prompt_tokens=12)
    assert owed.micros == 12 * 5 + 388 * 10 + 4_160 * 40 and owed.above_bound == 0


def test_per_image_models_add_their_input_image_price_per_picture_and_call() -> None:
    per_image = 133_000  # gpt-image-1.5, high (the default quality's price), 1024x1024
    request = edit("openai/gpt-image-1.5", 2, mask=True, n=2)
    assert estimate_micros(request) == 2 * per_image + 3 * 52_000
    owed = charge(request, images=2, calls=1, usage=None, prompt_tokens=0)
    assert owed.micros == 2 * per_image + 3 * 52_000
    # one call per image: every call sends every picture again
    fanned = edit("openai/gpt-image-1.5", 2, n=3, catalog=ONE_PER_CALL)
    assert estimate_micros(fanned) == 3 * per_image + 3 * 2 * 52_000
    partial = charge(fanned, images=2, calls=2, usage=None, prompt_tokens=0)
    assert partial.micros == 2 * per_image + 2 * 2 * 52_000


def test_a_generation_has_no_input_picture_cost() -> None:
    request = validate(
        pb.GenerateImagesRequest(model="openai/gpt-image-1.5", prompt="x"),
        CATALOG.resolve("openai/gpt-image-1.5"),
    )
    assert request.input_pictures == 0 and estimate_micros(request) == 133_000
