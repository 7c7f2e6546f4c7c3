"""The open-files limit: as many as the gateway may hold at once.

Every caller connection is a file in Envoy, and every generation in flight holds an upstream
connection in a worker (a submit-and-poll provider's too, while it polls). A 5-minute generation
at 100 a second is tens of thousands of files: far past the soft limit most systems start a
process with (1,024). `mg serve` raises its soft limit to the hard one before it starts Envoy and
the workers, which inherit it, and says when even the hard limit is short of what the edge lets in
(MG_ENVOY_MAX_CONNECTIONS).
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger("mg")
# Files a process opens besides its connections: the store, logs, metric files, the binary's own.
BESIDES_CONNECTIONS = 1_024
# Linux refuses a soft limit above fs.nr_open even when the hard limit is unlimited.
NR_OPEN = Path("/proc/sys/fs/nr_open")


def open_files_needed(max_connections: int) -> int:
    """What Envoy needs with `max_connections` callers, each generation holding one upstream
    connection in a worker: the worker's share is smaller, so Envoy's need is the bound."""
    return max_connections + BESIDES_CONNECTIONS


def raise_open_files_limit(max_connections: int) -> int:
    """Soft limit up to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft == resource.RLIM_INFINITY or soft >= ceiling:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, ceiling, exc)
    needed = open_files_needed(max_connections)
    if soft < needed:
        log.warning(
            "open files are limited to %d, but MG_ENVOY_MAX_CONNECTIONS=%d callers at once need about %d: "
            "raise the hard limit (`ulimit -Hn`, systemd LimitNOFILE=, docker --ulimit nofile=) or lower "
            "MG_ENVOY_MAX_CONNECTIONS",
            soft,
            max_connections,
            needed,
        )
    return soft


def _nr_open() -> int:
    try:
        return int(NR_OPEN.read_text())
    except (OSError, ValueError):
        return 1 << 20
