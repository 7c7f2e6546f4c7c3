"""The Bedrock adapter against a fake Bedrock runtime that verifies SigV4 signatures on its own and
checks each model family's body."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from service.catalog.sizes import Size
from service.config import ProviderConfig, Settings, load_settings
from service.errors import (
    ContentPolicyViolation,
    ModelNotAllowed,
    ProviderRejectedRequest,
    RateLimited,
    UpstreamError,
)
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult
from service.providers.bedrock import PROVIDER, BedrockProvider
from tests.fakes.base import png
from tests.fakes.bedrock import FakeBedrock
from tests.providers.conftest import generate_with, rendered, run, shared_fake

server, fake = shared_fake(FakeBedrock)
KEY = FakeBedrock.api_key
NOVA, TITAN, SD35 = (
    "amazon.nova-canvas-v1:0",
    "amazon.titan-image-generator-v2:0",
    "stability.sd3-5-large-v1:0",
)
ULTRA = "stability.stable-image-ultra-v1:1"


def config(
    base_url: str, secret: str = KEY, settings: dict[str, Any] | None = None, key_id: str = KEY
) -> ProviderConfig:
    credentials = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    return ProviderConfig("bedrock", key_id, base_url, credentials, settings=settings or {})


def generate(fake: FakeBedrock, model: str, secret: str = KEY, settings: dict[str, Any] | None = None,
             **fields: object) -> ImageCallResult:  # fmt: skip
    return generate_with(BedrockProvider.create, config(fake.url, secret, settings), model, **fields)


def b64png() -> str:
    return base64.b64encode(png()).decode()


def test_nova_text_to_image_is_signed_and_sent_to_the_encoded_model_path(fake: FakeBedrock) -> None:
    options = {"negativeText": "blurry", "style": "photorealism", "cfgScale": 6.5, "seed": 42}
    result = generate(fake, NOVA, n=3, size=Size(1280, 720), quality="hd", options=options)
    (sent,) = fake.generation_requests()
    assert sent.path == "/model/amazon.nova-canvas-v1%3A0/invoke"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.json == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a red fox in snow", "negativeText": "blurry", "style": "PHOTOREALISM"},
        "imageGenerationConfig": {"numberOfImages": 3, "width": 1280, "height": 720, "quality": "premium",
                                  "cfgScale": 6.5, "seed": 42},
    }  # fmt: skip
    assert [image.data for image in result.images] == [png()] * 3
    assert result.upstream_request_id == "bedrock-req-1"


def test_a_wrong_secret_fails_the_fakes_own_signature_check(fake: FakeBedrock) -> None:
    with pytest.raises(UpstreamError, match=r"credentials.*signature we calculated does not match"):
        generate(fake, NOVA, secret="not-the-secret")


def test_the_region_scopes_the_signature(fake: FakeBedrock) -> None:
    fake.region = "eu-west-1"
    with pytest.raises(UpstreamError, match="scoped to a valid region"):
        generate(fake, NOVA)
    assert len(generate(fake, NOVA, settings={"AWS_REGION": "eu-west-1"}).images) == 1
    assert len(generate(fake, NOVA, settings={"AWS_DEFAULT_REGION": "eu-west-1"}).images) == 1


def test_a_session_token_is_sent_and_signed(fake: FakeBedrock) -> None:
    fake.session_token = "FwoGZXIvYXdzEFAKE"
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, NOVA)
    assert len(generate(fake, NOVA, settings={"AWS_SESSION_TOKEN": "FwoGZXIvYXdzEFAKE"}).images) == 1
    assert "x-amz-security-token" in fake.generation_requests()[-1].headers["authorization"]


def test_the_default_endpoint_is_the_regions() -> None:
    spec_url = PROVIDER.default_base_url

    async def url(settings: dict[str, Any]) -> str:
        provider = BedrockProvider.create(config(spec_url, settings=settings), Settings())
        try:
            return provider._upstream.url("/model/x/invoke")
        finally:
            await provider.aclose()

    assert run(url({})) == "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke"
    assert run(url({"AWS_REGION": "ap-northeast-1"})).startswith("https://bedrock-runtime.ap-northeast-1.")


def test_titan_takes_no_style_and_maps_quality(fake: FakeBedrock) -> None:
    result = generate(fake, TITAN, size=Size(1152, 896), quality="standard", style="vivid",
                      options={"style": "PHOTOREALISM"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.json["textToImageParams"] == {"text": "a red fox in snow"}
    assert sent.json["imageGenerationConfig"]["quality"] == "standard"
    assert rendered(result) == [
        f"providerOptions.bedrock.style ignored: {TITAN} does not take it",
        "style ignored: bedrock has no equivalent",
    ]


def test_a_reference_image_is_an_image_variation(fake: FakeBedrock) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format="GIF")
    gif = ReferenceImage(out.getvalue(), "image/gif", 8, 8)
    generate(fake, NOVA, reference_image=gif, options={"similarityStrength": 0.7, "negativeText": "text"})
    body = fake.generation_requests()[0].json
    assert body["taskType"] == "IMAGE_VARIATION" and "textToImageParams" not in body
    params = body["imageVariationParams"]
    assert (params["text"], params["negativeText"], params["similarityStrength"]) == (
        "a red fox in snow",
        "text",
        0.7,
    )
    assert base64.b64decode(params["images"][0]).startswith(b"\x89PNG")  # the GIF, as PNG


def test_stability_text_to_image_body(fake: FakeBedrock) -> None:
    options = {"negative_prompt": "fog", "seed": 9, "negativeText": "x"}
    result = generate(fake, SD35, size=Size(1536, 864), output_format="jpeg", quality="hd", options=options,
                      first_index=2)  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/model/stability.sd3-5-large-v1%3A0/invoke"
    assert sent.json == {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "mode": "text-to-image",
                         "negative_prompt": "fog", "seed": 11, "output_format": "jpeg"}  # fmt: skip
    assert len(result.images) == 1 and result.upstream_request_id == "bedrock-req-2"
    assert "quality ignored: stability.sd3-5-large-v1:0 has no quality setting" in rendered(result)
    generate(fake, ULTRA)
    assert fake.generation_requests()[1].json == {"prompt": "a red fox in snow", "aspect_ratio": "1:1"}


def test_stability_image_to_image(fake: FakeBedrock) -> None:
    reference = ReferenceImage(png(), "image/png", 8, 8)
    generate(fake, SD35, reference_image=reference, options={"strength": 0.3})
    body = fake.generation_requests()[0].json
    assert body == {
        "prompt": "a red fox in snow",
        "mode": "image-to-image",
        "image": b64png(),
        "strength": 0.3,
    }
    with pytest.raises(ModelNotAllowed):
        generate(fake, ULTRA, reference_image=reference)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("model", [NOVA, TITAN, SD35])
@pytest.mark.parametrize("prompt", ["BLOCKME", "BLOCKOUTPUT"])
def test_content_filters_are_refusals_never_retried(fake: FakeBedrock, model: str, prompt: str) -> None:
    size = Size(1024, 1024)
    with pytest.raises(ContentPolicyViolation, match=r"content filters|Filter reason"):
        generate(fake, model, prompt=f"{prompt} fox", size=size)
    assert len(fake.generation_requests()) == 1


def test_throttling_is_retried_then_a_429(fake: FakeBedrock) -> None:
    assert len(generate(fake, NOVA, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 2
    with pytest.raises(RateLimited):
        generate(fake, NOVA, prompt="RATELIMIT fox")
    assert len(fake.generation_requests()) == 5


def test_failures_and_garbage(fake: FakeBedrock) -> None:
    assert len(generate(fake, NOVA, prompt="FLAKY fox").images) == 1
    with pytest.raises(UpstreamError, match="internal error"):
        generate(fake, NOVA, prompt="FAILME")
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, NOVA, prompt="GARBAGE")
    assert generate(fake, NOVA, prompt="EMPTY").images == []


def test_a_size_nova_refuses_is_the_providers_400(fake: FakeBedrock) -> None:
    with pytest.raises(ProviderRejectedRequest, match="multiples of 16"):
        generate(fake, NOVA, size=Size(1000, 1000))


def test_settings_use_the_aws_sdks_variables() -> None:
    environ = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}
    provider = load_settings(environ).providers["bedrock"]
    assert provider.base_url == "https://bedrock-runtime.{region}.amazonaws.com"
    assert provider.settings == {"AWS_REGION": "eu-west-1"}
    assert "bedrock" not in load_settings({"AWS_ACCESS_KEY_ID": "AKID"}).providers


def openai_mask(width: int, height: int) -> bytes:
    """An OpenAI-style mask: opaque, its left half transparent (what to change)."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def rgba_picture(width: int, height: int) -> ReferenceImage:
    """A PNG with transparent pixels (Nova and Titan refuse those)."""
    picture = Image.new("RGBA", (width, height), (10, 200, 10, 0))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return ReferenceImage(out.getvalue(), "image/png", width, height)


