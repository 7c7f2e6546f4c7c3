"""The OpenAI adapter's streamed generations and edits (`stream: true`) against the fake, which answers
server-sent events as OpenAI documents them."""

from __future__ import annotations

import pytest

from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import ContentPolicyViolation
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult, PartialImage
from service.providers.openai import OpenAIProvider
from tests.fakes.base import jpeg, png
from tests.fakes.openai import FakeOpenAI, form_parts
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


def test_a_streamed_gpt_image_edit_is_sent_as_a_streamed_form(fake: FakeOpenAI) -> None:
    pictures = (ReferenceImage(png(), "image/png", 8, 8), ReferenceImage(jpeg(), "image/jpeg", 8, 8))
    result, partials = streamed(fake, "gpt-image-1", 2, input_images=pictures)
    (sent,) = [r for r in fake.requests if r.path == "/v1/images/edits"]
    fields = {name: data for name, filename, _, data in form_parts(sent) if filename is None}
    assert (fields["stream"], fields["partial_images"]) == (b"true", b"2")
    assert [partial.index for partial in partials] == [0, 1]
    assert [image.data for image in result.images] == [png()]
    # The edit's usage, the input images' tokens included, as OpenAI reports it in the completed event.
    assert result.usage is not None and result.usage.input_image_tokens == 2 * 194


def test_a_dalle2_edit_is_asked_unstreamed(fake: FakeOpenAI) -> None:
    square = ReferenceImage(png(), "image/png", 8, 8)
    result, partials = streamed(fake, "dall-e-2", 2, input_images=(square,), size=Size(256, 256))
    (sent,) = [r for r in fake.requests if r.path == "/v1/images/edits"]
    assert partials == [] and len(result.images) == 1
    assert "stream" not in {name for name, *_ in form_parts(sent)}
