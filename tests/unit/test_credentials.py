"""A provider's several keys (CredentialPool), with stand-in adapters: which key each call goes
to when keys fail in ways that belong to the key (its circuit) or to its endpoint (5xx)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from service.catalog.sizes import Size
from service.config import Credential
from service.config_file import ProviderLimits
from service.errors import UpstreamError
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult
from service.providers.credentials import CredentialPool
from tests.fakes.base import png


@dataclass
class KeyAdapter:
    """The adapter of one key: fails while `failing`, and counts its calls."""

    name: str = "acme"
    failing: bool = False
    calls: int = 0
    images: list[GeneratedImage] = field(default_factory=lambda: [GeneratedImage(png())])

    async def generate(self, call: ImageCall) -> ImageCallResult:
        self.calls += 1
        if self.failing:
            raise UpstreamError("acme: 500")
        return ImageCallResult(self.images)

    async def aclose(self) -> None:
        return None


def a_call() -> ImageCall:
    return ImageCall("model", "a cat", 1, Size(64, 64), deadline=time.monotonic() + 10)


async def test_a_failing_regional_key_is_passed_over_once_its_circuit_opens() -> None:
    east, west = KeyAdapter(failing=True), KeyAdapter()
    pool = CredentialPool(
        "acme",
        [
            (Credential("EAST", "k1", base_url="https://east"), east),
            (Credential("WEST", "k2", base_url="https://west"), west),
        ],
        None,
        ProviderLimits(breaker_failures=2, breaker_cooldown_s=60),
    )
    for _ in range(4):  # east first by turns, then west serves the call
        assert (await pool.generate(a_call())).images
    assert east.calls == 2 and west.calls == 4  # east's circuit opened after its second failure
    for _ in range(3):
        await pool.generate(a_call())
    assert east.calls == 2 and west.calls == 7


async def test_a_5xx_is_not_retried_with_another_key_of_the_same_endpoint() -> None:
    first, second = KeyAdapter(failing=True), KeyAdapter()
    pool = CredentialPool("acme", [(Credential("A", "k1"), first), (Credential("B", "k2"), second)], None)
    with pytest.raises(UpstreamError):
        await pool.generate(a_call())
    assert (first.calls, second.calls) == (1, 0)
