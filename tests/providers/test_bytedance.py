"""The ByteDance Seedream adapter against a fake BytePlus ModelArk images API that checks what it is sent."""

from __future__ import annotations

import base64
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import BadRequest, ContentPolicyViolation, RateLimited, UpstreamError, UpstreamTimeout
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult
from service.providers.bytedance import BytedanceProvider, is_refusal
from service.providers.upstream import Upstream
from tests.fakes.base import jpeg, png
from tests.fakes.bytedance import FakeSeedream
from tests.providers.conftest import call, generate_with, rendered, run, shared_fake

V4 = "seedream-4-0-250828"


server, fake = shared_fake(FakeSeedream)


def generate(
    fake: FakeSeedream, model: str = V4, key: str = FakeSeedream.api_key, **fields: object
) -> ImageCallResult:
    fields.setdefault("size", Size(2048, 2048))

    return generate_with(
        BytedanceProvider.create, ProviderConfig("bytedance", key, f"{fake.url}/api/v3"), model, **fields
    )


def test_request_and_response(fake: FakeSeedream) -> None:
    result = generate(fake)
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == (
        "/api/v3/images/generations",
        "Bearer ark-fake-bytedance",
    )
    assert sent.json == {
        "model": V4,
        "prompt": "a red fox in snow",
        "size": "2048x2048",
        "response_format": "b64_json",
    }
    assert [(image.data, image.media_type, image.revised_prompt) for image in result.images] == [
        (jpeg(), "image/jpeg", None)
    ]
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (
        None,
        16384,
    )
    assert result.upstream_request_id is not None and result.upstream_request_id.startswith("0217")
    assert result.warnings == []
    assert fake.references == []  # no reference image, no `image` field


def test_sizes_pass_as_exact_wxh(fake: FakeSeedream) -> None:
    generate(fake, "seedream-3-0-t2i-250415", size=Size(512, 2048))
    generate(fake, "seedream-4-5-251128", size=Size(3024, 1296))
    assert [r.json["size"] for r in fake.generation_requests()] == ["512x2048", "3024x1296"]


def test_provider_options_pass_through(fake: FakeSeedream) -> None:
    # providerOptions numbers arrive as floats (google.protobuf.Struct).
    generate(fake, "seedream-3-0-t2i-250415", size=Size(1024, 1024),
             options={"watermark": False, "seed": 42.0, "guidance_scale": 3})  # fmt: skip
    result = generate(fake, options={"size": "4k", "optimize_prompt_mode": "fast", "watermark": True})
    generate(fake)
    v3, v4, plain = (r.json for r in fake.generation_requests())
    assert (v3["watermark"], v3["seed"], v3["guidance_scale"]) == (False, 42, 3.0)
    assert isinstance(v3["seed"], int)
    assert (v4["size"], v4["optimize_prompt_options"], v4["watermark"]) == ("4K", {"mode": "fast"}, True)
    assert rendered(result) == [
        "size adjusted: 2048x2048 replaced by the 4K tier (providerOptions.bytedance.size)"
    ]
    assert "watermark" not in plain  # the upstream default (a visible mark) unless asked


def test_png_output_format_is_sent_where_a_model_takes_it(fake: FakeSeedream) -> None:
    result = generate(fake, "seedream-5-0-260128", output_format="png")
    generate(fake, output_format="jpeg")  # 4.x always answers JPEG: nothing to send
    five, four = (r.json for r in fake.generation_requests())
    assert five["output_format"] == "png" and "output_format" not in four
    assert (result.images[0].data, result.images[0].media_type) == (png(), "image/png")


def test_unsupported_fields_are_dropped_with_warnings(fake: FakeSeedream) -> None:
    result = generate(fake, quality="hd", style="vivid", user="u-1",
                      options={"stream": True, "sequential_image_generation": "auto"})  # fmt: skip
    sent = fake.generation_requests()[0].json
    assert set(sent) == {"model", "prompt", "size", "response_format"}
    unknown = (
        "not an option of bytedance (it takes watermark, seed, guidance_scale, size, optimize_prompt_mode, "
    )
    unknown += "output_format)"
    assert rendered(result) == [
        f"providerOptions.bytedance.stream ignored: {unknown}",
        f"providerOptions.bytedance.sequential_image_generation ignored: {unknown}",
        "quality ignored: Seedream has no equivalent",
        "style ignored: Seedream has no equivalent",
    ]


@pytest.mark.parametrize(
    ("options", "param"),
    [({"seed": 1.5}, "seed"), ({"watermark": "no"}, "watermark"), ({"size": "8K"}, "size"),
     ({"guidance_scale": 11}, "guidance_scale"), ({"optimize_prompt_mode": "slow"}, "optimize_prompt_mode")],
)  # fmt: skip
def test_invalid_options_are_400s_before_any_call(
    fake: FakeSeedream, options: dict[str, object], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, options=options)
    assert caught.value.param == f"providerOptions.bytedance.{param}"
    assert fake.generation_requests() == []


