"""Azure OpenAI with Microsoft Entra ID: bearer tokens from a fake https token endpoint (a certificate
made for the test, trusted through SSL_CERT_FILE), sent to an Azure fake that takes them instead of
an api-key, cached and renewed ahead of expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from service.config import ProviderConfig, Settings, SettingsError, load_provider_configs
from service.errors import UpstreamError
from service.providers.azure import AzureOpenAIProvider
from service.providers.entra import RENEW_AHEAD_S
from tests.fakes.azure import FakeAzureOpenAI
from tests.fakes.entra import CLIENT_ID, CLIENT_SECRET, TENANT, FakeEntraTokenEndpoint
from tests.providers.conftest import call, run, shared_fake
from tests.providers.conftest import generate_times as calls
from tests.support.tls import LoopbackCertificate, loopback_certificate

server, fake = shared_fake(FakeAzureOpenAI)
MARGIN_S = 3
SCOPE = "https://cognitiveservices.azure.com/.default"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return loopback_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def entra_server(certificate: LoopbackCertificate) -> Iterator[FakeEntraTokenEndpoint]:
    with FakeEntraTokenEndpoint(certificate).running() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def entra(
    entra_server: FakeEntraTokenEndpoint, certificate: LoopbackCertificate, monkeypatch: pytest.MonkeyPatch
) -> FakeEntraTokenEndpoint:
    entra_server.reset()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.certificate))
    return entra_server


def entra_config(
    fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint, secret: str = CLIENT_SECRET
) -> ProviderConfig:
    settings = {
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_SECRET": secret,
        "AZURE_AUTHORITY_HOST": entra.authority,
    }
    return ProviderConfig("azure", "", fake.url, {"AZURE_OPENAI_API_KEY": ""}, settings=settings)


def generate_times(config: ProviderConfig, times: int) -> None:
    calls(AzureOpenAIProvider.create, config, "gpt-image-1", times)


def test_a_bearer_token_from_entra_id_replaces_the_api_key(
    fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint
) -> None:
    fake.bearer_token = "entra-token-1"
    generate_times(entra_config(fake, entra), 2)
    (token_request,) = entra.requests
    form = {name: values[0] for name, values in parse_qs(token_request.body.decode()).items()}
    assert form == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": SCOPE,
    }
    sent = fake.generation_requests()
    assert [r.headers["authorization"] for r in sent] == ["Bearer entra-token-1"] * 2, "one token, cached"
    assert all("api-key" not in r.headers for r in sent)


def test_a_token_due_for_renewal_is_renewed_in_the_background(
    fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint
) -> None:
    entra.expires_in_s = RENEW_AHEAD_S + MARGIN_S

    async def go() -> None:
        provider = AzureOpenAIProvider.create(entra_config(fake, entra), Settings())
        try:
            fake.bearer_token = "entra-token-1"
            await provider.generate(call("gpt-image-1"))
            entra.expires_in_s = 3599
            await asyncio.sleep(MARGIN_S + 0.5)
            await provider.generate(call("gpt-image-1"))  # token 1 still: the renewal does not hold it up
            assert await asyncio.to_thread(entra.wait_for, 2, 10), "renewed in the background"
            fake.bearer_token = "entra-token-2"
            await provider.generate(call("gpt-image-1"))
        finally:
            await provider.aclose()

    run(go())
    tokens = [r.headers["authorization"] for r in fake.generation_requests()]
    assert tokens == ["Bearer entra-token-1", "Bearer entra-token-1", "Bearer entra-token-2"]


def test_workload_identity_sends_the_federated_token_file_read_again_for_each_token(
    fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint, tmp_path: Path
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJ.service-account-token-1\n")
    entra.assertion = "eyJ.service-account-token-1"
    entra.expires_in_s = RENEW_AHEAD_S + MARGIN_S
    config = entra_config(fake, entra)
    settings = {**config.settings, "AZURE_FEDERATED_TOKEN_FILE": str(token_file)}
    del settings["AZURE_CLIENT_SECRET"]

    async def go() -> None:
        provider = AzureOpenAIProvider.create(
            ProviderConfig("azure", "", fake.url, settings=settings), Settings()
        )
        try:
            fake.bearer_token = "entra-token-1"
            await provider.generate(call("gpt-image-1"))
            token_file.write_text("eyJ.service-account-token-2")  # the kubelet rotates it
            entra.assertion = "eyJ.service-account-token-2"
            await asyncio.sleep(MARGIN_S + 0.5)
            await provider.generate(call("gpt-image-1"))
            assert await asyncio.to_thread(entra.wait_for, 2, 10)
        finally:
            await provider.aclose()

    run(go())
    forms = [parse_qs(r.body.decode()) for r in entra.requests]
    assert [form["client_assertion"] for form in forms] == [
        ["eyJ.service-account-token-1"],
        ["eyJ.service-account-token-2"],
    ]
    assert all("client_secret" not in form for form in forms)


def test_a_refused_client_secret_is_an_upstream_error_with_entra_s_reason_in_the_log(
    fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(
        UpstreamError, match=r"could not get a Microsoft Entra ID token \(401 invalid_client\)"
    ):
        generate_times(entra_config(fake, entra, secret="wrong"), 1)
    assert "refused (401): AADSTS7000215: Invalid client secret" in caplog.text
    assert not fake.generation_requests()


def test_an_untrusted_token_endpoint_certificate_is_refused(
    fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = loopback_certificate(tmp_path)  # trusted instead of the endpoint's own
    monkeypatch.setenv("SSL_CERT_FILE", str(other.certificate))
    with pytest.raises(UpstreamError, match=r"Entra ID token \(unreachable\)"):
        generate_times(entra_config(fake, entra), 1)
    assert not entra.requests and not fake.generation_requests()


def test_the_authority_must_be_https(fake: FakeAzureOpenAI, entra: FakeEntraTokenEndpoint) -> None:
    config = entra_config(fake, entra)
    settings = {**config.settings, "AZURE_AUTHORITY_HOST": entra.authority.replace("https:", "http:")}
    with pytest.raises(ValueError, match="must be an https URL"):
        AzureOpenAIProvider.create(ProviderConfig("azure", "", fake.url, settings=settings), Settings())


# The endpoint alone makes the gateway ask IMDS for a managed identity: here a closed loopback port.
ENDPOINT = {
    "AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:1",
}


def test_an_app_registration_needs_its_client_id_tenant_and_secret_together() -> None:
    assert "azure" not in load_provider_configs(ENDPOINT)
    app_service = {**ENDPOINT, "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token", "IDENTITY_HEADER": "h"}
    with pytest.raises(
        SettingsError, match=r"AZURE_TENANT_ID is set .* AZURE_CLIENT_ID and AZURE_CLIENT_SECRET are not"
    ):
        load_provider_configs({**app_service, "AZURE_TENANT_ID": TENANT})
    with pytest.raises(SettingsError, match=r"but AZURE_CLIENT_SECRET is not$"):
        load_provider_configs({**ENDPOINT, "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_TENANT_ID": TENANT})
    assert "azure" in load_provider_configs({**ENDPOINT, "AZURE_CLIENT_ID": CLIENT_ID})  # user-assigned
    complete = {
        **ENDPOINT,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_SECRET": "s",
    }
    federated = {
        **complete,
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
    }
    del federated["AZURE_CLIENT_SECRET"]
    assert "azure" in load_provider_configs(federated)
    config = load_provider_configs(complete)["azure"]
    assert config.api_key == "" and config.settings["AZURE_TENANT_ID"] == TENANT
    keyed = load_provider_configs({**ENDPOINT, "AZURE_OPENAI_API_KEY": "k", "AZURE_CLIENT_ID": CLIENT_ID})
    assert keyed["azure"].api_key == "k", "a resource key wins; Entra ID's other settings are then not needed"
