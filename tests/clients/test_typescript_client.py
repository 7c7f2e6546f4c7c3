"""Callers in other languages: a Node client generated from the proto calls the gRPC API, and the
official openai-node SDK and the AI SDK (`ai` with `@ai-sdk/openai`) call the REST edge."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.gateway import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "clients" / "typescript"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to check the TypeScript client generation")
    # Once per test run, under a lock: generate.sh runs `npm ci` (which deletes node_modules first)
    # and rewrites gen/, so under pytest-xdist a second worker generating at the same time would pull
    # both from under the first one's node scripts. The workers of one run share the parent of their
    # temporary directories; a run without xdist generates each time, as before.
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent
    with (run_dir / "typescript-client.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = run_dir / "typescript-client.generated"
        if not done.exists():
            env = {**os.environ, "TS_OUT": str(CLIENT / "gen")}
            subprocess.run([str(ROOT / "proto" / "generate.sh"), "typescript"], check=True, env=env, cwd=ROOT)
            done.touch()
    return CLIENT / "gen"


def node(script: str, *args: str) -> Any:
    """What a Node script in tests/clients/typescript printed (JSON), after it succeeded."""
    run = subprocess.run(["node", script, *args], cwd=CLIENT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_node_client_from_generated_code_calls_the_gateway(generated: Path, gateway: GatewayProcess) -> None:
    assert (generated / "mg" / "v1" / "image_generation_pb.js").exists()
    result = node("client.mjs", gateway.grpc_target, gateway.key)
    assert result["id"].startswith("img_")
    assert len(result["images"]) == 2 == result["outputImages"]
    assert all(image["png"] and image["bytes"] > 1000 for image in result["images"])
    assert "local/sketch" in result["models"]
    assert result["refused"]["code"] == 5  # Connect's Code.NotFound


def test_openai_node_edits_images_through_the_rest_edge(
    generated: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    picture = tmp_path / "in.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(picture)  # transparent: doubles as a mask
    result = node("images_edit.mjs", f"{gateway.http_url}/v1", gateway.key, str(picture))
    assert result["one"] == ["PNG"] and result["several"] == ["PNG", "PNG"]
    assert result["streamed"] == [
        {"type": "image_edit.partial_image", "partialImageIndex": 0},
        {"type": "image_edit.partial_image", "partialImageIndex": 1},
        {"type": "image_edit.completed", "partialImageIndex": None},
    ]
    assert result["refused"] == {"status": 403, "code": "MODEL_NOT_ALLOWED", "param": "model"}


def test_the_ai_sdk_edits_images_with_generate_image(
    generated: Path, gateway: GatewayProcess, tmp_path: Path
) -> None:
    # `ai` + `@ai-sdk/openai`: generateImage with `prompt: {images, text}` (and a mask) is a
    # multipart POST /images/edits (`image`, or `image[]` for several).
    picture = tmp_path / "in.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(picture)
    result = node("ai_sdk_edit.mjs", f"{gateway.http_url}/v1", gateway.key, str(picture))
    assert [image["mediaType"] for image in result["one"] + result["several"]] == ["image/png"] * 2
    assert all(image["bytes"] > 1000 for image in result["one"] + result["several"])
    assert result["refused"]["status"] == 403
    assert result["refused"]["body"]["error"]["code"] == "MODEL_NOT_ALLOWED"


def test_openai_node_streams_a_generation_through_the_rest_edge(
    generated: Path, gateway: GatewayProcess
) -> None:
    result = node("images_stream.mjs", f"{gateway.http_url}/v1", gateway.key)
    assert [event["type"] for event in result["events"]] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event["partialImageIndex"] for event in result["events"]] == [0, 1, None]
    assert all(event["png"] for event in result["events"])
    assert result["events"][2]["outputImages"] == 1
    assert result["model"] == "local/sketch"  # models.retrieve sent it as local%2Fsketch
    assert result["refused"] == {"status": 404, "code": "MODEL_NOT_FOUND"}  # before the first event
