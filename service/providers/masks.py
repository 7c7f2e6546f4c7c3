"""The gateway's edit mask in the black-and-white form most providers take, and what the adapters of
inpainting endpoints share.

The gateway's mask is OpenAI's: a PNG the size of the first image whose transparent pixels mark what
to change (edits.py checks it). Ideogram, Stability, BFL (FLUX Fill), Bedrock (Nova Canvas, Titan)
and Vertex AI (Imagen) take an opaque black-and-white image instead, and differ on which colour means
"change": Ideogram and Bedrock's inpainting black, Stability, BFL, Bedrock's outpainting and Imagen
white. One conversion serves them all, with the colour to change named by the caller. Without a
mask, OpenAI's rule is that the image's own transparent pixels are what to change; adapters whose
endpoint needs a mask derive it from the image's alpha the same way (`provider_mask`).
"""

from __future__ import annotations

import asyncio
import io

from service.catalog.sizes import Size
from service.errors import InvalidMask
from service.generation.reference_images import ReferenceImage
from service.providers.base import CallWarning, ImageCall, unsupported

BLACK = 0
WHITE = 255
HALF_OPAQUE = 128  # a pixel at least this opaque is kept; a more transparent one is changed


async def black_and_white(
    mask: ReferenceImage, change: int, size: tuple[int, int] | None = None, mode: str = "L"
) -> bytes:
    """A PNG of `size` (default the mask's own), `change` (BLACK or WHITE) where the mask is mostly
    transparent and the other colour elsewhere; `mode` "L" (grey) or "RGB" for providers that take
    only RGB pictures."""
    width, height = size or (mask.width, mask.height)
    alpha = await mask.scaled_alpha(width, height)
    keep = WHITE - change

    def encode() -> bytes:
        out = io.BytesIO()
        alpha.point(lambda value: keep if value >= HALF_OPAQUE else change).convert(mode).save(
            out, format="PNG"
        )
        return out.getvalue()

    return await asyncio.to_thread(encode)


async def provider_mask(call: ImageCall, change: int, provider: str) -> bytes:
    """The mask to send for an inpainting call: the edit's own, else the first image's alpha. A call
    whose mask (or image, without one) marks nothing to change is refused before it is sent: the
    provider would bill a picture identical to the input, or reject it."""
    source = call.mask or call.reference_image
    if source is None:
        raise InvalidMask(f"{provider} inpaints an input image: send an image (and a mask).", param="image")
    alpha = await source.scaled_alpha(source.width, source.height)
    lowest = alpha.getextrema()[0]  # (one band, "L": the least opaque pixel's alpha)
    assert isinstance(lowest, int)
    if lowest >= HALF_OPAQUE:  # even that one is kept: nothing to change
        where = "the mask" if call.mask is not None else "the image (sent without a mask)"
        raise InvalidMask(
            f"{where} has no transparent pixels: nothing marks what to change. Send a mask whose "
            "transparent pixels mark it, or an image with transparent pixels.",
            param="mask" if call.mask is not None else "image",
        )
    return await black_and_white(source, change)


def kept_size(call: ImageCall, provider: str) -> list[CallWarning]:
    """An inpainting answers the input image's size: a warning when another size was asked."""
    reference = call.reference_image
    if reference is None or Size(reference.width, reference.height) == call.size:
        return []
    return [unsupported("size", f"{call.size} asked; the {provider} edit keeps the input image's size")]
