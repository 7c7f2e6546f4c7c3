"""The concurrency limit's queue (bounded in length and in time) and the circuit breaker's states,
one worker's view, on a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from service.config_file import ProviderLimits
from service.errors import BadRequest, Unavailable, UpstreamError
from service.generation.capacity import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, InFlightLimit
from service.stores.sqlite import SqliteStore


async def test_the_queue_is_bounded_in_length_and_in_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    limit = InFlightLimit(store, "acme", ProviderLimits(max_in_flight=1, max_queued=1, max_queue_wait_s=1.0))
    deadline = time.monotonic() + 60
    order: list[str] = []

    async def call(name: str, hold_s: float) -> None:
        async with limit.slot(deadline):
            order.append(name)
            await asyncio.sleep(hold_s)

    # Margins of ~0.4 s either way (the queue wait is 1 s), for a slow machine's pauses.
    first = asyncio.create_task(call("first", 0.5))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(call("waiting", 0))
    await asyncio.sleep(0.05)
    with pytest.raises(Unavailable, match="1 calls are already waiting"):
        await call("third", 0)  # the queue (one place) is full
    await asyncio.gather(first, waiting)
    assert order == ["first", "waiting"]  # woken when the slot came free

    holder = asyncio.create_task(call("long", 3.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="none of its 1 slots came free in time"):
        await call("late", 0)
    assert 0.9 < time.monotonic() - started < 2.5  # its 1 s wait, not the holder's 3 s
    await holder
    await store.close()


def test_a_breaker_opens_probes_and_closes() -> None:
    breaker = CircuitBreaker("acme", failures=2, cooldown_s=0.1)
    for _ in range(2):
        assert breaker.admit() is False
        breaker.record(UpstreamError("down"), probe=False)
    assert breaker.state == OPEN
    with pytest.raises(Unavailable):
        breaker.admit()
    time.sleep(0.12)
    assert breaker.state == HALF_OPEN
    assert breaker.admit() is True  # the probe
    with pytest.raises(Unavailable):
        breaker.admit()  # only one at a time
    breaker.record(None, probe=True)
    assert breaker.state == CLOSED


def test_what_is_not_the_providers_failure_neither_opens_nor_closes_it() -> None:
    breaker = CircuitBreaker("acme", failures=1, cooldown_s=0.1)
    breaker.record(BadRequest("the caller's"), probe=False)
    breaker.record(Unavailable("no capacity"), probe=False)
    assert breaker.state == CLOSED
    breaker.record(UpstreamError("down"), probe=False)
    time.sleep(0.12)
    assert breaker.admit() is True
    breaker.record(Unavailable("no capacity"), probe=True)  # said nothing: another may probe
    assert breaker.state == HALF_OPEN
