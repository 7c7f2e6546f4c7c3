"""The OpenAI adapter's streamed generations (`stream: true`) against the fake, which answers
server-sent events as OpenAI documents them."""

from __future__ import annotations

import pytest

from service.config import ProviderConfig
from service.errors import ContentPolicyViolation
from service.providers.base import ImageCallResult, PartialImage
from service.providers.openai import OpenAIProvider
from tests.fakes.base import png
from tests.fakes.openai import FakeOpenAI
from tests.providers.conftest import generate_with, shared_fake

server, fake = shared_fake(FakeOpenAI)


def streamed(
    fake: FakeOpenAI, model: str, partial_images: int, **fields: object
) -> tuple[ImageCallResult, list[PartialImage]]:
    partials: list[PartialImage] = []
    result = generate_with(
        OpenAIProvider.create,
        ProviderConfig("openai", FakeOpenAI.api_key, f"{fake.url}/v1"),
        model,
        partial_images=partial_images,
        on_partial=partials.append,
        **fields,
    )
    return result, partials


def test_partial_images_are_handed_on_and_the_completed_event_is_the_result(fake: FakeOpenAI) -> None:
    result, partials = streamed(fake, "gpt-image-1", 2, quality="low")
    (sent,) = fake.generation_requests()
    assert sent.json["stream"] is True and sent.json["partial_images"] == 2
    assert [partial.index for partial in partials] == [0, 1]
    assert all(partial.media_type == "image/png" and partial.data != png() for partial in partials)
    assert [image.data for image in result.images] == [png()]
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (12, 4160)
    assert result.upstream_request_id == "req_fake_stream"


def test_dalle_is_asked_unstreamed(fake: FakeOpenAI) -> None:
    result, partials = streamed(fake, "dall-e-3", 2)
    assert partials == [] and len(result.images) == 1
    assert "stream" not in fake.generation_requests()[0].json


def test_a_refusal_of_a_streamed_call_is_a_content_policy_violation(fake: FakeOpenAI) -> None:
    with pytest.raises(ContentPolicyViolation):
        streamed(fake, "gpt-image-1", 1, prompt="BLOCKME please")
