"""One contract, three stores: every test here runs against SQLite, a real Redis server and a real
PostgreSQL server (a new database for each test, dropped after it), alone and with its rate limits
in Redis (MG_POSTGRES_URL and MG_REDIS_URL both set)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as redis_client
from ulid import ULID

from service.stores.base import (
    ApiKey,
    AuditEntry,
    HeldReservation,
    IdempotencyRecord,
    IdempotencyState,
    InFlight,
    LedgerEntry,
    LedgerQuery,
    Project,
    ProjectExists,
    ReservationHolder,
    Spend,
    Store,
    UnknownProject,
    UsageQuery,
    UsageTotal,
)
from service.stores.postgres import PostgresStore
from service.stores.redis import RedisStore
from service.stores.sqlite import SqliteStore
from tests.support.postgres_server import create_database, drop_database
from tests.support.redis_server import SHARED_URL, clear_prefix
from tests.support.stores import ledger_entry as entry


@pytest.fixture(params=["sqlite", "redis", "postgres", "postgres+redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[..., Store]]:
    """Opens stores on one backend: like separate worker processes (or replicas) sharing it. With
    `clock`, the store's spend operations read that clock instead of the store's own."""
    prefix = f"mg-test:{ULID()}:"
    database = await create_database() if request.param.startswith("postgres") else ""
    opened: list[Store] = []

    def open_one(clock: Callable[[], float] | None = None) -> Store:
        one: Store
        if request.param == "sqlite":
            one = SqliteStore(tmp_path / "store.sqlite3", clock=clock)
        elif request.param == "redis":
            one = RedisStore(SHARED_URL, prefix, clock=clock)
        elif request.param == "postgres":
            one = PostgresStore(database, clock=clock)
        else:
            one = PostgresStore(database, rate_limits=RedisStore(SHARED_URL, prefix), clock=clock)
        opened.append(one)
        return one

    yield open_one
    for one in opened:
        await one.close()
    if request.param.endswith("redis"):
        clear_prefix(SHARED_URL, prefix)
    if database:
        await drop_database(database)


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()


def project(name: str = "acme", **fields: object) -> Project:
    return Project(**{"id": f"proj_{ULID()}", "name": name, "created_at": time.time(), **fields})  # type: ignore[arg-type]


async def test_projects_round_trip(store: Store) -> None:
    created = project(budget_micros=5_000_000, allow=("openai/*", "local/sketch"), rpm=30)
    await store.create_project(created)
    assert await store.get_project("acme") == created
    assert await store.get_project_by_id(created.id) == created
    assert await store.get_project("nobody") is None
    with pytest.raises(ProjectExists):
        await store.create_project(project())
    updated = Project(created.id, "acme", created.created_at, budget_micros=None, allow=(), rpm=None)
    await store.update_project(updated)
    assert await store.get_project("acme") == updated
    await store.create_project(project("beta"))
    assert [p.name for p in await store.list_projects()] == ["acme", "beta"]
    with pytest.raises(UnknownProject):
        await store.update_project(project("ghost"))


async def test_archiving_a_project_is_seen_by_every_store_and_kept_by_updates(
    open_store: Callable[[], Store],
) -> None:
    first, second = open_store(), open_store()
    created = project(budget_micros=5_000_000)
    await first.create_project(created)
    assert created.archived_at is None
    assert await first.reserve(created.id, "resv_1", 1_000, 5_000_000, 30)
    await first.settle("resv_1", entry(created.id, 700))
    assert await first.set_project_archived(created.id, 1234.5)
    archived = await second.get_project_by_id(created.id)
    assert archived is not None and archived.archived_at == 1234.5
    assert [p.archived_at for p in await second.list_projects()] == [1234.5]
    # An update of the cap or allowlist does not bring it back, and its money and ledger stay.
    await second.update_project(Project(created.id, "acme", created.created_at, budget_micros=9_000_000))
    assert (await first.get_project("acme")) == Project(
        created.id, "acme", created.created_at, budget_micros=9_000_000, archived_at=1234.5
    )
    assert (await second.spend(created.id)).spent_micros == 700
    assert [e.cost_micros for e in await second.ledger(created.id)] == [700]
    assert await second.set_project_archived(created.id, None)
    restored = await first.get_project("acme")
    assert restored is not None and restored.archived_at is None
    assert not await first.set_project_archived("proj_ghost", 1.0)
    assert await first.get_project_by_id("proj_ghost") is None


async def test_keys_are_found_by_hash_listed_and_revoked(store: Store) -> None:
    owner = project()
    await store.create_project(owner)
    key = ApiKey("key_1", owner.id, "h" * 64, "mg_live_abcd", time.time())
    await store.create_key(key)
    await store.create_key(ApiKey("key_2", owner.id, "g" * 64, "mg_live_efgh", time.time() + 1))
    assert await store.find_key("h" * 64) == key
    assert await store.find_key("x" * 64) is None
    assert [k.id for k in await store.list_keys(owner.id)] == ["key_1", "key_2"]
    assert await store.list_keys("proj_other") == []
    assert await store.revoke_key("key_1", 123.0)
    assert not await store.revoke_key("key_1", 124.0)  # already revoked
    assert not await store.revoke_key("key_missing", 124.0)
    revoked = await store.find_key("h" * 64)
    assert revoked is not None and revoked.revoked_at == 123.0


async def test_rate_limit_allows_a_minutes_burst_then_refuses(store: Store) -> None:
    decisions = [await store.hit_rate_limit("key_1", 5) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert 0 < decisions[-1].retry_after_s <= 12
    assert 47 < decisions[4].reset_s <= 60
    assert (await store.hit_rate_limit("key_2", 5)).allowed  # buckets are independent


async def test_rate_limit_holds_across_store_instances(open_store: Callable[[], Store]) -> None:
    stores = [open_store() for _ in range(4)]
    decisions = await asyncio.gather(*(stores[i % 4].hit_rate_limit("hot", 10) for i in range(40)))
    assert sum(d.allowed for d in decisions) == 10


async def test_reservations_hold_the_cap_across_store_instances(open_store: Callable[[], Store]) -> None:
    stores = [open_store() for _ in range(4)]
    store = stores[0]
    owner = project(budget_micros=10_000)
    await store.create_project(owner)
    results = await asyncio.gather(
        *(stores[i % 4].reserve(owner.id, f"r{i}", 1_000, owner.budget_micros, lease_s=60) for i in range(50))
    )
    assert sum(results) == 10
    spend = await store.spend(owner.id)
    assert (spend.spent_micros, spend.reserved_micros) == (0, 10_000)


async def test_settle_charges_the_actual_cost_and_writes_the_ledger(store: Store) -> None:
    owner = project(budget_micros=10_000)
    await store.create_project(owner)
    assert await store.reserve(owner.id, "r1", 4_000, 10_000, lease_s=60)
    await store.settle("r1", entry(owner.id, 3_000))
    assert await store.spend(owner.id) == type(await store.spend(owner.id))(3_000, 0)
    # the released 1,000 is available again: 3,000 spent + 7,000 fits, 7,001 does not
    assert not await store.reserve(owner.id, "r2", 7_001, 10_000, lease_s=60)
    assert await store.reserve(owner.id, "r3", 7_000, 10_000, lease_s=60)
    (ledger_entry,) = await store.ledger(owner.id)
    assert ledger_entry.cost_micros == 3_000 and ledger_entry.outcome == "ok"


async def test_release_frees_the_reservation_and_charges_nothing(store: Store) -> None:
    owner = project(budget_micros=1_000)
    await store.create_project(owner)
    assert await store.reserve(owner.id, "r1", 1_000, 1_000, lease_s=60)
    assert not await store.reserve(owner.id, "r2", 1, 1_000, lease_s=60)
    await store.release("r1", owner.id, entry(owner.id, 0, outcome="UPSTREAM_ERROR"))
    spend = await store.spend(owner.id)
    assert (spend.spent_micros, spend.reserved_micros) == (0, 0)
    assert [e.outcome for e in await store.ledger(owner.id)] == ["UPSTREAM_ERROR"]


async def test_releasing_a_reservation_that_never_was_only_records_the_entry(store: Store) -> None:
    # How a route records a failed attempt while its reservation stays held for the next target.
    owner = project(budget_micros=1_000)
    await store.create_project(owner)
    assert await store.reserve(owner.id, "r1", 1_000, 1_000, lease_s=60)
    failed = entry(owner.id, 0, outcome="UPSTREAM_ERROR", extra={"route": "hero", "attempt": "1"})
    await store.release("r1/attempt-1", owner.id, failed)
    spend = await store.spend(owner.id)
    assert (spend.spent_micros, spend.reserved_micros) == (0, 1_000)
    await store.settle("r1", entry(owner.id, 600, extra={"route": "hero", "attempt": "2"}))
    assert [(e.outcome, e.cost_micros, e.extra["attempt"]) for e in await store.ledger(owner.id)] == [
        ("UPSTREAM_ERROR", 0, "1"),
        ("ok", 600, "2"),
    ]
    spend = await store.spend(owner.id)
    assert (spend.spent_micros, spend.reserved_micros) == (600, 0)


async def test_an_expired_lease_gives_its_reservation_back(store: Store) -> None:
    owner = project(budget_micros=1_000)
    await store.create_project(owner)
    assert await store.reserve(owner.id, "crashed", 1_000, 1_000, lease_s=0.2)
    assert not await store.reserve(owner.id, "r2", 1_000, 1_000, lease_s=60)
    await asyncio.sleep(0.3)
    assert await store.reserve(owner.id, "r3", 1_000, 1_000, lease_s=60)


async def test_a_renewed_lease_keeps_its_reservation_and_a_lapsed_one_is_not_renewed(store: Store) -> None:
    owner = project(budget_micros=1_000)
    await store.create_project(owner)
    live = HeldReservation(owner.id, "live")
    assert await store.reserve(owner.id, "live", 1_000, 1_000, lease_s=0.3)
    await asyncio.sleep(0.2)
    assert await store.renew_reservations([live], lease_s=0.3) == {"live"}
    await asyncio.sleep(0.2)  # past the first lease, inside the renewed one
    assert not await store.reserve(owner.id, "other", 1_000, 1_000, lease_s=60)
    assert (await store.spend(owner.id)).reserved_micros == 1_000
    await asyncio.sleep(0.2)  # the renewed lease lapsed too
    assert await store.renew_reservations([live], lease_s=60) == set()
    assert (await store.spend(owner.id)).reserved_micros == 0
    assert await store.renew_reservations([HeldReservation(owner.id, "never-reserved")], lease_s=60) == set()
    assert await store.renew_reservations([], lease_s=60) == set()


async def test_reservations_of_several_projects_are_renewed_at_once(store: Store) -> None:
    """One call renews the live ones among many, across projects, and names them."""
    first, second = project("first", budget_micros=10_000), project("second", budget_micros=10_000)
    await store.create_project(first)
    await store.create_project(second)
    for owner, name in ((first, "a1"), (first, "a2"), (second, "b1")):
        assert await store.reserve(owner.id, name, 1_000, 10_000, lease_s=0.3)
    assert await store.reserve(second.id, "b-short", 1_000, 10_000, lease_s=0.1)
    await asyncio.sleep(0.2)  # b-short lapsed; the others are inside their lease
    held = [
        HeldReservation(first.id, "a1"),
        HeldReservation(first.id, "a2"),
        HeldReservation(second.id, "b1"),
        HeldReservation(second.id, "b-short"),
    ]
    assert await store.renew_reservations(held, lease_s=0.5) == {"a1", "a2", "b1"}
    # a reservation named under another project is not that project's to renew
    assert await store.renew_reservations([HeldReservation(second.id, "a1")], lease_s=0.5) == set()
    await asyncio.sleep(0.2)  # past the first lease: only renewed ones still count
    assert (await store.spend(first.id)).reserved_micros == 2_000
    assert (await store.spend(second.id)).reserved_micros == 1_000


async def test_no_cap_means_no_limit(store: Store) -> None:
    owner = project()
    await store.create_project(owner)
    assert await store.reserve(owner.id, "r1", 10**12, None, lease_s=60)


async def test_ledger_filters_by_project_and_time(store: Store) -> None:
    a, b = project("a"), project("b")
    await store.create_project(a)
    await store.create_project(b)
    for owner, cost in ((a, 1), (b, 2), (a, 3)):
        assert await store.reserve(owner.id, f"r{cost}", cost, None, lease_s=60)
        await store.settle(f"r{cost}", entry(owner.id, cost, idempotency_key=f"idem-{cost}"))
    assert [e.cost_micros for e in await store.ledger(a.id)] == [1, 3]
    assert [e.cost_micros for e in await store.ledger()] == [1, 2, 3]
    assert (await store.ledger(a.id))[1].idempotency_key == "idem-3"
    assert await store.ledger(since=time.time() + 60) == []


async def test_live_reservations_are_listed_with_their_holder_by_any_store_instance(
    open_store: Callable[[], Store],
) -> None:
    worker_a, worker_b = open_store(), open_store()
    a, b = project("a"), project("b")
    await worker_a.create_project(a)
    await worker_a.create_project(b)
    started = time.time()
    assert await worker_a.reserve(
        a.id, "r-a", 700, None, 60, ReservationHolder("key_a", "local/sketch", started)
    )
    assert await worker_b.reserve(
        b.id, "r-b", 900, None, 60, ReservationHolder("key_b", "openai/dall-e-3", started + 1)
    )
    assert await worker_b.reserve(
        b.id, "r-lapsing", 5, None, 0.2, ReservationHolder("key_b", "m", started + 2)
    )
    assert await worker_a.reserve(
        a.id, "r-settled", 5, None, 60, ReservationHolder("key_a", "m", started + 3)
    )
    await worker_a.settle("r-settled", entry(a.id, 5))
    await asyncio.sleep(0.3)
    listed = await worker_b.in_flight()
    assert [(g.reservation_id, g.project_id, g.amount_micros, g.key_id, g.model) for g in listed] == [
        ("r-a", a.id, 700, "key_a", "local/sketch"),
        ("r-b", b.id, 900, "key_b", "openai/dall-e-3"),
    ]
    assert listed[0].started_at == pytest.approx(started) and listed[0].expires_at > time.time()
    await worker_b.release("r-b", b.id, None)
    assert [g.reservation_id for g in await worker_a.in_flight()] == ["r-a"]
    # a reservation made without a holder is listed too, with what is known of it
    assert await worker_a.reserve(b.id, "r-anonymous", 1, None, 60)
    anonymous = [g for g in await worker_b.in_flight() if g.reservation_id == "r-anonymous"]
    assert anonymous == [InFlight("r-anonymous", b.id, 1, anonymous[0].expires_at)]


async def test_ledger_pages_newest_first_with_filters_and_a_cursor(store: Store) -> None:
    a, b = project("a"), project("b")
    await store.create_project(a)
    await store.create_project(b)
    base = time.time() - 1000
    rows = [
        (a, "local/sketch", "ok", base + 1),
        (b, "local/sketch", "ok", base + 2),
        (a, "openai/dall-e-3", "UPSTREAM_ERROR", base + 3),
        (a, "local/sketch", "ok", base + 4),
        (a, "local/sketch", "partial", base + 5),
        (b, "openai/dall-e-3", "ok", base + 6),
    ]
    for i, (owner, model, outcome, at) in enumerate(rows):
        await store.release(f"r{i}", owner.id, entry(owner.id, i, outcome, model=model, created_at=at))

    async def costs(**filters: object) -> list[list[int]]:
        """Every page of the query, as the costs (row numbers) on each."""
        pages, cursor = [], ""
        while True:
            page = await store.ledger_page(LedgerQuery(**filters, cursor=cursor))  # type: ignore[arg-type]
            pages.append([e.cost_micros for e in page.entries])
            if not page.next_cursor:
                return pages
            cursor = page.next_cursor

    assert await costs(limit=50) == [[5, 4, 3, 2, 1, 0]]
    assert await costs(limit=4) == [[5, 4, 3, 2], [1, 0]]
    assert await costs(limit=3) == [[5, 4, 3], [2, 1, 0]]
    assert await costs(project_id=a.id, limit=2) == [[4, 3], [2, 0]]
    assert await costs(model="local/sketch", limit=2) == [[4, 3], [1, 0]]
    assert await costs(outcome="ok", project_id=a.id, limit=5) == [[3, 0]]
    assert await costs(since=base + 2, until=base + 5, limit=2) == [[3, 2], [1]]
    assert await costs(model="nothing/such", limit=5) == [[]]
    with pytest.raises(ValueError):
        await store.ledger_page(LedgerQuery(cursor="not a cursor"))


async def test_audit_entries_are_read_back_newest_first_by_any_store_instance(
    open_store: Callable[[], Store],
) -> None:
    writer, reader = open_store(), open_store()
    written = [
        AuditEntry(
            f"aud_{ULID()}", time.time(), "admin token adm_1", "project.create", f"p{i}", {"rpm": str(i)}
        )
        for i in range(5)
    ]
    for one in written:
        await writer.append_audit(one)
        await asyncio.sleep(0.002)  # ULIDs made in one millisecond need not sort by creation
    newest_first = written[::-1]
    assert await reader.audit_log(10) == newest_first
    assert await reader.audit_log(2) == newest_first[:2]
    assert await reader.audit_log(2, before=newest_first[1].id) == newest_first[2:4]
    assert await reader.audit_log(10, before=newest_first[-1].id) == []


async def test_ping(store: Store) -> None:
    await store.ping()


# --- idempotency records


def succeeded(owner: str, response: bytes) -> IdempotencyRecord:
    return IdempotencyRecord("fp", IdempotencyState.SUCCEEDED, owner, 0, response=response)


async def test_one_claim_wins_among_concurrent_callers(open_store: Callable[[], Store]) -> None:
    stores = [open_store() for _ in range(4)]
    claims = await asyncio.gather(
        *(stores[i % 4].claim_idempotency("p", "k", "fp", f"req{i}", lease_s=30) for i in range(20))
    )
    assert sum(c.claimed for c in claims) == 1
    losers = [c.record for c in claims if not c.claimed]
    assert all(
        r is not None and r.state == IdempotencyState.IN_FLIGHT and r.fingerprint == "fp" for r in losers
    )
    assert len({r.owner for r in losers if r is not None}) == 1


async def test_success_is_kept_and_returned_with_its_bytes(store: Store) -> None:
    assert (await store.claim_idempotency("p", "k", "fp", "req1", lease_s=30)).claimed
    response = bytes(range(256)) * 1000  # binary, with every byte value
    await store.finish_idempotency("p", "k", "req1", succeeded("req1", response), keep_s=60)
    claim = await store.claim_idempotency("p", "k", "fp", "req2", lease_s=30)
    assert not claim.claimed and claim.record is not None
    assert (claim.record.state, claim.record.owner, claim.record.response) == ("succeeded", "req1", response)
    # keys are scoped to their project
    assert (await store.claim_idempotency("other", "k", "fp", "req3", lease_s=30)).claimed


async def test_a_failure_releases_the_key_but_is_shown_to_its_joiners(store: Store) -> None:
    assert (await store.claim_idempotency("p", "k", "fp", "req1", lease_s=30)).claimed
    failed = IdempotencyRecord("fp", IdempotencyState.FAILED, "req1", 0, error='{"code": "UPSTREAM_ERROR"}')
    await store.finish_idempotency("p", "k", "req1", failed, keep_s=60)
    joined = await store.claim_idempotency("p", "k", "fp", "req2", lease_s=30, waiting_for="req1")
    assert (
        not joined.claimed
        and joined.record is not None
        and joined.record.error == '{"code": "UPSTREAM_ERROR"}'
    )
    assert (await store.claim_idempotency("p", "k", "fp", "req3", lease_s=30)).claimed  # a retry runs again


async def test_a_lapsed_lease_lets_the_next_caller_claim(store: Store) -> None:
    assert (await store.claim_idempotency("p", "k", "fp", "dead", lease_s=0.2)).claimed
    assert not (await store.claim_idempotency("p", "k", "fp", "req2", lease_s=30)).claimed
    await asyncio.sleep(0.3)
    assert (await store.claim_idempotency("p", "k", "fp", "req3", lease_s=30)).claimed
    # the dead owner can neither renew nor finish any more
    assert not await store.renew_idempotency("p", "k", "dead", lease_s=30)
    await store.finish_idempotency("p", "k", "dead", succeeded("dead", b"late"), keep_s=60)
    claim = await store.claim_idempotency("p", "k", "fp", "req4", lease_s=30)
    assert claim.record is not None and claim.record.owner == "req3"


async def test_renewing_keeps_a_claim_alive(store: Store) -> None:
    assert (await store.claim_idempotency("p", "k", "fp", "req1", lease_s=0.3)).claimed
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await store.renew_idempotency("p", "k", "req1", lease_s=0.3)
    assert not (await store.claim_idempotency("p", "k", "fp", "req2", lease_s=30)).claimed


async def test_records_expire_after_their_retention(store: Store) -> None:
    assert (await store.claim_idempotency("p", "k", "fp", "req1", lease_s=30)).claimed
    await store.finish_idempotency("p", "k", "req1", succeeded("req1", b"img"), keep_s=0.2)
    await asyncio.sleep(0.3)
    assert (await store.claim_idempotency("p", "k", "fp2", "req2", lease_s=30)).claimed


async def test_sqlite_adds_the_archive_column_to_a_store_made_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the projects table as the first mg made it
        conn.execute(
            "CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,"
            " budget_micros INTEGER, allow TEXT NOT NULL, rpm INTEGER)"
        )
        conn.execute("INSERT INTO projects VALUES ('proj_old', 'old', 1.0, NULL, '[]', NULL)")
    conn.close()
    store = SqliteStore(path)
    try:
        assert await store.get_project("old") == Project("proj_old", "old", 1.0)
        assert await store.set_project_archived("proj_old", 2.0)
        archived = await store.get_project("old")
        assert archived is not None and archived.archived_at == 2.0
    finally:
        await store.close()


async def test_sqlite_waits_for_another_processs_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    """The event-loop connection never waits for a lock; a busy operation is rerun on the store
    thread, which waits, while the loop keeps running."""
    import sqlite3
    import threading

    store = SqliteStore(tmp_path / "locked.sqlite3")
    await store.ping()  # schema created
    holder = sqlite3.connect(tmp_path / "locked.sqlite3", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    # Held 1.5 s: ~150 ticks on a quiet machine, well over 20 on a loaded one; a blocked loop
    # would tick once or twice.
    threading.Timer(1.5, lambda: holder.execute("COMMIT")).start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    decision = await store.hit_rate_limit("k", 10)
    ticker.cancel()
    assert decision.allowed
    assert ticks >= 20  # the loop ran while the operation waited ~1.5 s for the lock
    holder.close()
    await store.close()


async def test_sqlite_wal_starts_over_under_steady_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' stores writing steadily: their checkpoints must let the WAL start over, or
    it grows by every commit (passive checkpoints never caught up with the writers: 1 GB within a
    minute of load)."""
    import service.stores.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 50)
    path = tmp_path / "busy.sqlite3"
    workers = [SqliteStore(path), SqliteStore(path)]
    wal = path.with_name(path.name + "-wal")
    largest = 0
    for i in range(400):
        for worker in workers:  # a request's writes, then a pause as between requests
            assert (await worker.hit_rate_limit(f"key-{i % 7}", 10**9)).allowed
            charge = entry("proj_1", 10)
            assert await worker.reserve("proj_1", charge.request_id, 10, None, 60)
            await worker.settle(charge.request_id, charge)
        largest = max(largest, wal.stat().st_size)
        await asyncio.sleep(0.001)
    # Never starting over, the WAL reaches ~18 MB here; starting over every ~100 commits (50 a
    # worker), ~1.7 MB. The bound leaves room for a few checkpoints that miss their moment.
    assert largest < 6 << 20, largest
    for worker in workers:
        await worker.close()


