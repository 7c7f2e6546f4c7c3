"""The xAI adapter against a fake xAI image API that checks what it is sent (closed, gRPC-shaped)."""

from __future__ import annotations

import base64
import io
import time
from typing import cast

import httpx
import pytest
from PIL import Image

from service.catalog.catalog import SHIPPED_MODELS, load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import BadRequest, ContentPolicyViolation, RateLimited, UpstreamError, UpstreamTimeout
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult, adjusted, other
from service.providers.xai import XAIProvider, aspect_and_resolution
from tests.fakes.base import jpeg, png
from tests.fakes.xai import FakeXAI
from tests.providers.conftest import generate_with, shared_fake

server, fake = shared_fake(FakeXAI)


def generate(
    fake: FakeXAI, model: str = "grok-imagine-image", key: str = FakeXAI.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(XAIProvider.create, ProviderConfig("xai", key, f"{fake.url}/v1"), model, **fields)


def downloads(fake: FakeXAI) -> list[str]:
    return [r.path for r in fake.requests if r.method == "GET"]


def test_request_and_response(fake: FakeXAI) -> None:
    result = generate(fake, n=2, size=Size(1536, 1024), user="u-1")
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/generations", "Bearer xai-fake-key")
    assert sent.json == {
        "model": "grok-imagine-image", "prompt": "a red fox in snow", "n": 2, "aspect_ratio": "3:2",
        "resolution": "2k", "response_format": "b64_json", "user": "u-1",
    }  # fmt: skip
    assert [image.data for image in result.images] == [jpeg(), jpeg()]
    assert {image.media_type for image in result.images} == {"image/jpeg"}
    assert result.images[0].revised_prompt == "A detailed photo of a red fox in snow"
    assert result.usage is None  # xAI reports no tokens
    assert result.upstream_request_id == "req-xai-1"
    assert result.warnings == [other("cost", "xai reported cost_in_usd_ticks=400000000 (USD 0.040000)")]
    assert downloads(fake) == []
    assert fake.received == []  # no reference image: a generation, no `image`, as before


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (Size(1024, 1024), ("1:1", "1k")),
        (Size(1024, 576), ("16:9", "1k")),
        (Size(576, 1024), ("9:16", "1k")),
        (Size(2048, 1152), ("16:9", "2k")),
        (Size(384, 832), ("9:19.5", "1k")),
        (Size(1664, 768), ("19.5:9", "2k")),
        (Size(960, 432), ("20:9", "1k")),
        (Size(1024, 2048), ("1:2", "2k")),
    ],
)
def test_sizes_become_aspect_ratio_and_resolution(size: Size, expected: tuple[str, str]) -> None:
    assert aspect_and_resolution(size) == expected


def test_sizes_of_other_ratios_are_refused_before_calling(fake: FakeXAI) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, size=Size(1792, 1024))
    assert caught.value.code == "INVALID_SIZE" and caught.value.param == "size"
    assert fake.requests == []


def test_pro_model_and_the_16_9_tier(fake: FakeXAI) -> None:
    result = generate(fake, "grok-imagine-image-pro", size=Size(1024, 576))
    sent = fake.generation_requests()[0].json
    assert (sent["model"], sent["aspect_ratio"], sent["resolution"]) == (
        "grok-imagine-image-pro",
        "16:9",
        "1k",
    )
    assert result.warnings == [other("cost", "xai reported cost_in_usd_ticks=700000000 (USD 0.070000)")]


def test_provider_options_win_and_unsupported_inputs_are_dropped(fake: FakeXAI) -> None:
    result = generate(fake, quality="hd", style="vivid", background="opaque", output_format="jpeg",
                      options={"aspect_ratio": "auto", "resolution": "2k", "seed": 7})  # fmt: skip
    sent = fake.generation_requests()[0].json
    assert (sent["aspect_ratio"], sent["resolution"]) == ("auto", "2k")
    assert not {"quality", "style", "background", "seed", "size", "output_format"} & set(sent)
    assert [str(warning) for warning in result.warnings] == [  # no output_format: JPEG is what xAI returns
        "providerOptions.xai.seed ignored: not an option of xai (it takes aspect_ratio, resolution)",
        "quality ignored: xai has no equivalent",
        "style ignored: xai has no equivalent",
        "background ignored: xai has no equivalent",
        "cost: xai reported cost_in_usd_ticks=200000000 (USD 0.020000)",
    ]


