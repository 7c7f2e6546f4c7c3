"""The fal adapter against a fake of fal's queue API: submit, poll, result, download, cancellation,
and every failure path."""

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
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers import jobs, upstream
from service.providers.base import ImageCallResult, other, unsupported
from service.providers.fal import FalProvider, request_body
from tests.fakes.base import SCHEMAS, check_body, jpeg, png
from tests.fakes.fal import FakeFal
from tests.providers.conftest import call, generate_with, run, shared_fake


@pytest.fixture(autouse=True)
def fast_polls_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FalProvider, "poll_interval_s", 0.01)
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)


server, fake = shared_fake(FakeFal)
PNG_REF = ReferenceImage(png(), "image/png", 8, 8)


def config(fake: FakeFal, key: str = FakeFal.api_key) -> ProviderConfig:
    return ProviderConfig("fal", key, fake.url)


def generate(fake: FakeFal, app: str, key: str = FakeFal.api_key, **fields: object) -> ImageCallResult:
    return generate_with(FalProvider.create, config(fake, key), app, **fields)


def paths(fake: FakeFal, method: str = "GET") -> list[str]:
    return [r.path for r in fake.requests if r.method == method and not r.path.startswith("/files/")]


def test_submit_poll_fetch_and_download(fake: FakeFal) -> None:
    result = generate(fake, "fal-ai/flux/dev", n=2, size=Size(1024, 768), output_format="png",
                      options={"seed": 42.0, "num_inference_steps": 28.0, "guidance_scale": 3.5})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == ("/fal-ai/flux/dev", "Key fal-fake-key")
    assert sent.json == {
        "prompt": "a red fox in snow", "num_images": 2, "image_size": {"width": 1024, "height": 768},
        "output_format": "png", "seed": 42, "num_inference_steps": 28, "guidance_scale": 3.5,
    }  # fmt: skip
    check_body("fal.json", "FluxSchnellInput", sent.json)
    (job_id,) = fake.jobs
    polls = paths(fake)
    # status and result drop the app's sub-path (fal-ai/flux, not fal-ai/flux/dev)
    assert polls[:-1] == [f"/fal-ai/flux/requests/{job_id}/status"] * 2
    assert polls[-1] == f"/fal-ai/flux/requests/{job_id}"
    downloads = [r for r in fake.requests if r.path.startswith("/files/")]
    assert len(downloads) == 2 and all("authorization" not in r.headers for r in downloads)
    assert [(image.data, image.media_type) for image in result.images] == [(png(), "image/png")] * 2
    assert result.upstream_request_id == job_id and list(result.warnings) == [] and fake.cancels() == []


def test_a_job_of_several_minutes_on_the_fakes_clock_completes(fake: FakeFal) -> None:
    fake.tick_s = 30.0  # each poll is half a minute of the fake's clock; SLOW runs 5 minutes
    result = generate(fake, "fal-ai/flux/schnell", prompt="SLOW lighthouse")
    assert len(result.images) == 1 and fake.clock >= FakeFal.slow_s
    assert len(paths(fake)) == FakeFal.slow_s / 30 + 1  # the polls, then the result


def test_a_job_pending_at_the_deadline_is_a_504_and_is_cancelled_upstream(fake: FakeFal) -> None:
    reported: list[str] = []
    with pytest.raises(UpstreamTimeout):
        generate(fake, "fal-ai/flux/schnell", prompt="SLOW lighthouse", deadline=time.monotonic() + 0.3,
                 report_job=reported.append)  # fmt: skip
    (cancel,) = fake.cancels()
    (job,) = fake.jobs.values()
    assert reported == [job.id]  # for the ledger, which charges the job at its bound
    assert cancel.path == f"/fal-ai/flux/requests/{job.id}/cancel" and job.cancelled
    assert cancel.headers["authorization"] == "Key fal-fake-key"


