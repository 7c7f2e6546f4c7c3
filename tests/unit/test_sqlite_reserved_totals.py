"""The embedded store keeps what each project holds reserved as a total (migration 0006's triggers),
so a reservation checks its cap by reading one row rather than adding up every reservation the
project holds: the totals follow every way a reservation is taken and ends, a file migrated with
reservations in flight starts from their sum, and the cap check costs the same with 5,000
generations in flight as with none."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.stores.migrations import statements
from service.stores.periods import BudgetPeriod
from service.stores.sqlite import SqliteStore
from service.stores.sqlite_schema import SCHEMA
from tests.support.stores import ledger_entry as entry

# Lifetime caps, and a daily period set a while ago.
PERIODS = [None, BudgetPeriod.of("day", anchor=1_700_000_000)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "mg.sqlite3")
    await opened.migrate()
    yield opened
    await opened.close()


def totals(path: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT project_id, period, reserved_micros FROM reserved_totals")
        return {(project, period): micros for project, period, micros in rows if micros}


def sums(path: Path) -> dict[tuple[str, str], int]:
    """What the totals must be: every reservation row, lapsed or not, added up per project and period."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT project_id, IFNULL(period_anchor || ':' || period_start, ''), SUM(amount_micros) "
            "FROM reservations GROUP BY 1, 2"
        )
        return {(project, period): micros for project, period, micros in rows if micros}


@pytest.mark.parametrize("period", PERIODS, ids=["lifetime", "daily"])
async def test_the_totals_follow_every_way_a_reservation_is_taken_and_ends(
    store: SqliteStore, tmp_path: Path, period: BudgetPeriod | None
) -> None:
    path = tmp_path / "mg.sqlite3"

    async def reserve(
        project: str, reservation: str, micros: int, cap: int | None, lease_s: float = 60
    ) -> bool:
        return await store.reserve(project, reservation, micros, cap, lease_s, period=period)

    for n in range(5):
        assert await reserve("a", f"a{n}", 100, None)
    assert await reserve("b", "b0", 70, None)
    assert await reserve("b", "b-lapsing", 30, None, lease_s=0.05)
    assert sums(path) == totals(path) and sum(totals(path).values()) == 600

    await store.settle("a0", entry("a", 80), period)
    await store.release("a1", "a", entry("a", 0))
    assert totals(path) == sums(path)
    assert sorted(totals(path).values()) == [100, 300]

    await asyncio.sleep(0.1)  # b-lapsing's lease lapses; b's next reservation deletes it
    assert not await reserve("b", "b1", 31, cap=70 + 30)  # 70 held, the lapsed 30 gone: 70 + 31 > 100
    assert await reserve("b", "b1", 30, cap=70 + 30)  # exactly the cap
    assert totals(path) == sums(path)
    assert not await reserve("a", "a9", 1, cap=300 + 80)  # a holds 300 and spent its settled 80
    assert await reserve("a", "a9", 1, cap=300 + 80 + 1)

    assert await reserve("a", "a-lapsing", 5, None, lease_s=0.05)
    assert await reserve("c", "c0", 9, None)
    await store.release("c0", "c", None)  # c holds nothing now
    await asyncio.sleep(0.1)
    store._sweep()  # what the store thread runs every SWEEP_EVERY operations
    assert totals(path) == sums(path)
    assert sorted(totals(path).values()) == [100, 301]
    with sqlite3.connect(path) as conn:  # totals of nothing are swept
        assert conn.execute("SELECT COUNT(*) FROM reserved_totals WHERE reserved_micros = 0").fetchone() == (
            0,
        )


async def test_a_file_migrated_with_reservations_in_flight_starts_from_their_sum(tmp_path: Path) -> None:
    path = tmp_path / "mg.sqlite3"
    conn = sqlite3.connect(path)
    for migration in SCHEMA.pending(0):
        if migration.version < 6:
            for statement in statements(migration.sql):
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    held = [
        ("r1", "p", 100, None, None),
        ("r2", "p", 50, None, None),
        ("r3", "p", 7, 1_700_000_000, 1_733_529_600),
    ]
    conn.executemany(
        "INSERT INTO reservations (id, project_id, amount_micros, expires_at, period_anchor, period_start) "
        "VALUES (?, ?, ?, 9e9, ?, ?)",
        held,
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert await store.migrate() == 1
    await store.settle("r1", entry("p", 100))
    await store.close()
    assert totals(path) == sums(path) == {("p", ""): 50, ("p", "1700000000:1733529600"): 7}


async def test_the_cap_check_reads_no_more_with_thousands_of_reservations_held(store: SqliteStore) -> None:
    async def steps_of_one_reservation(reservation: str) -> int:
        """The SQLite virtual machine steps one capped reservation takes ."""
        counted = [0]
        conn = await store._inline_connection()
        conn.set_progress_handler(lambda: counted.__setitem__(0, counted[0] + 1), 1)
        try:
            assert await store.reserve("busy", reservation, 10, 10**12, 60)
        finally:
            conn.set_progress_handler(None, 1)
        return counted[0]

    few = await steps_of_one_reservation("first")
    for n in range(5000):
        assert await store.reserve("busy", f"held{n}", 10, None, 60)
    many = await steps_of_one_reservation("last")
    assert many <= few * 2, (few, many)  # adding up 5,000 reservations takes ~100x the steps
