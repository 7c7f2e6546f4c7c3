"""Bedrock with AWS's default credential chain (botocore's): a profile file, the container credentials
endpoint and the instance metadata service (IMDSv2), all on loopback, each request checked by the
SigV4-verifying Bedrock fake against the credentials the chain handed out, and refreshed before they
expire."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import ProviderConfig, Settings, load_provider_configs
from service.errors import UpstreamError
from service.providers.base import ImageCallResult
from service.providers.bedrock import BedrockProvider
from tests.fakes.aws_credentials import FakeAwsCredentialSource, Issued
from tests.fakes.bedrock import FakeBedrock
from tests.providers.conftest import call, run, shared_fake

server, fake = shared_fake(FakeBedrock)
NOVA = "amazon.nova-canvas-v1:0"
ADVISORY_S, MANDATORY_S = 15 * 60, 10 * 60  # botocore's refresh windows
AMBIENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
)
MARGIN_S = 3  # credentials handed out this long before they enter a window


@pytest.fixture(scope="module")
def source_server() -> Iterator[FakeAwsCredentialSource]:
    with FakeAwsCredentialSource().running() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def source(source_server: FakeAwsCredentialSource) -> FakeAwsCredentialSource:
    source_server.reset()
    return source_server


@pytest.fixture(autouse=True)
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets reaches botocore's chain: no keys, profile or ~/.aws of the machine's,
    and no instance metadata service (which would leave loopback) unless a test points it at the fake."""
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def accept(bedrock: FakeBedrock, issued: Issued) -> None:
    bedrock.api_key, bedrock.secret, bedrock.session_token = (
        issued.access_key,
        issued.secret_key,
        issued.token,
    )


def chain_config(base_url: str, **settings: Any) -> ProviderConfig:
    """Bedrock as the gateway configures it with no static keys."""
    return ProviderConfig("bedrock", "", base_url, {}, settings=settings)


async def generate(provider: BedrockProvider) -> ImageCallResult:
    return await provider.generate(call(NOVA))


def test_a_profile_in_the_shared_credentials_file_signs(
    fake: FakeBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = not-this-one\n\n"
        "[images]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    accept(fake, Issued("AKIDPROFILE", "profile-secret", ""))
    fake.session_token = None

    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url, AWS_PROFILE="images"), Settings())
        try:
            result = await generate(provider)
        finally:
            await provider.aclose()
        assert len(result.images) == 1

    run(go())
    (sent,) = fake.generation_requests()
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDPROFILE/")


def test_an_assume_role_profile_signs_with_the_role_s_credentials(
    fake: FakeBedrock, source: FakeAwsCredentialSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile images]\nrole_arn = arn:aws:iam::123456789012:role/mg-images\nsource_profile = base\n"
        "role_session_name = mg-gateway\n\n[profile base]\nregion = us-east-1\n"
        f"aws_access_key_id = {source.source_key_id}\naws_secret_access_key = base-secret\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", source.url)
    accept(fake, Issued("ASIAFAKE1", "secret-1", "token-1"))

    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url, AWS_PROFILE="images"), Settings())
        try:
            await generate(provider)
            await generate(provider)
        finally:
            await provider.aclose()

    run(go())
    (assume,) = source.requests
    assert b"Action=AssumeRole" in assume.body and b"RoleSessionName=mg-gateway" in assume.body
    assert [r.headers["x-amz-security-token"] for r in fake.generation_requests()] == ["token-1"] * 2


def test_the_container_endpoint_s_credentials_sign_with_their_session_token(
    fake: FakeBedrock, source: FakeAwsCredentialSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", source.container_uri)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token")
    source.authorization = "pod-identity-token"

    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url), Settings())
        try:
            await generate(provider)
            accept(fake, source.issued[0])  # what it must have signed with (checked below)
            await generate(provider)
        finally:
            await provider.aclose()

    accept(fake, Issued("ASIAFAKE1", "secret-1", "token-1"))
    run(go())
    assert len(source.issued) == 1, "credentials valid for an hour are fetched once"
    assert [r.headers["x-amz-security-token"] for r in fake.generation_requests()] == ["token-1"] * 2


