"""Routes: an alias whose value is a list of models, tried in order until one makes the images.

    aliases:
      hero: [openai/gpt-image-1, google/gemini-2.5-flash-image, bfl/flux-pro-1.1]

Admission (admission.py) keeps the targets that can honour the request (size, n, quality, input
images, mask, streaming, the project's allowlist, a configured provider); the pipeline tries them in
order. It moves on to the next only when the failure is one another provider could fix (`moves_on`),
while the max duration is not spent, and while no partial image of the attempt has been streamed.

Time: a target with targets after it gets an equal share of the time left before the max duration
(the first of three gets a third, the second half of what is then left), so a slow provider leaves
time for the next; the last target gets what is left of the upstream limit, as a single model does.

Money (pipeline.py, spend.py): one reservation covers the most expensive target still possible;
each attempt that reached a provider gets its ledger entry; the images are charged at the price of
the target that made them. An attempt abandoned with calls still running upstream owes their bound
(the provider bills them), as any generation does: it is charged, and the rest of the route reserved
anew, or the route ends there if the cap has no room for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import Unavailable, UpstreamError, UpstreamRateLimited, UpstreamTimeout

# What another provider could succeed at: unreachable, 5xx or an unusable answer (502), 429 after
# the adapter's own retries, the gateway's key rejected (502), out of its share of the time (504),
# no capacity or an open circuit (503). Never CONTENT_POLICY_VIOLATION or a 400: those would fail the
# same way anywhere, and a refusal must not be shopped around.
FALLBACK_ERRORS = (UpstreamError, UpstreamRateLimited, UpstreamTimeout, Unavailable)

SERVED_BY_HEADER = "x-mg-served-by"


def moves_on(failure: BaseException) -> bool:
    return isinstance(failure, FALLBACK_ERRORS)


def attempt_timeout_s(now: float, route_end: float, upstream_end: float, targets_after: int) -> float:
    """How long one target may take (see the module docstring)."""
    if targets_after == 0:
        return upstream_end - now
    return max(0.0, route_end - now) / (targets_after + 1)


@dataclass(frozen=True)
class AttemptNote:
    """One target of a route, as the request's log line lists it."""

    model: str
    outcome: str  # "ok", "partial", "skipped: <code>" or the error code
    latency_ms: int = 0
    cost_micros: int = 0

    def __str__(self) -> str:
        if self.outcome.startswith("skipped"):
            return f"{self.model} {self.outcome}"
        return f"{self.model} {self.outcome} {self.latency_ms}ms"
