"""The Recraft adapter against a fake Recraft external API that checks what it is sent."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import BadRequest, ContentPolicyViolation, RateLimited, UpstreamError, UpstreamTimeout
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult, unsupported
from service.providers.recraft import RecraftProvider
from tests.fakes.base import file_parts, jpeg, png
from tests.fakes.recraft import FakeRecraft, webp
from tests.providers.conftest import generate_with, shared_fake

CATALOG = Path(__file__).resolve().parents[2] / "service" / "catalog" / "models" / "recraft.yaml"


server, fake = shared_fake(FakeRecraft)


def generate(
    fake: FakeRecraft, model: str = "recraftv3", key: str = FakeRecraft.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(
        RecraftProvider.create, ProviderConfig("recraft", key, f"{fake.url}/v1"), model, **fields
    )


def test_v3_request_and_response(fake: FakeRecraft) -> None:
    # (validation.py gives whole numbers back as ints after google.protobuf.Struct made them floats)
    options = {
        "style": "digital_illustration", "substyle": "hand_drawn", "negative_prompt": "blur",
        "controls": {"artistic_level": 3, "colors": [{"rgb": [214, 93, 14]}], "no_text": True},
        "random_seed": 42,
    }  # fmt: skip
    result = generate(fake, n=2, size=Size(1365, 1024), options=options)
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/generations", "Bearer rc-fake-recraft")
    assert sent.json == {
        "model": "recraftv3", "prompt": "a red fox in snow", "n": 2, "size": "1365x1024",
        "response_format": "b64_json", "style": "digital_illustration", "substyle": "hand_drawn",
        "negative_prompt": "blur", "random_seed": 42,
        "controls": {"artistic_level": 3, "colors": [{"rgb": [214, 93, 14]}], "no_text": True},
    }  # fmt: skip
    assert [image.data for image in result.images] == [png(), png()]
    assert {image.media_type for image in result.images} == {"image/png"}
    assert result.usage is None and result.warnings == [] and result.images[0].revised_prompt is None


def test_output_format_becomes_image_format(fake: FakeRecraft) -> None:
    result = generate(fake, output_format="webp")
    assert fake.generation_requests()[0].json["image_format"] == "webp"
    assert (result.images[0].data, result.images[0].media_type) == (webp(), "image/webp")


def test_v2_drops_what_it_lacks_with_warnings(fake: FakeRecraft) -> None:
    options = {"style": "realistic_image", "negative_prompt": "blur", "text_layout": [], "strength": 0.4}
    result = generate(fake, "recraftv2", quality="hd", style="vivid", background="opaque", options=options)
    sent = fake.generation_requests()[0].json
    assert sent == {"model": "recraftv2", "prompt": "a red fox in snow", "n": 1, "size": "1024x1024",
                    "response_format": "b64_json", "style": "realistic_image"}  # fmt: skip
    assert result.warnings == [
        unsupported("providerOptions.recraft.negative_prompt", "recraftv2 does not take it"),
        unsupported("providerOptions.recraft.text_layout", "recraftv2 does not take it"),
        unsupported("providerOptions.recraft.strength", "it applies only with a reference_image"),
        unsupported("quality", "'hd' asked; Recraft has no quality setting"),
        unsupported("style", "'vivid' asked; use providerOptions.recraft.style for Recraft styles"),
        unsupported("background", "Recraft has no equivalent"),
    ]
    assert len(result.images) == 1


@pytest.mark.parametrize("style", ["vector_illustration", "icon", "Vector art"])
def test_vector_styles_are_refused_before_calling_recraft(fake: FakeRecraft, style: str) -> None:
    with pytest.raises(BadRequest, match="vector") as caught:
        generate(fake, options={"style": style})
    assert caught.value.param == "providerOptions.recraft.style"
    assert fake.generation_requests() == []


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"style": "any", "style_id": "5b4a7c1e-2f3d-4e6a-9b8c-0d1e2f3a4b5c"}, "style_id"),
        ({"style": 3.0}, "style"),
        ({"controls": "loud"}, "controls"),
        ({"random_seed": 1.5}, "random_seed"),
        ({"random_seed": True}, "random_seed"),
    ],
)
def test_malformed_options_are_400s(fake: FakeRecraft, options: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, options=options)
    assert caught.value.param == f"providerOptions.recraft.{param}"
    assert fake.generation_requests() == []


@pytest.mark.parametrize("b64", [True, False])
def test_an_svg_answer_from_a_custom_vector_style_is_a_clear_502(fake: FakeRecraft, b64: bool) -> None:
    fake.always_url = not b64
    with pytest.raises(UpstreamError, match="SVG"):
        generate(fake, options={"style_id": FakeRecraft.VECTOR_STYLE_ID})


def test_url_answers_are_downloaded(fake: FakeRecraft) -> None:
    fake.always_url = True
    fake.revised_prompts = True
    result = generate(fake, n=3)
    assert [image.data for image in result.images] == [png()] * 3
    assert result.images[0].revised_prompt == "A detailed rendering of a red fox in snow"
    downloads = [r for r in fake.requests if r.method == "GET"]
    assert len(downloads) == 3 and all(r.path.endswith("raster_image.png") for r in downloads)


def test_every_catalog_size_is_accepted_as_is(fake: FakeRecraft) -> None:
    models = [m for m in load_catalog([CATALOG]) if m.provider == "recraft"]
    assert {m.id: m.upstream_id for m in models} == {
        "recraft/recraft-v2": "recraftv2", "recraft/recraft-v3": "recraftv3",
    }  # fmt: skip
    for model in models:
        assert model.capabilities.max_images_per_call == 6
        assert model.capabilities.max_prompt_chars == 1000
        for size in model.capabilities.sizes:
            assert len(generate(fake, model.upstream_id, size=size).images) == 1
    sent = [r.json["size"] for r in fake.generation_requests()]
    assert sent[:15] == [str(s) for s in models[0].capabilities.sizes]


def test_a_request_recraft_rejects_is_a_400_with_its_message(fake: FakeRecraft) -> None:
    with pytest.raises(BadRequest, match="size 1216x896 is not supported") as caught:
        generate(fake, size=Size(1216, 896))
    assert caught.value.code == "PROVIDER_REJECTED_REQUEST"
    with pytest.raises(BadRequest, match="does not belong to style"):
        generate(fake, options={"style": "realistic_image", "substyle": "pixel_art"})


def test_refusals_are_content_policy_violations(fake: FakeRecraft) -> None:
    with pytest.raises(ContentPolicyViolation, match="prohibited content"):
        generate(fake, prompt="BLOCKME please")
    assert len(fake.generation_requests()) == 1  # never retried


def test_transient_failures_are_retried(fake: FakeRecraft) -> None:
    assert len(generate(fake, prompt="FLAKY fox").images) == 1
    assert len(generate(fake, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeRecraft) -> None:
    with pytest.raises(RateLimited) as caught:
        generate(fake, prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeRecraft) -> None:
    with pytest.raises(UpstreamError, match="internal server error"):
        generate(fake, prompt="FAILME")


def test_garbage_and_empty_answers(fake: FakeRecraft) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, prompt="GARBAGE")
    assert generate(fake, prompt="EMPTY").images == []  # generation.py turns this into a 502


def test_bad_credentials_are_an_upstream_error_not_a_401(fake: FakeRecraft) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, key="rc-wrong")


def test_the_deadline_bounds_the_call(fake: FakeRecraft) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.5


def reference(data: bytes | None = None, media_type: str = "image/png", side: int = 256) -> ReferenceImage:
    return ReferenceImage(png(side, side) if data is None else data, media_type, side, side)


def test_a_reference_image_goes_to_image_to_image_as_multipart(fake: FakeRecraft) -> None:
    image = png(256, 256)
    options = {"style": "realistic_image", "substyle": "hdr", "negative_prompt": "blur", "strength": 0.3,
               "random_seed": 7}  # fmt: skip
    result = generate(fake, n=2, size=Size(256, 256), output_format="webp", options=options,
                      reference_image=reference(image))  # fmt: skip
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/imageToImage", "Bearer rc-fake-recraft")
    assert sent.headers["content-type"].startswith("multipart/form-data") and sent.json is None
    assert sent.form == {
        "image": image, "model": "recraftv3", "prompt": "a red fox in snow", "n": "2", "strength": "0.3",
        "response_format": "b64_json", "image_format": "webp", "style": "realistic_image",
        "substyle": "hdr", "negative_prompt": "blur", "random_seed": "7",
    }  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {"image": ("reference.png", "image/png")}
    assert fake.inputs == [image]  # arrived intact and decoded
    assert [(i.data, i.media_type) for i in result.images] == [(webp(), "image/webp")] * 2
    assert result.warnings == [] and result.usage is None


def test_image_to_image_defaults_and_what_it_drops(fake: FakeRecraft) -> None:
    image = jpeg(300, 300)
    options = {"controls": {"no_text": True}, "text_layout": [], "strength": 1}
    result = generate(
        fake, "recraftv2", options=options, reference_image=ReferenceImage(image, "image/jpeg", 300, 300)
    )
    sent = fake.generation_requests()[0]
    assert sent.form == {"image": image, "model": "recraftv2", "prompt": "a red fox in snow", "n": "1",
                         "strength": "1", "response_format": "b64_json"}  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {"image": ("reference.jpg", "image/jpeg")}
    assert [(w.feature, w.details) for w in result.warnings] == [
        ("providerOptions.recraft.controls", "it does not apply with a reference_image"),
        ("providerOptions.recraft.text_layout", "recraftv2 does not take it"),
        ("size", "1024x1024 asked; Recraft image-to-image has no size setting"),
    ]
    generate(fake, reference_image=reference())
    assert fake.generation_requests()[1].form["strength"] == "0.5"  # the documented default


def test_image_to_image_url_answers_are_downloaded(fake: FakeRecraft) -> None:
    fake.always_url = True
    result = generate(fake, reference_image=reference(), options={"strength": 0.8})
    assert [(i.data, i.media_type) for i in result.images] == [(png(), "image/png")]
    assert [r.method for r in fake.requests] == ["POST", "GET"]


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (ReferenceImage(png(), "image/png", 8, 8), "256-4096 px"),
        (ReferenceImage(png(5000, 256), "image/png", 5000, 256), "256-4096 px"),
        (ReferenceImage(png(256, 256), "image/gif", 256, 256), "PNG, JPEG or WebP"),
    ],
)
def test_reference_images_recraft_cannot_take_are_400s(
    fake: FakeRecraft, image: ReferenceImage, match: str
) -> None:
    with pytest.raises(BadRequest, match=match) as caught:
        generate(fake, reference_image=image)
    assert caught.value.param == "reference_image"
    assert fake.generation_requests() == []


@pytest.mark.parametrize("strength", [1.5, -0.1, "0.3", True])
def test_a_bad_strength_is_a_400(fake: FakeRecraft, strength: object) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, reference_image=reference(), options={"strength": strength})
    assert caught.value.param == "providerOptions.recraft.strength"
    assert fake.generation_requests() == []


def test_image_to_image_vector_styles_and_refusals(fake: FakeRecraft) -> None:
    with pytest.raises(BadRequest, match="vector"):
        generate(fake, reference_image=reference(), options={"style": "vector_illustration"})
    with pytest.raises(UpstreamError, match="SVG"):
        generate(fake, reference_image=reference(), options={"style_id": FakeRecraft.VECTOR_STYLE_ID})
    with pytest.raises(ContentPolicyViolation, match="prohibited content"):
        generate(fake, prompt="BLOCKME please", reference_image=reference())
    with pytest.raises(BadRequest, match="does not belong to style"):
        generate(
            fake, reference_image=reference(), options={"style": "realistic_image", "substyle": "pixel_art"}
        )
    assert [r.path for r in fake.generation_requests()] == ["/v1/images/imageToImage"] * 3


def test_the_fake_checks_image_to_image_forms(fake: FakeRecraft) -> None:
    url = f"{fake.url}/v1/images/imageToImage"
    auth = {"Authorization": f"Bearer {FakeRecraft.api_key}"}
    fields = {"prompt": "winter", "strength": "0.3", "model": "recraftv3", "response_format": "b64_json"}
    image = {"image": ("in.png", png(256, 256), "image/png")}
    ok = httpx.post(url, headers=auth, data=fields, files=image)
    assert ok.status_code == 200 and ok.json()["credits"] == 40
    bad = [
        httpx.post(url, headers=auth, data={"prompt": "x"}, files=image),  # no strength
        httpx.post(url, headers=auth, data={**fields, "size": "1024x1024"}, files=image),  # not a field
        httpx.post(url, headers=auth, data={**fields, "controls": "{}"}, files=image),  # JSON form only
        httpx.post(url, headers=auth, data={**fields, "n": "two"}, files=image),
        httpx.post(url, headers=auth, data=fields, files={"image": ("in.png", png(), "image/png")}),
        httpx.post(url, headers=auth, data=fields, files={"image": ("in.png", b"not an image", "image/png")}),
        httpx.post(url, headers=auth, json={**fields, "image_url": "data:image/png;base64,AA=="}),
    ]
    assert [r.status_code for r in bad] == [400] * len(bad)
    assert fake.inputs == [png(256, 256)]


def test_without_a_reference_image_generations_are_unchanged(fake: FakeRecraft) -> None:
    result = generate(fake, options={"strength": 0.4})
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/generations" and sent.form == {} and fake.inputs == []
    assert "strength" not in sent.json
    assert result.warnings == [
        unsupported("providerOptions.recraft.strength", "it applies only with a reference_image")
    ]