async def test_sqlite_sweeps_lapsed_reservations_and_expired_records_in_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of projects and keys nothing touches again are deleted all the same, a batch at a time."""
    import service.stores.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "SWEEP_EVERY", 40)
    monkeypatch.setattr(sqlite_store, "SWEEP_BATCH", 3)
    path = tmp_path / "swept.sqlite3"
    store = SqliteStore(path)
    done = IdempotencyRecord("fp", IdempotencyState.SUCCEEDED, "req", 0, response=b"img")
    assert await store.reserve("proj_live", "live", 5_000, None, lease_s=60)
    assert (await store.claim_idempotency("p", "kept", "fp", "req", lease_s=60)).claimed
    for i in range(7):  # (no claim after these: a claim deletes expired records itself)
        assert await store.reserve(f"proj_gone_{i}", f"lapsing-{i}", 5_000, None, lease_s=0.05)
        assert (await store.claim_idempotency("p", f"k{i}", "fp", "req", lease_s=30)).claimed
        await store.finish_idempotency("p", f"k{i}", "req", done, keep_s=0.05)
    await asyncio.sleep(0.1)

    def rows() -> tuple[int, int]:
        with sqlite3.connect(path) as conn:
            return (
                conn.execute("SELECT count(*) FROM reservations").fetchone()[0],
                conn.execute("SELECT count(*) FROM idempotency").fetchone()[0],
            )

    assert rows() == (8, 8)  # nothing has deleted them yet
    while store._operations < 40:
        await store.spend("proj_live")
    await store.close()  # (waits for the store thread's sweep)
    assert rows() == (1, 1)


# --- upstream slots (a provider's max_in_flight)


async def test_a_pool_has_at_most_its_limit_of_holders(store: Store) -> None:
    assert await store.acquire_slot("openai", "a", 2, lease_s=60) == 0
    assert await store.acquire_slot("openai", "b", 2, lease_s=60) == 1
    assert await store.acquire_slot("openai", "c", 2, lease_s=60) is None
    assert await store.acquire_slot("bfl", "c", 2, lease_s=60) == 0  # pools are apart
    await store.release_slot("openai", 1, "someone else")  # only its holder frees a slot
    assert await store.acquire_slot("openai", "c", 2, lease_s=60) is None
    await store.release_slot("openai", 1, "b")
    assert await store.acquire_slot("openai", "c", 2, lease_s=60) == 1
    assert await store.acquire_slot("openai", "d", 2, lease_s=60) is None


async def test_a_slot_whose_lease_lapsed_is_taken_over(store: Store) -> None:
    assert await store.acquire_slot("openai", "crashed", 1, lease_s=0.2) == 0
    assert await store.acquire_slot("openai", "b", 1, lease_s=60) is None
    await asyncio.sleep(0.3)
    assert await store.acquire_slot("openai", "b", 1, lease_s=60) == 0
    await store.release_slot("openai", 0, "crashed")  # (too late: it is b's now)
    assert await store.acquire_slot("openai", "c", 1, lease_s=60) is None


async def test_concurrent_acquirers_never_exceed_the_limit(store: Store) -> None:
    taken = await asyncio.gather(*(store.acquire_slot("pool", f"h{i}", 3, lease_s=60) for i in range(20)))
    assert sorted(slot for slot in taken if slot is not None) == [0, 1, 2]


def usage_as_mg_totalled_it_in_python(entries: list[LedgerEntry], query: UsageQuery) -> list[UsageTotal]:
    """The totals `mg usage` computed in Python over every ledger entry before stores totalled them."""
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for one in entries:
        if query.project_id not in (None, one.project_id):
            continue
        if (query.since is not None and one.created_at < query.since) or (
            query.until is not None and one.created_at >= query.until
        ):
            continue
        day = datetime.fromtimestamp(one.created_at, UTC).strftime("%Y-%m-%d") if query.by_day else ""
        row = totals[(one.project_id, one.model, day)]
        row[0] += 1
        row[1] += one.outcome not in ("ok", "partial")
        row[2] += one.images_returned
        row[3] += one.cost_micros
        row[4] += one.input_tokens
    return [UsageTotal(p, m, d, *values) for (p, m, d), values in sorted(totals.items())]


async def test_usage_totals_are_what_the_ledger_adds_up_to(store: Store) -> None:
    a, b = project("a"), project("b")
    await store.create_project(a)
    await store.create_project(b)
    noon = (time.time() // 86400 - 1) * 86400 + 43200  # yesterday, 12:00 UTC
    day = 86400.0
    for i, (owner, model, cost, outcome, at) in enumerate(
        [
            (a, "openai/gpt-image-1", 100, "ok", noon - 2 * day),
            (a, "openai/gpt-image-1", 0, "UPSTREAM_ERROR", noon - 2 * day + 60),
            (a, "local/sketch", 7, "partial", noon - day),
            (b, "openai/gpt-image-1", 3, "ok", noon - day + 1),
            (a, "openai/gpt-image-1", 11, "ok", noon),
            (a, "openai/gpt-image-1", 13, "RATE_LIMITED", noon + 3600),
            (b, "local/sketch", 17, "ok", noon + 7200),
        ]
    ):
        assert await store.reserve(owner.id, f"r{i}", cost, None, lease_s=60)
        fields = {"model": model, "created_at": at, "input_tokens": i, "images_returned": i % 3}
        await store.settle(f"r{i}", entry(owner.id, cost, outcome, **fields))
    entries = await store.ledger()
    queries = [
        UsageQuery(),
        UsageQuery(by_day=True),
        UsageQuery(project_id=a.id),
        UsageQuery(project_id=b.id, by_day=True),
        UsageQuery(since=noon - day, by_day=True),
        UsageQuery(project_id=a.id, since=noon - 2 * day + 60, until=noon),
        UsageQuery(since=time.time() + 60),
    ]
    for query in queries:
        assert await store.usage(query) == usage_as_mg_totalled_it_in_python(entries, query), query
    everything = await store.usage(UsageQuery())
    assert sum(t.requests for t in everything) == 7 and sum(t.failed for t in everything) == 2
    assert sum(t.cost_micros for t in everything) == 151


async def test_the_whole_ledger_is_read_back_in_order_a_batch_at_a_time(store: Store) -> None:
    owner = project()
    await store.create_project(owner)
    for i in range(7):
        assert await store.reserve(owner.id, f"r{i}", i, None, lease_s=60)
        await store.settle(f"r{i}", entry(owner.id, i))
    read, cursor = [], ""
    while True:
        batch = await store.ledger_batch(cursor, 3)
        if not batch.entries:
            break
        assert len(batch.entries) <= 3
        read += batch.entries
        cursor = batch.next_cursor
    assert read == await store.ledger()
    assert [e.cost_micros for e in read] == list(range(7))
    with pytest.raises(ValueError):
        await store.ledger_batch("not-a-cursor", 3)


# --- budget periods: every store derives the period from its clock (here a test clock) in the same
# atomic step as the cap check, with the same arithmetic as service/stores/periods.py.


class Clock:
    """A clock a test sets: what the store's spend operations read as now."""

    def __init__(self, at: str) -> None:
        self.set(at)

    def set(self, at: str) -> None:
        self.at = datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.at


