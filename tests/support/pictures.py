"""Pictures tests send as edits' inputs and masks."""

from __future__ import annotations

import io

from PIL import Image


def transparent_right_half(width: int, height: int, color: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """A PNG, opaque `color` on the left half and transparent on the right: an OpenAI mask marking
    the right half as what to change, or a picture that marks it itself (an edit without a mask)."""
    picture = Image.new("RGBA", (width, height), (*color, 255))
    picture.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
