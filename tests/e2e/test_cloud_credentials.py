"""The clouds' keyless credentials end to end: the OpenAI SDK -> Envoy -> gateway -> Bedrock signed
with an AWS profile's keys (AWS_PROFILE and a shared credentials file, no AWS_ACCESS_KEY_ID), and Azure
OpenAI with a Microsoft Entra ID token from an https token endpoint (no AZURE_OPENAI_API_KEY)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.providers.media import sniff_media_type
from tests.fakes.azure import FakeAzureOpenAI
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.entra import CLIENT_ID, CLIENT_SECRET, TENANT, FakeEntraTokenEndpoint
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client
from tests.support.tls import loopback_certificate

Stack = tuple[GatewayProcess, FakeBedrock, FakeAzureOpenAI, FakeEntraTokenEndpoint]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("cloud-credentials")
    certificate = loopback_certificate(directory)
    credentials = directory / "aws-credentials"
    credentials.write_text(
        "[images]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
    )
    with ExitStack() as running:
        bedrock = running.enter_context(FakeBedrock().running())
        azure = running.enter_context(FakeAzureOpenAI().running())
        entra = running.enter_context(FakeEntraTokenEndpoint(certificate).running())
        assert isinstance(bedrock, FakeBedrock) and isinstance(azure, FakeAzureOpenAI)
        assert isinstance(entra, FakeEntraTokenEndpoint)
        bedrock.api_key, bedrock.secret = "AKIDPROFILE", "profile-secret"
        azure.bearer_token = "entra-token-1"
        env = {
            "MG_WORKERS": "1",  # one token holder, so the fake's one token is the one sent
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "AWS_PROFILE": "images",
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_CONFIG_FILE": str(Path(directory) / "absent"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url,
            "AZURE_OPENAI_API_KEY": "",
            "AZURE_OPENAI_ENDPOINT": azure.url,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "AZURE_AUTHORITY_HOST": entra.authority,
            "SSL_CERT_FILE": str(certificate.certificate),
        }
        gateway = GatewayProcess(directory / "data", env).start()
        running.callback(gateway.stop)
        yield gateway, bedrock, azure, entra


@pytest.mark.parametrize("model", ["bedrock/amazon.nova-canvas-v1:0", "azure/gpt-image-1"])
def test_the_sdk_gets_images_with_keyless_cloud_credentials(stack: Stack, model: str) -> None:
    gateway, bedrock, azure, entra = stack
    result = openai_client(f"{gateway.http_url}/v1", gateway.key).images.generate(
        model=model, prompt="a lighthouse", size="1024x1024", n=2
    )
    assert result.data is not None and len(result.data) == 2
    assert all(sniff_media_type(base64.b64decode(item.b64_json or "")) for item in result.data)
    if model.startswith("bedrock/"):
        (sent,) = bedrock.generation_requests()
        assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDPROFILE/")
    else:
        assert [r.headers["authorization"] for r in azure.generation_requests()] == ["Bearer entra-token-1"]
        assert len(entra.requests) == 1
