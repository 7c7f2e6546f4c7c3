"""The Together adapter against a fake of Together's images API."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jsonschema
import pytest

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    EditNotSupported,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from service.generation.reference_images import ReferenceImage
from service.providers import upstream
from service.providers.base import ImageCallResult, unsupported
from service.providers.together import TogetherProvider, request_body
from tests.fakes.base import SCHEMAS, check_body, jpeg, png
from tests.fakes.together import FakeTogether
from tests.providers.conftest import call, generate_with, shared_fake

SCHNELL = "black-forest-labs/FLUX.1-schnell"
DEV = "black-forest-labs/FLUX.1-dev"
KONTEXT = "black-forest-labs/FLUX.1-kontext-pro"
PNG_REF = ReferenceImage(png(), "image/png", 8, 8)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)


server, fake = shared_fake(FakeTogether)


def generate(
    fake: FakeTogether, model: str, key: str = FakeTogether.api_key, **fields: object
) -> ImageCallResult:
    return generate_with(
        TogetherProvider.create, ProviderConfig("together", key, f"{fake.url}/v1"), model, **fields
    )


def test_a_generation_as_sent_and_read(fake: FakeTogether) -> None:
    result = generate(fake, SCHNELL, n=2, size=Size(1344, 768), output_format="png",
                      options={"seed": 7.0, "steps": 4, "negative_prompt": "blur"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/generations", "Bearer tg-fake-key")
    assert sent.json == {
        "model": SCHNELL, "prompt": "a red fox in snow", "n": 2, "width": 1344, "height": 768,
        "response_format": "base64", "output_format": "png", "seed": 7, "steps": 4, "negative_prompt": "blur",
    }  # fmt: skip
    check_body("together.json", "ImageRequest", sent.json)
    assert [(i.data, i.media_type) for i in result.images] == [(png(), "image/png")] * 2
    assert result.upstream_request_id is not None and result.upstream_request_id.startswith("oFuwv7Y-")
    assert list(result.warnings) == []


def test_url_items_are_downloaded_without_the_key(fake: FakeTogether) -> None:
    result = generate(fake, SCHNELL, prompt="URLS please")
    (download,) = [r for r in fake.requests if r.path.startswith("/shrt/")]
    assert "authorization" not in download.headers
    assert [(i.data, i.media_type) for i in result.images] == [(jpeg(), "image/jpeg")]


def test_kontext_takes_the_reference_as_a_data_url(fake: FakeTogether) -> None:
    generate(fake, KONTEXT, reference_image=PNG_REF)
    assert (
        fake.generation_requests()[0].json["image_url"]
        == "data:image/png;base64," + base64.b64encode(png()).decode()
    )


def test_a_model_without_image_input_refuses_a_reference_before_any_call(fake: FakeTogether) -> None:
    with pytest.raises(EditNotSupported):
        generate(fake, SCHNELL, reference_image=PNG_REF)
    assert fake.requests == []


def test_options_that_do_not_apply_are_dropped_with_a_warning(fake: FakeTogether) -> None:
    loras = [{"path": "https://huggingface.co/x/y", "scale": 1.0}]
    result = generate(fake, SCHNELL, quality="hd", options={"image_loras": loras, "cfg": 3})
    assert "image_loras" not in fake.generation_requests()[0].json
    assert result.warnings == [
        unsupported("providerOptions.together.image_loras", f"{SCHNELL} does not take it"),
        unsupported(
            "providerOptions.together.cfg",
            "not an option of together (it takes seed, steps, guidance_scale, negative_prompt, "
            "disable_safety_checker, image_loras)",
        ),
        unsupported("quality", "Together has no equivalent"),
    ]
    generate(fake, DEV, options={"image_loras": loras})
    assert fake.generation_requests()[-1].json["image_loras"] == loras


def test_malformed_options_are_a_400_before_any_call(fake: FakeTogether) -> None:
    for options in ({"steps": 0}, {"guidance_scale": "high"}, {"negative_prompt": 3}):
        with pytest.raises(BadRequest):
            generate(fake, SCHNELL, options=options)
    assert fake.requests == []


def test_an_nsfw_answer_is_a_content_policy_violation(fake: FakeTogether) -> None:
    with pytest.raises(ContentPolicyViolation, match="NSFW"):
        generate(fake, SCHNELL, prompt="BLOCKME now")
    assert len(fake.requests) == 1  # never retried


def test_rate_limits_and_server_errors_are_retried_then_mapped(fake: FakeTogether) -> None:
    assert len(generate(fake, SCHNELL, prompt="RATELIMIT_ONCE").images) == 1
    assert len(generate(fake, SCHNELL, prompt="FLAKY").images) == 1
    with pytest.raises(RateLimited):
        generate(fake, SCHNELL, prompt="RATELIMIT")
    with pytest.raises(UpstreamError, match="Internal server error"):
        generate(fake, SCHNELL, prompt="FAILME")


def test_malformed_answers_are_a_502(fake: FakeTogether) -> None:
    with pytest.raises(UpstreamError, match="unusable"):
        generate(fake, SCHNELL, prompt="GARBAGE")
    assert generate(fake, SCHNELL, prompt="EMPTY").images == []  # fanout.py makes it a 502


def test_a_rejected_key_is_an_upstream_error(fake: FakeTogether) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, SCHNELL, key="wrong")


def test_a_slow_answer_past_the_deadline_is_a_504(fake: FakeTogether) -> None:
    with pytest.raises(UpstreamTimeout):
        generate(fake, SCHNELL, prompt="SLOW", deadline=time.monotonic() + 0.5)


def test_every_catalog_model_is_sent_its_sizes_exactly() -> None:
    models = [m for m in load_catalog() if m.provider == "together"]
    assert {m.id for m in models} >= {f"together/{SCHNELL}", f"together/{DEV}", f"together/{KONTEXT}"}
    for model in models:
        assert model.upstream_id == model.id.removeprefix("together/")
        for size in model.capabilities.sizes:
            body, _ = request_body(call(model.upstream_id, size=size))
            assert (body["width"], body["height"]) == (size.width, size.height)
            assert size.width % 16 == 0 and size.height % 16 == 0


def test_the_fakes_answers_are_togethers_own_shapes(fake: FakeTogether) -> None:
    schema = json.loads((SCHEMAS / "together.json").read_text())
    headers = {"authorization": f"Bearer {FakeTogether.api_key}"}
    for response_format in ("base64", "url"):
        body = {"model": SCHNELL, "prompt": "x", "response_format": response_format}
        answer = httpx.post(f"{fake.url}/v1/images/generations", headers=headers, json=body).json()
        jsonschema.validate(answer, {**schema, "$ref": "#/$defs/ImageResponse"})
    refused = httpx.post(
        f"{fake.url}/v1/images/generations", headers=headers, json={"model": SCHNELL, "n": 2}
    )
    assert refused.status_code == 400
    jsonschema.validate(refused.json(), {**schema, "$ref": "#/$defs/ErrorData"})
