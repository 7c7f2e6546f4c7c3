"""Token counts from providers' answers: kept when they are counts, dropped when they are not.

They price token-billed calls, and by the time they are read the provider has made (and charged
for) the images, so a malformed count must neither bill nonsense nor fail the call. Found by
answering the gateway with randomly malformed provider responses: each shape below was a 500."""

from __future__ import annotations

from typing import Any

import pytest
from mg.v1 import image_generation_pb2 as pb

from service.api.responses import images_response
from service.catalog.catalog import load_catalog
from service.generation.pipeline import Delivered, Usage
from service.generation.validation import validate
from service.providers import bytedance, google, openai
from service.providers.base import MAX_REPORTED_TOKENS, GeneratedImage, ProviderUsage
from tests.fakes.base import png


@pytest.mark.parametrize("value", [-1, True, False, 1.5, "12", None, [], {}, MAX_REPORTED_TOKENS + 1, 2**70])
def test_what_is_not_a_count_is_not_reported(value: object) -> None:
    assert ProviderUsage.reported(input_tokens=value) is None
    assert ProviderUsage.reported(input_tokens=7, output_tokens=value) == ProviderUsage(input_tokens=7)


def test_counts_are_kept() -> None:
    assert ProviderUsage.reported(0, MAX_REPORTED_TOKENS, 3) == ProviderUsage(0, MAX_REPORTED_TOKENS, 3)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"usage": True}, None),
        ({"usage": {"input_tokens": 3, "output_tokens": -1}}, ProviderUsage(input_tokens=3)),
        ({"usage": {"input_tokens": 3, "input_tokens_details": 5}}, ProviderUsage(input_tokens=3)),
        (
            {"usage": {"input_tokens_details": {"image_tokens": "9"}, "output_tokens": 2}},
            ProviderUsage(output_tokens=2),
        ),
        ({"usage": {"output_tokens": [1]}}, None),
    ],
)
def test_openai_usage(body: dict[str, Any], expected: ProviderUsage | None) -> None:
    assert openai.parse_usage(body) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"usageMetadata": 5}, None),
        (
            {"usageMetadata": {"promptTokenCount": "3", "candidatesTokenCount": 1290}},
            ProviderUsage(output_tokens=1290),
        ),
        (
            {"usageMetadata": {"promptTokenCount": 300, "promptTokensDetails": [
                {"modality": "IMAGE", "tokenCount": 258}, {"modality": "IMAGE", "tokenCount": "x"}]}},
            ProviderUsage(input_tokens=300),  # a partial sum would under-count: none at all
        ),
        (
            {"usageMetadata": {"promptTokenCount": 300, "promptTokensDetails": [
                {"modality": "IMAGE", "tokenCount": 258}, {"modality": "TEXT", "tokenCount": 42}]}},
            ProviderUsage(input_tokens=300, input_image_tokens=258),
        ),
    ],
)  # fmt: skip
def test_google_usage(payload: dict[str, Any], expected: ProviderUsage | None) -> None:
    assert google.parse_usage(payload) == expected


@pytest.mark.parametrize(
    ("usage", "expected"), [(True, None), ({"output_tokens": True}, None), ({"output_tokens": 16}, 16)]
)
def test_bytedance_usage(usage: object, expected: int | None) -> None:
    parsed = bytedance.parse_usage({"usage": usage})
    assert (parsed.output_tokens if parsed else None) == expected


def test_more_image_tokens_than_input_tokens_leave_no_negative_text_tokens() -> None:
    model = load_catalog().resolve("openai/gpt-image-1")
    request = validate(pb.GenerateImagesRequest(model="openai/gpt-image-1", prompt="x"), model)
    usage = Usage(input_tokens=100, output_tokens=4160, input_image_tokens=300)
    response = images_response(Delivered(request, [GeneratedImage(png())], None, usage, 0))
    details = response.usage.input_tokens_details
    assert (details.text_tokens, details.image_tokens, response.usage.input_tokens) == (0, 300, 100)
