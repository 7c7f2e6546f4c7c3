"""What one call's log line and metrics say about its generation, as the pipeline learns it.

The pipeline writes it; the observe interceptor reads it once the call is over. It holds no payload
(no image, no reference image): the request context that carries it can outlive the call by minutes
(every asyncio timer a call schedules keeps the call's contextvars Context alive until it is due).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.generation.routing import AttemptNote
    from service.providers.base import CallWarning


@dataclass(slots=True)
class CallReport:
    model: str = ""  # the resolved catalog id: never the caller's unvalidated text
    provider: str = ""
    n: int = 0
    size: str = ""
    prompt: str = ""
    images: int = 0
    cost_micros: int = 0
    upstream_latency_ms: int | None = None
    warnings: tuple[CallWarning, ...] = ()
    # A route's targets, in order: those skipped at admission, then each attempt and its outcome.
    attempts: tuple[AttemptNote, ...] = ()
