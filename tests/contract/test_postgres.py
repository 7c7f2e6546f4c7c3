"""What only the PostgreSQL store has: its behaviour when the database goes away (a clean
Unavailable naming PostgreSQL, never a hang or a driver error, and recovery by itself once the
database answers again), and its sweep of expired records and lapsed reservations in the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

import service.stores.postgres as postgres_store
from service.errors import Unavailable
from service.stores.base import IdempotencyRecord, IdempotencyState
from service.stores.postgres import CONNECT_TIMEOUT_S, PostgresStore
from tests.support.ports import free_port
from tests.support.postgres_server import SERVER_URL, create_database, drop_database


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url = await create_database()
    yield url
    await drop_database(url)


async def test_an_unreachable_database_is_unavailable_within_the_connect_timeout() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/mg")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="PostgreSQL store is unavailable"):
        await store.reserve("proj_1", "r1", 1_000, 10_000, lease_s=30)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 2
    await store.close()


async def test_connections_cut_by_the_server_are_unavailable_then_replaced(database: str) -> None:
    """What a database restart or failover does to a worker's pooled connections: one request
    meets a dead connection (503), and the others in the pool are replaced before they fail too."""
    store = PostgresStore(database, pool_size=3)
    assert await store.reserve("proj_1", "r1", 1_000, 10_000, lease_s=30)
    await asyncio.gather(*(store._all("SELECT pg_sleep(0.2)") for _ in range(3)))  # 3 open connections
    name = database.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    outcomes = []
    for attempt in range(20):
        try:
            outcomes.append(await store.reserve("proj_1", f"r-{attempt}", 1_000, 10_000, lease_s=30))
            break
        except Unavailable as exc:
            assert "PostgreSQL" in exc.message
            outcomes.append(False)
            await asyncio.sleep(0.1)
    assert outcomes == [False, True]
    assert (await store.spend("proj_1")).reserved_micros == 2_000  # nothing lost, nothing doubled
    await store.close()


async def test_expired_records_and_lapsed_reservations_are_swept_in_the_database(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_store, "SWEEP_EVERY", 5)
    store = PostgresStore(database)
    done = IdempotencyRecord("fp", IdempotencyState.SUCCEEDED, "req", 0, response=b"img")
    for i in range(3):
        assert (await store.claim_idempotency("p", f"k{i}", "fp", "req", lease_s=30)).claimed
        await store.finish_idempotency("p", f"k{i}", "req", done, keep_s=0.1)
    assert await store.reserve("proj_uncapped", "lapsing", 5_000, None, lease_s=0.1)
    await asyncio.sleep(0.2)
    assert (await store.claim_idempotency("p", "live", "fp", "req", lease_s=30)).claimed  # claim 4
    async with await psycopg.AsyncConnection.connect(database) as conn:

        async def counts() -> tuple[object, ...]:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM idempotency), (SELECT count(*) FROM reservations), "
                "(SELECT reserved_micros FROM spend WHERE project_id = 'proj_uncapped')"
            )
            row = await cursor.fetchone()
            assert row is not None
            return tuple(row)

        assert await counts() == (4, 1, 5_000)  # not yet: nothing reads the other keys
        assert (await store.claim_idempotency("p", "live2", "fp", "req", lease_s=30)).claimed  # claim 5
        assert await counts() == (2, 0, 0)
    await store.close()
