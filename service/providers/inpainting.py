"""What the adapters of mask-taking (inpainting) endpoints share: the provider's mask made from the
gateway's, and the size an inpainting keeps.

The gateway's mask is OpenAI's: a PNG the size of the first input image whose transparent pixels
mark what to change (edits.py checks it). Inpainting providers take a black-and-white picture
instead, each with its own colour for "change here": Stability and BFL paint it white, Ideogram
black. A pixel counts as marked when it is less than half opaque. Without a mask, OpenAI's rule is
that the image's own transparent pixels are what to change; adapters whose endpoint needs a mask
derive it from the image's alpha the same way, so the rule is the gateway's whatever the provider.
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

from service.catalog.sizes import Size
from service.errors import InvalidMask
from service.providers.base import CallWarning, ImageCall, unsupported

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from service.generation.reference_images import ReferenceImage

HALF_OPAQUE = 128
BLACK, WHITE = 0, 255


def _marked(alpha: PILImage, edit: int) -> PILImage:
    keep = WHITE - edit
    return alpha.point(lambda value: keep if value >= HALF_OPAQUE else edit)


async def black_and_white_mask(mask: ReferenceImage, edit: int) -> bytes:
    """A greyscale PNG of the mask's size: `edit` (BLACK or WHITE) where `mask` is (mostly)
    transparent, the other colour elsewhere."""
    alpha = await mask.scaled_alpha(mask.width, mask.height)

    def encode() -> bytes:
        out = io.BytesIO()
        _marked(alpha, edit).save(out, format="PNG")
        return out.getvalue()

    return await asyncio.to_thread(encode)


async def provider_mask(call: ImageCall, edit: int, provider: str) -> bytes:
    """The mask to send for an inpainting call: the edit's own, else the first image's alpha. A call
    whose mask (or image, without one) marks nothing to change is refused before it is sent: the
    provider would bill a picture identical to the input, or reject it."""
    source = call.mask or call.reference_image
    if source is None:
        raise InvalidMask(f"{provider} inpaints an input image: send an image (and a mask).", param="image")
    alpha = await source.scaled_alpha(source.width, source.height)
    if _marked(alpha, WHITE).getbbox() is None:  # no pixel marked (all black)
        where = "the mask" if call.mask is not None else "the image (sent without a mask)"
        raise InvalidMask(
            f"{where} has no transparent pixels: nothing marks what to change. Send a mask whose "
            "transparent pixels mark it, or an image with transparent pixels.",
            param="mask" if call.mask is not None else "image",
        )
    return await black_and_white_mask(source, edit)


def kept_size(call: ImageCall, provider: str) -> list[CallWarning]:
    """An inpainting answers the input image's size: a warning when another size was asked."""
    reference = call.reference_image
    if reference is None or Size(reference.width, reference.height) == call.size:
        return []
    return [unsupported("size", f"{call.size} asked; the {provider} edit keeps the input image's size")]
