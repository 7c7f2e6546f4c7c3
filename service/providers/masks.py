"""The gateway's edit mask in the black-and-white form most providers take.

The gateway's mask is OpenAI's: a PNG the size of the first image whose transparent pixels mark what
to change. Ideogram, Bedrock (Nova Canvas, Titan) and Vertex AI (Imagen) take an opaque black-and-white
image instead, and differ on which colour means "change": Ideogram and Bedrock's inpainting black,
Bedrock's outpainting and Imagen white. One conversion serves them all, with the colour to change
named by the caller.
"""

from __future__ import annotations

import asyncio
import io

from service.generation.reference_images import ReferenceImage

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
