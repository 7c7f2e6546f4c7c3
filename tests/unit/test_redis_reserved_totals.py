"""The Redis store keeps what each project holds reserved as totals per period (hash `resv-total`), so
a reservation checks its cap by reading one field rather than adding up every reservation the project
holds on Redis's one thread: the totals follow every way a reservation is taken and ends, heal from
changes made without them (an older mg on the same Redis), and the cap check runs as many commands
with 5,000 generations in flight as with none."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from service.stores.periods import BudgetPeriod
from service.stores.redis import TOTALS_REBUILD_EVERY, RedisStore
from tests.support.redis_server import SHARED_URL, PrivateRedis, clear_prefix
from tests.support.stores import ledger_entry as entry

PERIODS = [None, BudgetPeriod.of("day", anchor=1_700_000_000)]


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"mg-test-{uuid.uuid4().hex[:8]}:"
    yield name
    clear_prefix(SHARED_URL, name)


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    opened = RedisStore(SHARED_URL, prefix=prefix)
    yield opened
    await opened.close()


def read_hash(key: str) -> dict[str, str]:
    client = redis.Redis.from_url(SHARED_URL)
    try:
        return {field.decode(): value.decode() for field, value in client.hgetall(key).items()}  # type: ignore[union-attr]
    finally:
        client.close()


def totals(prefix: str, project: str) -> dict[str, int]:
    held = read_hash(f"{prefix}resv-total:{project}")
    return {period: int(micros) for period, micros in held.items() if period != "#" and int(micros)}


def sums(prefix: str, project: str) -> dict[str, int]:
    """What the totals must be: every reservation held, added up per period taken in."""
    amounts = read_hash(f"{prefix}resv-amount:{project}")
    periods = read_hash(f"{prefix}resv-period:{project}")
    found: dict[str, int] = {}
    for reservation, micros in amounts.items():
        period = periods.get(reservation, "")
        found[period] = found.get(period, 0) + int(micros)
    return {period: micros for period, micros in found.items() if micros}


@pytest.mark.parametrize("period", PERIODS, ids=["lifetime", "daily"])
async def test_the_totals_follow_every_way_a_reservation_is_taken_and_ends(
    store: RedisStore, prefix: str, period: BudgetPeriod | None
) -> None:
    async def reserve(reservation: str, micros: int, cap: int | None, lease_s: float = 60) -> bool:
        return await store.reserve("p", reservation, micros, cap, lease_s, period=period)

    for n in range(5):
        assert await reserve(f"a{n}", 100, None)
    assert await reserve("lapsing", 30, None, lease_s=0.05)
    assert totals(prefix, "p") == sums(prefix, "p") and sum(totals(prefix, "p").values()) == 530

    await store.settle("a0", entry("p", 80), period)
    await store.release("a1", "p", entry("p", 0))
    await asyncio.sleep(0.1)  # the lapsing lease lapses: the next reservation drops it
    assert not await reserve("a9", 21, cap=300 + 80 + 20)  # 300 held, 80 spent, the lapsed 30 gone
    assert await reserve("a9", 20, cap=300 + 80 + 20)  # exactly the cap
    assert totals(prefix, "p") == sums(prefix, "p") and sum(totals(prefix, "p").values()) == 320
    assert (await store.spend("p", period)).reserved_micros == 320

    for n in (2, 3, 4, 9):
        await store.release(f"a{n}", "p", None)
    client = redis.Redis.from_url(SHARED_URL)
    assert not client.exists(f"{prefix}resv-total:p")  # nothing held: no totals kept
    client.close()


async def test_the_totals_heal_from_reservations_changed_without_them(store: RedisStore, prefix: str) -> None:
    assert await store.reserve("p", "r0", 100, None, 60)
    client = redis.Redis.from_url(SHARED_URL)
    # What an mg from before the totals does: a reservation in the hashes, not in the totals.
    client.zadd(f"{prefix}resv:p", {"old": time.time() + 60})
    client.hset(f"{prefix}resv-amount:p", "old", 50)
    healed_within = 0
    while totals(prefix, "p") != sums(prefix, "p"):
        await store.spend("p")
        healed_within += 1
    assert healed_within <= TOTALS_REBUILD_EVERY
    assert totals(prefix, "p") == {"": 150}
    assert not await store.reserve("p", "r1", 1, 150, 60)
    client.delete(f"{prefix}resv-total:p")  # lost altogether: made again at the next operation
    assert not await store.reserve("p", "r1", 1, 150, 60)
    assert totals(prefix, "p") == {"": 150}
    client.close()


def commands_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stat["calls"]) for name, stat in stats.items() if name not in ("cmdstat_info", "cmdstat_evalsha")
    )


async def test_the_cap_check_runs_no_more_commands_with_thousands_of_reservations_held(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path).start()  # its own: the shared one counts every test's commands
    client = redis.Redis(port=server.port)
    store = RedisStore(server.url, prefix="mg:")
    try:

        async def commands_of_a_reservation() -> int:
            """The fewest commands one of two capped reservations ran (one in TOTALS_REBUILD_EVERY
            makes the totals again)."""
            counts = []
            for _ in range(2):
                before = commands_run(client)
                assert await store.reserve("busy", uuid.uuid4().hex, 10, 10**12, 60)
                counts.append(commands_run(client) - before)
            return min(counts)

        few = await commands_of_a_reservation()
        for n in range(5000):
            assert await store.reserve("busy", f"held{n}", 10, None, 60)
        many = await commands_of_a_reservation()
        assert many <= few + 2, (few, many)  # adding up 5,000 reservations runs 10,000 more
    finally:
        await store.close()
        client.close()
        server.stop()
