"""The Fireworks adapter against a fake of Fireworks' FLUX workflows: text_to_image, Kontext submit and
get_result polling, and the failure paths."""

from __future__ import annotations

import base64
import time

import pytest

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    EditNotSupported,
    InvalidSize,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers import upstream
from service.providers.base import ImageCallResult, unsupported
from service.providers.fireworks import FireworksProvider, request_body
from tests.fakes.base import jpeg, png
from tests.fakes.fireworks import FakeFireworks
from tests.providers.conftest import call, generate_with, shared_fake

SCHNELL = "accounts/fireworks/models/flux-1-schnell-fp8"
DEV = "accounts/fireworks/models/flux-1-dev-fp8"
KONTEXT = "accounts/fireworks/models/flux-kontext-pro"
PNG_REF = ReferenceImage(png(), "image/png", 8, 8)


@pytest.fixture(autouse=True)
def fast_polls_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FireworksProvider, "poll_interval_s", 0.01)
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)


server, fake = shared_fake(FakeFireworks)


def generate(
    fake: FakeFireworks, model: str, key: str = FakeFireworks.api_key, **fields: object
) -> ImageCallResult:
    config = ProviderConfig("fireworks", key, f"{fake.url}/inference/v1")
    return generate_with(FireworksProvider.create, config, model, **fields)


def test_text_to_image_as_sent_and_read(fake: FakeFireworks) -> None:
    result = generate(fake, DEV, size=Size(1152, 768), options={"seed": 3.0, "guidance_scale": 3.5,
                                                                "num_inference_steps": 28})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == f"/inference/v1/workflows/{DEV}/text_to_image"
    assert (sent.headers["authorization"], sent.headers["accept"]) == (
        "Bearer fw-fake-key",
        "application/json",
    )
    assert sent.json == {
        "prompt": "a red fox in snow", "aspect_ratio": "3:2", "seed": 3, "guidance_scale": 3.5,
        "num_inference_steps": 28,
    }  # fmt: skip
    assert [(i.data, i.media_type) for i in result.images] == [(png(), "image/png")]
    assert result.upstream_request_id and list(result.warnings) == []


def test_steps_beyond_what_the_price_covers_are_a_400_before_any_call(fake: FakeFireworks) -> None:
    with pytest.raises(BadRequest, match="at most 4") as caught:
        generate(fake, SCHNELL, options={"num_inference_steps": 8})
    assert caught.value.param == "providerOptions.fireworks.num_inference_steps" and fake.requests == []


def test_a_filtered_image_is_a_content_policy_violation(fake: FakeFireworks) -> None:
    with pytest.raises(ContentPolicyViolation, match="CONTENT_FILTERED"):
        generate(fake, SCHNELL, prompt="BLOCKME now")


def test_kontext_is_submitted_polled_and_downloaded(fake: FakeFireworks) -> None:
    result = generate(fake, KONTEXT, size=Size(1280, 720), output_format="jpeg", reference_image=PNG_REF,
                      options={"safety_tolerance": 2, "prompt_upsampling": False})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == f"/inference/v1/workflows/{KONTEXT}"
    assert sent.json == {
        "prompt": "a red fox in snow", "aspect_ratio": "16:9", "output_format": "jpeg",
        "input_image": base64.b64encode(png()).decode(), "safety_tolerance": 2, "prompt_upsampling": False,
    }  # fmt: skip
    (job_id,) = fake.jobs
    polls = fake.polls()
    assert len(polls) == 2 and all(p.json == {"id": job_id} for p in polls)
    assert all(p.path == f"/inference/v1/workflows/{KONTEXT}/get_result" for p in polls)
    (download,) = [r for r in fake.requests if r.path.startswith("/samples/")]
    assert "authorization" not in download.headers
    assert [(i.data, i.media_type) for i in result.images] == [(jpeg(), "image/jpeg")]
    assert result.upstream_request_id == job_id


def test_a_kontext_job_of_several_minutes_on_the_fakes_clock_completes(fake: FakeFireworks) -> None:
    fake.tick_s = 30.0
    result = generate(fake, KONTEXT, prompt="SLOW lighthouse")
    assert len(result.images) == 1 and len(fake.polls()) == FakeFireworks.slow_s / 30


def test_a_kontext_job_pending_at_the_deadline_is_a_504(fake: FakeFireworks) -> None:
    reported: list[str] = []
    with pytest.raises(UpstreamTimeout):
        generate(
            fake,
            KONTEXT,
            prompt="SLOW lighthouse",
            deadline=time.monotonic() + 0.3,
            report_job=reported.append,
        )
    assert len(fake.polls()) >= 2 and reported == list(fake.jobs)


def test_a_kontext_job_that_fails_half_way_is_a_502(fake: FakeFireworks) -> None:
    with pytest.raises(UpstreamError, match="'Error'"):
        generate(fake, KONTEXT, prompt="JOBFAIL lighthouse")


def test_a_moderated_kontext_job_is_a_content_policy_violation(fake: FakeFireworks) -> None:
    with pytest.raises(ContentPolicyViolation, match="Request Moderated"):
        generate(fake, KONTEXT, prompt="BLOCKME now")


def test_text_to_image_refuses_a_reference_and_warns_about_the_format(fake: FakeFireworks) -> None:
    with pytest.raises(EditNotSupported):
        generate(fake, SCHNELL, reference_image=PNG_REF)
    assert fake.requests == []
    result = generate(fake, SCHNELL, output_format="jpeg", options={"safety_tolerance": 2})
    assert result.warnings == [
        unsupported("providerOptions.fireworks.safety_tolerance", f"{SCHNELL} does not take it"),
        unsupported("output_format", f"{SCHNELL} answers PNG"),
    ]


def test_sizes_that_do_not_map_are_refused_before_any_call(fake: FakeFireworks) -> None:
    with pytest.raises(InvalidSize):
        generate(fake, SCHNELL, size=Size(1000, 999))
    assert fake.requests == []


def test_rate_limits_and_server_errors_are_retried_then_mapped(fake: FakeFireworks) -> None:
    assert len(generate(fake, SCHNELL, prompt="RATELIMIT_ONCE").images) == 1
    assert len(generate(fake, KONTEXT, prompt="FLAKY").images) == 1
    with pytest.raises(RateLimited):
        generate(fake, SCHNELL, prompt="RATELIMIT")
    with pytest.raises(UpstreamError, match="Internal server error"):
        generate(fake, KONTEXT, prompt="FAILME")


def test_malformed_answers_are_a_502(fake: FakeFireworks) -> None:
    for prompt in ("GARBAGE", "EMPTY"):
        with pytest.raises(UpstreamError, match="unusable"):
            generate(fake, SCHNELL, prompt=prompt)
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, KONTEXT, prompt="GARBAGE")


def test_a_rejected_key_is_an_upstream_error(fake: FakeFireworks) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, SCHNELL, key="wrong")


def test_every_catalog_size_maps_exactly() -> None:
    models = [m for m in load_catalog() if m.provider == "fireworks"]
    assert {m.upstream_id for m in models} == {SCHNELL, DEV, KONTEXT}
    for model in models:
        assert model.upstream_id == "accounts/fireworks/models/" + model.id.removeprefix("fireworks/")
        for size in model.capabilities.sizes:
            body, _ = request_body(call(model.upstream_id, size=size))
            width, height = (int(side) for side in body["aspect_ratio"].split(":"))
            assert width * size.height == height * size.width, (model.id, size)
