"""The Google adapter (Gemini :generateContent and Imagen :predict) against a fake Gemini API."""

from __future__ import annotations

import base64
import io
import time
from fractions import Fraction

import pytest
from PIL import Image

from service.catalog.catalog import SHIPPED_MODELS, load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    ModelNotAllowed,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult, WarningType, other, unsupported
from service.providers.google import GEMINI_RATIOS, GoogleProvider
from tests.fakes.base import jpeg, png
from tests.fakes.google import IMAGE_TOKENS, FakeGoogle
from tests.providers.conftest import generate_with, shared_fake

FLASH, PRO, IMAGEN = "gemini-2.5-flash-image", "gemini-3-pro-image-preview", "imagen-4.0-generate-001"
FINAL = png(color=FakeGoogle.final_color)
PHOTO = jpeg()
REFERENCE = ReferenceImage(PHOTO, "image/jpeg", 8, 8)


server, fake = shared_fake(FakeGoogle)


def generate(
    fake: FakeGoogle, model: str, key: str = FakeGoogle.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(
        GoogleProvider.create, ProviderConfig("google", key, f"{fake.url}/v1beta"), model, **fields
    )


def test_gemini_request_and_response(fake: FakeGoogle) -> None:
    result = generate(fake, FLASH, size=Size(1344, 756), user="u-1")
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == "g-fake-gemini" and "authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "a red fox in snow"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }
    assert [image.data for image in result.images] == [FINAL]
    assert result.images[0].media_type == "image/png" and result.images[0].revised_prompt is None
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.input_image_tokens) == (
        8,
        1290,
        None,
    )
    assert (result.upstream_request_id or "").startswith("resp-") and result.warnings == []
    assert fake.received == []  # no reference image: the text part alone, as before


def test_a_reference_image_is_an_inline_data_part_after_the_text(fake: FakeGoogle) -> None:
    result = generate(
        fake, FLASH, size=Size(1344, 756), prompt="make the sky stormy", reference_image=REFERENCE
    )
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent.json == {
        "contents": [{"role": "user", "parts": [
            {"text": "make the sky stormy"},
            {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(PHOTO).decode()}},
        ]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }  # fmt: skip
    assert fake.received == [PHOTO]  # arrived intact and decodes as the JPEG it claims to be
    assert [image.data for image in result.images] == [FINAL] and result.warnings == []
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.input_image_tokens) == (7 + IMAGE_TOKENS, IMAGE_TOKENS)


def test_a_png_reference_on_gemini_3_keeps_the_options_and_size_tier(fake: FakeGoogle) -> None:
    reference = ReferenceImage(png(16, 12), "image/png", 16, 12)
    generate(fake, PRO, size=Size(2688, 1512), reference_image=reference,
             options={"responseModalities": ["TEXT", "IMAGE"], "seed": 7})  # fmt: skip
    sent = fake.generation_requests()[0].json
    assert sent["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": base64.b64encode(reference.data).decode()}
    }
    image_config = {"aspectRatio": "16:9", "imageSize": "2K"}
    assert sent["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "seed": 7,
        "imageConfig": image_config,
    }
    assert fake.received == [reference.data]


def test_several_input_images_are_one_inline_data_part_each_in_order(fake: FakeGoogle) -> None:
    second = ReferenceImage(png(16, 12), "image/png", 16, 12)
    generate(fake, PRO, prompt="combine them", input_images=(REFERENCE, second))
    parts = fake.generation_requests()[0].json["contents"][0]["parts"]
    assert [next(iter(part)) for part in parts] == ["text", "inlineData", "inlineData"]
    assert fake.received == [PHOTO, second.data]


def test_a_gif_reference_is_sent_as_png(fake: FakeGoogle) -> None:
    out = io.BytesIO()
    Image.new("P", (12, 8), 2).save(out, format="GIF")
    generate(fake, FLASH, reference_image=ReferenceImage(out.getvalue(), "image/gif", 12, 8))
    blob = fake.generation_requests()[0].json["contents"][0]["parts"][1]["inlineData"]
    assert blob["mimeType"] == "image/png"
    (received,) = fake.received
    with Image.open(io.BytesIO(received)) as image:
        assert (image.format, image.size) == ("PNG", (12, 8))


