"""An openai-compatible provider from the config file alone, end to end: the OpenAI SDK -> Envoy ->
gateway -> a plain OpenAI-shaped server, for generations, edits (reference_image) and hosted URLs."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from service.providers.media import sniff_media_type
from tests.fakes.base import png
from tests.fakes.openai_compatible import FakeCompatibleServer
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client

CONFIG = """\
providers:
  studio:
    type: openai-compatible
    base_url: {url}/v1
    api_key_env: STUDIO_KEY
models:
  studio/flux-dev:
    provider: studio
    upstream_id: flux-dev
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 2
    reference_image: true
    price: {{default: "0.01"}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeCompatibleServer]]:
    server = FakeCompatibleServer()
    server.api_key = "studio-secret"
    with server.running():
        root = tmp_path_factory.mktemp("compatible")
        config = root / "mg.yaml"
        config.write_text(CONFIG.format(url=server.url))
        gateway = GatewayProcess(root / "data", {"MG_CONFIG": str(config), "STUDIO_KEY": "studio-secret"})
        gateway.start()
        try:
            yield gateway, server
        finally:
            gateway.stop()


def test_the_sdk_gets_images_from_a_configured_server(
    stack: tuple[GatewayProcess, FakeCompatibleServer],
) -> None:
    gateway, server = stack
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    result = client.images.generate(model="studio/flux-dev", prompt="a lighthouse", n=3)
    assert result.data is not None and len(result.data) == 3  # fanned out: 2 + 1
    assert sorted(r.json["n"] for r in server.generation_requests()) == [1, 2]
    for item in result.data:
        assert item.b64_json is not None and base64.b64decode(item.b64_json) == png()
    listing = httpx.get(f"{gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {gateway.key}"})
    assert {m["id"]: m["available"] for m in listing.json()["data"]}["studio/flux-dev"] is True


def test_an_edit_and_a_hosted_url(stack: tuple[GatewayProcess, FakeCompatibleServer]) -> None:
    gateway, server = stack
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    reference = "data:image/png;base64," + base64.b64encode(png()).decode()
    edited = client.images.generate(
        model="studio/flux-dev", prompt="make it night", extra_body={"reference_image": reference}
    )
    assert edited.data is not None and edited.data[0].b64_json is not None
    assert png() in server.edited
    hosted = client.images.generate(model="studio/flux-dev", prompt="URLS", response_format="url")
    assert hosted.data is not None and hosted.data[0].url is not None
    fetched = httpx.get(hosted.data[0].url)
    assert fetched.status_code == 200 and sniff_media_type(fetched.content) == "image/png"


def test_config_check_names_the_configured_server(stack: tuple[GatewayProcess, FakeCompatibleServer]) -> None:
    gateway, _ = stack
    checked = gateway.mg("config", "check")
    assert "studio (openai-compatible)" in checked.stdout
