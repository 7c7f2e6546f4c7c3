"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one:
its shape, that the store it sets up is the one the gateway is pointed at, and that the Envoy config
its edge container renders passes `envoy --mode validate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from service.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, dict[str, dict[str, object]]]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


# Services built from this repository (they run mg) and what else they may be given: libpq's own
# password variable, which keeps the password out of MG_POSTGRES_URL.
MG_SERVICES = ("service", "envoy", "migrate")
LIBPQ_VARIABLES = {"PGPASSWORD"}


def test_compose_runs_envoy_replicas_postgres_redis_and_object_storage() -> None:
    services = compose()["services"]
    assert set(services) == {"envoy", "service", "migrate", "postgres", "redis", "minio", "minio-setup"}
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


def test_compose_keeps_the_store_in_postgresql_on_a_volume_migrated_before_any_replica() -> None:
    document = compose()
    services = document["services"]
    postgres, migrate, service = services["postgres"], services["migrate"], services["service"]
    assert str(postgres["image"]).startswith("postgres:")
    assert "postgres-data:/var/lib/postgresql/data" in list(postgres["volumes"])  # type: ignore[call-overload]
    assert "postgres-data" in document["volumes"]
    # ready only once it listens on TCP (not the image's socket-only initialisation server)
    check = list(postgres["healthcheck"]["test"])  # type: ignore[index]
    assert "pg_isready" in check and check[check.index("-h") + 1] == "127.0.0.1"
    # the gateway and `mg migrate` reach that database, as the user it was made for
    environment = service["environment"]
    assert isinstance(environment, dict) and isinstance(migrate["environment"], dict)
    url = environment["MG_POSTGRES_URL"]
    assert migrate["environment"]["MG_POSTGRES_URL"] == url
    assert load_settings({"MG_POSTGRES_URL": url}).postgres_url == url
    parts = urlsplit(url)
    database = postgres["environment"]
    assert isinstance(database, dict)
    assert (parts.hostname, parts.port, parts.username, parts.path) == (
        "postgres", 5432, database["POSTGRES_USER"], "/" + database["POSTGRES_DB"]
    )  # fmt: skip
    assert parts.password is None  # from PGPASSWORD, the database's own password
    assert environment["PGPASSWORD"] == migrate["environment"]["PGPASSWORD"] == database["POSTGRES_PASSWORD"]
    # Redis stays beside it, for rate limits
    assert environment["MG_REDIS_URL"].startswith("redis://redis")
    # the schema is brought up to date first, once, and the replicas start after it succeeded
    assert migrate["command"] == ["mg", "migrate"] and migrate["build"] == "."
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    depends_on = service["depends_on"]
    assert isinstance(depends_on, dict)
    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}


def test_every_variable_compose_sets_is_a_setting_the_gateway_knows() -> None:
    from service.providers.registry import DECLARATIONS

    known = set(Settings().describe()) | {variable for spec in DECLARATIONS for variable in spec.variables}
    for name in MG_SERVICES:
        environment = compose()["services"][name]["environment"]
        assert isinstance(environment, dict)
        assert set(environment) <= known | LIBPQ_VARIABLES, set(environment) - known


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