def test_an_edit_can_be_refused_like_a_generation(fake: FakeGoogle) -> None:
    with pytest.raises(ContentPolicyViolation, match="PROHIBITED_CONTENT"):
        generate(fake, FLASH, prompt="BLOCKME edit", reference_image=REFERENCE)
    assert len(fake.generation_requests()) == 1 and fake.received == [PHOTO]  # checked, then refused


def test_a_reference_whose_bytes_do_not_match_its_type_is_rejected_by_the_fake(fake: FakeGoogle) -> None:
    with pytest.raises(BadRequest, match="Unable to process input image"):
        generate(fake, FLASH, reference_image=ReferenceImage(png(), "image/jpeg", 8, 8))


def test_imagen_refuses_a_reference_image_without_calling(fake: FakeGoogle) -> None:
    with pytest.raises(ModelNotAllowed, match="cannot edit") as caught:
        generate(fake, IMAGEN, reference_image=REFERENCE)
    assert caught.value.param == "reference_image" and fake.requests == []


def test_gemini_3_gets_an_image_size_tier_and_thought_parts_are_skipped(fake: FakeGoogle) -> None:
    small = generate(fake, PRO, size=Size(1248, 832))
    generate(fake, PRO, size=Size(1248, 832), quality="hd")
    generate(fake, PRO, size=Size(2688, 1512))
    generate(fake, PRO, size=Size(6272, 2688))
    configs = [r.json["generationConfig"]["imageConfig"] for r in fake.generation_requests()]
    assert configs == [
        {"aspectRatio": "3:2", "imageSize": "1K"},
        {"aspectRatio": "3:2", "imageSize": "2K"},
        {"aspectRatio": "16:9", "imageSize": "2K"},
        {"aspectRatio": "21:9", "imageSize": "4K"},
    ]
    assert [image.data for image in small.images] == [FINAL]  # the grey interim thought image is dropped


def test_quality_and_unsupported_fields_are_dropped_with_warnings(fake: FakeGoogle) -> None:
    result = generate(fake, FLASH, quality="hd", style="vivid", options={"negativePrompt": "x"})
    assert "imageSize" not in fake.generation_requests()[0].json["generationConfig"]["imageConfig"]
    assert [(w.type, w.feature) for w in result.warnings] == [
        (WarningType.UNSUPPORTED, "providerOptions.google.negativePrompt"),
        (WarningType.UNSUPPORTED, "style"),
        (WarningType.UNSUPPORTED, "quality"),
    ]


