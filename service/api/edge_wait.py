"""How long a call waited between the edge (Envoy) receiving it and a worker taking it in.

Envoy stamps every routed request with when it received it (`x-mg-edge-start`, epoch seconds, set
by the edge whatever the caller sent). The difference to the worker's clock when the first
interceptor runs is the call's wait outside mg's own code: receiving the body (the edge buffers it
before forwarding), the edge's and gRPC's queues, and the worker's event loop taking calls in one
at a time. It is what grows first when a worker falls behind a burst (docs/performance.md), so each
request's log line and a histogram carry it. The edge and the worker share a host, or hosts with
synchronized clocks; a value off by more than a clock can be (negative, or from before the worker
started) is not reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

EDGE_START_HEADER = "x-mg-edge-start"
# An edge clock ahead of the worker's by up to this is read as no wait; further, as no measurement.
CLOCK_SKEW_S = 1.0


def edge_wait_s(metadata: Iterable[tuple[str, str | bytes]], now: float, not_before: float) -> float | None:
    """Seconds since the edge received the call, or None when the edge did not say (a caller
    reaching the gRPC port directly) or said something no clock explains (before `not_before`,
    the worker's start, or ahead of `now` by more than CLOCK_SKEW_S)."""
    for key, value in metadata:
        if key != EDGE_START_HEADER:
            continue
        try:
            started = float(value)
        except ValueError:
            return None
        if not math.isfinite(started) or started < not_before or started > now + CLOCK_SKEW_S:
            return None
        return max(0.0, now - started)
    return None
