"""Free loopback ports for test instances (each gets its own, so instances run side by side).

Ports come from below the kernel's ephemeral range: a port picked from inside it (bind to port 0)
can be handed to an outgoing connection between the pick and the gateway's bind, which then fails
with "Address already in use" (seen with the metrics port, bound last at start-up)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FIRST = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _below_ephemeral() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default lower bound


def free_port() -> int:
    last = _below_ephemeral() - 1
    for _ in range(200):
        port = random.randint(_FIRST, last)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {_FIRST} and {last}")
