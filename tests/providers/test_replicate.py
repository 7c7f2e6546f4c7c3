"""The Replicate adapter against a fake of Replicate's predictions API: create with Prefer: wait,
polling, cancellation, downloads, and every failure path."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import jsonschema
import pytest

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig, Settings
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
from service.providers import jobs, upstream
from service.providers.base import ImageCallResult, unsupported
from service.providers.replicate import ReplicateProvider, request_body
from tests.fakes.base import SCHEMAS, jpeg, png, webp
from tests.fakes.replicate import VERSIONS, FakeReplicate
from tests.providers.conftest import call, generate_with, run, shared_fake

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
PRO = "black-forest-labs/flux-1.1-pro"
PNG_REF = ReferenceImage(png(), "image/png", 8, 8)


@pytest.fixture(autouse=True)
def fast_polls_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplicateProvider, "poll_interval_s", 0.01)
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)
    monkeypatch.setattr(upstream, "MAX_RETRY_AFTER_S", 0.05)


server, fake = shared_fake(FakeReplicate)


def config(fake: FakeReplicate, key: str = FakeReplicate.api_key) -> ProviderConfig:
    return ProviderConfig("replicate", key, f"{fake.url}/v1")


def generate(
    fake: FakeReplicate, model: str, key: str = FakeReplicate.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(ReplicateProvider.create, config(fake, key), model, **fields)


def reads(fake: FakeReplicate) -> list[str]:
    return [r.path for r in fake.requests if r.method == "GET" and r.path.startswith("/v1/")]


def test_a_prediction_that_ends_inside_the_wait_is_read_from_the_create_answer(fake: FakeReplicate) -> None:
    result = generate(fake, SCHNELL, n=2, size=Size(1280, 720), output_format="jpeg",
                      options={"seed": 11.0, "num_inference_steps": 4, "go_fast": False})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == f"/v1/models/{SCHNELL}/predictions"
    assert sent.headers["authorization"] == "Bearer r8_fake_token"
    wait = int(sent.headers["prefer"].removeprefix("wait="))
    assert 25 <= wait <= 29  # the seconds left before the call's deadline (30 s)
    assert sent.json == {"input": {
        "prompt": "a red fox in snow", "aspect_ratio": "16:9", "num_outputs": 2, "output_format": "jpg",
        "seed": 11, "num_inference_steps": 4, "go_fast": False,
    }}  # fmt: skip
    (prediction_id,) = fake.jobs
    assert reads(fake) == [] and fake.cancels() == []
    downloads = [r for r in fake.requests if r.path.startswith("/delivery/")]
    assert len(downloads) == 2 and all("authorization" not in r.headers for r in downloads)
    assert [(i.data, i.media_type) for i in result.images] == [(jpeg(), "image/jpeg")] * 2
    assert result.upstream_request_id == prediction_id and list(result.warnings) == []


def test_a_prediction_still_running_is_polled_at_urls_get(fake: FakeReplicate) -> None:
    fake.finishes_in_wait = False
    result = generate(fake, SCHNELL)
    (prediction_id,) = fake.jobs
    assert reads(fake) == [f"/v1/predictions/{prediction_id}"] * 2  # processing, then succeeded
    assert [(i.data, i.media_type) for i in result.images] == [(webp(), "image/webp")]


def test_a_prediction_of_several_minutes_on_the_fakes_clock_succeeds(fake: FakeReplicate) -> None:
    fake.tick_s = 30.0
    result = generate(fake, SCHNELL, prompt="SLOW lighthouse")
    assert len(result.images) == 1 and len(reads(fake)) == FakeReplicate.slow_s / 30


def test_a_prediction_running_at_the_deadline_is_a_504_and_is_cancelled(fake: FakeReplicate) -> None:
    reported: list[str] = []
    with pytest.raises(UpstreamTimeout):
        generate(
            fake,
            SCHNELL,
            prompt="SLOW lighthouse",
            deadline=time.monotonic() + 0.3,
            report_job=reported.append,
        )
    (cancel,) = fake.cancels()
    (prediction,) = fake.jobs.values()
    assert reported == [prediction.id]
    assert (cancel.method, cancel.path) == ("POST", f"/v1/predictions/{prediction.id}/cancel")
    assert cancel.headers["authorization"] == "Bearer r8_fake_token" and prediction.canceled


def test_a_prediction_the_gateway_stops_waiting_for_is_cancelled(fake: FakeReplicate) -> None:
    async def go() -> None:
        provider = ReplicateProvider.create(config(fake), Settings())
        try:
            task = asyncio.create_task(provider.generate(call(SCHNELL, prompt="SLOW")))
            for _ in range(500):
                if len(reads(fake)) >= 3:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.gather(*jobs._detached)
        finally:
            await provider.aclose()

    run(go())
    (prediction,) = fake.jobs.values()
    assert len(fake.cancels()) == 1 and prediction.canceled


def test_a_prediction_that_fails_half_way_is_a_502_and_is_not_cancelled(fake: FakeReplicate) -> None:
    with pytest.raises(UpstreamError, match="CUDA error"):
        generate(fake, SCHNELL, prompt="JOBFAIL lighthouse")
    assert fake.cancels() == [] and len(reads(fake)) >= 1


def test_an_nsfw_failure_is_a_content_policy_violation(fake: FakeReplicate) -> None:
    with pytest.raises(ContentPolicyViolation, match="NSFW content detected"):
        generate(fake, SCHNELL, prompt="BLOCKME now")
    fake.finishes_in_wait = False
    with pytest.raises(ContentPolicyViolation):
        generate(fake, SCHNELL, prompt="BLOCKME again")
    assert fake.cancels() == []


def test_a_single_file_output_is_one_image(fake: FakeReplicate) -> None:
    result = generate(fake, PRO, size=Size(1440, 256), output_format="png",
                      options={"safety_tolerance": 5, "prompt_upsampling": True})  # fmt: skip
    assert fake.generation_requests()[0].json == {"input": {
        "prompt": "a red fox in snow", "aspect_ratio": "custom", "width": 1440, "height": 256,
        "output_format": "png", "safety_tolerance": 5, "prompt_upsampling": True,
    }}  # fmt: skip
    assert [(i.data, i.media_type) for i in result.images] == [(png(), "image/png")]


def test_a_pinned_version_is_created_at_predictions(fake: FakeReplicate) -> None:
    (version,) = VERSIONS
    result = generate(fake, f"{SCHNELL}:{version}")
    (sent,) = fake.generation_requests()
    assert sent.path == "/v1/predictions" and sent.json["version"] == version and len(result.images) == 1


def test_flux_dev_takes_the_reference_as_a_data_url(fake: FakeReplicate) -> None:
    generate(fake, DEV, reference_image=PNG_REF, options={"prompt_strength": 0.7, "guidance": 3})
    model_input = fake.generation_requests()[0].json["input"]
    assert model_input["image"] == "data:image/png;base64," + base64.b64encode(png()).decode()
    assert (model_input["prompt_strength"], model_input["guidance"]) == (0.7, 3.0)


def test_a_model_without_image_input_refuses_a_reference_before_any_call(fake: FakeReplicate) -> None:
    with pytest.raises(EditNotSupported):
        generate(fake, SCHNELL, reference_image=PNG_REF)
    assert fake.requests == []


def test_sizes_that_do_not_map_are_refused_before_any_call(fake: FakeReplicate) -> None:
    with pytest.raises(InvalidSize):
        generate(fake, SCHNELL, size=Size(1000, 999))
    with pytest.raises(InvalidSize):
        generate(fake, PRO, size=Size(1000, 1000))
    assert fake.requests == []


def test_options_that_do_not_apply_are_dropped_with_a_warning(fake: FakeReplicate) -> None:
    result = generate(fake, SCHNELL, style="vivid", options={"guidance": 3, "safety_tolerance": 2})
    assert "guidance" not in fake.generation_requests()[0].json["input"]
    assert result.warnings == [
        unsupported("providerOptions.replicate.guidance", f"{SCHNELL} does not take it"),
        unsupported("providerOptions.replicate.safety_tolerance", f"{SCHNELL} does not take it"),
        unsupported("style", "Replicate has no equivalent"),
    ]


def test_an_input_replicate_refuses_is_a_400_with_its_message(fake: FakeReplicate) -> None:
    with pytest.raises(BadRequest, match="greater than the maximum of 4"):
        generate(fake, SCHNELL, options={"num_inference_steps": 20})  # schnell takes 1-4


def test_rate_limits_and_server_errors_are_retried_then_mapped(fake: FakeReplicate) -> None:
    assert len(generate(fake, SCHNELL, prompt="RATELIMIT_ONCE").images) == 1
    assert len(generate(fake, SCHNELL, prompt="FLAKY").images) == 1
    with pytest.raises(RateLimited):
        generate(fake, SCHNELL, prompt="RATELIMIT")
    with pytest.raises(UpstreamError, match="Something went wrong"):
        generate(fake, SCHNELL, prompt="FAILME")


def test_malformed_answers_are_a_502(fake: FakeReplicate) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, SCHNELL, prompt="GARBAGE")
    assert generate(fake, SCHNELL, prompt="EMPTY").images == []  # fanout.py makes it a 502


def test_a_rejected_token_is_an_upstream_error(fake: FakeReplicate) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, SCHNELL, key="wrong")


def test_every_catalog_size_maps_exactly() -> None:
    models = [m for m in load_catalog() if m.provider == "replicate"]
    assert {m.id for m in models} >= {f"replicate/{SCHNELL}", f"replicate/{DEV}", f"replicate/{PRO}"}
    for model in models:
        assert model.upstream_id == model.id.removeprefix("replicate/")
        for size in model.capabilities.sizes:
            model_input = request_body(call(model.upstream_id, size=size))[0]["input"]
            width, height = (int(side) for side in model_input["aspect_ratio"].split(":"))
            assert width * size.height == height * size.width, (model.id, size)


def test_the_fakes_predictions_are_replicates_own_shape(fake: FakeReplicate) -> None:
    schema = json.loads((SCHEMAS / "replicate.json").read_text())
    headers = {"authorization": f"Bearer {FakeReplicate.api_key}"}
    fake.finishes_in_wait = False
    created = httpx.post(f"{fake.url}/v1/models/{SCHNELL}/predictions", headers=headers,
                         json={"input": {"prompt": "x"}}).json()  # fmt: skip
    ended = httpx.get(created["urls"]["get"], headers=headers).json()
    for prediction in (created, ended):
        jsonschema.validate(prediction, {**schema, "$ref": "#/$defs/Prediction"})
    assert created["status"] == "starting" and ended["status"] == "processing"
