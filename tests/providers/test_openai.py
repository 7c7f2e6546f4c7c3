"""The OpenAI adapter against a fake OpenAI Images API that checks what it is sent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.config import ProviderConfig, Settings
from service.errors import BadRequest, ContentPolicyViolation, RateLimited, UpstreamError, UpstreamTimeout
from service.providers.base import ImageCallResult
from service.providers.openai import OpenAIProvider
from service.sizes import Size
from tests.fakes.base import png
from tests.fakes.openai import FakeOpenAI
from tests.providers.conftest import call, run


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running() as server:
        assert isinstance(server, FakeOpenAI)
        yield server


def generate(
    fake: FakeOpenAI, model: str, key: str = FakeOpenAI.api_key, **fields: object
) -> ImageCallResult:
    async def go() -> ImageCallResult:
        provider = OpenAIProvider.create(ProviderConfig("openai", key, f"{fake.url}/v1"), Settings())
        try:
            return await provider.generate(call(model, **fields))
        finally:
            await provider.aclose()

    return run(go())


def test_gpt_image_request_and_response(fake: FakeOpenAI) -> None:
    result = generate(fake, "gpt-image-1", n=2, size=Size(1536, 1024), quality="hd", background="opaque",
                      output_format="png", user="u-1", options={"moderation": "low"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.headers["authorization"] == "Bearer sk-fake-openai"
    assert sent.json == {
        "model": "gpt-image-1", "prompt": "a red fox in snow", "n": 2, "size": "1536x1024", "quality": "high",
        "background": "opaque", "output_format": "png", "moderation": "low", "user": "u-1",
    }  # fmt: skip
    assert [image.data for image in result.images] == [png(), png()]
    assert result.images[0].media_type == "image/png"
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (12, 8320)
    assert result.upstream_request_id == "req_fake_123"


def test_quality_words_map_per_family(fake: FakeOpenAI) -> None:
    generate(fake, "gpt-image-1-mini", quality="standard")
    generate(fake, "dall-e-3", quality="high", style="natural")
    generate(fake, "dall-e-2", quality="standard", size=Size(512, 512))
    gpt, dalle3, dalle2 = (r.json for r in fake.generation_requests())
    assert gpt["quality"] == "medium" and "response_format" not in gpt and "style" not in gpt
    assert (dalle3["quality"], dalle3["style"], dalle3["response_format"]) == ("hd", "natural", "b64_json")
    assert "quality" not in dalle2 and dalle2["size"] == "512x512"


def test_dalle3_revised_prompt_and_no_usage(fake: FakeOpenAI) -> None:
    result = generate(fake, "dall-e-3")
    assert result.images[0].revised_prompt == "A detailed rendering of a red fox in snow"
    assert result.usage is None


def test_unsupported_fields_are_dropped_with_warnings(fake: FakeOpenAI) -> None:
    result = generate(fake, "dall-e-2", background="transparent", options={"input_fidelity": "high"})
    assert "background" not in fake.generation_requests()[0].json
    assert any("background" in w for w in result.warnings) and any(
        "input_fidelity" in w for w in result.warnings
    )


@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-3"])
def test_refusals_are_content_policy_violations(fake: FakeOpenAI, model: str) -> None:
    with pytest.raises(ContentPolicyViolation, match="safety system"):
        generate(fake, model, prompt="BLOCKME please")
    assert len(fake.generation_requests()) == 1  # never retried


def test_transient_failures_are_retried(fake: FakeOpenAI) -> None:
    assert len(generate(fake, "gpt-image-1", prompt="FLAKY fox").images) == 1
    assert len(generate(fake, "gpt-image-1", prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeOpenAI) -> None:
    with pytest.raises(RateLimited) as caught:
        generate(fake, "gpt-image-1", prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED" and caught.value.retry_after_s == 1
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeOpenAI) -> None:
    with pytest.raises(UpstreamError, match="error while processing"):
        generate(fake, "gpt-image-1", prompt="FAILME")


def test_garbage_and_empty_answers_are_upstream_errors(fake: FakeOpenAI) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, "gpt-image-1", prompt="GARBAGE")
    assert generate(fake, "gpt-image-1", prompt="EMPTY").images == []  # generation.py turns this into a 502


def test_bad_credentials_are_an_upstream_error_not_a_401(fake: FakeOpenAI) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, "gpt-image-1", key="sk-wrong")


def test_a_request_the_provider_rejects_is_a_400_with_its_message(fake: FakeOpenAI) -> None:
    with pytest.raises(BadRequest, match="You must provide n=1"):
        generate(fake, "dall-e-3", n=2)


def test_the_deadline_bounds_the_call(fake: FakeOpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, "gpt-image-1", prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.4
