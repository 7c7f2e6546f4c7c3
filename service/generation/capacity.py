"""What the gateway does before each upstream call to a provider that has limits configured
(`providers.<name>.max_in_flight`, `breaker_failures`, ...: config_file.ProviderLimits).

- **Concurrency** (`InFlightLimit`): at most `max_in_flight` calls to the provider at once, across
  every worker and replica that share the store (slots in the store, each held for the call's time
  and given back after; a dead worker's lapse with their lease). A call beyond it waits, up to
  `max_queue_wait_s` and never past its own deadline, with at most `max_queued` others of its worker;
  then it is 503 `UNAVAILABLE` ("no capacity"), which a route answers by moving on.
- **Circuit breaker** (`CircuitBreaker`): after `breaker_failures` consecutive failures another
  provider could fix (routing.moves_on), the provider is not called for `breaker_cooldown_s`; calls
  are 503 at once. Then one call goes through as a probe: its success closes the circuit, its
  failure opens it for another cool-down. Each worker keeps its own breaker (as Envoy's outlier
  detection does per worker): the state a worker sees is in its answers, its metrics and readiness.

A provider with no limits configured gets no guard at all: its calls cost nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from typing import TypeVar

from ulid import ULID

from service.config_file import ProviderLimits
from service.errors import Unavailable
from service.generation.routing import moves_on
from service.runtime.observability import CIRCUIT_OPEN, UPSTREAM_QUEUED
from service.stores.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often a waiting call asks the store again for a slot another worker may have freed (a slot
# freed by its own worker wakes it at once).
POLL_S = 0.05
# A slot outlives its call's deadline by this much: a worker that dies holding it gives it back
# this long after the call would have ended anyway.
LEASE_MARGIN_S = 30.0

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, name: str, failures: int, cooldown_s: float) -> None:
        self.name = name
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if self._failures < self._threshold:
            return CLOSED
        return OPEN if time.monotonic() < self._open_until or self._probing else HALF_OPEN

    def admit(self) -> bool:
        """Raise Unavailable while the circuit is open; True when this call is the probe."""
        state = self.state
        if state == CLOSED:
            return False
        if state == HALF_OPEN:
            self._probing = True
            return True
        wait = max(1, round(self._open_until - time.monotonic()))
        raise Unavailable(
            f"{self.name} is not being called for now: its last {self._threshold} calls failed "
            "(its circuit breaker is open).",
            retry_after_s=wait,
        )

    def record(self, outcome: BaseException | None, probe: bool) -> None:
        """A call's outcome: None (it answered with images), a failure of the provider, or something
        that says nothing of it (no capacity, a refusal, the caller's own mistake)."""
        if probe:
            self._probing = False
        if outcome is None:
            self._close()
            return
        if not _provider_failed(outcome):
            return
        self._failures += 1
        if self._failures == self._threshold or (probe and self._failures > self._threshold):
            log.warning(
                "%s: %d consecutive failures; not calling it for %gs",
                self.name,
                self._failures,
                self._cooldown_s,
            )
        if self._failures >= self._threshold:
            self._open_until = time.monotonic() + self._cooldown_s
            CIRCUIT_OPEN.labels(self.name).set(1)

    def _close(self) -> None:
        if self._failures >= self._threshold:
            log.info("%s answered again; its circuit is closed", self.name)
        self._failures = 0
        CIRCUIT_OPEN.labels(self.name).set(0)


def _provider_failed(outcome: BaseException) -> bool:
    """A failure of the provider itself: what a route moves on for, but not a refusal for want of
    capacity or an open circuit (the gateway's own), and a call cut at its deadline."""
    if isinstance(outcome, Unavailable):
        return False
    return moves_on(outcome) or isinstance(outcome, TimeoutError | asyncio.CancelledError)


class InFlightLimit:
    def __init__(self, store: Store, name: str, limits: ProviderLimits) -> None:
        self._store = store
        self._pool = f"provider:{name}"
        self._name = name
        self._limits = limits
        self._waiting = 0
        self._freed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        """Hold one of the provider's slots for the block, waiting for one within the limits."""
        holder = str(ULID())
        lease_s = max(0.0, deadline - time.monotonic()) + LEASE_MARGIN_S
        taken = await self._store.acquire_slot(self._pool, holder, self._limits.max_in_flight, lease_s)
        if taken is None:
            taken = await self._wait(holder, deadline)
        try:
            yield
        finally:
            await asyncio.shield(self._release(taken, holder))

    async def _wait(self, holder: str, deadline: float) -> int:
        limits = self._limits
        if self._waiting >= limits.max_queued:
            raise self._no_capacity(f"{self._waiting} calls are already waiting")
        until = min(deadline, time.monotonic() + limits.max_queue_wait_s)
        self._waiting += 1
        UPSTREAM_QUEUED.labels(self._name).inc()
        try:
            while (left := until - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), timeout=min(POLL_S, left))
                lease_s = max(0.0, deadline - time.monotonic()) + LEASE_MARGIN_S
                taken = await self._store.acquire_slot(self._pool, holder, limits.max_in_flight, lease_s)
                if taken is not None:
                    return taken
            raise self._no_capacity(f"none of its {limits.max_in_flight} slots came free in time")
        finally:
            self._waiting -= 1
            UPSTREAM_QUEUED.labels(self._name).dec()

    async def _release(self, slot: int, holder: str) -> None:
        try:
            await self._store.release_slot(self._pool, slot, holder)
        except Unavailable:
            log.warning("could not give back a slot of %s; it lapses with its lease", self._name)
        # Wake this worker's waiting calls (a new Event for the next release).
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    def _no_capacity(self, why: str) -> Unavailable:
        return Unavailable(
            f"No capacity for {self._name} now: it takes {self._limits.max_in_flight} calls at once and "
            f"{why}.",
            retry_after_s=1,
        )