def test_provider_options_pass_through(fake: FakeGoogle) -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    result = generate(fake, PRO, options={
        "responseModalities": ["TEXT", "IMAGE"], "seed": 42.0, "temperature": 0.5, "safetySettings": safety,
        "googleSearch": True, "imageConfig": {"aspectRatio": "4:3"}, "imageSize": "4K"})  # fmt: skip
    assert fake.generation_requests()[0].json == {
        "contents": [{"role": "user", "parts": [{"text": "a red fox in snow"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "seed": 42, "temperature": 0.5,
                             "imageConfig": {"aspectRatio": "4:3", "imageSize": "4K"}},
        "safetySettings": safety,
        "tools": [{"googleSearch": {}}],
    }  # fmt: skip
    assert [image.data for image in result.images] == [FINAL] and result.warnings == []


@pytest.mark.parametrize(
    ("prompt", "match"), [("BLOCKME", "PROHIBITED_CONTENT"), ("BLOCKIMAGE", "may violate our policies")]
)
def test_gemini_refusals_inside_a_200_are_content_policy_violations(
    fake: FakeGoogle, prompt: str, match: str
) -> None:
    with pytest.raises(ContentPolicyViolation, match=match):
        generate(fake, FLASH, prompt=f"{prompt} please")
    assert len(fake.generation_requests()) == 1  # never retried


def test_a_text_only_answer_is_an_upstream_error_with_the_text(fake: FakeGoogle) -> None:
    with pytest.raises(UpstreamError, match=r"no image .*Would you like it in colour"):
        generate(fake, FLASH, prompt="EMPTY")


def test_imagen_request_and_response(fake: FakeGoogle) -> None:
    result = generate(
        fake, IMAGEN, n=3, size=Size(1152, 864), quality="hd", options={"personGeneration": "dont_allow"}
    )
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1beta/models/imagen-4.0-generate-001:predict"
    assert sent.headers["x-goog-api-key"] == "g-fake-gemini"
    assert sent.json == {
        "instances": [{"prompt": "a red fox in snow"}],
        "parameters": {"sampleCount": 3, "aspectRatio": "4:3", "sampleImageSize": "2K",
                       "personGeneration": "DONT_ALLOW"},
    }  # fmt: skip
    assert [image.data for image in result.images] == [FINAL] * 3
    assert result.usage is None and result.upstream_request_id is None and result.warnings == []


def test_imagen_fast_has_no_size_tier(fake: FakeGoogle) -> None:
    result = generate(fake, "imagen-4.0-fast-generate-001", size=Size(756, 1344), quality="high")
    assert fake.generation_requests()[0].json["parameters"] == {"sampleCount": 1, "aspectRatio": "9:16"}
    assert result.warnings == [unsupported("quality", "imagen-4.0-fast-generate-001 has a single resolution")]


def test_imagen_filtering(fake: FakeGoogle) -> None:
    result = generate(fake, IMAGEN, n=4, prompt="FILTERONE fox")
    assert len(result.images) == 3
    assert result.warnings == [other("n", "1 of 4 images were removed by Imagen's safety filters")]
    with pytest.raises(ContentPolicyViolation, match="removed every image"):
        generate(fake, IMAGEN, n=2, prompt="BLOCKME fox")
    assert len(fake.generation_requests()) == 2


def test_transient_failures_are_retried(fake: FakeGoogle) -> None:
    assert len(generate(fake, FLASH, prompt="FLAKY fox").images) == 1
    assert len(generate(fake, IMAGEN, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeGoogle) -> None:
    with pytest.raises(RateLimited, match="Resource has been exhausted") as caught:
        generate(fake, FLASH, prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeGoogle) -> None:
    with pytest.raises(UpstreamError, match="internal error has occurred"):
        generate(fake, FLASH, prompt="FAILME")


@pytest.mark.parametrize("model", [FLASH, IMAGEN])
def test_garbage_is_an_upstream_error(fake: FakeGoogle, model: str) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, model, prompt="GARBAGE")


def test_bad_credentials_are_an_upstream_error_not_a_400(fake: FakeGoogle) -> None:
    with pytest.raises(UpstreamError, match=r"credentials .*API key not valid"):
        generate(fake, FLASH, key="g-wrong")
    assert len(fake.generation_requests()) == 1


def test_a_request_the_provider_rejects_is_a_400_with_its_message(fake: FakeGoogle) -> None:
    with pytest.raises(BadRequest, match="is not found for API version v1beta"):
        generate(fake, "gemini-9-image")


def test_the_deadline_bounds_the_call(fake: FakeGoogle) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, FLASH, prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.5


def test_catalog_sizes_map_exactly_to_supported_ratios() -> None:
    catalog = load_catalog([SHIPPED_MODELS / "google.yaml"])
    ratios = {Fraction(*map(int, label.split(":"))) for label in GEMINI_RATIOS}
    models = list(catalog)
    assert [m.id for m in models] == ["google/gemini-2.5-flash-image", "google/gemini-3-pro-image-preview"]
    for model in models:
        assert model.capabilities.max_images_per_call == 1
        assert model.capabilities.reference_image  # every Gemini image model takes inlineData parts
        assert all(size.aspect_ratio in ratios for size in model.capabilities.sizes), model.id
