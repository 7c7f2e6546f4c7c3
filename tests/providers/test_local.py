from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from service.catalog.sizes import Size
from service.errors import BadRequest
from service.providers.base import ImageCall
from service.providers.local import LocalProvider


def run(call: ImageCall) -> list[bytes]:
    result = asyncio.run(LocalProvider().generate(call))
    return [image.data for image in result.images]


def call(**fields: object) -> ImageCall:
    base: dict[str, object] = {
        "upstream_model": "sketch",
        "prompt": "a cat",
        "n": 1,
        "size": Size(320, 200),
        "deadline": 0.0,
    }
    return ImageCall(**{**base, **fields})  # type: ignore[arg-type]


def test_renders_png_of_the_requested_size() -> None:
    (data,) = run(call())
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (320, 200)


def test_deterministic_and_different_per_prompt_seed_and_index() -> None:
    first = run(call(n=2))
    assert first == run(call(n=2))
    assert first[0] != first[1]
    assert run(call())[0] != run(call(prompt="a dog"))[0]
    assert run(call())[0] != run(call(options={"seed": 1}))[0]
    # the second call of a fanned-out request continues the image sequence
    assert run(call(first_index=1))[0] == first[1]


def test_different_prompts_look_different() -> None:
    def pixels(prompt: str) -> bytes:
        image = Image.open(io.BytesIO(run(call(prompt=prompt, size=Size(64, 64)))[0])).convert("RGB")
        return image.resize((8, 8)).tobytes()

    a, b = pixels("a red fox"), pixels("a blue whale")
    mean_difference = sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)
    assert mean_difference > 10


@pytest.mark.parametrize(
    "options", [{"seed": "x"}, {"seed": 1.5}, {"delay_ms": -1}, {"delay_ms": 10**9}, {"seed": True}]
)
def test_bad_options_are_400(options: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        run(call(options=options))


def test_a_delay_over_the_cap_is_400_naming_the_option() -> None:
    with pytest.raises(BadRequest, match="between 0 and 60000") as caught:
        run(call(options={"delay_ms": 60_001}))
    assert caught.value.param == "providerOptions.local.delay_ms"


def test_an_operator_may_allow_longer_delays() -> None:
    async def accepted() -> None:  # accepted: it waits (rather than answering 400 at once)
        provider = LocalProvider(max_delay_ms=120_000)
        await asyncio.wait_for(provider.generate(call(options={"delay_ms": 90_000})), 0.2)

    with pytest.raises(TimeoutError):
        asyncio.run(accepted())
