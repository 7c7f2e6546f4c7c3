"""Model names as the SDKs send them: models.retrieve with ids holding a slash, aliases listed as
entries of their own, and bare OpenAI model names ("dall-e-3") resolved to the one provider that
offers them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes import environment
from tests.fakes.base import FakeProvider
from tests.fakes.openai import FakeOpenAI
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client

# A second provider offering "gpt-image-1", which makes that bare name ambiguous.
CONFIG = """
models:
  local/gpt-image-1:
    upstream_id: sketch
    sizes: [256x256]
    default_size: 256x256
    max_images: 1
    max_images_per_call: 1
    price: {default: "0.001"}
aliases:
  quick: local/sketch
"""


def get(gateway: GatewayProcess, path: str) -> httpx.Response:
    return httpx.get(
        f"{gateway.http_url}{path}", headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeProvider]]:
    directory = tmp_path_factory.mktemp("models")
    config = directory / "mg.yaml"
    config.write_text(CONFIG)
    with FakeOpenAI().running() as fake:
        gateway = GatewayProcess(directory / "data", {**environment(fake), "MG_CONFIG": str(config)}).start()
        try:
            yield gateway, fake
        finally:
            gateway.stop()


def test_models_retrieve_takes_ids_with_a_slash(gateway: GatewayProcess) -> None:
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    model = client.models.retrieve("local/sketch")  # sent as /v1/models/local%2Fsketch
    assert (model.id, model.object, model.owned_by) == ("local/sketch", "model", "local")
    unencoded = get(gateway, "/v1/models/local/sketch")
    assert unencoded.status_code == 200 and unencoded.json()["id"] == "local/sketch"
    assert unencoded.json()["capabilities"]["max_images_per_call"] == 4
    assert_error(get(gateway, "/v1/models/local%2Fnope"), 404, "MODEL_NOT_FOUND", "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope/x")


def test_aliases_are_entries_of_their_own(stack: tuple[GatewayProcess, FakeProvider]) -> None:
    gateway, _ = stack
    listing = get(gateway, "/v1/models").json()["data"]
    alias = next(entry for entry in listing if entry["id"] == "quick")
    assert alias["alias_of"] == "local/sketch" and alias["owned_by"] == "local"
    model = next(entry for entry in listing if entry["id"] == "local/sketch")
    assert "alias_of" not in model and model["aliases"] == ["quick"]
    retrieved = openai_client(f"{gateway.http_url}/v1", gateway.key).models.retrieve("quick")
    assert retrieved.id == "quick" and (retrieved.model_extra or {}).get("alias_of") == "local/sketch"


def test_a_bare_openai_name_reaches_the_one_provider_that_offers_it(
    stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, fake = stack
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    result = client.images.generate(model="dall-e-3", prompt="a lighthouse", size="1024x1024")
    assert result.data is not None and result.data[0].b64_json
    assert result.model_extra is not None and result.model_extra["model"] == "dall-e-3"  # as named
    sent = fake.generation_requests()[-1].json
    assert sent["model"] == "dall-e-3"
    assert client.models.retrieve("dall-e-3").id == "openai/dall-e-3"


def test_an_ambiguous_bare_name_is_a_400_listing_the_candidates(
    stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, fake = stack
    calls = len(fake.generation_requests())
    response = gateway.generate({"model": "gpt-image-1", "prompt": "x"})
    error = assert_error(response, 400, "BAD_REQUEST", "model")
    assert "local/gpt-image-1, openai/gpt-image-1" in error["message"]
    assert len(fake.generation_requests()) == calls
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="gpt-image-1", prompt="x")


def test_a_bare_name_prefers_the_configured_provider(tmp_path: Path) -> None:
    config = tmp_path / "mg.yaml"
    config.write_text(CONFIG)
    gateway = GatewayProcess(tmp_path / "data", {"MG_CONFIG": str(config)}).start()  # no OpenAI key
    try:
        response = gateway.generate({"model": "gpt-image-1", "prompt": "x"})
        assert response.status_code == 200, response.text  # local/gpt-image-1: openai is not configured
        # one provider offers it, unconfigured: the answer says so
        refused = gateway.generate({"model": "recraft-v3", "prompt": "x"})
        assert_error(refused, 404, "PROVIDER_NOT_CONFIGURED", "model")
        # several do, none configured: the candidates are named
        error = assert_error(
            gateway.generate({"model": "dall-e-3", "prompt": "x"}), 400, "BAD_REQUEST", "model"
        )
        assert (
            "azure/dall-e-3, openai/dall-e-3 (none of their providers is configured here)" in error["message"]
        )
    finally:
        gateway.stop()
