"""What a generation may cost (the reservation) and what it costs (the charge), in micro-dollars.

The reservation is a true upper bound of the charge. Per-image prices: every requested image
delivered. Token-billed models: the most output tokens each image can be billed for (the catalog's
`max_output_tokens` for the quality and size), plus the most input tokens each upstream call can be
billed for (its prompt as the tokenizer counts it with a margin, and its input images). A provider
answer that reports more than the bound is charged at the bound (`Charge.above_bound` says by how
much, for the log line and `mg_cost_above_estimate_total`).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.generation.validation import GenerationRequest
from service.providers.base import ProviderUsage

# Upper bound of the input tokens one reference image is billed as (GPT image edits report up to
# ~6,200 for a large image at high input fidelity), so the reservation covers edits too.
REFERENCE_IMAGE_TOKENS = 6500
# Providers count a few tokens of framing around a prompt beyond what the tokenizer counts.
PROMPT_TOKEN_MARGIN = 64


def calls_for(request: GenerationRequest, images: int) -> int:
    """How many upstream calls `images` images take (fan-out of n)."""
    return -(-images // request.images_per_call)


def input_images_micros(request: GenerationRequest, calls: int) -> int:
    """What the input images of `calls` upstream calls add on a per-image-priced model whose
    provider bills them (every call sends every input picture, the mask included)."""
    return calls * request.input_pictures * request.model.price.input_image_micros


def bound_micros(request: GenerationRequest, images: int, calls: int, prompt_tokens: int) -> int:
    """The most `images` images made in `calls` upstream calls can be charged."""
    price = request.model.price
    per_image = price.per_image(request.quality, request.size) * images + input_images_micros(request, calls)
    rates = price.tokens
    if rates is None:
        return per_image
    output = images * rates.max_output(request.quality, request.size) * rates.output
    text = calls * (prompt_tokens + PROMPT_TOKEN_MARGIN) * rates.text_input
    # each input picture (images and mask) of each call, at the most one can be billed
    pictures = calls * request.input_pictures * REFERENCE_IMAGE_TOKENS * rates.image_input
    return max(per_image, _per_million(output + text + pictures))


def estimate_micros(request: GenerationRequest, prompt_tokens: int = 0) -> int:
    """The reservation: the bound for every requested image."""
    return bound_micros(request, request.n, calls_for(request, request.n), prompt_tokens)


def cost_micros(
    request: GenerationRequest, images_returned: int, usage: ProviderUsage | None = None, calls: int = 1
) -> int:
    """What the provider bills for what arrived: its token usage where the model is token-billed and
    usage was reported, else the images actually returned at the per-image price, plus the input
    images of the `calls` that answered (unbounded: see `charge`)."""
    price = request.model.price
    per_image = price.per_image(request.quality, request.size) * images_returned
    per_image += input_images_micros(request, calls)
    if price.tokens is None or usage is None or usage.output_tokens is None:
        return per_image
    image_tokens = usage.input_image_tokens or 0
    text_tokens = max(0, (usage.input_tokens or 0) - image_tokens)
    return _per_million(
        text_tokens * price.tokens.text_input
        + image_tokens * price.tokens.image_input
        + usage.output_tokens * price.tokens.output
    )


@dataclass(frozen=True)
class Charge:
    micros: int
    # How much more the provider's report came to than the bound (charged at the bound): 0 normally.
    above_bound: int = 0


def charge(
    request: GenerationRequest,
    *,
    images: int,
    calls: int,
    usage: ProviderUsage | None,
    prompt_tokens: int,
    unfinished_images: int = 0,
    unfinished_calls: int = 0,
) -> Charge:
    """What the project pays: what arrived (`images` from `calls` answered calls, priced from
    `usage`), never above its bound, plus the bound of calls sent upstream that never answered
    (the provider bills them; their result will not come)."""
    arrived_bound = bound_micros(request, images, calls, prompt_tokens) if images else 0
    arrived = cost_micros(request, images, usage, calls) if images else 0
    unfinished = (
        bound_micros(request, unfinished_images, unfinished_calls, prompt_tokens) if unfinished_calls else 0
    )
    return Charge(min(arrived, arrived_bound) + unfinished, max(0, arrived - arrived_bound))


def _per_million(micro_dollar_tokens: int) -> int:
    return -(-micro_dollar_tokens // 1_000_000)  # round up: never under-charge by rounding
