"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one:
its shape, and that the Envoy config its edge container renders passes `envoy --mode validate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, dict[str, dict[str, object]]]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_runs_envoy_replicas_redis_and_object_storage() -> None:
    services = compose()["services"]
    assert set(services) == {"envoy", "service", "redis", "minio", "minio-setup"}
    assert services["service"]["build"] == services["envoy"]["build"] == "."
    assert services["service"]["command"] == ["mg", "serve", "--no-envoy"]
    assert "ports" not in services["service"]  # replicas: --scale service=N must not clash on a host port
    environment = services["service"]["environment"]
    assert isinstance(environment, dict) and environment["MG_GRPC_HOST"] == "0.0.0.0"
    # shared state, so any replica serves any request
    assert environment["MG_REDIS_URL"].startswith("redis://redis")
    assert environment["MG_S3_BUCKET"] and environment["MG_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "MG_URL_SIGNING_KEY" in environment
    command = services["redis"]["command"]
    assert isinstance(command, list) and "--appendonly" in command


def test_every_variable_compose_sets_is_a_setting_the_gateway_knows() -> None:
    from service.providers.registry import DECLARATIONS

    known = set(Settings().describe()) | {variable for spec in DECLARATIONS for variable in spec.variables}
    for name in ("service", "envoy"):
        environment = compose()["services"][name]["environment"]
        assert isinstance(environment, dict)
        assert set(environment) <= known, set(environment) - known


def test_the_compose_edge_config_is_valid_envoy_config(tmp_path: Path) -> None:
    environment = compose()["services"]["envoy"]["environment"]
    assert isinstance(environment, dict)
    env = {**os.environ, **{k: str(v) for k, v in environment.items()}}
    subprocess.run(
        [sys.executable, "-m", "service", "envoy-config", "--out", str(tmp_path)], env=env, check=True
    )
    config = (tmp_path / "envoy.yaml").read_text()
    assert "address: service, port_value: 50051" in config
    validate = subprocess.run(
        [Settings().envoy_binary, "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
