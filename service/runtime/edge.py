"""The Envoy edge: render its config from settings, and run it as a child process."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from string import Template

from service.config import Settings
from service.data_dir import open_private
from service.errors import Unavailable, lua_constants
from service.runtime.envoy_admin import admin_request, admin_socket_path, claim_admin_socket

# The repository's envoy/ directory (a link in a checkout, a copy in the installed package).
ENVOY_DIR = Path(__file__).with_name("envoy")
# Past the server's own max duration, so the server's 504 envelope (not Envoy's) reaches callers.
EDGE_TIMEOUT_MARGIN_S = 5.0
OVERLOADED = Unavailable("The gateway is overloaded; retry shortly.")


@dataclass(frozen=True)
class EdgeFiles:
    config: Path
    lua: Path


def edge_timeout_s(settings: Settings) -> float:
    return settings.max_duration_s + EDGE_TIMEOUT_MARGIN_S


def _upstream_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.grpc_host in ("0.0.0.0", "") else settings.grpc_host


def render_lua() -> str:
    return (ENVOY_DIR / "errors.lua").read_text().replace("--@@CONSTANTS@@", lua_constants())


def render_config(settings: Settings, lua_path: Path) -> str:
    template = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        http_host=settings.http_host,
        http_port=settings.http_port,
        grpc_host=settings.grpc_host,
        grpc_port=settings.grpc_port,
        upstream_host=_upstream_host(settings),
        admin_socket=admin_socket_path(settings),
        stats_port=settings.envoy_stats_port,
        edge_timeout=f"{edge_timeout_s(settings):g}s",
        headers_timeout=f"{settings.envoy_headers_timeout_s:g}s",
        request_timeout=f"{settings.envoy_request_timeout_s:g}s",
        max_connections=settings.envoy_max_connections,
        max_heap_bytes=settings.envoy_max_heap_bytes,
        # a JSON string is a YAML double-quoted scalar
        overloaded_envelope=json.dumps(json.dumps(OVERLOADED.envelope(), separators=(",", ":"))),
        lua_path=lua_path,
        descriptor_path=settings.descriptor_set,
        max_response_bytes=settings.max_response_bytes,
        max_request_bytes=settings.max_request_bytes,
        upstream_max_streams=settings.envoy_upstream_max_streams,
        mg_version=version("mg-gateway"),
    )


def write_edge_files(settings: Settings, directory: Path) -> EdgeFiles:
    directory.mkdir(parents=True, exist_ok=True)
    lua = directory / "errors.lua"
    lua.write_text(render_lua())
    config = directory / "envoy.yaml"
    config.write_text(render_config(settings, lua.resolve()))
    return EdgeFiles(config, lua)


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the gateway process dies, even by SIGKILL,
    so no Envoy is left holding the ports. Runs before any thread exists in the supervisor."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EnvoyProcess:
    """Envoy as a child process, with readiness from its admin socket."""

    def __init__(self, settings: Settings, files: EdgeFiles, log_path: Path) -> None:
        self._settings = settings
        self._files = files
        self._log_path = log_path
        self._admin_socket = admin_socket_path(settings)
        self.process: subprocess.Popen[bytes] | None = None

    def claim_admin_socket(self) -> None:
        claim_admin_socket(self._admin_socket)

    def start(self) -> None:
        # Private even if an older file was wider: at a debug level Envoy writes request headers.
        log = open_private(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.process = self._popen(log)
        finally:
            os.close(log)

    def _popen(self, log: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self._settings.envoy_binary,
                "-c",
                str(self._files.config),
                "--concurrency",
                str(self._settings.envoy_threads),
                # At debug levels Envoy logs request headers (API keys); the level can change only
                # through the admin socket, which only this user can open.
                "--log-level",
                "warn",
                # Several gateways may run on one machine: no shared-memory hot-restart region.
                "--disable-hot-restart",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )

    def is_ready(self) -> bool:
        try:
            status, _ = admin_request(self._admin_socket, "/ready")
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                return False
            if self.is_ready():
                return True
            time.sleep(0.05)
        return False

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
