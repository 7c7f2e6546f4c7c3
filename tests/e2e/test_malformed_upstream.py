"""A provider answer with real images but malformed details still answers 200 with the images.

By the time the details are read the provider has made (and charged for) the images, so they must
not turn into a 500 that loses them. Found by answering the gateway with randomly malformed
provider responses; every case below but `"usage": true` was a 500 before. The answers come from
a scripted server standing in for OpenAI (the adapters share the parsing checked here with the
other providers)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import png
from tests.support.checks import decode_png
from tests.support.gateway import GatewayProcess
from tests.support.image_server import Routes, serving

ROUTE = "/v1/images/generations"


@pytest.fixture(scope="module")
def routes() -> Routes:
    return {}


@pytest.fixture(scope="module")
def scripted_gateway(tmp_path_factory: pytest.TempPathFactory, routes: Routes) -> Iterator[GatewayProcess]:
    with serving(routes) as upstream:
        env = {
            "OPENAI_API_KEY": "sk-scripted",
            "OPENAI_BASE_URL": f"{upstream}/v1",
            "MG_UPSTREAM_ATTEMPTS": "1",
        }
        gateway = GatewayProcess(Path(tmp_path_factory.mktemp("scripted")), env).start()
        yield gateway
        gateway.stop()


def answer(routes: Routes, payload: dict[str, Any]) -> None:
    routes[ROUTE] = (200, {"content-type": "application/json"}, json.dumps(payload).encode())


def image_item(**extra: object) -> dict[str, object]:
    return {"b64_json": base64.b64encode(png(16, 16)).decode(), **extra}


def generate(gateway: GatewayProcess, model: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.http_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"model": model, "prompt": "a fox in the snow"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "usage",
    [
        True,
        {"input_tokens": -5, "output_tokens": "4160", "input_tokens_details": 3},
        {"input_tokens": {"a": 1}, "output_tokens": [4160]},
        {"input_tokens": 2**40, "output_tokens": 4160},
        {"input_tokens": 10, "output_tokens": 4160, "input_tokens_details": {"image_tokens": 300}},
    ],
)
def test_malformed_usage_keeps_the_images(
    scripted_gateway: GatewayProcess, routes: Routes, usage: object
) -> None:
    answer(routes, {"created": 1, "data": [image_item()], "usage": usage})
    response = generate(scripted_gateway, "openai/gpt-image-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert decode_png(base64.b64decode(body["data"][0]["b64_json"])).size == (16, 16)
    counted = body["usage"]
    assert counted["output_images"] == 1 and counted["input_tokens"] > 0
    assert counted["input_tokens_details"]["text_tokens"] >= 0
    assert not [line for line in scripted_gateway.output if '"level":"error"' in line]


def test_a_revised_prompt_that_is_not_text_is_left_out(
    scripted_gateway: GatewayProcess, routes: Routes
) -> None:
    answer(routes, {"created": 1, "data": [image_item(revised_prompt=7)]})
    response = generate(scripted_gateway, "openai/dall-e-3")
    assert response.status_code == 200, response.text
    assert "revised_prompt" not in response.json()["data"][0]
