"""GCRA (generic cell rate algorithm) for per-key requests-per-minute limits.

State is one number per bucket, the theoretical arrival time (TAT). A full minute's allowance may be
used at once (burst = limit); after that, one request per 60/limit seconds. The Redis store runs the
same arithmetic in Lua (stores/redis_scripts.py); this is the SQLite store's copy.
"""

from __future__ import annotations

import math

from service.stores.base import RateDecision

WINDOW_S = 60.0


def gcra(tat: float | None, now: float, limit: int) -> tuple[RateDecision, float | None]:
    """The decision for one request, and the new TAT to store (None: unchanged)."""
    interval = WINDOW_S / limit
    start = max(tat or now, now)
    new_tat = start + interval
    if new_tat - now > WINDOW_S + 1e-9:
        retry_after = new_tat - now - WINDOW_S
        remaining = 0
        return RateDecision(False, limit, remaining, start - now, retry_after), None
    remaining = math.floor((WINDOW_S - (new_tat - now)) / interval + 1e-9)
    return RateDecision(True, limit, remaining, new_tat - now), new_tat