def _utc(at: str) -> int:
    return int(datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp())


async def _periodic(
    store: Store, period: str, cap: int, anchor: str = "2026-01-01", carry: int = 0
) -> Project:
    owner = project(
        budget_micros=cap, budget_period=period, budget_anchor=_utc(anchor), budget_carry_micros=carry
    )
    await store.create_project(owner)
    return owner


async def test_a_periodic_cap_renews_at_the_month_boundary(open_store: Callable[..., Store]) -> None:
    clock = Clock("2026-12-31T23:59:58")
    store = open_store(clock)
    owner = await _periodic(store, "month", 1_000)
    assert owner.period is not None
    assert await store.reserve(owner.id, "r1", 1_000, 1_000, 60, period=owner.period)
    await store.settle("r1", entry(owner.id, 1_000), owner.period)
    assert not await store.reserve(owner.id, "r2", 1, 1_000, 60, period=owner.period)
    assert await store.spend(owner.id, owner.period) == Spend(
        1_000, 0, _utc("2026-12-01"), _utc("2027-01-01")
    )
    clock.set("2027-01-01T00:00:00")
    assert await store.spend(owner.id, owner.period) == Spend(0, 0, _utc("2027-01-01"), _utc("2027-02-01"))
    assert await store.reserve(owner.id, "r3", 1_000, 1_000, 60, period=owner.period)
    assert not await store.reserve(owner.id, "r4", 1, 1_000, 60, period=owner.period)
    # The lifetime total has every charge, whatever the period.
    assert (await store.spend(owner.id)).spent_micros == 1_000
    await store.settle("r3", entry(owner.id, 400), owner.period)
    assert (await store.spend(owner.id)).spent_micros == 1_400


