"""What a generation costs, in integer micro-dollars, from the catalog's price rules."""

from __future__ import annotations

from service.generation.validation import GenerationRequest
from service.providers.base import ProviderUsage

# Upper bound of the input tokens one reference image is billed as (GPT image edits report up to
# ~6,200 for a large image at high input fidelity), so the reservation covers edits too.
REFERENCE_IMAGE_TOKENS = 6500


def estimate_micros(request: GenerationRequest, prompt_tokens: int = 0) -> int:
    """The most the request can cost: every requested image delivered (and, for token-billed
    models, the prompt's tokens on top), so the reservation is never below the charge."""
    price = request.model.price
    estimate = price.per_image(request.quality, request.size) * request.n
    if price.tokens is not None:
        calls = -(-request.n // request.model.capabilities.max_images_per_call)
        estimate += _per_million(prompt_tokens * calls * price.tokens.text_input)
        if request.reference is not None:
            estimate += _per_million(REFERENCE_IMAGE_TOKENS * calls * price.tokens.image_input)
    return estimate


def cost_micros(request: GenerationRequest, images_returned: int, usage: ProviderUsage | None = None) -> int:
    """What is charged: the provider's token usage where the model is token-billed and usage was
    reported, else the images actually returned at the per-image price."""
    price = request.model.price
    per_image = price.per_image(request.quality, request.size) * images_returned
    if price.tokens is None or usage is None or usage.output_tokens is None:
        return per_image
    image_tokens = usage.input_image_tokens or 0
    text_tokens = max(0, (usage.input_tokens or 0) - image_tokens)
    return _per_million(
        text_tokens * price.tokens.text_input
        + image_tokens * price.tokens.image_input
        + usage.output_tokens * price.tokens.output
    )


def _per_million(micro_dollar_tokens: int) -> int:
    return -(-micro_dollar_tokens // 1_000_000)  # round up: never under-charge by rounding