def test_batch_mode_when_a_call_asks_for_several(fake: FakeSeedream) -> None:
    result = generate(fake, n=3)
    sent = fake.generation_requests()[0].json
    assert (sent["sequential_image_generation"], sent["sequential_image_generation_options"]) == (
        "auto", {"max_images": 3}
    )  # fmt: skip
    assert len(result.images) == 3 and result.warnings == []
    assert result.usage is not None and result.usage.output_tokens == 3 * 16384


def test_a_partial_failure_inside_a_batch_keeps_the_other_images(fake: FakeSeedream) -> None:
    result = generate(fake, n=3, prompt="PARTIAL fox")
    assert [image.data for image in result.images] == [jpeg(), jpeg()]
    assert rendered(result) == [
        "n: 1 image(s) failed upstream and were skipped: OutputImageSensitiveContentDetected: "
        "The request failed because the output image may contain sensitive information."
    ]
    assert result.usage is not None and result.usage.output_tokens == 2 * 16384


def test_a_batch_where_every_item_failed_raises_the_first_items_error(fake: FakeSeedream) -> None:
    with pytest.raises(ContentPolicyViolation, match="output image may contain sensitive"):
        generate(fake, n=2, prompt="BLOCKOUTPUT fox")
    with pytest.raises(UpstreamError, match="InternalServiceError: Image generation failed"):
        generate(fake, n=2, prompt="ITEMFAIL fox")


def test_a_short_batch_is_returned_with_a_warning(fake: FakeSeedream) -> None:
    result = generate(fake, n=3, prompt="FEWER fox")
    assert len(result.images) == 1 and rendered(result) == [
        "n: bytedance returned 1 of 3 images in batch mode"
    ]


def test_url_answers_are_downloaded(fake: FakeSeedream) -> None:
    fake.force_url = True
    result = generate(fake, n=2)
    assert [(image.data, image.media_type) for image in result.images] == [(jpeg(), "image/jpeg")] * 2
    assert len([r for r in fake.requests if r.method == "GET" and r.path.startswith("/files/")]) == 2


@pytest.mark.parametrize("prompt", ["BLOCKME please", "BLOCKOUTPUT please"])
def test_refusals_are_content_policy_violations(fake: FakeSeedream, prompt: str) -> None:
    with pytest.raises(ContentPolicyViolation, match="bytedance: The request failed because the"):
        generate(fake, prompt=prompt)
    assert len(fake.generation_requests()) == 1  # never retried


def test_transient_failures_are_retried(fake: FakeSeedream) -> None:
    assert len(generate(fake, prompt="FLAKY fox").images) == 1
    assert len(generate(fake, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeSeedream) -> None:
    with pytest.raises(RateLimited) as caught:
        generate(fake, prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED" and caught.value.retry_after_s == 1
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeSeedream) -> None:
    with pytest.raises(UpstreamError, match="unexpected internal error"):
        generate(fake, prompt="FAILME")


def test_garbage_and_empty_answers(fake: FakeSeedream) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, prompt="GARBAGE")
    assert generate(fake, prompt="EMPTY").images == []  # generation.py turns this into a 502


def test_bad_credentials_are_an_upstream_error_not_a_401(fake: FakeSeedream) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, key="ark-wrong")


def test_requests_the_provider_rejects_are_400s_with_its_message(fake: FakeSeedream) -> None:
    with pytest.raises(BadRequest, match="out of the range") as caught:
        generate(fake, "seedream-4-5-251128", size=Size(1024, 1024))
    assert caught.value.code == "PROVIDER_REJECTED_REQUEST"
    with pytest.raises(BadRequest, match="has not activated the model"):
        generate(fake, "seedream-9-0")


