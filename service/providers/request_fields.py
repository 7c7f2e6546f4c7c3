"""Request fields many adapters translate the same way.

- `exact_ratio`: providers that take a size only as an aspect ratio from their own list get the one
  the size reduces to exactly; a size that matches none is a 400 on `size` (the catalog offers only
  sizes that map, so this guards against a catalog entry an operator got wrong).
- `offered_format`: the request's output_format when the provider offers it; else a 400 on
  `output_format` (again a guard behind the catalog's own check).
"""

from __future__ import annotations

from collections.abc import Collection

from service.errors import BadRequest, InvalidSize
from service.providers.base import ImageCall


def exact_ratio(call: ImageCall, ratios: list[str]) -> str:
    """The "W:H" label in `ratios` equal to the call's size's aspect ratio."""
    size = call.size
    label = size.nearest_ratio(ratios)
    width, height = (int(side) for side in label.split(":"))
    if width * size.height != height * size.width:
        raise InvalidSize(
            f"Size {size} has no exact aspect ratio for {call.upstream_model}: {', '.join(ratios)}.",
            param="size",
        )
    return label


def offered_format(call: ImageCall, offered: Collection[str]) -> str | None:
    """The call's output_format (None when it asks for none), checked to be among `offered`."""
    if call.output_format is not None and call.output_format not in offered:
        raise BadRequest(f"output_format {call.output_format!r} is not offered.", param="output_format")
    return call.output_format