async def test_a_reservation_made_before_the_boundary_settles_into_its_own_period(
    open_store: Callable[..., Store],
) -> None:
    clock = Clock("2027-03-09T23:59:59.900")
    store = open_store(clock)
    owner = await _periodic(store, "day", 1_000)
    assert await store.reserve(owner.id, "late", 800, 1_000, 60, period=owner.period)
    clock.set("2027-03-10T00:00:00.100")
    # Not counted against the new day: all of it is there to reserve.
    assert (await store.spend(owner.id, owner.period)).reserved_micros == 0
    assert await store.reserve(owner.id, "early", 1_000, 1_000, 60, period=owner.period)
    await store.settle("late", entry(owner.id, 700), owner.period)
    assert await store.spend(owner.id, owner.period) == Spend(
        0, 1_000, _utc("2027-03-10"), _utc("2027-03-11")
    )
    await store.settle("early", entry(owner.id, 900), owner.period)
    assert (await store.spend(owner.id, owner.period)).spent_micros == 900
    clock.set("2027-03-09T12:00:00")  # the day before, read back: charged what was reserved in it
    assert await store.spend(owner.id, owner.period) == Spend(700, 0, _utc("2027-03-09"), _utc("2027-03-10"))
    assert (await store.spend(owner.id)).spent_micros == 1_600


