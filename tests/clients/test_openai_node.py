"""The official OpenAI Node SDK (openai-node, pinned in tests/clients/openai-node) against the real
gateway's REST edge: a streamed generation yields the partial images and the completed event,
models.retrieve takes an id with a slash, and an error before the first event is the SDK's error."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess

CLIENT = Path(__file__).resolve().parent / "openai-node"


@pytest.fixture(scope="module")
def installed() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to run the OpenAI Node SDK against the gateway")
    subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, timeout=300)
    return CLIENT


def test_openai_node_streams_a_generation(installed: Path, gateway: GatewayProcess) -> None:
    run = subprocess.run(
        ["node", "stream.mjs", f"{gateway.http_url}/v1", gateway.key],
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert [event["type"] for event in result["events"]] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event["partialImageIndex"] for event in result["events"]] == [0, 1, None]
    assert all(event["png"] for event in result["events"])
    assert result["events"][2]["outputImages"] == 1
    assert result["model"] == "local/sketch"
    assert result["refused"] == {"status": 404, "code": "MODEL_NOT_FOUND"}