class ProviderGuard:
    """The breaker and the concurrency limit of one provider, around each of its upstream calls."""

    def __init__(self, breaker: CircuitBreaker | None, limit: InFlightLimit | None) -> None:
        self.breaker = breaker
        self._limit = limit

    async def call(self, send: Callable[[], Awaitable[T]], deadline: float) -> T:
        """`send()` once the breaker and the limit let it through."""
        probe = self.breaker.admit() if self.breaker is not None else False
        outcome: BaseException | None = None
        try:
            async with self._limit.slot(deadline) if self._limit is not None else contextlib.nullcontext():
                return await send()
        except BaseException as failure:
            outcome = failure
            raise
        finally:
            if self.breaker is not None:
                self.breaker.record(outcome, probe)


def build_guards(store: Store, limits: dict[str, ProviderLimits]) -> dict[str, ProviderGuard]:
    """A guard for each provider with limits configured; none for the others."""
    guards = {}
    for name, limit in limits.items():
        breaker = (
            CircuitBreaker(name, limit.breaker_failures, limit.breaker_cooldown_s)
            if limit.breaker_failures
            else None
        )
        in_flight = InFlightLimit(store, name, limit) if limit.max_in_flight else None
        if breaker is not None or in_flight is not None:
            guards[name] = ProviderGuard(breaker, in_flight)
    return guards


class Availability(Collection[str]):
    """The providers that can be called now: configured, and not behind an open circuit. What
    `GET /v1/models` says `available` from."""

    def __init__(self, configured: Collection[str], guards: Mapping[str, ProviderGuard]) -> None:
        self._configured = frozenset(configured)
        self._breakers = {name: g.breaker for name, g in guards.items() if g.breaker is not None}

    def __contains__(self, name: object) -> bool:
        breaker = self._breakers.get(name) if isinstance(name, str) else None
        return name in self._configured and (breaker is None or breaker.state != OPEN)

    def __iter__(self) -> Iterator[str]:
        return (name for name in sorted(self._configured) if name in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def check(self) -> str:
        """For readiness: "ok", or the providers whose circuit is open."""
        open_now = sorted(name for name, breaker in self._breakers.items() if breaker.state == OPEN)
        return f"circuit open: {', '.join(open_now)}" if open_now else "ok"