async def test_rolling_periods_count_from_their_anchor(open_store: Callable[..., Store]) -> None:
    clock = Clock("2027-04-02T08:00:00")
    store = open_store(clock)
    owner = await _periodic(store, "30d", 1_000, anchor="2027-03-10T13:45:07")
    first = (_utc("2027-03-10T13:45:07"), _utc("2027-04-09T13:45:07"))
    spend = await store.spend(owner.id, owner.period)
    assert (spend.period_start, spend.renews_at) == first
    assert await store.reserve(owner.id, "r1", 1_000, 1_000, 60, period=owner.period)
    await store.settle("r1", entry(owner.id, 1_000), owner.period)
    clock.set("2027-04-09T13:45:06.999")
    assert not await store.reserve(owner.id, "r2", 1, 1_000, 60, period=owner.period)
    clock.set("2027-04-09T13:45:07")
    spend = await store.spend(owner.id, owner.period)
    assert (spend.spent_micros, spend.period_start, spend.renews_at) == (
        0,
        first[1],
        _utc("2027-05-09T13:45:07"),
    )
    assert await store.reserve(owner.id, "r3", 1_000, 1_000, 60, period=owner.period)


@pytest.mark.parametrize(
    ("period", "at", "start", "renews"),
    [
        ("month", "2027-02-14T10:00:00", "2027-02-01", "2027-03-01"),  # 28 days
        ("month", "2028-02-29T23:59:59", "2028-02-01", "2028-03-01"),  # 29 days, a leap year
        ("month", "2028-03-01T00:00:00", "2028-03-01", "2028-04-01"),
        ("month", "2026-12-31T23:59:59", "2026-12-01", "2027-01-01"),
        ("week", "2027-01-01T12:00:00", "2026-12-28", "2027-01-04"),  # a Friday; ISO week from Monday
        ("week", "2027-01-04T00:00:00", "2027-01-04", "2027-01-11"),  # a Monday
        ("week", "2027-01-03T23:59:59", "2026-12-28", "2027-01-04"),  # a Sunday
        ("day", "2028-02-29T23:59:59", "2028-02-29", "2028-03-01"),
    ],
)
async def test_calendar_periods_are_utc_days_iso_weeks_and_months(
    open_store: Callable[..., Store], period: str, at: str, start: str, renews: str
) -> None:
    store = open_store(Clock(at))
    owner = await _periodic(store, period, 1_000)
    assert await store.reserve(owner.id, "r1", 600, 1_000, 60, period=owner.period)
    assert await store.spend(owner.id, owner.period) == Spend(0, 600, _utc(start), _utc(renews))


