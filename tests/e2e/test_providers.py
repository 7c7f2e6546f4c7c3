"""Every provider end to end: the OpenAI SDK -> Envoy -> gateway -> adapter -> a fake of the provider.

One gateway runs with every provider configured against its fake (API key and base URL from the
provider's own variables, as an operator would set them)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import openai
import pytest

from service.providers.media import sniff_media_type
from tests.fakes.base import FakeProvider
from tests.fakes.bfl import FakeBFL
from tests.fakes.bytedance import FakeSeedream
from tests.fakes.google import FakeGoogle
from tests.fakes.openai import FakeOpenAI
from tests.fakes.recraft import FakeRecraft
from tests.fakes.stability import FakeStability
from tests.fakes.xai import FakeXAI
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client


@dataclass(frozen=True)
class Case:
    provider: str
    fake: type[FakeProvider]
    key_var: str
    url_var: str
    base_path: str  # what the provider's base URL adds to the fake's root
    model: str  # a public model id served by this provider
    size: str


# provider, fake, key variable, base URL variable, base path, model, size
CASES = [
    Case("openai", FakeOpenAI, "OPENAI_API_KEY", "OPENAI_BASE_URL", "/v1", "openai/gpt-image-1", "1024x1024"),
    Case(
        "recraft",
        FakeRecraft,
        "RECRAFT_API_KEY",
        "RECRAFT_BASE_URL",
        "/v1",
        "recraft/recraft-v3",
        "1024x1024",
    ),
    Case("bfl", FakeBFL, "BFL_API_KEY", "BFL_BASE_URL", "/v1", "bfl/flux-pro-1.1", "1024x1024"),
    Case(
        "google",
        FakeGoogle,
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        "/v1beta",
        "google/gemini-2.5-flash-image",
        "1024x1024",
    ),
    Case(
        "stability",
        FakeStability,
        "STABILITY_API_KEY",
        "STABILITY_BASE_URL",
        "",
        "stability/stable-image-core",
        "1024x1024",
    ),
    Case("xai", FakeXAI, "XAI_API_KEY", "XAI_BASE_URL", "/v1", "xai/grok-imagine-image", "1024x1024"),
    Case(
        "bytedance",
        FakeSeedream,
        "ARK_API_KEY",
        "ARK_BASE_URL",
        "/api/v3",
        "bytedance/seedream-4.0",
        "2048x2048",
    ),
]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, dict[str, FakeProvider]]]:
    with ExitStack() as running:
        fakes = {case.provider: running.enter_context(case.fake().running()) for case in CASES}
        env = {}
        for case in CASES:
            env[case.key_var] = case.fake.api_key  # type: ignore[attr-defined]
            env[case.url_var] = fakes[case.provider].url + case.base_path
        gateway = GatewayProcess(tmp_path_factory.mktemp("providers"), env).start()
        running.callback(gateway.stop)
        yield gateway, fakes


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai_client(f"{gateway.http_url}/v1", gateway.key)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.provider)
def test_the_sdk_gets_images_from_each_provider(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]], case: Case
) -> None:
    gateway, fakes = stack
    result = client(gateway).images.generate(model=case.model, prompt="a lighthouse", size=case.size, n=2)  # type: ignore[arg-type]
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.b64_json is not None
        assert sniff_media_type(base64.b64decode(item.b64_json)) is not None
    assert result.usage is not None and result.usage.output_images == 2  # type: ignore[attr-defined]
    assert fakes[case.provider].generation_requests(), "the fake was never called"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.provider)
def test_a_refusal_is_a_content_policy_violation(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]], case: Case
) -> None:
    gateway, _ = stack
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).images.generate(model=case.model, prompt="BLOCKME now", size=case.size)  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "CONTENT_POLICY_VIOLATION"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.provider)
def test_provider_failures_are_502(stack: tuple[GatewayProcess, dict[str, FakeProvider]], case: Case) -> None:
    gateway, _ = stack
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).images.generate(model=case.model, prompt="FAILME now", size=case.size)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "UPSTREAM_ERROR"


def test_models_show_which_providers_are_configured(
    stack: tuple[GatewayProcess, dict[str, FakeProvider]],
) -> None:
    gateway, _ = stack
    import httpx

    listing = httpx.get(
        f"{gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()
    available = {m["id"]: m["available"] for m in listing["data"]}
    assert all(available[case.model] for case in CASES)
