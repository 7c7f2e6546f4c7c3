"""Every provider end to end: the OpenAI SDK -> Envoy -> gateway -> adapter -> a fake of the provider.

One gateway runs with every provider configured against its fake (API key and base URL from the
provider's own variables, as an operator would set them)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack

import openai
import pytest

from service.providers.media import sniff_media_type
from tests.fakes import all_fakes, environment
from tests.fakes.base import FakeProvider, jpeg
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client

# One case per fake: every HTTP provider, with the fake's own model and size.
CASES = sorted(all_fakes().values(), key=lambda fake: fake.PROVIDER)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, dict[str, FakeProvider]]]:
    with ExitStack() as running:
        fakes = {case.PROVIDER: running.enter_context(case().running()) for case in CASES}
        env = {name: value for fake in fakes.values() for name, value in environment(fake).items()}
        gateway = GatewayProcess(tmp_path_factory.mktemp("providers"), env).start()
        running.callback(gateway.stop)
        yield gateway, fakes


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai_client(f"{gateway.http_url}/v1", gateway.key)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.PROVIDER)
def test_the_sdk_gets_images_from_each_provider(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]], case: type[FakeProvider]
) -> None:
    gateway, fakes = stack
    result = client(gateway).images.generate(
        model=case.SMOKE_MODEL, prompt="a lighthouse", size=case.SMOKE_SIZE, n=2
    )
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        assert sniff_media_type(base64.b64decode(item.b64_json)) is not None
    assert result.usage is not None and result.usage.output_images == 2  # type: ignore[attr-defined]
    assert fakes[case.PROVIDER].generation_requests(), "the fake was never called"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.PROVIDER)
def test_a_refusal_is_a_content_policy_violation(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]], case: type[FakeProvider]
) -> None:
    gateway, _ = stack
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).images.generate(model=case.SMOKE_MODEL, prompt="BLOCKME now", size=case.SMOKE_SIZE)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "CONTENT_POLICY_VIOLATION"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.PROVIDER)
def test_provider_failures_are_502(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]], case: type[FakeProvider]
) -> None:
    gateway, _ = stack
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).images.generate(model=case.SMOKE_MODEL, prompt="FAILME now", size=case.SMOKE_SIZE)
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "UPSTREAM_ERROR"


# A model that edits, per cloud provider (their references go out as a form part, IMAGE_VARIATION
# and an inlineData part).
EDIT_MODELS = {
    "azure": "azure/gpt-image-1",
    "bedrock": "bedrock/amazon.nova-canvas-v1:0",
    "vertex": "vertex/gemini-2.5-flash-image",
}


@pytest.mark.parametrize("provider", sorted(EDIT_MODELS))
def test_the_sdk_edits_through_the_cloud_providers(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]], provider: str
) -> None:
    gateway, fakes = stack
    picture = jpeg(320, 320)  # as it came to each: in Nova's bounds, and a JPEG needs no flattening
    result = client(gateway).images.generate(
        model=EDIT_MODELS[provider],
        prompt="the same, in blue",
        size="1024x1024",
        extra_body={"reference_image": base64.b64encode(picture).decode()},
    )
    assert result.data is not None and len(result.data) == 1 and result.data[0].b64_json
    sent = fakes[provider].generation_requests()[-1].body
    assert picture in sent or base64.b64encode(picture) in sent, "the reference never reached the provider"


def test_models_show_which_providers_are_configured(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]],
) -> None:
    gateway, _ = stack
    import httpx

    listing = httpx.get(
        f"{gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()
    available = {m["id"]: m["available"] for m in listing["data"]}
    assert all(available[case.SMOKE_MODEL] for case in CASES)