async def test_concurrent_reservations_at_a_boundary_hold_the_cap_in_both_periods(
    open_store: Callable[..., Store],
) -> None:
    # Four workers, two whose clock is just before midnight and two just after: whichever order the
    # reservations meet the store in, each day holds exactly its cap.
    before, after = Clock("2027-06-30T23:59:59.999"), Clock("2027-07-01T00:00:00")
    stores = [open_store(before), open_store(after), open_store(before), open_store(after)]
    owner = await _periodic(stores[0], "month", 10_000)
    results = await asyncio.gather(
        *(stores[i % 4].reserve(owner.id, f"r{i}", 1_000, 10_000, 60, period=owner.period) for i in range(60))
    )
    assert sum(results[0::2]) == 10 and sum(results[1::2]) == 10
    assert (await stores[0].spend(owner.id, owner.period)).reserved_micros == 10_000
    assert (await stores[1].spend(owner.id, owner.period)).reserved_micros == 10_000


async def test_what_was_carried_in_counts_in_the_first_period_only(open_store: Callable[..., Store]) -> None:
    clock = Clock("2027-05-20T09:00:00")
    store = open_store(clock)
    owner = await _periodic(store, "month", 1_000, anchor="2027-05-20T08:00:00", carry=600)
    assert not await store.reserve(owner.id, "r1", 401, 1_000, 60, period=owner.period)
    assert await store.reserve(owner.id, "r2", 400, 1_000, 60, period=owner.period)
    assert (await store.spend(owner.id, owner.period)).spent_micros == 600
    clock.set("2027-06-01T00:00:00")
    assert await store.spend(owner.id, owner.period) == Spend(0, 0, _utc("2027-06-01"), _utc("2027-07-01"))
    assert await store.reserve(owner.id, "r3", 1_000, 1_000, 60, period=owner.period)


