"""The Stability adapter against a fake Stable Image v2beta API that checks the multipart form it is sent."""

from __future__ import annotations

import io
import time
from typing import Any, cast

import httpx
import pytest
from PIL import Image

from service.catalog.catalog import SHIPPED_MODELS, load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    InvalidMask,
    ModelNotAllowed,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult, unsupported
from service.providers.stability import StabilityProvider
from tests.fakes.base import file_parts, jpeg, png
from tests.fakes.stability import FakeStability, webp
from tests.providers.conftest import generate_with, rendered, shared_fake
from tests.support.pictures import transparent_right_half

server, fake = shared_fake(FakeStability)


def generate(
    fake: FakeStability, model: str, key: str = FakeStability.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(
        StabilityProvider.create, ProviderConfig("stability", key, fake.url), model, **fields
    )


def test_core_request_and_response(fake: FakeStability) -> None:
    options = {"negative_prompt": "blur", "seed": 42.0, "style_preset": "photographic"}
    result = generate(
        fake, "stable-image-core", size=Size(1536, 1024), output_format="png", user="u-1", options=options
    )
    (sent,) = fake.generation_requests()
    assert sent.path == "/v2beta/stable-image/generate/core"
    assert sent.headers["authorization"] == "Bearer sk-fake-stability"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.headers["stability-client-user-id"] == "u-1"
    assert sent.form == {
        "prompt": "a red fox in snow", "aspect_ratio": "3:2", "output_format": "png",
        "negative_prompt": "blur", "seed": "42", "style_preset": "photographic",
    }  # fmt: skip
    assert [image.data for image in result.images] == [png()]
    assert result.images[0].media_type == "image/png" and result.images[0].revised_prompt is None
    assert result.usage is None and result.warnings == []
    assert result.upstream_request_id is not None and result.upstream_request_id.startswith("req-")
    assert fake.received == []  # no reference image: no image part, text-to-image as before


def test_sd3_models_go_to_sd3_with_a_model_field(fake: FakeStability) -> None:
    generate(fake, "sd3.5-large-turbo", options={"cfg_scale": 1.5})
    generate(fake, "sd3.5-medium")
    turbo, medium = fake.generation_requests()
    assert turbo.path == medium.path == "/v2beta/stable-image/generate/sd3"
    assert turbo.form == {
        "prompt": "a red fox in snow", "model": "sd3.5-large-turbo", "aspect_ratio": "1:1", "cfg_scale": "1.5"
    }  # fmt: skip
    assert medium.form["model"] == "sd3.5-medium"


def test_ultra_takes_no_cfg_scale_and_unknown_options_are_dropped_with_warnings(fake: FakeStability) -> None:
    result = generate(fake, "stable-image-ultra", quality="hd", background="transparent",
                      options={"cfg_scale": 5, "strength": 0.4, "style_preset": "anime"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v2beta/stable-image/generate/ultra"
    assert sent.form == {"prompt": "a red fox in snow", "aspect_ratio": "1:1", "style_preset": "anime"}
    assert result.warnings == [
        unsupported("providerOptions.stability.cfg_scale", "stable-image-ultra does not take it"),
        unsupported("providerOptions.stability.strength", "it applies only with a reference_image"),
        unsupported("quality", "stability has no equivalent"),
        unsupported("background", "stability has no equivalent"),
    ]


def test_sizes_become_exact_aspect_ratios(fake: FakeStability) -> None:
    ratios = {"1024x1024": "1:1", "1536x864": "16:9", "864x1536": "9:16", "1536x1024": "3:2",
              "1024x1536": "2:3", "1280x1024": "5:4", "1024x1280": "4:5", "1344x576": "21:9",
              "576x1344": "9:21"}  # fmt: skip
    for size in ratios:
        width, height = size.split("x")
        generate(fake, "sd3.5-large", size=Size(int(width), int(height)))
    assert [r.form["aspect_ratio"] for r in fake.generation_requests()] == list(ratios.values())


def test_a_size_without_an_exact_ratio_is_refused_before_calling(fake: FakeStability) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, "stable-image-core", size=Size(1792, 1024))  # 7:4, not 16:9
    assert caught.value.code == "INVALID_SIZE" and caught.value.param == "size"
    assert fake.generation_requests() == []


def test_output_formats(fake: FakeStability) -> None:
    for output_format, data, media_type in (("jpeg", jpeg(), "image/jpeg"), ("webp", webp(), "image/webp")):
        result = generate(fake, "sd3.5-large", output_format=output_format)
        assert fake.generation_requests()[-1].form["output_format"] == output_format
        assert (result.images[0].data, result.images[0].media_type) == (data, media_type)


def test_fanned_out_calls_get_consecutive_seeds(fake: FakeStability) -> None:
    generate(fake, "stable-image-core", first_index=0, options={"seed": 7})
    generate(fake, "stable-image-core", first_index=3, options={"seed": 7})
    generate(fake, "stable-image-core", first_index=2, options={"seed": 0})
    generate(fake, "stable-image-core", first_index=1, options={"seed": 4294967294})
    assert [r.form["seed"] for r in fake.generation_requests()] == ["7", "10", "0", "1"]


def test_malformed_options_are_bad_requests(fake: FakeStability) -> None:
    for options in ({"seed": 1.5}, {"seed": -1}, {"seed": "7"}, {"negative_prompt": 3}, {"cfg_scale": "x"}):
        with pytest.raises(BadRequest) as caught:
            generate(fake, "sd3.5-large", options=options)
        assert caught.value.param == f"providerOptions.stability.{next(iter(options))}"
    assert fake.generation_requests() == []


def test_a_request_the_provider_rejects_is_a_400_with_its_message(fake: FakeStability) -> None:
    with pytest.raises(BadRequest, match="watercolor") as caught:
        generate(fake, "stable-image-core", options={"style_preset": "watercolor"})
    assert caught.value.code == "PROVIDER_REJECTED_REQUEST"


def test_moderation_403_is_a_content_policy_violation(fake: FakeStability) -> None:
    with pytest.raises(ContentPolicyViolation, match="flagged by our content moderation"):
        generate(fake, "stable-image-ultra", prompt="BLOCKME please")
    assert len(fake.generation_requests()) == 1  # never retried


def test_content_filtered_inside_a_200_is_a_content_policy_violation(fake: FakeStability) -> None:
    with pytest.raises(ContentPolicyViolation, match="CONTENT_FILTERED"):
        generate(fake, "sd3.5-large", prompt="FILTERME please")
    assert len(fake.generation_requests()) == 1


def test_transient_failures_are_retried(fake: FakeStability) -> None:
    assert len(generate(fake, "stable-image-core", prompt="FLAKY fox").images) == 1
    assert len(generate(fake, "stable-image-core", prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeStability) -> None:
    with pytest.raises(RateLimited, match="rate limit") as caught:
        generate(fake, "stable-image-core", prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeStability) -> None:
    with pytest.raises(UpstreamError, match="unexpected server error"):
        generate(fake, "stable-image-core", prompt="FAILME")


def test_garbage_and_empty_answers_are_upstream_errors(fake: FakeStability) -> None:
    with pytest.raises(UpstreamError, match="unusable: not a JSON object"):
        generate(fake, "stable-image-core", prompt="GARBAGE")
    with pytest.raises(UpstreamError, match="unusable: an image without data"):
        generate(fake, "stable-image-core", prompt="EMPTY")


def test_bad_credentials_are_an_upstream_error_not_a_401(fake: FakeStability) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, "stable-image-core", key="sk-wrong")


def test_the_deadline_bounds_the_call(fake: FakeStability) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, "stable-image-core", prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.5


def test_the_fake_speaks_both_encodings_and_only_multipart(fake: FakeStability) -> None:
    """The fake's own fidelity: raw bytes with headers for image/*, and JSON bodies refused."""
    auth = {"authorization": f"Bearer {FakeStability.api_key}"}
    url = f"{fake.url}/v2beta/stable-image/generate/core"
    raw = httpx.post(url, headers={**auth, "accept": "image/*"}, files={"prompt": (None, "fox")})
    assert (raw.status_code, raw.content, raw.headers["finish-reason"]) == (200, png(), "SUCCESS")
    assert raw.headers["content-type"] == "image/png" and raw.headers["seed"]
    refused = httpx.post(url, headers=auth, json={"prompt": "fox"})
    assert refused.status_code == 400 and refused.json()["name"] == "bad_request"
    extra = httpx.post(url, headers=auth, files={"prompt": (None, "fox"), "model": (None, "sd3.5-large")})
    assert extra.status_code == 400 and "model" in extra.json()["errors"][0]


SQUARE = ReferenceImage(png(64, 64), "image/png", 64, 64)


def test_ultra_image_to_image_sends_the_file_and_strength_in_the_same_request(fake: FakeStability) -> None:
    result = generate(fake, "stable-image-ultra", output_format="jpeg", reference_image=SQUARE,
                      options={"strength": 0.3, "style_preset": "anime"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v2beta/stable-image/generate/ultra"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.form == {"prompt": "a red fox in snow", "strength": "0.3", "output_format": "jpeg",
                         "style_preset": "anime", "image": SQUARE.data}  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {"image": ("reference.png", "image/png")}
    assert fake.received == [SQUARE.data]  # the bytes arrived intact and decode
    assert [(i.data, i.media_type) for i in result.images] == [(jpeg(64, 64), "image/jpeg")]
    assert result.warnings == []


def test_sd3_image_to_image_has_a_mode_no_aspect_ratio_and_strength_defaults_to_half(
    fake: FakeStability,
) -> None:
    photo = ReferenceImage(jpeg(96, 64), "image/jpeg", 96, 64)
    result = generate(fake, "sd3.5-large", size=Size(1536, 1024), reference_image=photo,
                      options={"cfg_scale": 4, "seed": 9})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v2beta/stable-image/generate/sd3"
    assert sent.form == {"prompt": "a red fox in snow", "model": "sd3.5-large", "mode": "image-to-image",
                         "strength": "0.5", "cfg_scale": "4", "seed": "9", "image": photo.data}  # fmt: skip
    assert fake.received == [photo.data]
    assert [(i.data, i.media_type) for i in result.images] == [(png(96, 64), "image/png")]
    assert result.warnings == []  # 1536x1024 is the reference's own 3:2


def test_a_size_of_another_shape_is_ignored_with_a_warning(fake: FakeStability) -> None:
    result = generate(fake, "sd3.5-medium", size=Size(1536, 864), reference_image=SQUARE)
    assert "aspect_ratio" not in fake.generation_requests()[0].form
    assert result.warnings == [
        unsupported("size", "1536x864 asked; image-to-image keeps the reference image's shape")
    ]


def test_a_gif_reference_is_sent_as_png(fake: FakeStability) -> None:
    out = io.BytesIO()
    Image.new("P", (64, 80), 3).save(out, format="GIF")
    generate(fake, "stable-image-ultra", size=Size(1024, 1280), reference_image=ReferenceImage(
        out.getvalue(), "image/gif", 64, 80))  # fmt: skip
    (received,) = fake.received
    with Image.open(io.BytesIO(received)) as image:
        assert (image.format, image.size) == ("PNG", (64, 80))
    sent = fake.generation_requests()[0]
    assert file_parts(sent.headers["content-type"], sent.body) == {"image": ("reference.png", "image/png")}


def test_core_takes_no_reference_image(fake: FakeStability) -> None:
    with pytest.raises(ModelNotAllowed) as caught:
        generate(fake, "stable-image-core", reference_image=SQUARE)
    assert caught.value.param == "reference_image" and fake.requests == []


def test_bad_strengths_and_tiny_references_are_refused_before_calling(fake: FakeStability) -> None:
    for strength in (1.5, -0.1, "0.5", True):
        with pytest.raises(BadRequest) as caught:
            generate(fake, "stable-image-ultra", reference_image=SQUARE, options={"strength": strength})
        assert caught.value.param == "providerOptions.stability.strength"
    with pytest.raises(BadRequest, match="64 to 16384 px") as caught:
        generate(fake, "sd3.5-large", reference_image=ReferenceImage(png(), "image/png", 8, 8))
    assert caught.value.param == "reference_image" and fake.requests == []


def test_image_to_image_refusals(fake: FakeStability) -> None:
    with pytest.raises(ContentPolicyViolation, match="flagged by our content moderation"):
        generate(fake, "stable-image-ultra", prompt="BLOCKME edit", reference_image=SQUARE)
    with pytest.raises(ContentPolicyViolation, match="CONTENT_FILTERED"):
        generate(fake, "sd3.5-large", prompt="FILTERME edit", reference_image=SQUARE)
    assert len(fake.generation_requests()) == 2  # never retried


def test_the_fake_checks_image_to_image_forms(fake: FakeStability) -> None:
    """The fake's own fidelity: the spec's prose rules and a decodable file part."""
    auth = {"authorization": f"Bearer {FakeStability.api_key}"}
    ultra = f"{fake.url}/v2beta/stable-image/generate/ultra"
    sd3 = f"{fake.url}/v2beta/stable-image/generate/sd3"
    image = ("in.png", png(64, 64), "image/png")
    cases = [
        (ultra, {"prompt": (None, "fox"), "image": image}, "strength: required"),
        (ultra, {"prompt": (None, "fox"), "strength": (None, "0.5"), "image": (None, "abc")}, "file part"),
        (ultra, {"prompt": (None, "fox"), "strength": (None, "0.5"), "image": ("x.png", b"nope")}, "decoded"),
        (sd3, {"prompt": (None, "fox"), "strength": (None, "0.5"), "image": image}, "image-to-image"),
        (sd3, {"prompt": (None, "fox"), "mode": (None, "image-to-image"), "strength": (None, "0.5"),
               "aspect_ratio": (None, "1:1"), "image": image}, "aspect_ratio"),
    ]  # fmt: skip
    for url, files, match in cases:
        answer = httpx.post(url, headers=auth, files=cast(Any, files))
        assert answer.status_code == 400 and match in answer.json()["errors"][0], answer.text
    assert fake.received == []


def test_catalog_reference_image_flags() -> None:
    flags = {m.id: m.capabilities.reference_image for m in load_catalog([SHIPPED_MODELS / "stability.yaml"])}
    assert flags == {"stability/stable-image-ultra": True, "stability/stable-image-core": False,
                     "stability/sd3.5-large": True, "stability/sd3.5-large-turbo": True,
                     "stability/sd3.5-medium": True, "stability/inpaint": True}  # fmt: skip


# --- inpainting: /edit/inpaint, with the gateway's mask (transparent = change) made black and white


def test_inpaint_sends_the_image_and_a_white_where_transparent_mask(fake: FakeStability) -> None:
    photo = ReferenceImage(jpeg(96, 64), "image/jpeg", 96, 64)
    mask = ReferenceImage(transparent_right_half(96, 64), "image/png", 96, 64)
    options = {"grow_mask": 7.5, "seed": 3, "negative_prompt": "blur"}
    result = generate(fake, "inpaint", size=Size(96, 64), input_images=(photo,), mask=mask,
                      output_format="webp", user="u-2", options=options)  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v2beta/stable-image/edit/inpaint"
    assert sent.headers["accept"] == "application/json" and sent.headers["stability-client-user-id"] == "u-2"
    assert {name: value for name, value in sent.form.items() if name != "mask"} == {
        "prompt": "a red fox in snow", "output_format": "webp", "grow_mask": "7.5", "seed": "3",
        "negative_prompt": "blur", "image": photo.data,
    }  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {
        "image": ("reference.jpeg", "image/jpeg"), "mask": ("mask.png", "image/png")
    }  # fmt: skip
    assert fake.received == [photo.data]
    (sent_mask,) = fake.masks
    with Image.open(io.BytesIO(sent_mask)) as converted:
        assert (converted.mode, converted.size) == ("L", (96, 64))
        # white (inpaint) where the gateway's mask is transparent, black (keep) where it is opaque
        assert converted.getpixel((80, 30)) == 255 and converted.getpixel((10, 30)) == 0
        assert {value for _, value in converted.getcolors() or []} == {0, 255}
    assert [(i.data, i.media_type) for i in result.images] == [(webp(96, 64), "image/webp")]
    assert result.warnings == []


def test_inpaint_without_a_mask_derives_it_from_the_images_transparency(fake: FakeStability) -> None:
    picture = ReferenceImage(transparent_right_half(64, 64), "image/png", 64, 64)
    result = generate(
        fake, "inpaint", input_images=(picture,), options={"strength": 0.4, "style_preset": "anime"}
    )
    (sent_mask,) = fake.masks
    with Image.open(io.BytesIO(sent_mask)) as converted:
        assert converted.getpixel((60, 5)) == 255 and converted.getpixel((5, 5)) == 0
    assert rendered(result) == [
        "providerOptions.stability.strength ignored: inpaint does not take it",
        "providerOptions.stability.style_preset ignored: inpaint does not take it",
        "size ignored: 1024x1024 asked; the Stability edit keeps the input image's size",
    ]


def test_inpaint_refusals_before_calling(fake: FakeStability) -> None:
    opaque = ReferenceImage(png(64, 64), "image/png", 64, 64)
    with pytest.raises(InvalidMask, match="no transparent pixels") as caught:
        generate(fake, "inpaint", input_images=(opaque,))  # nothing marks what to change
    assert caught.value.param == "image"
    with pytest.raises(InvalidMask) as caught:
        generate(fake, "inpaint", input_images=(SQUARE,), mask=opaque)
    assert caught.value.param == "mask"
    with pytest.raises(BadRequest, match="4096 to 9437184 pixels") as small:
        tiny = ReferenceImage(transparent_right_half(64, 63), "image/png", 64, 63)
        generate(fake, "inpaint", input_images=(tiny,))
    assert small.value.param == "image"
    with pytest.raises(BadRequest, match="grow_mask"):
        mask = ReferenceImage(transparent_right_half(64, 64), "image/png", 64, 64)
        generate(fake, "inpaint", input_images=(SQUARE,), mask=mask, options={"grow_mask": 101})
    with pytest.raises(ModelNotAllowed):
        generate(fake, "inpaint")  # no image at all
    assert fake.requests == []


def test_inpaint_refusals_from_stability_are_content_policy_violations(fake: FakeStability) -> None:
    mask = ReferenceImage(transparent_right_half(64, 64), "image/png", 64, 64)
    with pytest.raises(ContentPolicyViolation, match="flagged by our content moderation"):
        generate(fake, "inpaint", prompt="BLOCKME", input_images=(SQUARE,), mask=mask)
    with pytest.raises(ContentPolicyViolation, match="CONTENT_FILTERED"):
        generate(fake, "inpaint", prompt="FILTERME", input_images=(SQUARE,), mask=mask)
    assert len(fake.generation_requests()) == 2


def test_the_fake_checks_inpaint_forms(fake: FakeStability) -> None:
    """The fake's own fidelity: image required, an opaque image needs a mask, the mask must decode."""
    auth = {"authorization": f"Bearer {FakeStability.api_key}"}
    url = f"{fake.url}/v2beta/stable-image/edit/inpaint"
    image, mask = ("in.png", png(64, 64), "image/png"), ("m.png", png(64, 64))
    cases = [
        ({"prompt": (None, "fox")}, "image"),
        ({"prompt": (None, "fox"), "image": image}, "mask: required"),
        ({"prompt": (None, "fox"), "image": image, "mask": ("m.png", b"nope")}, "mask: could not"),
        ({"prompt": (None, "fox"), "image": image, "mask": mask, "grow_mask": (None, "200")},
         "maximum of 100"),
        ({"prompt": (None, "fox"), "image": image, "mask": mask, "aspect_ratio": (None, "1:1")},
         "aspect_ratio"),
    ]  # fmt: skip
    for files, match in cases:
        answer = httpx.post(url, headers=auth, files=cast(Any, files))
        assert answer.status_code == 400 and match in answer.json()["errors"][0], answer.text
    raw = httpx.post(url, headers={**auth, "accept": "image/*"},
                     files={"prompt": (None, "fox"), "image": image, "mask": mask})  # fmt: skip
    assert (raw.status_code, raw.content, raw.headers["finish-reason"]) == (200, png(64, 64), "SUCCESS")