def test_a_job_the_gateway_stops_waiting_for_is_cancelled_upstream(fake: FakeFal) -> None:
    async def go() -> None:
        provider = FalProvider.create(config(fake), Settings())
        try:
            task = asyncio.create_task(provider.generate(call("fal-ai/flux/schnell", prompt="SLOW")))
            for _ in range(500):  # a few polls, then the gateway's upper limit cancels the call
                if len(paths(fake)) >= 3:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.gather(*jobs._detached)  # the cancel request, sent on its own
        finally:
            await provider.aclose()

    run(go())
    (job,) = fake.jobs.values()
    assert len(fake.cancels()) == 1 and job.cancelled


def test_a_job_that_fails_half_way_is_a_502_and_is_not_cancelled(fake: FakeFal) -> None:
    with pytest.raises(UpstreamError, match="Runner disconnected unexpectedly"):
        generate(fake, "fal-ai/flux/schnell", prompt="JOBFAIL lighthouse")
    assert fake.cancels() == []  # it ended: there is nothing to cancel


def test_a_refused_result_is_a_content_policy_violation(fake: FakeFal) -> None:
    with pytest.raises(ContentPolicyViolation, match="flagged by a content checker"):
        generate(fake, "fal-ai/flux/schnell", prompt="BLOCKME now")
    with pytest.raises(ContentPolicyViolation):
        generate(fake, "fal-ai/flux/schnell", prompt="BLOCKME_SUBMIT now")
    assert fake.cancels() == []


def test_images_the_safety_checker_flagged_are_dropped_with_a_warning(fake: FakeFal) -> None:
    result = generate(fake, "fal-ai/flux/schnell", prompt="NSFW_ONE", n=3)
    assert len(result.images) == 2
    assert result.warnings == [other("n", "fal's safety checker removed 1 image(s)")]
    with pytest.raises(ContentPolicyViolation, match="flagged every image"):
        generate(fake, "fal-ai/flux/schnell", prompt="NSFW_ALL", n=2)


def test_rate_limits_and_server_errors_are_retried_then_mapped(fake: FakeFal) -> None:
    assert len(generate(fake, "fal-ai/flux/schnell", prompt="RATELIMIT_ONCE").images) == 1
    assert len(generate(fake, "fal-ai/flux/schnell", prompt="FLAKY").images) == 1
    with pytest.raises(RateLimited):
        generate(fake, "fal-ai/flux/schnell", prompt="RATELIMIT")
    with pytest.raises(UpstreamError, match="Internal server error"):
        generate(fake, "fal-ai/flux/schnell", prompt="FAILME")


def test_malformed_answers_are_a_502(fake: FakeFal) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, "fal-ai/flux/schnell", prompt="GARBAGE")
    assert generate(fake, "fal-ai/flux/schnell", prompt="EMPTY").images == []  # fanout.py makes it a 502


def test_a_rejected_key_is_an_upstream_error(fake: FakeFal) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, "fal-ai/flux/schnell", key="wrong")