async def test_a_charge_whose_reservation_lapsed_joins_the_period_in_force(
    open_store: Callable[..., Store],
) -> None:
    clock = Clock("2027-08-01T10:00:00")
    store = open_store(clock)
    owner = await _periodic(store, "day", 1_000)
    assert await store.reserve(owner.id, "slow", 500, 1_000, 60, period=owner.period)
    clock.set("2027-08-01T10:05:00")  # its lease lapsed, and the next reservation gave it back
    assert await store.reserve(owner.id, "other", 1_000, 1_000, 60, period=owner.period)
    await store.release("other", owner.id, None)
    await store.settle("slow", entry(owner.id, 300), owner.period)
    assert (await store.spend(owner.id, owner.period)).spent_micros == 300
    assert (await store.spend(owner.id)).spent_micros == 300
    assert not await store.reserve(owner.id, "more", 701, 1_000, 60, period=owner.period)


async def test_a_period_change_is_seen_by_the_next_reservation_and_keeps_its_settings(
    open_store: Callable[..., Store],
) -> None:
    first, second = open_store(), open_store()
    owner = await _periodic(first, "week", 5_000, carry=0)
    changed = replace(
        owner, budget_period="30d", budget_anchor=_utc("2027-02-03T04:05:06"), budget_carry_micros=7
    )
    await second.update_project(changed)
    assert await first.get_project_by_id(owner.id) == changed
    assert [p.budget_period for p in await first.list_projects()] == ["30d"]


async def test_redis_keeps_a_periods_spend_until_well_past_its_end() -> None:
    prefix = f"mg-test:{ULID()}:"
    store = RedisStore(SHARED_URL, prefix, clock=Clock("2027-02-27T12:00:00"))
    try:
        owner = await _periodic(store, "month", 1_000)
        assert owner.period is not None
        assert await store.reserve(owner.id, "r1", 500, 1_000, 60, period=owner.period)
        await store.settle("r1", entry(owner.id, 300), owner.period)
        key = f"{prefix}period-spent:{owner.id}:{owner.budget_anchor}:{_utc('2027-02-01')}"
        raw = redis_client.Redis.from_url(SHARED_URL, decode_responses=True)
        try:
            assert await raw.get(key) == "300"
            # the month ends a day and a half later; its spend is kept 35 days past that
            assert await raw.ttl(key) == pytest.approx(36.5 * 86_400, abs=5)
        finally:
            await raw.aclose()
    finally:
        await store.close()
        clear_prefix(SHARED_URL, prefix)
