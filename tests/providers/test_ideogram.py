"""The Ideogram adapter against a fake Ideogram API that checks what it is sent."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    ProviderRejectedRequest,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult, adjusted, other, unsupported
from service.providers.ideogram import RENDERING_SPEEDS, IdeogramProvider, is_refusal
from tests.fakes.base import file_parts, jpeg, png
from tests.fakes.ideogram import SAFETY_ERROR, FakeIdeogram
from tests.providers.conftest import generate_with, shared_fake

CATALOG = Path(__file__).resolve().parents[2] / "service" / "catalog" / "models" / "ideogram.yaml"

server, fake = shared_fake(FakeIdeogram)


def generate(fake: FakeIdeogram, key: str = FakeIdeogram.api_key, **fields: object) -> ImageCallResult:
    return generate_with(
        IdeogramProvider.create, ProviderConfig("ideogram", key, fake.url), "ideogram-v3", **fields
    )


def test_a_generation_is_a_multipart_form_with_the_api_key(fake: FakeIdeogram) -> None:
    options = {"style_type": "design", "magic_prompt": "OFF", "negative_prompt": "blur", "seed": 42}
    result = generate(fake, n=3, size=Size(1312, 736), quality="hd", options=options)
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["api-key"]) == ("/v1/ideogram-v3/generate", "idg-fake-ideogram")
    assert "authorization" not in sent.headers
    assert sent.headers["content-type"].startswith("multipart/form-data") and sent.json is None
    assert sent.form == {
        "prompt": "a red fox in snow", "num_images": "3", "rendering_speed": "QUALITY",
        "resolution": "1312x736", "style_type": "DESIGN", "magic_prompt": "OFF",
        "negative_prompt": "blur", "seed": "42",
    }  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {}
    assert [(image.data, image.media_type) for image in result.images] == [(png(), "image/png")] * 3
    assert all(image.revised_prompt is None for image in result.images)  # MagicPrompt was off
    assert result.warnings == [] and result.usage is None and result.upstream_request_id is None
    downloads = [r for r in fake.requests if r.method == "GET"]
    assert len(downloads) == 3 and all("api-key" not in r.headers for r in downloads)


@pytest.mark.parametrize(
    ("quality", "speed"),
    [
        (None, "DEFAULT"), ("turbo", "TURBO"), ("low", "TURBO"), ("default", "DEFAULT"),
        ("medium", "DEFAULT"), ("standard", "DEFAULT"), ("auto", "DEFAULT"), ("quality", "QUALITY"),
        ("high", "QUALITY"), ("hd", "QUALITY"),
    ],
)  # fmt: skip
def test_quality_is_the_rendering_speed(fake: FakeIdeogram, quality: str | None, speed: str) -> None:
    generate(fake, quality=quality)
    assert fake.generation_requests()[0].form["rendering_speed"] == speed


def test_the_catalog_prices_each_quality_as_its_rendering_speed() -> None:
    (model,) = [m for m in load_catalog([CATALOG]) if m.provider == "ideogram"]
    size = model.capabilities.default_size
    prices: dict[str | None, int] = {
        q: model.price.per_image(q, size) for q in (None, *model.capabilities.qualities)
    }
    speeds = {"TURBO": 30_000, "DEFAULT": 60_000, "QUALITY": 90_000}  # micro-dollars per image
    assert set(model.capabilities.qualities) == set(RENDERING_SPEEDS)
    expected: dict[str | None, int] = {q: speeds[RENDERING_SPEEDS[q]] for q in model.capabilities.qualities}
    assert prices == {None: 60_000, **expected}


def test_a_quality_without_a_rendering_speed_is_sent_as_default_with_a_warning(fake: FakeIdeogram) -> None:
    result = generate(fake, quality="ultra")
    assert fake.generation_requests()[0].form["rendering_speed"] == "DEFAULT"
    assert result.warnings == [adjusted("quality", "'ultra' has no Ideogram rendering speed; sent DEFAULT")]


def test_magic_prompt_rewrites_are_revised_prompts(fake: FakeIdeogram) -> None:
    result = generate(fake, options={"magic_prompt": "on"})
    assert result.images[0].revised_prompt == "a red fox in snow, in crisp detail"


def test_what_ideogram_has_no_equivalent_for_is_dropped_with_warnings(fake: FakeIdeogram) -> None:
    options = {"image_weight": 30, "steps": 20}
    result = generate(fake, style="vivid", background="transparent", output_compression=50, options=options)
    assert set(fake.generation_requests()[0].form) == {
        "prompt",
        "num_images",
        "rendering_speed",
        "resolution",
    }
    assert result.warnings == [
        unsupported("providerOptions.ideogram.image_weight", "it applies only with a reference_image"),
        unsupported(
            "providerOptions.ideogram.steps",
            "not an option of ideogram "
            "(it takes style_type, magic_prompt, negative_prompt, seed, image_weight)",
        ),
        unsupported("style", "Ideogram has no equivalent"),
        unsupported("background", "Ideogram has no equivalent"),
        unsupported("output_compression", "Ideogram has no equivalent"),
    ]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"style_type": "ANIME"}, "style_type"),
        ({"magic_prompt": True}, "magic_prompt"),
        ({"seed": 2**31}, "seed"),
        ({"seed": -1}, "seed"),
        ({"negative_prompt": 3}, "negative_prompt"),
        ({"image_weight": 0}, "image_weight"),
    ],
)
def test_malformed_options_are_400s_before_any_call(
    fake: FakeIdeogram, options: dict[str, object], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, options=options, reference_image=reference())
    assert caught.value.param == f"providerOptions.ideogram.{param}"
    assert fake.generation_requests() == []


def test_every_catalog_size_is_an_ideogram_resolution_sent_as_is(fake: FakeIdeogram) -> None:
    (model,) = [m for m in load_catalog([CATALOG]) if m.provider == "ideogram"]
    assert (model.id, model.upstream_id, model.capabilities.max_images_per_call) == (
        "ideogram/v3",
        "ideogram-v3",
        8,
    )
    for size in model.capabilities.sizes:
        assert len(generate(fake, size=size).images) == 1  # the fake holds resolution to the enum
    assert [r.form["resolution"] for r in fake.generation_requests()] == [
        str(s) for s in model.capabilities.sizes
    ]


def test_a_size_that_is_no_resolution_is_a_400_before_any_call(fake: FakeIdeogram) -> None:
    with pytest.raises(BadRequest) as caught:
        generate(fake, size=Size(1024, 1536))
    assert caught.value.param == "size" and fake.generation_requests() == []


def test_unsafe_images_are_dropped_with_a_warning(fake: FakeIdeogram) -> None:
    result = generate(fake, prompt="UNSAFE_ONE fox", n=3)
    assert len(result.images) == 2
    assert result.warnings == [other("n", "Ideogram's safety check removed 1 image(s)")]
    assert len([r for r in fake.requests if r.method == "GET"]) == 2


def test_a_call_whose_every_image_is_unsafe_is_a_refusal(fake: FakeIdeogram) -> None:
    with pytest.raises(ContentPolicyViolation, match="safety check"):
        generate(fake, prompt="UNSAFE_ALL fox", n=2)
    assert len(fake.generation_requests()) == 1  # never retried


def test_a_prompt_that_fails_the_safety_check_is_a_refusal(fake: FakeIdeogram) -> None:
    with pytest.raises(ContentPolicyViolation, match="failed safety check"):
        generate(fake, prompt="BLOCKME please")
    assert len(fake.generation_requests()) == 1


def test_the_refusal_test_reads_ideograms_safety_error_only() -> None:
    assert is_refusal(422, {"error": SAFETY_ERROR}, "")
    assert not is_refusal(422, {"error": "Invalid resolution."}, "")
    assert not is_refusal(500, {"error": SAFETY_ERROR}, "")


def test_a_request_ideogram_rejects_is_a_400_with_its_message(fake: FakeIdeogram) -> None:
    with pytest.raises(ProviderRejectedRequest, match="cannot be processed"):
        generate(fake, prompt="BADPARAM fox")
    assert len(fake.generation_requests()) == 1


def test_transient_failures_are_retried(fake: FakeIdeogram) -> None:
    assert len(generate(fake, prompt="FLAKY fox").images) == 1
    assert len(generate(fake, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeIdeogram) -> None:
    with pytest.raises(RateLimited) as caught:
        generate(fake, prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors_with_the_providers_message(fake: FakeIdeogram) -> None:
    with pytest.raises(UpstreamError, match="Internal server error"):
        generate(fake, prompt="FAILME")


def test_garbage_and_empty_answers(fake: FakeIdeogram) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, prompt="GARBAGE")
    assert generate(fake, prompt="EMPTY").images == []  # generation.py turns this into a 502


def test_a_safe_image_without_a_url_is_a_502(fake: FakeIdeogram) -> None:
    with pytest.raises(UpstreamError, match="without a url"):
        generate(fake, prompt="NOURL fox")


def test_bad_credentials_are_an_upstream_error_not_a_401(fake: FakeIdeogram) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, key="idg-wrong")


def test_the_deadline_bounds_the_call(fake: FakeIdeogram) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        generate(fake, prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.5


def reference(data: bytes | None = None, media_type: str = "image/png", side: int = 64) -> ReferenceImage:
    return ReferenceImage(png(side, side) if data is None else data, media_type, side, side)


def test_a_reference_image_goes_to_remix(fake: FakeIdeogram) -> None:
    image = jpeg(64, 64)
    options = {"image_weight": 70, "negative_prompt": "blur", "seed": 7}
    result = generate(
        fake, n=2, size=Size(1248, 832), quality="turbo", options=options,
        reference_image=ReferenceImage(image, "image/jpeg", 64, 64),
    )  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/ideogram-v3/remix"
    assert sent.form == {
        "image": image, "prompt": "a red fox in snow", "num_images": "2", "rendering_speed": "TURBO",
        "resolution": "1248x832", "image_weight": "70", "negative_prompt": "blur", "seed": "7",
    }  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {"image": ("image.jpg", "image/jpeg")}
    assert fake.inputs == [image] and fake.masks == []
    assert len(result.images) == 2 and result.warnings == []


def test_a_gif_reference_is_sent_as_png(fake: FakeIdeogram) -> None:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(out, format="GIF")
    generate(fake, reference_image=ReferenceImage(out.getvalue(), "image/gif", 16, 16))
    sent = fake.generation_requests()[0]
    assert file_parts(sent.headers["content-type"], sent.body) == {"image": ("image.png", "image/png")}
    assert fake.inputs and fake.inputs[0].startswith(b"\x89PNG")


def test_an_input_image_over_10_mb_is_a_400_before_any_call(fake: FakeIdeogram) -> None:
    big = ReferenceImage(png(8, 8) + b"\0" * (10 * 1024 * 1024), "image/png", 8, 8)
    with pytest.raises(BadRequest, match="10 MB") as caught:
        generate(fake, reference_image=big)
    assert caught.value.param == "reference_image" and fake.generation_requests() == []


def transparent_square_mask(side: int) -> bytes:
    """An OpenAI-style mask: opaque, with a transparent square (what to change) in the middle."""
    mask = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def test_an_edit_with_a_mask_goes_to_edit_with_ideograms_black_and_white_mask(fake: FakeIdeogram) -> None:
    image = png(64, 64, (10, 200, 90))
    mask = ReferenceImage(transparent_square_mask(64), "image/png", 64, 64)
    options = {"style_type": "REALISTIC", "negative_prompt": "blur", "image_weight": 20}
    result = generate(
        fake, size=Size(1024, 1024), input_images=(reference(image),), mask=mask, options=options
    )
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/ideogram-v3/edit"
    assert {k: v for k, v in sent.form.items() if k != "mask"} == {
        "image": image, "prompt": "a red fox in snow", "num_images": "1", "rendering_speed": "DEFAULT",
        "style_type": "REALISTIC",
    }  # fmt: skip
    assert file_parts(sent.headers["content-type"], sent.body) == {
        "image": ("image.png", "image/png"), "mask": ("mask.png", "image/png"),
    }  # fmt: skip
    with Image.open(io.BytesIO(fake.masks[0])) as sent_mask:
        assert sent_mask.size == (64, 64)
        assert sent_mask.getpixel((32, 32)) == 0 and sent_mask.getpixel((2, 2)) == 255  # black: change
    assert len(result.images) == 1
    assert result.warnings == [
        unsupported("providerOptions.ideogram.negative_prompt", "an edit (a mask) does not take it"),
        unsupported("providerOptions.ideogram.image_weight", "an edit (a mask) does not take it"),
        unsupported("size", "1024x1024 asked; the Ideogram edit keeps the input image's size"),
    ]


def test_edits_and_remixes_are_refused_like_generations(fake: FakeIdeogram) -> None:
    mask = ReferenceImage(transparent_square_mask(64), "image/png", 64, 64)
    with pytest.raises(ContentPolicyViolation):
        generate(fake, prompt="BLOCKME", size=Size(64, 64), input_images=(reference(),), mask=mask)
    with pytest.raises(ContentPolicyViolation):
        generate(fake, prompt="UNSAFE_ALL", reference_image=reference())
    assert [r.path for r in fake.generation_requests()] == ["/v1/ideogram-v3/edit", "/v1/ideogram-v3/remix"]


def test_the_fake_checks_what_it_is_sent(fake: FakeIdeogram) -> None:
    auth = {"Api-Key": FakeIdeogram.api_key}
    generate_url, edit_url = f"{fake.url}/v1/ideogram-v3/generate", f"{fake.url}/v1/ideogram-v3/edit"
    ok = httpx.post(
        generate_url, headers=auth, files={"prompt": (None, "x"), "resolution": (None, "1024x1024")}
    )
    assert ok.status_code == 200 and ok.json()["data"][0]["is_image_safe"] is True
    image = ("in.png", png(64, 64), "image/png")
    bad = [
        httpx.post(
            generate_url,
            headers={"Authorization": f"Bearer {FakeIdeogram.api_key}"},
            files={"prompt": (None, "x")},
        ),
        httpx.post(generate_url, headers=auth, files={"prompt": (None, "x"), "size": (None, "1024x1024")}),
        httpx.post(
            generate_url, headers=auth, files={"prompt": (None, "x"), "resolution": (None, "1024x1536")}
        ),
        httpx.post(
            generate_url,
            headers=auth,
            files={"prompt": (None, "x"), "resolution": (None, "1024x1024"), "aspect_ratio": (None, "1x1")},
        ),
        httpx.post(generate_url, headers=auth, files={"prompt": (None, "x"), "num_images": (None, "9")}),
        httpx.post(
            generate_url, headers=auth, files={"prompt": (None, "x"), "rendering_speed": (None, "FAST")}
        ),
        httpx.post(edit_url, headers=auth, files={"prompt": (None, "x"), "image": image}),  # no mask
        httpx.post(
            edit_url,
            headers=auth,
            files={"prompt": (None, "x"), "image": image, "mask": ("m.png", png(32, 32), "image/png")},
        ),
        httpx.post(
            edit_url,
            headers=auth,
            files={"prompt": (None, "x"), "image": image, "mask": ("m.png", png(64, 64), "image/png")},
        ),
        httpx.post(
            f"{fake.url}/v1/ideogram-v3/remix",
            headers=auth,
            files={"prompt": (None, "x"), "image": ("in.gif", b"GIF89a", "image/gif")},
        ),
    ]
    assert [r.status_code for r in bad] == [401] + [400] * (len(bad) - 1)
    assert fake.inputs == [] and fake.masks == []
