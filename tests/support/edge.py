"""Real Envoy, rendered by the gateway's own edge module, in front of any gRPC port; and ways to
look at what it holds (memory, listening ports) and to make clients that hold it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

from service.config import Settings
from service.runtime.edge import EnvoyProcess, write_edge_files
from tests.support.ports import free_port

MIB = 1024 * 1024
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


@contextmanager
def running_envoy(grpc_port: int, directory: Path, **overrides: object) -> Iterator[str]:
    """Envoy on a free port proxying to 127.0.0.1:grpc_port; yields its base URL."""
    settings = replace(
        Settings(),
        http_port=free_port(),
        grpc_port=grpc_port,
        envoy_admin_socket=str(directory / "admin.sock"),
        envoy_stats_port=free_port(),
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


def rss_bytes(pid: int) -> int:
    """The resident memory of process `pid`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(pid)


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket fds matched against /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and inode in inodes:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def start_upload(port: int, body_bytes: int, headers: dict[str, str], sent_bytes: int) -> socket.socket:
    """A connection to the edge that has sent the headers of POST /v1/images/generations with a
    `body_bytes` body, and the first `sent_bytes` of it (JSON whitespace), and waits. Sending stops
    early, without error, if the edge answers and closes first."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(body_bytes)}
    lines = [f"{name}: {value}" for name, value in {**head, **headers}.items()]
    chunk = b" " * (256 * 1024)
    with suppress(OSError):
        sock.sendall("\r\n".join(["POST /v1/images/generations HTTP/1.1", *lines, "", ""]).encode())
        sent = 0
        while sent < sent_bytes:
            sock.sendall(chunk[: sent_bytes - sent])
            sent += len(chunk)
    return sock


@contextmanager
def paused_uploads(
    port: int, count: int, body_mib: int, headers: dict[str, str], pause_s: float = 0.0
) -> Iterator[list[socket.socket]]:
    """`count` connections that each sent all but the last byte of a `body_mib` MiB body and wait
    (one every `pause_s`); closed on exit."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(start_upload(port, body_mib * MIB + 1, headers, body_mib * MIB))
            time.sleep(pause_s)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