@pytest.mark.parametrize("model", [NOVA, TITAN])
def test_an_edit_with_a_mask_is_inpainting_with_a_black_where_to_change_mask(
    fake: FakeBedrock, model: str
) -> None:
    mask = ReferenceImage(openai_mask(64, 32), "image/png", 64, 32)
    result = generate(fake, model, size=Size(512, 512), input_images=(rgba_picture(64, 32),), mask=mask,
                      n=2, options={"negativeText": "text", "similarityStrength": 0.5})  # fmt: skip
    body = fake.generation_requests()[0].json
    assert body["taskType"] == "INPAINTING" and set(body) == {"taskType", "inPaintingParams",
                                                              "imageGenerationConfig"}  # fmt: skip
    params = body["inPaintingParams"]
    assert set(params) == {"image", "maskImage", "text", "negativeText"}
    assert (params["text"], params["negativeText"]) == ("a red fox in snow", "text")
    assert body["imageGenerationConfig"] == {"numberOfImages": 2, "quality": "standard"}  # no size
    ((task, sent_mask),) = fake.masks
    assert task == "INPAINTING" and sent_mask.size == (512, 512) == fake.inputs[0].size
    assert sent_mask.convert("RGB").getpixel((10, 256)) == (0, 0, 0)  # transparent: black, changed
    assert sent_mask.convert("RGB").getpixel((500, 256)) == (255, 255, 255)  # opaque: white, kept
    assert len(result.images) == 2
    assert rendered(result) == [
        "providerOptions.bedrock.similarityStrength ignored: an edit with a mask does not take it",
        "size adjusted: the input image was scaled from 64x32 to 512x512",
    ]


