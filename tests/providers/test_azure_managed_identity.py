"""Azure OpenAI with a managed identity: tokens from a fake IMDS and a fake App Service identity
endpoint on loopback (AZURE_POD_IDENTITY_AUTHORITY_HOST and IDENTITY_ENDPOINT point at it; no test
reaches 169.254.169.254), sent as bearer tokens to the Azure fake, cached and renewed ahead of
expiry; and when an endpoint without a key turns Azure on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from service.config import ProviderConfig, Settings, load_provider_configs
from service.errors import UpstreamError
from service.providers.azure import AzureOpenAIProvider
from service.providers.entra import RENEW_AHEAD_S
from tests.fakes.azure import FakeAzureOpenAI
from tests.fakes.managed_identity import APP_SERVICE_PATH, IMDS_PATH, USER_ASSIGNED, FakeManagedIdentity
from tests.providers.conftest import call, run, shared_fake
from tests.providers.conftest import generate_times as calls

server, fake = shared_fake(FakeAzureOpenAI)
RESOURCE = "https://cognitiveservices.azure.com"
CLOSED = "http://127.0.0.1:1"  # nothing listens: connections are refused at once


@pytest.fixture(scope="module")
def identity_server() -> Iterator[FakeManagedIdentity]:
    with FakeManagedIdentity().running() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def identity(identity_server: FakeManagedIdentity) -> FakeManagedIdentity:
    identity_server.reset()
    return identity_server


def imds(identity: FakeManagedIdentity, **settings: str) -> dict[str, str]:
    return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": identity.url, **settings}


def app_service(identity: FakeManagedIdentity, header: str | None = None) -> dict[str, str]:
    return {
        "IDENTITY_ENDPOINT": identity.app_service_endpoint,
        "IDENTITY_HEADER": header or identity.identity_header,
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": CLOSED,
    }


def generate_times(fake: FakeAzureOpenAI, settings: dict[str, Any], times: int) -> None:
    config = ProviderConfig("azure", "", fake.url, {"AZURE_OPENAI_API_KEY": ""}, settings=settings)
    calls(AzureOpenAIProvider.create, config, "gpt-image-1", times)


def test_the_system_assigned_identity_from_imds_signs_every_call_with_one_token(
    fake: FakeAzureOpenAI, identity: FakeManagedIdentity
) -> None:
    fake.bearer_token = "mi-token-1"
    generate_times(fake, imds(identity), 3)
    (asked,) = identity.requests
    assert asked.path == IMDS_PATH and asked.headers["metadata"] == "true"
    assert asked.query == {"api-version": ["2018-02-01"], "resource": [RESOURCE]}
    assert [r.headers["authorization"] for r in fake.generation_requests()] == ["Bearer mi-token-1"] * 3
    assert all("api-key" not in r.headers for r in fake.generation_requests())


def test_azure_client_id_asks_for_the_user_assigned_identity(
    fake: FakeAzureOpenAI, identity: FakeManagedIdentity
) -> None:
    fake.bearer_token = "mi-token-1"
    generate_times(fake, imds(identity, AZURE_CLIENT_ID=USER_ASSIGNED), 1)
    assert identity.requests[0].query["client_id"] == [USER_ASSIGNED]
    assert identity.issued == [("mi-token-1", USER_ASSIGNED)]


def test_app_service_s_endpoint_and_header_are_used_when_set(
    fake: FakeAzureOpenAI, identity: FakeManagedIdentity
) -> None:
    fake.bearer_token = "mi-token-1"
    generate_times(fake, app_service(identity), 1)
    (asked,) = identity.requests
    assert asked.path == APP_SERVICE_PATH and asked.query["api-version"] == ["2019-08-01"]
    assert asked.headers["x-identity-header"] == identity.identity_header


def test_a_token_near_its_expiry_is_renewed_in_the_background(
    fake: FakeAzureOpenAI, identity: FakeManagedIdentity
) -> None:
    identity.expires_in_s = RENEW_AHEAD_S - 60  # due for renewal from the start, not yet expiring
    fake.bearer_token = "mi-token-1"
    config = ProviderConfig("azure", "", fake.url, {"AZURE_OPENAI_API_KEY": ""}, settings=imds(identity))

    async def go() -> None:
        provider = AzureOpenAIProvider.create(config, Settings())
        try:
            await provider.generate(call("gpt-image-1"))
            await provider.generate(call("gpt-image-1"))  # starts the renewal, signs with token 1
            for _ in range(100):
                if len(identity.issued) == 2:
                    break
                await asyncio.sleep(0.02)
            fake.bearer_token = "mi-token-2"
            await provider.generate(call("gpt-image-1"))
        finally:
            await provider.aclose()

    run(go())
    assert [r.headers["authorization"] for r in fake.generation_requests()] == [
        "Bearer mi-token-1", "Bearer mi-token-1", "Bearer mi-token-2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [("unknown-identity", "400"), ("wrong-header", "401"), ("unreachable", "unreachable")],
)
def test_no_managed_identity_is_a_clear_upstream_error(
    fake: FakeAzureOpenAI, identity: FakeManagedIdentity, change: str, reason: str
) -> None:
    settings = {
        "unknown-identity": imds(identity, AZURE_CLIENT_ID="00000000-0000-4000-8000-000000000000"),
        "wrong-header": app_service(identity, header="not-the-header"),
        "unreachable": {"AZURE_POD_IDENTITY_AUTHORITY_HOST": CLOSED},
    }[change]
    with pytest.raises(UpstreamError, match=rf"could not get a Microsoft Entra ID token \({reason}"):
        generate_times(fake, settings, 1)
    assert fake.generation_requests() == []


ENDPOINT = {"AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com"}


def test_an_endpoint_alone_turns_azure_on_only_where_imds_gives_a_token(
    identity: FakeManagedIdentity,
) -> None:
    assert "azure" in load_provider_configs({**ENDPOINT, **imds(identity)})
    assert identity.requests[0].query["resource"] == [RESOURCE]
    identity.system_assigned = False  # a VM with no identity: IMDS answers 400
    assert "azure" not in load_provider_configs({**ENDPOINT, **imds(identity)})
    assert "azure" not in load_provider_configs({**ENDPOINT, "AZURE_POD_IDENTITY_AUTHORITY_HOST": CLOSED})


def test_app_service_s_variables_or_a_client_id_turn_azure_on_without_asking(
    identity: FakeManagedIdentity,
) -> None:
    on = load_provider_configs({**ENDPOINT, **app_service(identity)})["azure"]
    assert on.settings["IDENTITY_HEADER"] == identity.identity_header
    user_assigned = {
        **ENDPOINT,
        "AZURE_CLIENT_ID": USER_ASSIGNED,
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": CLOSED,
    }
    assert "azure" in load_provider_configs(user_assigned)
    assert identity.requests == []
