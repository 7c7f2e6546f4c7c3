"""The embedded store reads a large ledger through its indexes: SQLite's plan for every shape of
usage total and ledger page uses an index, and none sorts the ledger (a GROUP BY or ORDER BY through
a temporary b-tree sorts every matching row: seconds over a million)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.stores import sql
from service.stores.base import LedgerQuery, UsageQuery
from service.stores.sqlite import SqliteStore, day_of, param

USAGE = [
    UsageQuery(),
    UsageQuery(by_day=True),
    UsageQuery(project_id="p"),
    UsageQuery(project_id="p", by_day=True, since=1.0, until=2.0),
    UsageQuery(since=1.0),
]
PAGES = [
    LedgerQuery(),
    LedgerQuery(project_id="p"),
    LedgerQuery(project_id="p", since=1.0, until=2.0),
    LedgerQuery(model="m"),
    LedgerQuery(outcome="ok"),
    LedgerQuery(since=1.0),
]


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[sqlite3.Connection]:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    await store.migrate()
    await store.close()
    connection = sqlite3.connect(tmp_path / "mg.sqlite3")
    yield connection
    connection.close()


def plan(conn: sqlite3.Connection, statement: str, params: dict[str, object]) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", params)]


@pytest.mark.parametrize("query", USAGE)
def test_usage_is_totalled_in_one_pass_over_the_usage_index(
    conn: sqlite3.Connection, query: UsageQuery
) -> None:
    steps = plan(conn, *sql.usage(param, day_of, query))
    assert len(steps) == 1 and "USING COVERING INDEX ledger_usage" in steps[0], steps


@pytest.mark.parametrize("query", PAGES)
def test_ledger_pages_come_in_order_without_a_sort(conn: sqlite3.Connection, query: LedgerQuery) -> None:
    steps = plan(conn, *sql.ledger_page(param, query, before=None))
    assert not any("TEMP B-TREE" in step for step in steps), steps
    if query.project_id or query.model or query.outcome:
        assert any("USING INDEX" in step for step in steps), steps
