"""The BFL adapter against a fake BFL FLUX API: submit, poll, download, and every failure path."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from PIL import Image

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig, Settings
from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    InvalidMask,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers import bfl, upstream
from service.providers.base import ImageCallResult, unsupported
from service.providers.bfl import BFLProvider, request_body
from tests.fakes.base import Reply, check_body, jpeg, png
from tests.fakes.bfl import FakeBFL
from tests.providers.conftest import call, generate_with, run, shared_fake
from tests.support.pictures import transparent_right_half


@pytest.fixture(autouse=True)
def fast_polls_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BFLProvider, "poll_interval_s", 0.02)
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)


server, fake = shared_fake(FakeBFL)


def generate(fake: FakeBFL, model: str, key: str = FakeBFL.api_key, **fields: object) -> ImageCallResult:
    return generate_with(BFLProvider.create, ProviderConfig("bfl", key, f"{fake.url}/v1"), model, **fields)


def polls(fake: FakeBFL) -> list[str]:
    return [r.path for r in fake.requests if r.method == "GET" and r.path == "/v1/get_result"]


def test_pro_11_submit_poll_and_download(fake: FakeBFL) -> None:
    options = {
        "seed": 42.0,
        "safety_tolerance": 2.0,
        "prompt_upsampling": True,
    }  # as a protobuf Struct has them
    result = generate(fake, "flux-pro-1.1", size=Size(1024, 768), output_format="png", options=options)
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["x-key"]) == ("/v1/flux-pro-1.1", "bfl-fake-key")
    assert "authorization" not in sent.headers
    assert sent.json == {
        "prompt": "a red fox in snow", "width": 1024, "height": 768, "output_format": "png", "seed": 42,
        "safety_tolerance": 2, "prompt_upsampling": True,
    }  # fmt: skip
    (task_id,) = fake.tasks
    poll_requests = [r for r in fake.requests if r.path == "/v1/get_result"]
    assert len(poll_requests) == FakeBFL.pending_polls + 1
    assert all(r.query == {"id": [task_id]} and r.headers["x-key"] == "bfl-fake-key" for r in poll_requests)
    (download,) = [r for r in fake.requests if r.path.startswith("/delivery/")]
    assert "x-key" not in download.headers  # the signed URL is fetched without the key
    assert [(image.data, image.media_type) for image in result.images] == [(png(), "image/png")]
    assert result.images[0].revised_prompt is None and result.usage is None
    assert result.upstream_request_id == task_id and list(result.warnings) == []


def test_ultra_sends_an_aspect_ratio_and_raw(fake: FakeBFL) -> None:
    result = generate(fake, "flux-pro-1.1-ultra", size=Size(1920, 1080), options={"raw": True, "seed": 7})
    assert fake.generation_requests()[0].json == {
        "prompt": "a red fox in snow", "aspect_ratio": "16:9", "raw": True, "seed": 7
    }  # fmt: skip
    assert [(image.data, image.media_type) for image in result.images] == [(jpeg(), "image/jpeg")]


def test_kontext_text_to_image_drops_what_it_cannot_honour(fake: FakeBFL) -> None:
    result = generate(fake, "flux-kontext-pro", size=Size(2016, 864), quality="hd", background="transparent",
                      options={"raw": True, "webhook_url": "https://x.test/hook"})  # fmt: skip
    assert fake.generation_requests()[0].json == {"prompt": "a red fox in snow", "aspect_ratio": "21:9"}
    assert result.images[0].media_type == "image/png"  # Kontext's own default format
    assert result.warnings == [
        unsupported("providerOptions.bfl.raw", "flux-kontext-pro does not take it"),
        unsupported(
            "providerOptions.bfl.webhook_url",
            "not an option of bfl (it takes seed, safety_tolerance, prompt_upsampling, raw, "
            "image_prompt_strength, steps, guidance)",
        ),
        unsupported("quality", "BFL has no equivalent"),
        unsupported("background", "BFL has no equivalent"),
    ]


@pytest.mark.parametrize("model_id", ["bfl/flux-pro-1.1-ultra", "bfl/flux-kontext-pro"])
def test_every_catalog_size_maps_exactly_to_an_aspect_ratio(model_id: str) -> None:
    model = load_catalog().resolve(model_id)
    for size in model.capabilities.sizes:
        body, _ = request_body(call(model.upstream_id, size=size))
        width, height = (int(side) for side in body["aspect_ratio"].split(":"))
        assert width * size.height == height * size.width, size


def test_catalog_sizes_of_pro_11_are_sent_as_width_and_height() -> None:
    model = load_catalog().resolve("bfl/flux-pro-1.1")
    assert model.capabilities.offers(Size(1440, 256)) and not model.capabilities.offers(Size(1000, 1000))
    assert request_body(call("flux-pro-1.1", size=Size(1440, 256)))[0] == {
        "prompt": "a red fox in snow", "width": 1440, "height": 256
    }  # fmt: skip


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("flux-pro-1.1", Size(1000, 1000)),
        ("flux-pro-1.1", Size(1536, 1024)),
        ("flux-kontext-pro", Size(1000, 999)),
    ],
)
def test_sizes_that_do_not_map_are_refused_before_any_call(fake: FakeBFL, model: str, size: Size) -> None:
    with pytest.raises(BadRequest, match="Size"):
        generate(fake, model, size=size)
    assert fake.requests == []


def test_malformed_options_are_a_400_before_any_call(fake: FakeBFL) -> None:
    with pytest.raises(BadRequest, match="seed must be an integer"):
        generate(fake, "flux-pro-1.1", options={"seed": "forty-two"})
    with pytest.raises(BadRequest, match="prompt_upsampling must be a boolean"):
        generate(fake, "flux-pro-1.1", options={"prompt_upsampling": 1})
    assert fake.requests == []


def test_a_request_the_provider_rejects_is_a_400_with_its_message(fake: FakeBFL) -> None:
    with pytest.raises(BadRequest, match="greater than the maximum of 6"):
        generate(fake, "flux-pro-1.1", options={"safety_tolerance": 9})


def test_n_tasks_in_one_call(fake: FakeBFL) -> None:
    result = generate(fake, "flux-pro-1.1", n=2)
    assert len(fake.generation_requests()) == 2 and len(result.images) == 2
    assert result.upstream_request_id is not None and set(result.upstream_request_id.split(",")) == set(
        fake.tasks
    )


@pytest.mark.parametrize(("prompt", "status"), [("BLOCKME", "Request Moderated"),
                                                 ("BLOCKME_OUTPUT", "Content Moderated")])  # fmt: skip
def test_moderation_is_a_content_policy_violation(fake: FakeBFL, prompt: str, status: str) -> None:
    with pytest.raises(ContentPolicyViolation, match=f"bfl: {status}.*Moderation Reasons"):
        generate(fake, "flux-pro-1.1", prompt=f"{prompt} please")
    assert len(fake.generation_requests()) == 1  # never retried
    assert not [r for r in fake.requests if r.path.startswith("/delivery/")]


def test_http_level_moderation_detail_counts_as_a_refusal() -> None:
    assert bfl.is_refusal(400, {"detail": "Request Moderated"}, "")
    assert not bfl.is_refusal(400, {"detail": "Bad input"}, "")
    assert not bfl.is_refusal(500, None, "Request Moderated")


def test_a_failed_task_is_an_upstream_error(fake: FakeBFL) -> None:
    with pytest.raises(UpstreamError, match="status 'Error'"):
        generate(fake, "flux-pro-1.1", prompt="TASKERROR")


def test_a_task_the_provider_forgot_is_an_upstream_error() -> None:
    class Forgetful(FakeBFL):
        def _result(self, task_id: str) -> Reply:
            return super()._result("unknown-" + task_id)

    with Forgetful().running() as server:
        assert isinstance(server, Forgetful)
        with pytest.raises(UpstreamError, match="Task not found"):
            generate(server, "flux-pro-1.1")


def test_transient_failures_are_retried(fake: FakeBFL) -> None:
    assert len(generate(fake, "flux-pro-1.1", prompt="FLAKY fox").images) == 1
    assert len(generate(fake, "flux-pro-1.1", prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 4


def test_persistent_rate_limits_pass_through_as_429(fake: FakeBFL) -> None:
    with pytest.raises(RateLimited, match="active tasks") as caught:
        generate(fake, "flux-pro-1.1", prompt="RATELIMIT fox")
    assert caught.value.code == "UPSTREAM_RATE_LIMITED"
    assert len(fake.generation_requests()) == 3  # MG_UPSTREAM_ATTEMPTS


def test_server_errors_are_upstream_errors(fake: FakeBFL) -> None:
    with pytest.raises(UpstreamError, match="HTTP 500"):
        generate(fake, "flux-pro-1.1", prompt="FAILME")


def test_out_of_credits_is_an_upstream_error_not_retried(fake: FakeBFL) -> None:
    fake.credits = 1.0
    with pytest.raises(UpstreamError, match="Insufficient credits"):
        generate(fake, "flux-pro-1.1")
    assert len(fake.generation_requests()) == 1


def test_garbage_and_empty_answers_are_upstream_errors(fake: FakeBFL) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, "flux-pro-1.1", prompt="GARBAGE")
    with pytest.raises(UpstreamError, match=r"without result\.sample"):
        generate(fake, "flux-pro-1.1", prompt="EMPTY")


def test_bad_credentials_are_an_upstream_error_not_a_401(fake: FakeBFL) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, "flux-pro-1.1", key="bfl-wrong")


def test_an_expired_sample_url_is_an_upstream_error(fake: FakeBFL) -> None:
    fake.sample_ttl_s = -1
    with pytest.raises(UpstreamError, match="download failed"):
        generate(fake, "flux-pro-1.1")


def test_the_deadline_bounds_the_polling(fake: FakeBFL, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2.5 s against a task Pending for 4: the deadline also bounds the submit before the polls, which
    # took the whole of a 1 s deadline on a loaded machine (a parallel test run on a slow VM); with
    # 2.5 s there is time left to poll (every 0.02 s here) whatever the submit took.
    monkeypatch.setattr(fake, "slow_s", 4.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):  # "still Pending", or "did not answer" when a poll is cut off
        generate(fake, "flux-pro-1.1", prompt="SLOW", deadline=time.monotonic() + 2.5)
    assert time.monotonic() - started < 3.2
    assert len(polls(fake)) >= 2  # (it kept polling until the deadline; how often depends on the load)


def test_the_key_only_travels_to_bfl_hosts() -> None:
    provider = BFLProvider.create(ProviderConfig("bfl", "k", "https://api.bfl.ai/v1"), Settings())
    regional = "https://api.us1.bfl.ai/v1/get_result?id=t1"
    assert provider._poll_url(regional, "t1") == regional
    assert provider._poll_url("https://api.bfl.ai/v1/get_result?id=t1", "t1").startswith("https://api.bfl.ai")
    for foreign in ("https://evil.example/v1/get_result?id=t1", "http://api.us1.bfl.ai/v1/get_result?id=t1",
                    "https://api.us1.bfl.ai/v1/get_result", None):  # fmt: skip
        assert provider._poll_url(foreign, "t1") == "/get_result?id=t1"
    run(provider.aclose())


def test_the_fakes_answers_match_the_published_schema(fake: FakeBFL) -> None:
    submitted = json.loads(
        fake._submit("flux-pro-1.1", {"prompt": "a fox", "width": 1024, "height": 768}).body
    )
    check_body("bfl-flux.json", "AsyncResponse", submitted, closed=True)
    for _ in range(FakeBFL.pending_polls + 1):
        check_body("bfl-flux.json", "ResultResponse", json.loads(fake._result(submitted["id"]).body))
    check_body("bfl-flux.json", "ResultResponse", json.loads(fake._result("nope").body))


# --- reference images (Kontext input_image, Redux image_prompt) ---

PNG_REF = ReferenceImage(png(), "image/png", 8, 8)
JPEG_REF = ReferenceImage(jpeg(), "image/jpeg", 8, 8)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_kontext_edit_sends_the_image_as_raw_base64_input_image(fake: FakeBFL) -> None:
    result = generate(fake, "flux-kontext-pro", size=Size(1536, 1024), reference_image=PNG_REF,
                      prompt="make the fox blue", options={"seed": 3.0})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/flux-kontext-pro" and sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "prompt": "make the fox blue", "aspect_ratio": "3:2", "input_image": b64(png()), "seed": 3
    }  # fmt: skip
    check_body("bfl-flux.json", "FluxKontextProInputs", sent.json, closed=True)
    (task,) = fake.tasks.values()
    assert task.inputs == {"input_image": png()}  # the bytes arrived intact
    assert [(image.data, image.media_type) for image in result.images] == [(png(), "image/png")]
    assert result.upstream_request_id == task.id and list(result.warnings) == []


def test_kontext_takes_several_input_images_as_input_image_2_to_4(fake: FakeBFL) -> None:
    generate(fake, "flux-kontext-pro", input_images=(PNG_REF, JPEG_REF, PNG_REF), prompt="combine")
    (sent,) = fake.generation_requests()
    check_body("bfl-flux.json", "FluxKontextProInputs", sent.json, closed=True)
    (task,) = fake.tasks.values()
    assert task.inputs == {"input_image": png(), "input_image_2": jpeg(), "input_image_3": png()}


def test_pro_11_takes_the_reference_as_a_redux_image_prompt(fake: FakeBFL) -> None:
    result = generate(fake, "flux-pro-1.1", size=Size(1024, 768), reference_image=JPEG_REF)
    (sent,) = fake.generation_requests()
    assert sent.json == {
        "prompt": "a red fox in snow",
        "width": 1024,
        "height": 768,
        "image_prompt": b64(jpeg()),
    }
    (task,) = fake.tasks.values()
    assert task.inputs == {"image_prompt": jpeg()}
    assert [(image.data, image.media_type) for image in result.images] == [(jpeg(), "image/jpeg")]


def test_ultra_takes_an_image_prompt_and_its_strength(fake: FakeBFL) -> None:
    result = generate(fake, "flux-pro-1.1-ultra", size=Size(1024, 1024), reference_image=PNG_REF,
                      output_format="webp", options={"image_prompt_strength": 0.35, "raw": True})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.json == {
        "prompt": "a red fox in snow", "aspect_ratio": "1:1", "image_prompt": b64(png()),
        "output_format": "webp", "image_prompt_strength": 0.35, "raw": True,
    }  # fmt: skip
    assert next(iter(fake.tasks.values())).inputs == {"image_prompt": png()}
    assert result.images[0].media_type == "image/webp" and list(result.warnings) == []
    body, _ = request_body(
        call("flux-pro-1.1-ultra", reference_image=PNG_REF, options={"image_prompt_strength": 1})
    )
    assert body["image_prompt_strength"] == 1.0 and isinstance(body["image_prompt_strength"], float)


def test_n_edits_send_the_same_image_to_every_task(fake: FakeBFL) -> None:
    result = generate(fake, "flux-kontext-pro", n=2, reference_image=JPEG_REF)
    assert len(result.images) == 2
    assert [task.inputs for task in fake.tasks.values()] == [{"input_image": jpeg()}] * 2


def test_a_gif_reference_is_sent_as_png(fake: FakeBFL) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 240)).save(out, format="GIF")
    generate(fake, "flux-kontext-pro", reference_image=ReferenceImage(out.getvalue(), "image/gif", 8, 8))
    (task,) = fake.tasks.values()
    with Image.open(io.BytesIO(task.inputs["input_image"])) as sent:
        assert sent.format == "PNG" and sent.size == (8, 8)
        assert sent.convert("RGB").getpixel((3, 3)) == (10, 120, 240)


def test_image_prompt_strength_needs_an_image_and_ultra(fake: FakeBFL) -> None:
    result = generate(fake, "flux-pro-1.1-ultra", options={"image_prompt_strength": 0.5})
    assert "image_prompt_strength" not in fake.generation_requests()[0].json
    strength = "providerOptions.bfl.image_prompt_strength"
    assert result.warnings == [unsupported(strength, "it applies only with a reference_image")]
    body, warnings = request_body(
        call("flux-kontext-pro", reference_image=PNG_REF, options={"image_prompt_strength": 0.5})
    )
    assert "image_prompt_strength" not in body
    assert warnings == [unsupported(strength, "flux-kontext-pro does not take it")]


def test_a_malformed_strength_is_a_400_before_any_call(fake: FakeBFL) -> None:
    for value in ("strong", True):
        with pytest.raises(BadRequest, match="image_prompt_strength must be a number"):
            generate(
                fake, "flux-pro-1.1-ultra", reference_image=PNG_REF, options={"image_prompt_strength": value}
            )
    assert fake.requests == []


def test_an_out_of_range_strength_is_the_providers_400(fake: FakeBFL) -> None:
    with pytest.raises(BadRequest, match="maximum of 1"):
        generate(fake, "flux-pro-1.1-ultra", reference_image=PNG_REF, options={"image_prompt_strength": 1.5})


def test_an_edit_the_provider_moderates_is_a_content_policy_violation(fake: FakeBFL) -> None:
    with pytest.raises(ContentPolicyViolation, match="Request Moderated"):
        generate(fake, "flux-kontext-pro", prompt="BLOCKME edit", reference_image=PNG_REF)
    assert len(fake.generation_requests()) == 1
    assert next(iter(fake.tasks.values())).inputs == {"input_image": png()}


def test_without_a_reference_image_no_image_field_is_sent() -> None:
    for model in ("flux-pro-1.1", "flux-pro-1.1-ultra", "flux-kontext-pro"):
        size = Size(1024, 768)
        body, warnings = request_body(call(model, size=size))
        assert set(body) == {"prompt", "width", "height"} or set(body) == {"prompt", "aspect_ratio"}
        assert not {"input_image", "image_prompt", "image_prompt_strength"} & set(body) and warnings == []


def test_a_model_without_image_input_refuses_a_reference_before_any_call(fake: FakeBFL) -> None:
    with pytest.raises(BadRequest, match="cannot take a reference_image") as caught:
        generate(fake, "flux-dev", reference_image=PNG_REF)
    assert caught.value.param == "reference_image" and fake.requests == []


def test_the_catalog_offers_reference_images_on_every_bfl_model() -> None:
    catalog = load_catalog()
    for model_id in (
        "bfl/flux-pro-1.1",
        "bfl/flux-pro-1.1-ultra",
        "bfl/flux-kontext-pro",
        "bfl/flux-pro-1.0-fill",
    ):
        model = catalog.resolve(model_id)
        assert model.capabilities.reference_image and model.upstream_id in bfl.IMAGE_FIELDS


@pytest.mark.parametrize(
    "value", ["data:image/png;base64," + b64(png()), "https://x.test/a.png", b64(b"not an image"), "%%%"]
)
def test_the_fake_refuses_reference_images_that_are_not_raw_base64_images(fake: FakeBFL, value: str) -> None:
    reply = httpx.post(
        f"{fake.url}/v1/flux-kontext-pro",
        headers={"x-key": FakeBFL.api_key},
        json={"prompt": "edit", "input_image": value},
    )
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "input_image"]
    assert fake.tasks == {}


def test_the_fake_reports_input_megapixels(fake: FakeBFL) -> None:
    submitted = json.loads(
        fake._submit("flux-kontext-pro", {"prompt": "e"}, {"input_image": png(1000, 500)}).body
    )
    check_body("bfl-flux.json", "AsyncResponse", submitted, closed=True)
    assert submitted["input_mp"] == 0.5


# --- FLUX.1 Fill [pro]: image + a black-and-white mask (white = fill) made from the gateway's


def test_fill_sends_the_image_and_a_white_where_transparent_mask(fake: FakeBFL) -> None:
    photo = ReferenceImage(jpeg(32, 16), "image/jpeg", 32, 16)
    mask = ReferenceImage(transparent_right_half(32, 16), "image/png", 32, 16)
    result = generate(fake, "flux-pro-1.0-fill", size=Size(32, 16), input_images=(photo,), mask=mask,
                      output_format="png", options={"steps": 30, "guidance": 42.5, "seed": 5})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/flux-pro-1.0-fill"
    check_body("bfl-flux.json", "FluxProFillInputs", sent.json, closed=True)
    assert {key: value for key, value in sent.json.items() if key != "mask"} == {
        "prompt": "a red fox in snow", "image": b64(jpeg(32, 16)), "output_format": "png", "steps": 30,
        "guidance": 42.5, "seed": 5,
    }  # fmt: skip
    (task,) = fake.tasks.values()
    assert task.inputs["image"] == jpeg(32, 16)
    with Image.open(io.BytesIO(task.inputs["mask"])) as converted:
        assert (converted.mode, converted.size) == ("L", (32, 16))
        assert converted.getpixel((30, 8)) == 255 and converted.getpixel((2, 8)) == 0  # white: fill
        assert {value for _, value in converted.getcolors() or []} == {0, 255}
    assert result.images[0].media_type == "image/png" and list(result.warnings) == []


def test_fill_without_a_mask_uses_the_images_transparency_and_keeps_its_size(fake: FakeBFL) -> None:
    picture = ReferenceImage(transparent_right_half(16, 16), "image/png", 16, 16)
    result = generate(fake, "flux-pro-1.0-fill", input_images=(picture,), options={"raw": True})
    (task,) = fake.tasks.values()
    with Image.open(io.BytesIO(task.inputs["mask"])) as converted:
        assert converted.getpixel((12, 3)) == 255 and converted.getpixel((3, 3)) == 0
    assert [str(warning) for warning in result.warnings] == [
        "providerOptions.bfl.raw ignored: flux-pro-1.0-fill does not take it",
        "size ignored: 1024x1024 asked; the BFL Fill edit keeps the input image's size",
    ]
    assert not {"width", "height", "aspect_ratio"} & set(fake.generation_requests()[0].json)


def test_fill_refusals_before_calling(fake: FakeBFL) -> None:
    with pytest.raises(InvalidMask, match="no transparent pixels"):
        generate(fake, "flux-pro-1.0-fill", input_images=(PNG_REF,))
    with pytest.raises(BadRequest) as caught:
        generate(fake, "flux-pro-1.0-fill", input_images=(PNG_REF,), options={"steps": 10})
    assert caught.value.param == "providerOptions.bfl.steps"
    with pytest.raises(BadRequest, match="inpaints an input image"):
        generate(fake, "flux-pro-1.0-fill")
    steps = request_body(call("flux-pro-1.1", options={"steps": 20, "guidance": 3}))[1]
    assert [str(w) for w in steps] == [
        "providerOptions.bfl.steps ignored: flux-pro-1.1 does not take it",
        "providerOptions.bfl.guidance ignored: flux-pro-1.1 does not take it",
    ]
    assert fake.requests == []


def test_a_fill_bfl_moderates_is_a_content_policy_violation(fake: FakeBFL) -> None:
    mask = ReferenceImage(transparent_right_half(8, 8), "image/png", 8, 8)
    with pytest.raises(ContentPolicyViolation, match="Request Moderated"):
        generate(fake, "flux-pro-1.0-fill", prompt="BLOCKME", input_images=(PNG_REF,), mask=mask)
    assert len(fake.generation_requests()) == 1


def test_the_fake_checks_fill_masks(fake: FakeBFL) -> None:
    """The fake's own fidelity: the mask must match the image, and an opaque image needs one."""
    url, auth = f"{fake.url}/v1/flux-pro-1.0-fill", {"x-key": FakeBFL.api_key}
    cases: list[dict[str, object]] = [
        {"prompt": "x", "image": b64(png(8, 8)), "mask": b64(png(4, 4))},
        {"prompt": "x", "image": b64(png(8, 8))},
        {"prompt": "x", "image": b64(png(8, 8)), "mask": b64(png(8, 8)), "steps": 5},
        {"prompt": "x", "image": b64(png(8, 8)), "width": 8},
    ]
    for body in cases:
        reply = httpx.post(url, headers=auth, json=body)
        assert reply.status_code == 422, (body.keys(), reply.text)
    assert fake.tasks == {}
    ok = httpx.post(url, headers=auth, json={"prompt": "x", "image": b64(transparent_right_half(8, 8))})
    assert ok.status_code == 200 and fake.tasks[ok.json()["id"]].inputs == {
        "image": transparent_right_half(8, 8)
    }