def test_the_fake_is_closed_like_xai(fake: FakeXAI) -> None:
    base = {"model": "grok-imagine-image", "prompt": "x"}
    headers = {"Authorization": f"Bearer {FakeXAI.api_key}"}
    url = f"{fake.url}/v1/images/generations"
    for extra, message in [({"size": "1024x1024"}, "Argument not supported: size"),
                           ({"quality": "high"}, "Argument not supported: quality"),
                           ({"aspect_ratio": "5:4"}, "IMG_ASPECT_RATIO_5_4"),
                           ({"resolution": "4k"}, "IMG_RESOLUTION_4K"),
                           ({"n": 11}, "maximum")]:  # fmt: skip
        answer = httpx.post(url, json={**base, **cast(dict[str, object], extra)}, headers=headers)
        assert answer.status_code == 400 and message in answer.json()["error"], extra
        assert answer.json()["code"] == "Client specified an invalid argument"


def test_url_answers_are_downloaded(fake: FakeXAI) -> None:
    fake.url_answers = True
    result = generate(fake, n=2)
    assert [image.data for image in result.images] == [jpeg(), jpeg()]
    # downloaded in parallel, so in either order
    assert sorted(downloads(fake)) == ["/xai-imgen/xai-tmp-imgen-1.jpeg", "/xai-imgen/xai-tmp-imgen-2.jpeg"]


def test_moderation_inside_a_200_is_a_content_policy_violation(fake: FakeXAI) -> None:
    fake.url_answers = True
    with pytest.raises(ContentPolicyViolation, match="respect_moderation"):
        generate(fake, n=2, prompt="BLOCKME please")
    assert len(fake.generation_requests()) == 1 and downloads(fake) == []  # not retried, nothing fetched


def test_partly_moderated_answers_keep_the_delivered_images(fake: FakeXAI) -> None:
    result = generate(fake, n=3, prompt="BLOCKSOME fox")
    assert len(result.images) == 2
    assert other("n", "xai moderation blocked 1 of 3 images") in result.warnings


def test_a_refused_prompt_is_a_content_policy_violation(fake: FakeXAI) -> None:
    with pytest.raises(ContentPolicyViolation, match="content moderation"):
        generate(fake, prompt="BLOCKPROMPT please")
    assert len(fake.generation_requests()) == 1


def test_transient_failures_are_retried(fake: FakeXAI) -> None:
    assert len(generate(fake, prompt="FLAKY fox").images) == 1
    assert len(generate(fake, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeXAI) -> None:
    with pytest.raises(RateLimited) as caught:
        generate(fake, prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED" and caught.value.retry_after_s == 1
    assert "rate limit of 5 requests" in caught.value.message
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeXAI) -> None:
    with pytest.raises(UpstreamError, match="internal error"):
        generate(fake, prompt="FAILME")


def test_garbage_empty_and_dataless_answers(fake: FakeXAI) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, prompt="GARBAGE")
    with pytest.raises(UpstreamError, match="neither b64_json nor url"):
        generate(fake, prompt="BADITEM")
    assert generate(fake, prompt="EMPTY").images == []  # generation.py turns this into a 502


def test_bad_credentials_are_an_upstream_error_not_a_400(fake: FakeXAI) -> None:
    with pytest.raises(UpstreamError, match=r"credentials \(400\).*Incorrect API key"):
        generate(fake, key="xai-wrong")


def test_a_retired_model_is_a_400_with_xais_message(fake: FakeXAI) -> None:
    with pytest.raises(BadRequest, match="grok-2-image does not exist") as caught:
        generate(fake, "grok-2-image")
    assert caught.value.code == "PROVIDER_REJECTED_REQUEST"


def test_the_deadline_bounds_the_call(fake: FakeXAI) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.5


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_a_reference_image_makes_an_edit_with_a_data_url(fake: FakeXAI) -> None:
    reference = ReferenceImage(png(), "image/png", 8, 8)
    result = generate(
        fake, n=2, size=Size(1536, 1024), prompt="make it watercolor", reference_image=reference
    )
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/edits" and sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "grok-imagine-image", "prompt": "make it watercolor", "n": 2, "aspect_ratio": "3:2",
        "resolution": "2k", "response_format": "b64_json",
        "image": {"url": data_url("image/png", png()), "type": "image_url"},
    }  # fmt: skip
    assert fake.received == [png()]  # decoded intact, as the PNG the URL names
    assert [image.data for image in result.images] == [jpeg(), jpeg()]
    assert result.images[0].revised_prompt == "A detailed photo of make it watercolor"
    assert result.warnings == [other("cost", "xai reported cost_in_usd_ticks=400000000 (USD 0.040000)")]


