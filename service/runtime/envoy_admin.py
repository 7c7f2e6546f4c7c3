"""Envoy's admin interface, on a Unix socket only the gateway's user can open (mode 0600).

Through it Envoy can be stopped and its log level raised (at debug levels it logs request
headers, API keys included), so it is never on a TCP port. The gateway uses it for readiness.
"""

from __future__ import annotations

import http.client
import os
import socket
import stat
from pathlib import Path

from service.config import Settings
from service.data_dir import private_dir

# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


class AdminSocketError(ValueError):
    """The admin socket cannot be where the settings put it; the message says what to change."""


def admin_socket_path(settings: Settings) -> Path:
    path = settings.envoy_admin_path.absolute()
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise AdminSocketError(
            f"the Envoy admin socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes; "
            "set MG_ENVOY_ADMIN_SOCKET to a shorter path (in a directory only this user can enter)"
        )
    return path


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout_s: float) -> None:
        super().__init__("envoy-admin", timeout=timeout_s)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_request(
    socket_path: Path, path: str, method: str = "GET", timeout_s: float = 1.0
) -> tuple[int, bytes]:
    """(status, body) of one call to Envoy's admin interface on its Unix socket; OSError if none."""
    connection = _UnixHTTPConnection(socket_path, timeout_s)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def claim_admin_socket(path: Path) -> None:
    """Make way for Envoy's admin socket: create its directory private, remove a socket a dead
    Envoy left, and refuse one a live Envoy answers on (another gateway on this data dir)."""
    private_dir(path.parent)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AdminSocketError(f"the Envoy admin socket path {path} is taken by a file that is not a socket")
    try:
        admin_request(path, "/ready")
    except ConnectionRefusedError:
        path.unlink()
        return
    except (OSError, http.client.HTTPException):
        pass
    raise AdminSocketError(f"an Envoy already answers on the admin socket {path}")
