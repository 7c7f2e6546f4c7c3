"""Free loopback ports for test instances (each gets its own, so instances run side by side).

Ports come from below the kernel's ephemeral range: a port picked from inside it (bind to port 0)
can be handed to an outgoing connection between the pick and the gateway's bind, which then fails
with "Address already in use" (seen with the metrics port, bound last at start-up).

Under pytest-xdist each worker process picks from a slice of its own: the bind check only proves a
port free at the moment of the pick, so two workers could otherwise both pick one that neither has
bound yet (a gateway binds its four ports a second or more after they are picked)."""

from __future__ import annotations

import os
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


def _range() -> tuple[int, int]:
    """This process's ports: all of [_FIRST, ephemeral) alone, or its worker's slice of it."""
    first, last = _FIRST, _below_ephemeral() - 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... (unset without xdist)
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        width = (last - first + 1) // count
        first += int(worker[2:]) % count * width
        last = first + width - 1
    return first, last


_recent: list[int] = []


def free_port() -> int:
    first, last = _range()
    for _ in range(200):
        port = random.randint(first, last)
        # Not one handed out moments ago either: a gateway picks its four ports before binding any.
        if port in _recent:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _recent.append(port)
            del _recent[:-64]
            return port
    raise RuntimeError(f"no free port between {first} and {last}")
