"""Provider settings come from the declarations (service/providers/spec.py): which variables are
read, when a provider counts as configured, and what `mg config check` says about each."""

from __future__ import annotations

import pytest

from service.cli import describe_providers
from service.config import ProviderConfig, SettingsError, load_provider_configs, load_settings
from service.providers.local import LocalProvider
from service.providers.options import OptionsSchema
from service.providers.registry import DECLARATIONS, build_providers, setup_hint
from service.providers.spec import ProviderSpec


def spec(
    name: str, credentials: tuple[str, ...], base_url_env: str, default_base_url: str = ""
) -> ProviderSpec:
    return ProviderSpec(
        name, LocalProvider.create, OptionsSchema(name, {}), credentials, base_url_env, default_base_url
    )


CLOUD = spec("cloud", ("CLOUD_KEY_ID", "CLOUD_SECRET"), "CLOUD_ENDPOINT")  # no public endpoint
PUBLIC = spec("public", ("PUBLIC_KEY",), "PUBLIC_BASE_URL", "https://api.public.example/v1/")
SELF_HOSTED = spec("selfhosted", (), "SELF_HOSTED_URL")  # no credentials: runs once its URL is set


def configs(environ: dict[str, str]) -> dict[str, ProviderConfig]:
    return load_provider_configs(environ, None, (CLOUD, PUBLIC, SELF_HOSTED))


def test_a_provider_runs_when_all_its_credentials_and_an_endpoint_are_set() -> None:
    assert configs({}) == {}
    assert configs({"CLOUD_KEY_ID": "id", "CLOUD_ENDPOINT": "https://cloud.example"}) == {}  # secret missing
    both = {"CLOUD_KEY_ID": "id", "CLOUD_SECRET": "s", "CLOUD_ENDPOINT": "https://cloud.example/"}
    assert configs(both) == {
        "cloud": ProviderConfig(
            "cloud", "id", "https://cloud.example", {"CLOUD_KEY_ID": "id", "CLOUD_SECRET": "s"}
        )
    }
    public = configs({"PUBLIC_KEY": "k"})["public"]
    assert (public.api_key, public.base_url) == ("k", "https://api.public.example/v1")  # the default
    assert (
        configs({"PUBLIC_KEY": "k", "PUBLIC_BASE_URL": "http://proxy"})["public"].base_url == "http://proxy"
    )
    assert configs({"SELF_HOSTED_URL": "http://gpu-box:8000"})["selfhosted"].credentials == {}


def test_credentials_without_an_endpoint_are_refused_not_ignored() -> None:
    with pytest.raises(SettingsError, match="cloud has credentials but no endpoint: set CLOUD_ENDPOINT"):
        configs({"CLOUD_KEY_ID": "id", "CLOUD_SECRET": "s"})


def test_a_declaration_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="options schema is named 'other'"):
        ProviderSpec("acme", LocalProvider.create, OptionsSchema("other", {}))
    with pytest.raises(ValueError, match="needs a base URL variable"):
        ProviderSpec("acme", LocalProvider.create, OptionsSchema("acme", {}), ("ACME_KEY",))


def test_the_shipped_providers_are_read_from_their_declared_variables() -> None:
    environ = {variable: f"key-{spec.name}" for spec in DECLARATIONS for variable in spec.credentials}
    # providers without a public endpoint (each Azure resource has its own) need theirs set
    environ |= {
        spec.base_url_env: f"https://{spec.name}.example"
        for spec in DECLARATIONS
        if spec.base_url_env and not spec.default_base_url
    }
    settings = load_settings(environ)
    assert set(settings.providers) == {spec.name for spec in DECLARATIONS}
    assert settings.providers["openai"].base_url == "https://api.openai.com/v1"
    assert settings.providers["bytedance"].api_key == "key-bytedance"  # ARK_API_KEY
    assert set(load_settings({}).providers) == {"local"}  # always on


def test_the_registry_builds_each_configured_provider_from_its_declaration() -> None:
    import asyncio

    providers = build_providers(load_settings({"XAI_API_KEY": "k"}))
    assert {name: provider.name for name, provider in providers.items()} == {"local": "local", "xai": "xai"}
    asyncio.run(providers["xai"].aclose())


def test_config_check_says_what_turns_each_provider_on() -> None:
    summary = describe_providers(load_settings({"GEMINI_API_KEY": "k"}))
    assert summary.startswith(
        "providers configured: local, google; not configured: openai (set OPENAI_API_KEY), "
    )
    assert "bytedance (set ARK_API_KEY)" in summary and "google (" not in summary
    assert setup_hint("local") == "always on" and setup_hint("nobody") == "no adapter is named 'nobody'"
    assert setup_hint("azure") == (
        "set AZURE_OPENAI_API_KEY, or AZURE_CLIENT_ID or IDENTITY_ENDPOINT, or AZURE_OPENAI_ENDPOINT "
        "where the cloud's credential chain finds credentials"
    )
    assert setup_hint("bedrock").startswith(
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE or "
    )
    assert setup_hint("bedrock").endswith(
        ", or AWS_REGION or AWS_DEFAULT_REGION where the cloud's credential chain finds credentials"
    )
    assert "bedrock" in load_settings({"AWS_PROFILE": "images"}).providers
