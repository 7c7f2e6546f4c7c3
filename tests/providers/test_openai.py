"""The OpenAI adapter against a fake OpenAI Images API that checks what it is sent."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import BadRequest, ContentPolicyViolation, RateLimited, UpstreamError, UpstreamTimeout
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult
from service.providers.openai import OpenAIProvider
from tests.fakes.base import Recorded, jpeg, png
from tests.fakes.openai import FakeOpenAI, form_parts
from tests.providers.conftest import generate_with, rendered, shared_fake

server, fake = shared_fake(FakeOpenAI)


def generate(
    fake: FakeOpenAI, model: str, key: str = FakeOpenAI.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(
        OpenAIProvider.create, ProviderConfig("openai", key, f"{fake.url}/v1"), model, **fields
    )


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
    assert rendered(result) == [
        "providerOptions.openai.input_fidelity ignored: dall-e-2 generations do not take it",
        "background ignored: dall-e-2 generations do not take it",
    ]


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
    assert time.monotonic() - started < 2.5


# Reference images: POST /images/edits, multipart/form-data.

REF = ReferenceImage(png(), "image/png", 8, 8)


def encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (8, 8), alpha: int = 255) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 120, 30, alpha)[: len(mode)] if mode != "L" else 90).save(out, format=fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def file_parts(sent: Recorded) -> dict[str, tuple[str | None, str, bytes]]:
    return {name: (filename, kind, data) for name, filename, kind, data in form_parts(sent) if filename}


def text_fields(sent: Recorded) -> dict[str, str]:
    return {name: value for name, value in sent.form.items() if isinstance(value, str)}


def test_gpt_image_edit_sends_the_reference_image_as_the_image_file_part(fake: FakeOpenAI) -> None:
    mask = encoded("PNG", "RGBA", alpha=0)
    options = {"input_fidelity": "high", "mask": b64(mask), "output_compression": 80}
    result = generate(fake, "gpt-image-1", n=2, size=Size(1536, 1024), quality="hd", background="opaque",
                      output_format="webp", user="u-1", reference_image=REF, options=options)  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/edits" and sent.headers["content-type"].startswith("multipart/form-data")
    assert sent.headers["authorization"] == "Bearer sk-fake-openai"
    assert text_fields(sent) == {
        "model": "gpt-image-1", "prompt": "a red fox in snow", "n": "2", "size": "1536x1024",
        "quality": "high", "background": "opaque", "output_format": "webp", "output_compression": "80",
        "input_fidelity": "high", "user": "u-1",
    }  # fmt: skip
    assert file_parts(sent) == {
        "image": ("image.png", "image/png", REF.data),
        "mask": ("mask.png", "image/png", mask),
    }
    assert fake.edited == [REF.data]
    # The answer is read as for generations: base64 images, usage (with the input image's tokens), id.
    assert [image.data for image in result.images] == [png(), png()]
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.input_image_tokens, result.usage.output_tokens) == (
        206,
        194,
        8320,
    )
    assert result.upstream_request_id == "req_fake_123" and result.warnings == []


@pytest.mark.parametrize(
    ("fmt", "media_type", "name"), [("JPEG", "image/jpeg", "image.jpg"), ("WEBP", "image/webp", "image.webp")]
)
def test_gpt_image_edit_sends_jpeg_and_webp_as_they_are(
    fake: FakeOpenAI, fmt: str, media_type: str, name: str
) -> None:
    data = encoded(fmt)
    generate(fake, "gpt-image-1.5", reference_image=ReferenceImage(data, media_type, 8, 8))
    (sent,) = fake.generation_requests()
    assert file_parts(sent) == {"image": (name, media_type, data)} and fake.edited == [data]


def test_gpt_image_edit_reencodes_a_gif_as_png(fake: FakeOpenAI) -> None:
    gif = ReferenceImage(encoded("GIF"), "image/gif", 8, 8)
    generate(fake, "gpt-image-2", size=Size(1536, 864), reference_image=gif)
    (sent,) = fake.generation_requests()
    filename, kind, data = file_parts(sent)["image"]
    assert (filename, kind) == ("image.png", "image/png")
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", (8, 8))
    assert text_fields(sent)["size"] == "1536x864"


def test_dalle2_edit_sends_a_transparent_png_and_asks_for_base64(fake: FakeOpenAI) -> None:
    mask = encoded("PNG", "RGBA", alpha=0)
    options = {"mask": f"data:image/png;base64,{b64(mask)}", "input_fidelity": "high"}
    reference = ReferenceImage(jpeg(), "image/jpeg", 8, 8)
    result = generate(fake, "dall-e-2", size=Size(512, 512), quality="standard", background="transparent",
                      reference_image=reference, options=options)  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/edits"
    assert text_fields(sent) == {
        "model": "dall-e-2", "prompt": "a red fox in snow", "n": "1", "size": "512x512",
        "response_format": "b64_json",
    }  # fmt: skip
    parts = file_parts(sent)
    assert parts["mask"] == ("mask.png", "image/png", mask)
    filename, kind, data = parts["image"]
    assert (filename, kind) == ("image.png", "image/png")
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (8, 8))
    assert [image.data for image in result.images] == [png()] and result.usage is None
    assert rendered(result) == [
        "providerOptions.openai.input_fidelity ignored: dall-e-2 edits do not take it",
        "background ignored: dall-e-2 edits do not take it",
    ]


def test_dalle2_edit_sends_a_png_with_alpha_as_it_is(fake: FakeOpenAI) -> None:
    data = encoded("PNG", "RGBA", alpha=0)
    generate(fake, "dall-e-2", reference_image=ReferenceImage(data, "image/png", 8, 8))
    assert fake.edited == [data]


def test_dalle2_refuses_a_non_square_image_with_its_message(fake: FakeOpenAI) -> None:
    with pytest.raises(BadRequest, match="square"):
        generate(fake, "dall-e-2", reference_image=ReferenceImage(png(8, 4), "image/png", 8, 4))


def test_edit_fields_the_model_does_not_take_are_dropped_with_warnings(fake: FakeOpenAI) -> None:
    result = generate(fake, "gpt-image-1-mini", moderation="low", reference_image=REF,
                      options={"input_fidelity": "high", "colour": "red"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert "moderation" not in sent.form and "input_fidelity" not in sent.form
    assert rendered(result) == [
        "providerOptions.openai.input_fidelity ignored: gpt-image-1-mini edits do not take it",
        "providerOptions.openai.colour ignored: not an option of openai (it takes background, moderation, "
        "output_format, output_compression, input_fidelity, mask)",
        "moderation ignored: gpt-image-1-mini edits do not take it",
    ]


def test_without_a_reference_image_the_call_is_an_unchanged_generation(fake: FakeOpenAI) -> None:
    result = generate(fake, "gpt-image-1", options={"input_fidelity": "high", "mask": b64(png())})
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/generations" and sent.form == {}
    assert sent.json == {"model": "gpt-image-1", "prompt": "a red fox in snow", "n": 1, "size": "1024x1024"}
    assert fake.edited == [] and result.usage is not None and result.usage.input_image_tokens == 0
    assert rendered(result) == [
        "providerOptions.openai.input_fidelity ignored: gpt-image-1 generations do not take it",
        "providerOptions.openai.mask ignored: it applies only with a reference_image",
    ]


@pytest.mark.parametrize("mask", ["not base64!", b64(jpeg())])
def test_a_mask_that_is_not_a_base64_png_is_refused_before_calling(fake: FakeOpenAI, mask: str) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, "gpt-image-1", reference_image=REF, options={"mask": mask})
    assert caught.value.param == "providerOptions.openai.mask" and fake.generation_requests() == []


def test_a_mask_of_another_size_is_refused_by_the_provider(fake: FakeOpenAI) -> None:
    with pytest.raises(BadRequest, match="same size"):
        generate(
            fake, "gpt-image-1", reference_image=REF, options={"mask": b64(encoded("PNG", "RGBA", (4, 4)))}
        )


def test_dalle3_has_no_edits(fake: FakeOpenAI) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, "dall-e-3", reference_image=REF)
    assert caught.value.code == "EDIT_NOT_SUPPORTED" and fake.generation_requests() == []


@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-2"])
def test_edit_refusals_are_content_policy_violations(fake: FakeOpenAI, model: str) -> None:
    with pytest.raises(ContentPolicyViolation, match="safety system"):
        generate(fake, model, prompt="BLOCKME please", reference_image=REF)
    (sent,) = fake.generation_requests()  # never retried
    assert sent.path == "/v1/images/edits"


def test_a_retried_edit_sends_the_image_again(fake: FakeOpenAI) -> None:
    assert len(generate(fake, "gpt-image-1", prompt="FLAKY fox", reference_image=REF).images) == 1
    assert [r.form["image"] for r in fake.generation_requests()] == [REF.data, REF.data]


def test_the_fake_enforces_what_the_adapter_works_around(fake: FakeOpenAI) -> None:
    """dall-e-2 refuses `image[]` and opaque RGB PNGs; GPT image models refuse GIF; JSON edits work."""
    headers = {"authorization": f"Bearer {FakeOpenAI.api_key}"}
    with httpx.Client(base_url=f"{fake.url}/v1", headers=headers) as client:

        def post(model: str, name: str, data: bytes, kind: str) -> str:
            form = {"model": model, "prompt": "p"}
            answer = client.post("/images/edits", data=form, files={name: ("i", data, kind)})
            return answer.text if answer.is_error else "OK"

        rgba = encoded("PNG", "RGBA")
        assert "expected a file, but got an array" in post("dall-e-2", "image[]", rgba, "image/png")
        assert "got RGB" in post("dall-e-2", "image", png(), "image/png")
        assert "unsupported mimetype ('image/gif')" in post(
            "gpt-image-1", "image", encoded("GIF"), "image/gif"
        )
        assert post("gpt-image-1", "image[]", png(), "image/png") == "OK"
        images = [{"image_url": f"data:image/png;base64,{b64(png())}"}]
        answer = client.post("/images/edits", json={"model": "gpt-image-1", "prompt": "p", "images": images})
        assert answer.status_code == 200 and fake.edited == [png(), png()]


# Edits with several input images and a mask; variations.


def test_several_input_images_go_as_repeated_image_parts_with_the_mask(fake: FakeOpenAI) -> None:
    second = ReferenceImage(encoded("JPEG"), "image/jpeg", 8, 8)
    mask = ReferenceImage(encoded("PNG", "RGBA", alpha=0), "image/png", 8, 8)
    result = generate(fake, "gpt-image-1.5", input_images=(REF, second), mask=mask, input_fidelity="high")
    (sent,) = fake.generation_requests()
    parts = [(name, filename, kind) for name, filename, kind, _ in form_parts(sent) if filename]
    assert parts == [
        ("image[]", "image.png", "image/png"),
        ("image[]", "image1.jpg", "image/jpeg"),
        ("mask", "mask.png", "image/png"),
    ]
    assert text_fields(sent)["input_fidelity"] == "high"
    assert fake.edited == [REF.data, second.data]
    # the fake bills each input image's tokens
    assert result.usage is not None and result.usage.input_image_tokens == 2 * 194


def test_input_fidelity_a_model_does_not_take_is_dropped_with_a_warning(fake: FakeOpenAI) -> None:
    result = generate(fake, "gpt-image-1-mini", reference_image=REF, input_fidelity="low")
    (sent,) = fake.generation_requests()
    assert "input_fidelity" not in text_fields(sent)
    assert [str(w) for w in result.warnings] == [
        "input_fidelity ignored: gpt-image-1-mini edits do not take it"
    ]


def test_dalle2_variation(fake: FakeOpenAI) -> None:
    opaque = ReferenceImage(encoded("PNG", "RGB"), "image/png", 8, 8)
    result = generate(
        fake, "dall-e-2", variation=True, reference_image=opaque, n=2, size=Size(256, 256), user="u-2"
    )
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/images/variations"
    assert text_fields(sent) == {
        "model": "dall-e-2", "n": "2", "size": "256x256", "response_format": "b64_json", "user": "u-2"
    }  # fmt: skip
    (name, kind, data) = file_parts(sent)["image"]
    assert (name, kind) == ("image.png", "image/png")
    assert Image.open(io.BytesIO(data)).mode == "RGBA"  # dall-e-2 takes only a PNG with alpha
    assert [image.data for image in result.images] == [png(), png()]
