"""Image sizes: parsing "WIDTHxHEIGHT" and the conversions providers need, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from service.errors import InvalidSize

_SIZE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")


@dataclass(frozen=True, order=True)
class Size:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def aspect_ratio(self) -> Fraction:
        return Fraction(self.width, self.height)

    def nearest_ratio(self, ratios: list[str]) -> str:
        """The "W:H" label in `ratios` closest to this size's aspect ratio."""
        return min(ratios, key=lambda label: abs(_ratio(label) - self.aspect_ratio))


def _ratio(label: str) -> Fraction:
    width, height = label.split(":")
    return Fraction(int(width), int(height))


def parse_size(text: str) -> Size:
    """Parse "WIDTHxHEIGHT"; anything else is a 400 pointing at `size`."""
    match = _SIZE.match(text)
    if not match:
        raise InvalidSize(
            f"Invalid size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. '1024x1024'.", param="size"
        )
    return Size(int(match.group(1)), int(match.group(2)))
