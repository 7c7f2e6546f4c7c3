"""Copying a store into a new PostgreSQL database (stores/copy.py, `mg store copy`): everything kept
is there afterwards, as it was, and keys still authenticate; a database in use is refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from ulid import ULID

from service import admin
from service.keys import hash_key
from service.stores.base import LedgerEntry, Store, UsageQuery
from service.stores.copy import CopyError, copy_store
from service.stores.postgres import PostgresStore
from service.stores.redis import RedisStore
from service.stores.sqlite import SqliteStore
from tests.support.postgres_server import create_database, drop_database
from tests.support.redis_server import SHARED_URL, clear_prefix

ACTOR = "test"


@pytest.fixture(params=["sqlite", "redis"])
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    prefix = f"mg-test:{ULID()}:"
    store: Store = (
        SqliteStore(tmp_path / "mg.sqlite3") if request.param == "sqlite" else RedisStore(SHARED_URL, prefix)
    )
    yield store
    await store.close()
    if request.param == "redis":
        clear_prefix(SHARED_URL, prefix)


@pytest.fixture
async def target() -> AsyncIterator[PostgresStore]:
    url = await create_database()
    store = PostgresStore(url)
    yield store
    await store.close()
    await drop_database(url)


def ledger_entry(project_id: str, key_id: str, i: int) -> LedgerEntry:
    return LedgerEntry(
        request_id=f"req_{i}", project_id=project_id, key_id=key_id, model=f"m{i % 3}", provider="local",
        n_requested=2, images_returned=i % 3, size="256x256", quality="", cost_micros=1000 + i,
        input_tokens=i, upstream_latency_ms=i * 10, outcome="ok" if i % 4 else "UPSTREAM_ERROR",
        created_at=time.time() - 86400 * (i % 5), idempotency_key=f"idem-{i}" if i % 2 else "",
        upstream_request_id=f"up-{i}", extra={"attempt": str(i)},
    )  # fmt: skip


async def fill(store: Store, entries: int) -> dict[str, str]:
    """Projects (one archived), keys (one revoked), a ledger with charged and released entries, an
    audit log; returns the keys that work, by project name."""
    tokens = {}
    for name in ("acme", "beta", "gone"):
        await admin.create_project(store, name, "50", ["local/*"] if name == "beta" else [], 30, actor=ACTOR)
        tokens[name], key = await admin.create_key(store, name, actor=ACTOR)
        for i in range(entries):
            reservation = f"{name}-{i}"
            assert await store.reserve(key.project_id, reservation, 5000, None, lease_s=60)
            if i % 5 == 4:
                await store.release(reservation, key.project_id, ledger_entry(key.project_id, key.id, i))
            else:
                await store.settle(reservation, ledger_entry(key.project_id, key.id, i))
    _, extra = await admin.create_key(store, "acme", actor=ACTOR)
    await admin.revoke_key(store, extra.id, actor=ACTOR)
    await admin.archive_project(store, "gone", actor=ACTOR)
    return tokens


async def test_everything_kept_is_copied_and_keys_still_authenticate(
    source: Store, target: PostgresStore
) -> None:
    tokens = await fill(source, 23)
    seen: list[tuple[str, int, int]] = []
    summary = await copy_store(source, target, lambda stage, done, total: seen.append((stage, done, total)))
    assert (summary.projects, summary.keys, summary.ledger_entries) == (3, 4, 69)
    assert summary.audit_entries == len(await source.audit_log(1000)) == 9
    assert [s for s in seen if s[0] == "ledger"][-1] == ("ledger", 69, 69)
    assert await target.list_projects() == await source.list_projects()
    assert await target.list_keys() == await source.list_keys()
    assert await target.ledger() == await source.ledger()  # every entry, in order
    assert await target.audit_log(1000) == await source.audit_log(1000)
    for project in await source.list_projects():
        assert (await target.spend(project.id)).spent_micros == (await source.spend(project.id)).spent_micros
    assert summary.spent_micros == 3 * sum(1000 + i for i in range(23) if i % 5 != 4)  # settled, not released
    for by_day in (False, True):
        assert await admin.usage(target, None, None, by_day=by_day) == await admin.usage(
            source, None, None, by_day=by_day
        )
    for name, token in tokens.items():
        key = await target.find_key(hash_key(token))
        assert key is not None and key.revoked_at is None
        owner = await target.get_project_by_id(key.project_id)
        assert (
            owner is not None and owner.name == name and (owner.archived_at is not None) == (name == "gone")
        )


async def test_a_target_with_projects_or_ledger_entries_is_refused_untouched(
    source: Store, target: PostgresStore
) -> None:
    await fill(source, 2)
    await admin.create_project(target, "there", None, [], None, actor=ACTOR)
    with pytest.raises(CopyError, match="not empty"):
        await copy_store(source, target, lambda *_: None)
    assert [p.name for p in await target.list_projects()] == ["there"]
    assert await target.usage(UsageQuery()) == []


async def test_a_copy_that_does_not_match_its_source_fails_naming_what_differs(
    source: Store, target: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(source, 3)
    write = target.append_ledger

    async def losing_one(entries: Sequence[LedgerEntry]) -> None:
        await write(entries[1:])

    monkeypatch.setattr(target, "append_ledger", losing_one)
    with pytest.raises(CopyError, match=r"\(ledger differ\)"):
        await copy_store(source, target, lambda *_: None)


async def test_a_cap_that_renews_keeps_what_its_period_has_spent(
    source: Store, target: PostgresStore
) -> None:
    """Spent in the period in force counts against the cap after the move too: the copy must not
    hand a project a fresh allowance. (Earlier periods count against nothing; the ledger keeps them.)"""
    await admin.create_project(source, "monthly", "0.05", [], None, actor=ACTOR)
    _, key = await admin.create_key(source, "monthly", actor=ACTOR)
    assert await source.reserve(key.project_id, "before", 20_000, None, lease_s=60)
    await source.settle("before", ledger_entry(key.project_id, key.id, 1))  # lifetime spend, carried
    await admin.update_project(source, "monthly", period="month", actor=ACTOR)
    project = await source.get_project("monthly")
    assert project is not None and project.period is not None
    assert await source.reserve(
        project.id, "in-period", 30_000, project.budget_micros, 60, period=project.period
    )
    await source.settle("in-period", ledger_entry(project.id, key.id, 2), project.period)
    await copy_store(source, target, lambda *_: None)
    moved = await target.get_project("monthly")
    assert moved == project
    assert await target.spend(project.id, project.period) == await source.spend(project.id, project.period)
    assert (await target.spend(project.id, project.period)).spent_micros == 1001 + 1002  # carried + its own
    # What is left of the cap after the move is what was left before it.
    left = 50_000 - 1001 - 1002
    assert not await target.reserve(
        project.id, "too-much", left + 1, project.budget_micros, 60, period=project.period
    )
    assert await target.reserve(project.id, "fits", left, project.budget_micros, 60, period=project.period)
