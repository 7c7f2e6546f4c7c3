from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import pytest

from service.catalog.sizes import Size
from service.config import ProviderConfig, Settings
from service.providers.base import ImageCall, ImageCallResult, ImageProvider
from tests.fakes.base import FakeProvider

T = TypeVar("T")
F = TypeVar("F", bound=FakeProvider)


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


def rendered(result: ImageCallResult) -> list[str]:
    """The result's warnings as logs and responses word them."""
    return [str(warning) for warning in result.warnings]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def shared_fake(fake_type: type[F]) -> tuple[Any, Any]:
    """A provider test module's `server` and `fake` fixtures: `server, fake = shared_fake(FakeX)`.

    One fake server per module (stopping one costs ~0.5 s); each test gets it reset to new."""

    @pytest.fixture(scope="module")
    def server() -> Iterator[F]:
        with fake_type().running() as running:
            yield cast(F, running)

    @pytest.fixture
    def fake(server: F) -> F:
        server.reset()
        return server

    return server, fake


def generate_with(
    create: Callable[[ProviderConfig, Settings], ImageProvider],
    config: ProviderConfig,
    model: str,
    **fields: Any,
) -> ImageCallResult:
    """One call through an adapter made as the gateway makes it (default settings), then closed."""

    async def go() -> ImageCallResult:
        provider = create(config, Settings())
        try:
            return await provider.generate(call(model, **fields))
        finally:
            await provider.aclose()

    return run(go())


def generate_times(
    create: Callable[[ProviderConfig, Settings], ImageProvider],
    config: ProviderConfig,
    model: str,
    times: int,
) -> None:
    """`times` calls, one after another, through one adapter (so it keeps what it caches), then closed."""

    async def go() -> None:
        provider = create(config, Settings())
        try:
            for _ in range(times):
                await provider.generate(call(model))
        finally:
            await provider.aclose()

    run(go())