def test_urls_on_another_host_are_not_given_the_key(fake: FakeFal, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fake._urls

    def elsewhere(job: object) -> dict[str, str]:
        urls = real(job)  # type: ignore[arg-type]
        return {name: value.replace(fake.url, "https://elsewhere.test") for name, value in urls.items()}

    monkeypatch.setattr(fake, "_urls", elsewhere)
    result = generate(fake, "fal-ai/flux/schnell")
    (job_id,) = fake.jobs
    assert len(result.images) == 1 and paths(fake)[-1] == f"/fal-ai/flux/requests/{job_id}"


def test_ultra_sends_an_aspect_ratio_and_the_reference_as_a_data_url(fake: FakeFal) -> None:
    options = {"raw": True, "image_prompt_strength": 0.4, "safety_tolerance": "5"}
    result = generate(
        fake, "fal-ai/flux-pro/v1.1-ultra", size=Size(1920, 1080), reference_image=PNG_REF, options=options
    )
    body = fake.generation_requests()[0].json
    assert body == {
        "prompt": "a red fox in snow", "num_images": 1, "aspect_ratio": "16:9", "raw": True,
        "image_url": "data:image/png;base64," + base64.b64encode(png()).decode(),
        "image_prompt_strength": 0.4, "safety_tolerance": "5",
    }  # fmt: skip
    assert [image.media_type for image in result.images] == ["image/jpeg"]


def test_a_text_only_app_refuses_a_reference_before_any_call(fake: FakeFal) -> None:
    with pytest.raises(EditNotSupported) as caught:
        generate(fake, "fal-ai/flux/dev", reference_image=PNG_REF)
    assert caught.value.param == "reference_image" and fake.requests == []


def test_options_for_other_apps_are_dropped_with_a_warning(fake: FakeFal) -> None:
    result = generate(fake, "fal-ai/flux-pro/v1.1", quality="hd",
                      options={"num_inference_steps": 4, "safety_tolerance": "2", "loras": []})  # fmt: skip
    assert fake.generation_requests()[0].json == {
        "prompt": "a red fox in snow", "num_images": 1, "image_size": {"width": 1024, "height": 1024},
        "safety_tolerance": "2",
    }  # fmt: skip
    assert result.warnings == [
        unsupported("providerOptions.fal.num_inference_steps", "fal-ai/flux-pro/v1.1 does not take it"),
        unsupported(
            "providerOptions.fal.loras",
            "not an option of fal (it takes seed, num_inference_steps, guidance_scale, "
            "enable_safety_checker, acceleration, safety_tolerance, enhance_prompt, raw, "
            "image_prompt_strength)",
        ),
        unsupported("quality", "fal has no equivalent"),
    ]


def test_malformed_options_are_a_400_before_any_call(fake: FakeFal) -> None:
    for options in ({"num_inference_steps": 80}, {"safety_tolerance": 3}, {"acceleration": "max"}):
        with pytest.raises(BadRequest, match=r"providerOptions\.fal"):
            generate(fake, "fal-ai/flux/dev", options=options)
    assert fake.requests == []


def test_every_catalog_model_routes_to_its_app_and_every_size_is_sent_exactly() -> None:
    catalog = load_catalog()
    models = [model for model in catalog if model.provider == "fal"]
    assert {m.id for m in models} >= {"fal/flux/dev", "fal/flux-pro/v1.1", "fal/flux-pro/v1.1-ultra"}
    for model in models:
        assert model.upstream_id == "fal-ai/" + model.id.removeprefix("fal/")
        for size in model.capabilities.sizes:
            body, _ = request_body(call(model.upstream_id, size=size))
            if "aspect_ratio" in body:
                width, height = (int(side) for side in body["aspect_ratio"].split(":"))
                assert width * size.height == height * size.width, (model.id, size)
            else:
                assert body["image_size"] == {"width": size.width, "height": size.height}


def test_the_fakes_answers_are_fals_own_shapes(fake: FakeFal) -> None:
    schema = json.loads((SCHEMAS / "fal.json").read_text())
    headers = {"authorization": f"Key {FakeFal.api_key}"}
    submitted = httpx.post(f"{fake.url}/fal-ai/flux/schnell", headers=headers, json={"prompt": "x"}).json()
    jsonschema.validate(submitted, {**schema, "$ref": "#/$defs/QueueStatus"})
    for _ in range(2):
        status = httpx.get(submitted["status_url"], headers=headers).json()
        jsonschema.validate(status, {**schema, "$ref": "#/$defs/QueueStatus"})
    assert status["status"] == "COMPLETED"
    output = httpx.get(submitted["response_url"], headers=headers).json()
    jsonschema.validate(output, {**schema, "$ref": "#/$defs/FluxSchnellOutput"})
    assert httpx.get(output["images"][0]["url"]).content == jpeg()
