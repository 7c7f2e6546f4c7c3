"""The Azure OpenAI adapter against a fake Azure resource that checks URLs, keys, api-versions and
bodies as Azure does; and the settings that configure it, as the official SDK names them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from service.catalog.sizes import Size
from service.config import ProviderConfig, SettingsError, load_settings
from service.config_file import ConfigFileError
from service.errors import (
    ContentPolicyViolation,
    EditNotSupported,
    InvalidMask,
    ProviderRejectedRequest,
    RateLimited,
    UpstreamError,
)
from service.generation.reference_images import ReferenceImage
from service.providers.azure import DEFAULT_API_VERSION, AzureOpenAIProvider
from service.providers.base import ImageCallResult
from tests.fakes.azure import FakeAzureOpenAI
from tests.fakes.base import png
from tests.fakes.openai import form_parts
from tests.providers.conftest import generate_with, rendered, shared_fake

server, fake = shared_fake(FakeAzureOpenAI)
KEY = FakeAzureOpenAI.api_key


def generate(
    fake: FakeAzureOpenAI,
    model: str,
    key: str = KEY,
    settings: dict[str, Any] | None = None,
    **fields: object,
) -> ImageCallResult:
    config = ProviderConfig("azure", key, fake.url, {"AZURE_OPENAI_API_KEY": key}, settings=settings or {})
    return generate_with(AzureOpenAIProvider.create, config, model, **fields)


def test_gpt_image_request_goes_to_its_deployment_with_the_key_and_api_version(fake: FakeAzureOpenAI) -> None:
    result = generate(fake, "gpt-image-1", n=2, size=Size(1536, 1024), quality="hd", background="opaque",
                      user="u-1", options={"moderation": "low"})  # fmt: skip
    (sent,) = fake.generation_requests()
    assert sent.path == "/openai/deployments/gpt-image-1/images/generations"
    assert sent.query == {"api-version": [DEFAULT_API_VERSION]}
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers
    assert sent.json == {
        "prompt": "a red fox in snow", "n": 2, "size": "1536x1024", "quality": "high",
        "background": "opaque", "moderation": "low", "user": "u-1",
    }  # fmt: skip
    assert [image.data for image in result.images] == [png(), png()]
    assert result.usage is not None and result.usage.output_tokens == 8320
    assert result.upstream_request_id == "req_fake_123"


def test_the_config_file_maps_a_model_to_its_deployment(fake: FakeAzureOpenAI) -> None:
    generate(fake, "gpt-image-1", settings={"deployments": {"gpt-image-1": "img-prod-eastus"}})
    assert fake.generation_requests()[0].path == "/openai/deployments/img-prod-eastus/images/generations"


def test_dalle3_sends_the_ga_body_and_reads_the_annotated_answer(fake: FakeAzureOpenAI) -> None:
    result = generate(
        fake, "dall-e-3", quality="high", style="natural", settings={"OPENAI_API_VERSION": "2024-10-21"}
    )
    (sent,) = fake.generation_requests()
    assert sent.query == {"api-version": ["2024-10-21"]}
    assert sent.json == {"prompt": "a red fox in snow", "n": 1, "size": "1024x1024", "quality": "hd",
                         "style": "natural", "response_format": "b64_json"}  # fmt: skip
    assert result.images[0].revised_prompt == "A detailed rendering of a red fox in snow"
    assert result.upstream_request_id == "apim-fake-1" and result.usage is None


def test_a_version_without_gpt_image_models_is_the_providers_400(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(ProviderRejectedRequest, match="not supported by this API version"):
        generate(fake, "gpt-image-1", settings={"OPENAI_API_VERSION": "2024-10-21"})


def test_an_unknown_deployment_is_the_providers_message(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(ProviderRejectedRequest, match="deployment for this resource does not exist"):
        generate(fake, "gpt-image-1", settings={"deployments": {"gpt-image-1": "nowhere"}})


@pytest.mark.parametrize("model", ["dall-e-3", "gpt-image-1"])
def test_content_filter_answers_are_refusals_never_retried(fake: FakeAzureOpenAI, model: str) -> None:
    with pytest.raises(ContentPolicyViolation, match="safety system"):
        generate(fake, model, prompt="BLOCKME please")
    assert len(fake.generation_requests()) == 1


def test_retry_after_ms_is_honoured(fake: FakeAzureOpenAI) -> None:
    assert len(generate(fake, "gpt-image-1", prompt="RATELIMIT_ONCE fox").images) == 1
    first, retry = fake.generation_requests()
    # 300 ms, not retry-after's whole second
    assert 0.3 <= retry.at - first.at < 0.9


def test_persistent_rate_limits_pass_through_as_429(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(RateLimited) as caught:
        generate(fake, "gpt-image-1", prompt="RATELIMIT fox")
    assert caught.value.retry_after_s == 1 and len(fake.generation_requests()) == 3


def test_a_wrong_key_is_an_upstream_error(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(UpstreamError, match="credentials"):
        generate(fake, "gpt-image-1", key="not-the-key")


def test_an_edit_goes_to_the_deployments_edits_as_a_form(fake: FakeAzureOpenAI) -> None:
    reference = ReferenceImage(png(), "image/png", 8, 8)
    result = generate(fake, "gpt-image-1.5", reference_image=reference, moderation="low")
    (sent,) = fake.generation_requests()
    assert sent.path == "/openai/deployments/gpt-image-1.5/images/edits"
    assert sent.query == {"api-version": [DEFAULT_API_VERSION]}
    assert {name: kind for name, _, kind, _ in form_parts(sent)} == {
        "prompt": "text/plain", "n": "text/plain", "size": "text/plain", "image": "image/png",
    }  # fmt: skip
    assert fake.edited == [reference.data] and len(result.images) == 1
    assert rendered(result) == ["moderation ignored: gpt-image-1.5 edits do not take it"]


def mask_png(side: int) -> bytes:
    """An OpenAI-style mask: opaque, with a transparent top half (what to change)."""
    from PIL import Image

    mask = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, side, side // 2))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def test_an_edit_forwards_every_input_image_and_the_mask(fake: FakeAzureOpenAI) -> None:
    pictures = tuple(ReferenceImage(png(8, 8, (i, 0, 0)), "image/png", 8, 8) for i in range(3))
    mask = ReferenceImage(mask_png(8), "image/png", 8, 8)
    generate(fake, "gpt-image-1", input_images=pictures, mask=mask)
    (sent,) = fake.generation_requests()
    parts = [(name, kind) for name, _, kind, _ in form_parts(sent) if kind != "text/plain"]
    assert parts == [("image[]", "image/png")] * 3 + [("mask", "image/png")]
    assert fake.edited == [picture.data for picture in pictures]
    assert [data for name, _, _, data in form_parts(sent) if name == "mask"] == [mask.data]


def test_the_catalog_offers_gpt_image_edits_of_16_images_with_a_mask() -> None:
    from service.catalog.catalog import load_catalog

    catalog = load_catalog()
    for model in ("azure/gpt-image-1", "azure/gpt-image-1.5", "azure/gpt-image-1-mini"):
        capabilities = catalog.resolve(model).capabilities
        assert (capabilities.max_input_images, capabilities.mask) == (16, True)
    assert catalog.resolve("azure/dall-e-3").capabilities.max_input_images == 0


def test_dalle3_edits_are_refused_before_any_call(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(EditNotSupported):
        generate(fake, "dall-e-3", reference_image=ReferenceImage(png(), "image/png", 8, 8))
    assert fake.requests == []


def test_an_invalid_mask_names_the_azure_option(fake: FakeAzureOpenAI) -> None:
    reference = ReferenceImage(png(), "image/png", 8, 8)
    with pytest.raises(InvalidMask) as caught:
        generate(fake, "gpt-image-1", reference_image=reference, options={"mask": "bm90IGEgcG5n"})
    assert caught.value.param == "providerOptions.azure.mask" and fake.requests == []


# Settings, as the official SDK takes them, and the config file's deployments.

ENV = {"AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com/"}


def with_file(tmp_path: Path, text: str, **environ: str) -> dict[str, str]:
    path = tmp_path / "mg.yaml"
    path.write_text(text)
    return {**ENV, **environ, "MG_CONFIG": str(path)}


def test_settings_use_the_sdks_variables_and_the_files_deployments(tmp_path: Path) -> None:
    text = "providers:\n  azure:\n    deployments: {gpt-image-1: img-prod-eastus}\n"
    settings = load_settings(with_file(tmp_path, text, OPENAI_API_VERSION="2025-04-01-preview"))
    config = settings.providers["azure"]
    assert (config.api_key, config.base_url) == ("k", "https://contoso.openai.azure.com")
    assert config.settings == {
        "OPENAI_API_VERSION": "2025-04-01-preview",
        "deployments": {"gpt-image-1": "img-prod-eastus"},
    }


def test_a_key_without_an_endpoint_says_what_is_missing() -> None:
    with pytest.raises(SettingsError, match="AZURE_OPENAI_ENDPOINT"):
        load_settings({"AZURE_OPENAI_API_KEY": "k"})


def test_keys_the_declaration_does_not_take_are_refused_with_their_line(tmp_path: Path) -> None:
    text = "providers:\n  azure:\n    api_key_env: AZURE_OPENAI_API_KEY\n    deployment: x\n"
    with pytest.raises(
        ConfigFileError, match=r"mg.yaml:4: .*takes only api_key, api_key_env, base_url, deployments"
    ):
        load_settings(with_file(tmp_path, text))
    with pytest.raises(ConfigFileError, match=r"mg.yaml:3: .*takes only"):
        load_settings(
            with_file(tmp_path, "providers:\n  openai:\n    deployments: {a: b}\n", OPENAI_API_KEY="k")
        )


def test_a_malformed_deployments_mapping_points_at_its_line(tmp_path: Path) -> None:
    text = "providers:\n  azure:\n    deployments:\n      - gpt-image-1\n"
    with pytest.raises(ConfigFileError, match=r"mg.yaml:3: .*must map model ids to deployment names"):
        load_settings(with_file(tmp_path, text))


def test_a_malformed_deployments_mapping_is_a_settings_error(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(SettingsError, match="deployments"):
        generate(fake, "gpt-image-1", settings={"deployments": ["gpt-image-1"]})
