"""Renewing: a credential is waited for only when none is held or it is about to expire; due for
renewal, it is renewed in the background while calls go on with it; a failed renewal keeps it."""

from __future__ import annotations

import asyncio

import pytest

from service.providers import renewing
from service.providers.renewing import Renewing


class Source:
    """Hands out 1, 2, 3...; `due` and `expiring` name the values that are."""

    def __init__(self) -> None:
        self.fetched = 0
        self.due: set[int] = set()
        self.expiring: set[int] = set()
        self.failing = False
        self.release = asyncio.Event()
        self.release.set()

    async def fetch(self) -> int:
        await self.release.wait()
        if self.failing:
            raise RuntimeError("token endpoint down")
        self.fetched += 1
        return self.fetched

    def renewing(self) -> Renewing[int]:
        return Renewing("test", self.fetch, self.due.__contains__, self.expiring.__contains__)


async def holding_one() -> tuple[Source, Renewing[int]]:
    """A source and a Renewing that already holds value 1."""
    source = Source()
    held = source.renewing()
    assert await held.get() == 1
    return source, held


def test_the_first_call_waits_and_later_ones_reuse_it() -> None:
    async def go() -> None:
        source = Source()
        held = source.renewing()
        assert [await held.get() for _ in range(3)] == [1, 1, 1]
        assert source.fetched == 1

    asyncio.run(go())


def test_a_due_value_is_renewed_in_the_background_while_calls_use_it() -> None:
    async def go() -> None:
        source, held = await holding_one()
        source.due.add(1)
        source.release.clear()  # the renewal cannot finish yet
        assert await held.get() == 1
        assert await held.get() == 1, "not held up by the renewal under way, nor starting another"
        source.release.set()
        await asyncio.sleep(0.01)
        assert await held.get() == 2
        await held.aclose()

    asyncio.run(go())


def test_an_expiring_value_is_renewed_before_it_is_used() -> None:
    async def go() -> None:
        source, held = await holding_one()
        source.expiring.add(1)
        assert await held.get() == 2

    asyncio.run(go())


def test_a_failed_background_renewal_keeps_the_value_and_is_retried_later(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        source, held = await holding_one()
        source.due.add(1)
        source.failing = True
        assert await held.get() == 1
        await asyncio.sleep(0.01)
        source.failing = False
        assert await held.get() == 1, "no new attempt within RETRY_S"
        await asyncio.sleep(0.01)
        assert source.fetched == 1
        monkeypatch.setattr(renewing, "RETRY_S", 0.0)
        assert await held.get() == 1
        await asyncio.sleep(0.01)
        assert await held.get() == 2

    asyncio.run(go())
    assert "renewing its credentials failed" in caplog.text


def test_a_failure_with_nothing_held_reaches_the_caller() -> None:
    async def go() -> None:
        source = Source()
        source.failing = True
        with pytest.raises(RuntimeError, match="token endpoint down"):
            await source.renewing().get()

    asyncio.run(go())
