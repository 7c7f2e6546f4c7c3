"""Real Envoy, rendered by the gateway's own edge module, in front of any gRPC port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from service.config import Settings
from service.runtime.edge import EnvoyProcess, write_edge_files
from tests.support.ports import free_port


@contextmanager
def running_envoy(grpc_port: int, directory: Path, **overrides: object) -> Iterator[str]:
    """Envoy on a free port proxying to 127.0.0.1:grpc_port; yields its base URL."""
    settings = replace(
        Settings(),
        http_port=free_port(),
        grpc_port=grpc_port,
        envoy_admin_port=free_port(),
        envoy_concurrency=1,
        **overrides,  # type: ignore[arg-type]
    )
    envoy = EnvoyProcess(settings, write_edge_files(settings, directory), directory / "envoy.log")
    envoy.start()
    try:
        assert envoy.wait_ready(30), envoy.log_tail()
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        envoy.stop()