def test_several_input_images_go_as_images(fake: FakeXAI) -> None:
    pictures = (ReferenceImage(png(), "image/png", 8, 8), ReferenceImage(jpeg(), "image/jpeg", 8, 8))
    generate(fake, prompt="combine", input_images=pictures)
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/edits" and "image" not in sent.json
    assert sent.json["images"] == [
        {"url": data_url("image/png", png()), "type": "image_url"},
        {"url": data_url("image/jpeg", jpeg()), "type": "image_url"},
    ]
    assert fake.received == [png(), jpeg()]


def test_an_edit_on_pro_with_auto_falls_back_to_the_size_ratio(fake: FakeXAI) -> None:
    reference = ReferenceImage(jpeg(), "image/jpeg", 8, 8)
    result = generate(fake, "grok-imagine-image-pro", size=Size(1024, 576), reference_image=reference,
                      options={"aspect_ratio": "auto", "resolution": "2k"})  # fmt: skip
    sent = fake.generation_requests()[0].json
    assert (sent["model"], sent["aspect_ratio"], sent["resolution"]) == (
        "grok-imagine-image-pro",
        "16:9",
        "2k",
    )
    assert sent["image"] == {"url": data_url("image/jpeg", jpeg()), "type": "image_url"}
    assert adjusted("providerOptions.xai.aspect_ratio", "auto asked; xai edits take a ratio, sent 16:9") in (
        result.warnings
    )
    assert fake.received == [jpeg()]


def test_a_gif_reference_is_sent_as_png(fake: FakeXAI) -> None:
    out = io.BytesIO()
    Image.new("P", (10, 6), 5).save(out, format="GIF")
    generate(fake, reference_image=ReferenceImage(out.getvalue(), "image/gif", 10, 6))
    assert fake.generation_requests()[0].json["image"]["url"].startswith("data:image/png;base64,")
    (received,) = fake.received
    with Image.open(io.BytesIO(received)) as image:
        assert (image.format, image.size) == ("PNG", (10, 6))


def test_a_reference_over_10_mib_is_refused_before_calling(fake: FakeXAI) -> None:
    big = ReferenceImage(b"\0" * (10 * 1024 * 1024 + 1), "image/png", 8, 8)
    with pytest.raises(BadRequest, match="10 MiB") as caught:
        generate(fake, reference_image=big)
    assert caught.value.param == "reference_image" and fake.requests == []


def test_edits_are_moderated_like_generations(fake: FakeXAI) -> None:
    reference = ReferenceImage(png(), "image/png", 8, 8)
    with pytest.raises(ContentPolicyViolation, match="respect_moderation"):
        generate(fake, prompt="BLOCKME edit", reference_image=reference)
    with pytest.raises(ContentPolicyViolation, match="content moderation"):
        generate(fake, prompt="BLOCKPROMPT edit", reference_image=reference)
    assert [r.path for r in fake.generation_requests()] == ["/v1/images/edits"] * 2  # never retried


def test_the_fake_checks_edit_images(fake: FakeXAI) -> None:
    headers = {"Authorization": f"Bearer {FakeXAI.api_key}"}
    url = f"{fake.url}/v1/images/edits"
    base = {"model": "grok-imagine-image", "prompt": "x"}
    image = {"url": data_url("image/png", png()), "type": "image_url"}
    cases = [
        ({}, "image or images is required"),
        ({"image": {"url": "https://example.com/a.png"}}, "Failed to fetch"),
        ({"image": {"url": data_url("image/jpeg", png())}}, "not image/jpeg"),
        ({"image": {"url": data_url("image/gif", png())}}, "Unsupported image data URL"),
        ({"image": {"url": "data:image/png;base64,!!"}}, "Unable to decode"),
        ({"images": [image] * 4}, "At most 3"),
        ({"image": image, "aspect_ratio": "auto"}, "only supported for generation"),
    ]
    for extra, message in cases:
        answer = httpx.post(url, json={**base, **cast(dict[str, object], extra)}, headers=headers)
        assert answer.status_code == 400 and message in answer.json()["error"], extra
    generations = f"{fake.url}/v1/images/generations"
    answer = httpx.post(generations, json={**base, "image": image}, headers=headers)
    assert answer.status_code == 400 and "only for edits" in answer.json()["error"]
    assert fake.received == []


def test_catalog_reference_image_flags() -> None:
    catalog = load_catalog([SHIPPED_MODELS / "xai.yaml"])
    assert {m.id: m.capabilities.reference_image for m in catalog} == {
        "xai/grok-imagine-image": True,
        "xai/grok-imagine-image-pro": True,
    }