def test_out_painting_mode_makes_it_outpainting_with_a_white_where_to_change_mask(fake: FakeBedrock) -> None:
    mask = ReferenceImage(openai_mask(512, 512), "image/png", 512, 512)
    picture = ReferenceImage(png(512, 512), "image/png", 512, 512)
    result = generate(fake, NOVA, size=Size(512, 512), input_images=(picture,), mask=mask,
                      options={"outPaintingMode": "precise"})  # fmt: skip
    body = fake.generation_requests()[0].json
    assert body["taskType"] == "OUTPAINTING" and body["outPaintingParams"]["outPaintingMode"] == "PRECISE"
    ((task, sent_mask),) = fake.masks
    assert task == "OUTPAINTING"
    assert sent_mask.convert("RGB").getpixel((10, 256)) == (255, 255, 255)  # transparent: white, changed
    assert sent_mask.convert("RGB").getpixel((500, 256)) == (0, 0, 0)
    assert rendered(result) == []  # the same size: nothing scaled


def test_an_edit_without_a_mask_is_an_image_variation_of_every_input_image(fake: FakeBedrock) -> None:
    pictures = (rgba_picture(400, 320), ReferenceImage(png(16, 16), "image/png", 16, 16))
    result = generate(fake, NOVA, input_images=pictures, options={"outPaintingMode": "DEFAULT"})
    body = fake.generation_requests()[0].json
    assert body["taskType"] == "IMAGE_VARIATION"
    assert body["imageVariationParams"]["text"] == "a red fox in snow"
    # the first as it came (made opaque), the second, too small for Bedrock, scaled to the asked size
    assert [picture.size for picture in fake.inputs] == [(400, 320), (1024, 1024)]
    assert body["imageGenerationConfig"]["width"] == 1024
    assert rendered(result) == [
        "providerOptions.bedrock.outPaintingMode ignored: it applies only to an edit with a mask",
        "image adjusted: an input image of 16x16 is outside Bedrock's bounds (320-4096 a side, 1:4 to "
        "4:1); it was scaled to 1024x1024",
    ]


def test_a_variation_is_an_image_variation_without_text(fake: FakeBedrock) -> None:
    picture = ReferenceImage(png(), "image/png", 8, 8)
    generate(fake, TITAN, prompt="", reference_image=picture, variation=True)
    params = fake.generation_requests()[0].json["imageVariationParams"]
    assert set(params) == {"images"}


def test_the_fake_refuses_a_mask_that_is_not_black_and_white(
    fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bedrock's ValidationException for a grey mask (the adapter never sends one: this holds the
    fake to the rule)."""
    from service.providers import bedrock

    picture = ReferenceImage(png(512, 512), "image/png", 512, 512)
    mask = ReferenceImage(openai_mask(512, 512), "image/png", 512, 512)

    async def grey_mask(*_: object, **__: object) -> bytes:
        out = io.BytesIO()
        Image.new("L", (512, 512), 128).save(out, format="PNG")
        return out.getvalue()

    monkeypatch.setattr(bedrock, "black_and_white", grey_mask)
    with pytest.raises(ProviderRejectedRequest, match="only black and white"):
        generate(fake, NOVA, size=Size(512, 512), input_images=(picture,), mask=mask)
    assert fake.masks == []
