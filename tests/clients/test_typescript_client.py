"""Internal callers in other languages: a Node client generated from the proto calls the gRPC API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "clients" / "typescript"


@pytest.fixture(scope="module")
def generated() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to check the TypeScript client generation")
    env = {**os.environ, "TS_OUT": str(CLIENT / "gen")}
    subprocess.run([str(ROOT / "proto" / "generate.sh"), "typescript"], check=True, env=env, cwd=ROOT)
    return CLIENT / "gen"


def test_node_client_from_generated_code_calls_the_gateway(generated: Path, gateway: GatewayProcess) -> None:
    assert (generated / "mg" / "v1" / "image_generation_pb.js").exists()
    run = subprocess.run(
        ["node", "client.mjs", gateway.grpc_target, gateway.key],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["id"].startswith("img_")
    assert len(result["images"]) == 2 == result["outputImages"]
    assert all(image["png"] and image["bytes"] > 1000 for image in result["images"])
    assert "local/sketch" in result["models"]
    assert result["refused"]["code"] == 5  # Connect's Code.NotFound
