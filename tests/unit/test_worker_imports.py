"""A worker loads what only some requests or configurations use when it is first used, not at start:
each such module is held by every worker for its whole life (the idle RSS target counts them all)."""

from __future__ import annotations

import json
import subprocess
import sys

# module -> what first needs it
ON_DEMAND = {
    "PIL": "the local provider's renders and reference images",
    "tiktoken": "the first prompt token count",
    "httpx": "the first reference image fetched by URL",
    "redis": "MG_REDIS_URL",
    "boto3": "MG_S3_BUCKET",
    "botocore": "MG_S3_BUCKET, or the bedrock provider (SigV4 signing)",
    "psycopg": "MG_POSTGRES_URL",
    "psycopg_pool": "MG_POSTGRES_URL",
}
# Packages under a namespace others share at start (google.protobuf is gRPC's): checked by full name.
ON_DEMAND_SUBPACKAGES = {"google.auth": "the vertex provider (OAuth2 tokens)"}


def loaded_at_start(module: str) -> set[str]:
    """Top-level packages, and the ON_DEMAND_SUBPACKAGES, in sys.modules after importing `module`
    in a fresh interpreter."""
    subpackages = f"({set(ON_DEMAND_SUBPACKAGES)!r} & set(sys.modules))"
    names = f"sorted({{name.split('.')[0] for name in sys.modules}} | {subpackages})"
    script = f"import json, sys, {module}; print(json.dumps({names}))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_worker_start_leaves_on_demand_modules_unloaded() -> None:
    loaded = loaded_at_start("service.runtime.server")
    assert "grpc" in loaded  # the probe imported the worker for real
    on_demand = {**ON_DEMAND, **ON_DEMAND_SUBPACKAGES}
    assert not loaded & set(on_demand), {name: on_demand[name] for name in loaded & set(on_demand)}


def test_loading_settings_reads_the_declarations_without_the_http_client() -> None:
    """`mg serve`'s supervisor loads settings, which imports every adapter module for its
    declaration; it never calls a provider, so it must not carry aiohttp (~9 MB) or gRPC."""
    names = "sorted({name.split('.')[0] for name in sys.modules})"
    script = (
        "import json, sys, service.cli, service.config; "
        "settings = service.config.load_settings({'OPENAI_API_KEY': 'k'}); "
        f"assert 'openai' in settings.providers; print(json.dumps({names}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "service" in loaded and not loaded & {"aiohttp", "grpc", *ON_DEMAND}, loaded & {"aiohttp", "grpc"}