def test_credentials_due_for_renewal_are_renewed_in_the_background_while_calls_go_on(
    fake: FakeBedrock, source: FakeAwsCredentialSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", source.container_uri)
    source.expires_in_s = ADVISORY_S + MARGIN_S  # enters botocore's advisory window in 3 s

    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url), Settings())
        try:
            accept(fake, Issued("ASIAFAKE1", "secret-1", "token-1"))
            await generate(provider)
            source.expires_in_s = 3600
            await asyncio.sleep(MARGIN_S + 0.5)
            await generate(provider)  # still signed with set 1: the renewal does not hold it up
            assert await asyncio.to_thread(source.wait_for, 2, 10), "renewed in the background"
            accept(fake, Issued("ASIAFAKE2", "secret-2", "token-2"))
            await generate(provider)
        finally:
            await provider.aclose()

    run(go())
    keys = [r.headers["x-amz-security-token"] for r in fake.generation_requests()]
    assert keys == ["token-1", "token-1", "token-2"]
    assert len(source.issued) == 2


def test_credentials_about_to_expire_are_renewed_before_signing(
    fake: FakeBedrock, source: FakeAwsCredentialSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", source.container_uri)
    source.expires_in_s = MANDATORY_S + MARGIN_S  # in the advisory window at once, mandatory in 3 s

    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url), Settings())
        try:
            # The first set arrives already due for renewal: botocore renews it as it is loaded.
            accept(fake, Issued("ASIAFAKE2", "secret-2", "token-2"))
            await generate(provider)
            source.expires_in_s = 3600
            await asyncio.sleep(MARGIN_S + 0.5)
            accept(fake, Issued("ASIAFAKE3", "secret-3", "token-3"))  # set 2 would now be refused
            await generate(provider)
        finally:
            await provider.aclose()

    run(go())
    assert [r.headers["x-amz-security-token"] for r in fake.generation_requests()] == ["token-2", "token-3"]


def test_the_instance_role_comes_from_imdsv2_with_a_session_token(
    fake: FakeBedrock, source: FakeAwsCredentialSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", source.url + "/")
    accept(fake, Issued("ASIAFAKE1", "secret-1", "token-1"))

    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url, AWS_REGION="us-east-1"), Settings())
        try:
            await generate(provider)
        finally:
            await provider.aclose()

    run(go())
    assert [(r.method, r.path) for r in source.requests][:1] == [("PUT", "/latest/api/token")]
    assert all(r.headers.get("x-aws-ec2-metadata-token") for r in source.requests if r.method == "GET")
    assert fake.generation_requests()[0].headers["x-amz-security-token"] == "token-1"


def test_no_credentials_anywhere_is_a_clear_upstream_error(fake: FakeBedrock) -> None:
    async def go() -> None:
        provider = BedrockProvider.create(chain_config(fake.url, AWS_REGION="us-east-1"), Settings())
        try:
            await generate(provider)
        finally:
            await provider.aclose()

    with pytest.raises(UpstreamError, match="found no AWS credentials"):
        run(go())
    assert not fake.generation_requests()


@pytest.mark.parametrize(
    ("environ", "configured"),
    [
        ({}, False),
        ({"AWS_ACCESS_KEY_ID": "AKID"}, False),  # half a static key
        ({"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"}, True),
        ({"AWS_PROFILE": "images"}, True),
        ({"AWS_REGION": "eu-west-1"}, False),  # a region, and no credentials the chain finds
        ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:1/creds"}, True),
        ({"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"}, True),
    ],
)
def test_what_turns_bedrock_on(environ: dict[str, str], configured: bool) -> None:
    configs = load_provider_configs(environ)
    assert ("bedrock" in configs) == configured
    if configured:
        assert {k: v for k, v in environ.items() if k.startswith("AWS_P") or k == "AWS_REGION"} == {
            k: v for k, v in configs["bedrock"].settings.items() if k in ("AWS_PROFILE", "AWS_REGION")
        }


def test_a_region_turns_bedrock_on_when_the_instance_role_answers(
    source: FakeAwsCredentialSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", source.url + "/")
    configs = load_provider_configs({"AWS_REGION": "eu-west-1"})
    assert configs["bedrock"].settings == {"AWS_REGION": "eu-west-1"}
    assert any(r.path.startswith("/latest/meta-data/iam/security-credentials/") for r in source.requests)


def test_a_region_turns_bedrock_on_with_the_default_profiles_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    assert "bedrock" in load_provider_configs({"AWS_DEFAULT_REGION": "eu-west-1"})


def test_a_region_with_no_instance_role_answering_leaves_bedrock_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1/")  # refused at once
    assert "bedrock" not in load_provider_configs({"AWS_REGION": "eu-west-1"})
