"""Providers of type openai-compatible, defined in the config file alone, against a plain OpenAI-shaped
server: settings, the adapters the registry builds from them, requests and answers, and the config
file's checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service import config_file
from service.cli import check_config
from service.config import Settings, load_settings
from service.config_file import ConfigFileError
from service.errors import ContentPolicyViolation, UpstreamError
from service.generation.reference_images import ReferenceImage
from service.providers import registry, upstream
from service.providers.base import ImageCallResult, unsupported
from tests.fakes.base import png
from tests.fakes.openai_compatible import FakeCompatibleServer
from tests.providers.conftest import call, run

CONFIG = """\
providers:
  studio:
    type: openai-compatible
    base_url: {studio}
    api_key_env: STUDIO_KEY
  lab:
    type: openai-compatible
    base_url: {lab}
models:
  studio/flux-dev:
    provider: studio
    upstream_id: flux-dev
    sizes: [1024x1024, 512x512]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 4
    reference_image: true
    price: {{default: "0.01"}}
  lab/sdxl:
    provider: lab
    upstream_id: sdxl
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 1
    max_images_per_call: 1
    price: {{default: "0"}}
"""


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.02)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeCompatibleServer, FakeCompatibleServer]]:
    studio, lab = FakeCompatibleServer(), FakeCompatibleServer()
    with studio.running(), lab.running():
        yield studio, lab


@pytest.fixture
def studio(servers: tuple[FakeCompatibleServer, FakeCompatibleServer]) -> FakeCompatibleServer:
    servers[0].reset()
    servers[0].api_key = "studio-secret"
    return servers[0]


@pytest.fixture
def lab(servers: tuple[FakeCompatibleServer, FakeCompatibleServer]) -> FakeCompatibleServer:
    servers[1].reset()
    return servers[1]


def settings_for(
    tmp_path: Path, studio: FakeCompatibleServer, lab: FakeCompatibleServer, **env: str
) -> Settings:
    path = tmp_path / "mg.yaml"
    path.write_text(CONFIG.format(studio=f"{studio.url}/v1", lab=f"{lab.url}/v1"))
    return load_settings({"MG_CONFIG": str(path), **env})


def generate(settings: Settings, provider: str, model: str, **fields: object) -> ImageCallResult:
    async def go() -> ImageCallResult:
        providers = registry.build_providers(settings)
        try:
            return await providers[provider].generate(call(model, **fields))
        finally:
            for built in providers.values():
                await built.aclose()

    return run(go())


def test_two_servers_from_the_config_file_alone(
    tmp_path: Path, studio: FakeCompatibleServer, lab: FakeCompatibleServer
) -> None:
    settings = settings_for(tmp_path, studio, lab, STUDIO_KEY="studio-secret")
    assert (settings.providers["studio"].type, settings.providers["lab"].type) == ("openai-compatible",) * 2
    result = generate(settings, "studio", "flux-dev", n=2, quality="hd", options={"seed": 5.0, "steps": 20})
    (sent,) = studio.generation_requests()
    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/generations", "Bearer studio-secret")
    assert sent.json == {
        "model": "flux-dev", "prompt": "a red fox in snow", "n": 2, "size": "1024x1024",
        "response_format": "b64_json", "quality": "hd", "seed": 5, "steps": 20,
    }  # fmt: skip
    assert [(i.data, i.revised_prompt) for i in result.images] == [(png(), "a red fox in snow, refined")] * 2
    generate(settings, "lab", "sdxl")
    (keyless,) = lab.generation_requests()
    assert "authorization" not in keyless.headers  # lab has no key: none is sent
    assert "local, studio (openai-compatible), lab (openai-compatible); not configured" in check_config(
        settings
    )


def test_a_provider_whose_key_variable_is_unset_is_not_configured(
    tmp_path: Path, studio: FakeCompatibleServer, lab: FakeCompatibleServer
) -> None:
    settings = settings_for(tmp_path, studio, lab)
    assert "studio" not in settings.providers and "lab" in settings.providers


def test_an_edit_goes_to_images_edits_as_multipart(
    tmp_path: Path, studio: FakeCompatibleServer, lab: FakeCompatibleServer
) -> None:
    settings = settings_for(tmp_path, studio, lab, STUDIO_KEY="studio-secret")
    result = generate(
        settings, "studio", "flux-dev", reference_image=ReferenceImage(png(), "image/png", 8, 8)
    )
    (sent,) = studio.generation_requests()
    assert sent.path == "/v1/images/edits" and sent.headers["content-type"].startswith("multipart/form-data")
    assert studio.edited == [png()] and len(result.images) == 1


def test_urls_are_fetched_only_from_the_servers_own_host(
    tmp_path: Path, studio: FakeCompatibleServer, lab: FakeCompatibleServer
) -> None:
    settings = settings_for(tmp_path, studio, lab, STUDIO_KEY="studio-secret")
    assert generate(settings, "studio", "flux-dev", prompt="URLS").images[0].data == png()
    studio.reset()
    studio.api_key = "studio-secret"
    with pytest.raises(UpstreamError, match="outside its base URL's host"):
        generate(settings, "studio", "flux-dev", prompt="ELSEWHERE")
    assert [r for r in studio.requests if r.path.startswith("/files/")] == []


def test_refusals_failures_and_unknown_options(
    tmp_path: Path, studio: FakeCompatibleServer, lab: FakeCompatibleServer
) -> None:
    settings = settings_for(tmp_path, studio, lab, STUDIO_KEY="studio-secret")
    with pytest.raises(ContentPolicyViolation, match="safety system"):
        generate(settings, "studio", "flux-dev", prompt="BLOCKME")
    with pytest.raises(UpstreamError, match="HTTP 500"):
        generate(settings, "studio", "flux-dev", prompt="FAILME")
    assert len(generate(settings, "studio", "flux-dev", prompt="FLAKY").images) == 1
    result = generate(settings, "lab", "sdxl", options={"lora": "x"})
    assert result.warnings == [
        unsupported(
            "providerOptions.lab.lora",
            "not an option of lab (it takes seed, negative_prompt, steps, guidance_scale)",
        )
    ]


def test_every_config_file_type_has_an_adapter() -> None:
    assert set(registry.TYPES) == set(config_file.TYPES)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("providers:\n  studio:\n    type: comfy\n    base_url: http://x\n", 3, "unknown provider type"),
        ("providers:\n  studio:\n    type: openai-compatible\n", 2, "needs a base_url"),
        ("providers:\n  openai:\n    type: openai-compatible\n    base_url: http://x\n", 2, "built-in"),
        (
            "providers:\n  studio: {type: openai-compatible, base_url: 'http://x'}\nmodels:\n"
            "  studoi/x: {upstream_id: x, sizes: [8x8], default_size: 8x8, max_images: 1,\n"
            "             max_images_per_call: 1, price: {default: '0'}}\n",
            4,
            "no provider is named 'studoi'",
        ),
    ],
)
def test_config_mistakes_point_at_their_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "mg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=rf"mg.yaml:{line}: .*{message}"):
        check_config(load_settings({"MG_CONFIG": str(path)}))
