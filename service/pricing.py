"""What a generation costs, in integer micro-dollars, from the catalog's price rules."""

from __future__ import annotations

from service.validation import GenerationRequest


def estimate_micros(request: GenerationRequest) -> int:
    """The most the request can cost: every requested image delivered."""
    return request.model.price.per_image(request.quality) * request.n


def cost_micros(request: GenerationRequest, images_returned: int) -> int:
    """What is charged: only the images actually returned."""
    return request.model.price.per_image(request.quality) * images_returned


def usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.6f}".rstrip("0").rstrip(".")
