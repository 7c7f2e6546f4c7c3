"""The BFL adapter against a fake BFL FLUX API: submit, poll, download, and every failure path."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from service.catalog import load_catalog
from service.config import ProviderConfig, Settings
from service.errors import BadRequest, ContentPolicyViolation, RateLimited, UpstreamError, UpstreamTimeout
from service.providers import bfl, upstream
from service.providers.base import ImageCallResult
from service.providers.bfl import BFLProvider, request_body
from service.sizes import Size
from tests.fakes.base import Reply, check_body, jpeg, png
from tests.fakes.bfl import FakeBFL
from tests.providers.conftest import call, run


@pytest.fixture(autouse=True)
def fast_polls_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BFLProvider, "poll_interval_s", 0.02)
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBFL]:
    with FakeBFL().running() as running:
        assert isinstance(running, FakeBFL)
        yield running


@pytest.fixture
def fake(server: FakeBFL) -> FakeBFL:
    """The module's fake, as new (one server per module: each shutdown costs half a second)."""
    server.requests.clear()
    server.seen.clear()
    server.tasks.clear()
    server.credits = None
    server.sample_ttl_s = FakeBFL.sample_ttl_s
    return server


def generate(fake: FakeBFL, model: str, key: str = FakeBFL.api_key, **fields: object) -> ImageCallResult:
    async def go() -> ImageCallResult:
        provider = BFLProvider.create(ProviderConfig("bfl", key, f"{fake.url}/v1"), Settings())
        try:
            return await provider.generate(call(model, **fields))
        finally:
            await provider.aclose()

    return run(go())


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
    assert any("quality" in w for w in result.warnings) and any("background" in w for w in result.warnings)
    assert any("raw" in w and "webhook_url" in w for w in result.warnings)


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


def test_the_deadline_bounds_the_polling(fake: FakeBFL) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):  # "still Pending", or "did not answer" when a poll is cut off
        generate(fake, "flux-pro-1.1", prompt="SLOW", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.2
    assert len(polls(fake)) > 3


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
