from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from service.providers.base import ImageCall
from service.sizes import Size

T = TypeVar("T")


def call(model: str, **fields: Any) -> ImageCall:
    """An ImageCall as generation.py would build it, with a generous deadline."""
    values: dict[str, Any] = {
        "upstream_model": model,
        "prompt": "a red fox in snow",
        "n": 1,
        "size": Size(1024, 1024),
        "deadline": time.monotonic() + 30,
        **fields,
    }
    return ImageCall(**values)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)