def test_the_deadline_bounds_the_call(fake: FakeSeedream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.5


def answer_with(payload: object) -> ImageCallResult:
    """The adapter's reading of a 200 body the fake never sends (shapes from the SDK schema)."""

    async def go() -> ImageCallResult:
        async def answer(request: web.BaseRequest) -> web.Response:
            return web.json_response(payload)

        async with RawTestServer(answer) as server:
            upstream = Upstream("bytedance", str(server.make_url("/api/v3")), {}, is_refusal)
            provider = BytedanceProvider(upstream)
            try:
                return await provider.generate(call(V4, size=Size(2048, 2048)))
            finally:
                await provider.aclose()

    return run(go())


def test_a_top_level_error_in_a_200_is_raised() -> None:
    refusal = {"code": "OutputImageSensitiveContentDetected", "message": "flagged"}
    with pytest.raises(ContentPolicyViolation, match="bytedance: flagged"):
        answer_with({"model": V4, "created": 1, "data": [], "error": refusal})


@pytest.mark.parametrize("payload", [{"data": [{"size": "2048x2048"}]}, {"data": "nope"}, {"data": [1]}, [1]])
def test_malformed_items_are_upstream_errors(payload: object) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        answer_with(payload)


# Reference images (edit / image-to-image): the same endpoint, the image as a data URL in `image`.
PNG_REF = ReferenceImage(png(), "image/png", 8, 8)


def test_a_reference_image_goes_in_the_same_body_as_a_data_url(fake: FakeSeedream) -> None:
    result = generate(fake, prompt="make the fox blue", reference_image=PNG_REF)
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["content-type"]) == ("/api/v3/images/generations", "application/json")
    assert sent.json == {
        "model": V4,
        "prompt": "make the fox blue",
        "size": "2048x2048",
        "response_format": "b64_json",
        "image": "data:image/png;base64," + base64.b64encode(png()).decode(),
    }
    assert fake.references == [png()]  # decoded by the fake, byte for byte what was given
    assert [(image.data, image.media_type) for image in result.images] == [(jpeg(), "image/jpeg")]
    assert result.usage is not None and result.usage.output_tokens == 16384
    assert result.warnings == []


def test_a_jpeg_reference_with_options_on_4_5(fake: FakeSeedream) -> None:
    reference = ReferenceImage(jpeg(), "image/jpeg", 8, 8)
    generate(fake, "seedream-4-5-251128", reference_image=reference,
             options={"watermark": False, "size": "4K", "optimize_prompt_mode": "standard"})  # fmt: skip
    sent = fake.generation_requests()[0].json
    assert sent["image"] == "data:image/jpeg;base64," + base64.b64encode(jpeg()).decode()
    assert (sent["watermark"], sent["size"], sent["optimize_prompt_options"]) == (
        False, "4K", {"mode": "standard"}
    )  # fmt: skip
    assert fake.references == [jpeg()]


def test_batch_mode_with_a_reference_keeps_within_fifteen_images(fake: FakeSeedream) -> None:
    result = generate(fake, n=3, reference_image=PNG_REF)
    generate(fake, n=15, reference_image=PNG_REF)  # 1 reference + 14 outputs is the upstream cap
    three, fifteen = (r.json for r in fake.generation_requests())
    assert three["sequential_image_generation_options"] == {"max_images": 3} and "image" in three
    assert fifteen["sequential_image_generation_options"] == {"max_images": 14}
    assert len(result.images) == 3


def test_several_input_images_go_as_a_list_and_count_against_the_batch_cap(fake: FakeSeedream) -> None:
    second = ReferenceImage(jpeg(), "image/jpeg", 8, 8)
    generate(fake, n=15, input_images=(PNG_REF, second, PNG_REF))
    sent = fake.generation_requests()[0].json
    assert sent["image"] == [
        "data:image/png;base64," + base64.b64encode(png()).decode(),
        "data:image/jpeg;base64," + base64.b64encode(jpeg()).decode(),
        "data:image/png;base64," + base64.b64encode(png()).decode(),
    ]
    assert sent["sequential_image_generation_options"] == {"max_images": 12}  # 3 references + 12 <= 15
    assert fake.references == [png(), jpeg(), png()]


def test_a_reference_over_ten_megabytes_is_a_400_before_any_call(fake: FakeSeedream) -> None:
    huge = ReferenceImage(b"\x89PNG" + bytes(10 * 1024 * 1024), "image/png", 8, 8)
    with pytest.raises(BadRequest, match="10485760 bytes") as caught:
        generate(fake, reference_image=huge)
    assert (caught.value.param, caught.value.code) == ("reference_image", "INVALID_REFERENCE_IMAGE")
    assert fake.generation_requests() == []


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("BLOCKME fox", "input text may contain"), ("BLOCKIMAGE fox", "input image may contain")],
)
def test_refusals_of_an_edit_are_content_policy_violations(
    fake: FakeSeedream, prompt: str, message: str
) -> None:
    with pytest.raises(ContentPolicyViolation, match=message):
        generate(fake, prompt=prompt, reference_image=PNG_REF)
    assert len(fake.generation_requests()) == 1  # never retried


def test_the_fake_rejects_images_the_provider_would(fake: FakeSeedream) -> None:
    # 3.0 t2i takes no image (the catalog keeps reference_image false, so the gateway never sends one).
    with pytest.raises(BadRequest, match="image is not supported by this model"):
        generate(fake, "seedream-3-0-t2i-250415", size=Size(1024, 1024), reference_image=PNG_REF)
    with pytest.raises(BadRequest, match="not the declared jpeg"):
        generate(fake, reference_image=ReferenceImage(png(), "image/jpeg", 8, 8))
    assert fake.references == []
