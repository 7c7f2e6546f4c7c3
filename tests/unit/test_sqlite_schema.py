"""The embedded store's versioned schema: a new file is migrated when it is opened, a file made
before the schema was versioned is adopted without loss, workers opening one file at once migrate it
once, and a file from a newer mg is refused untouched."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from service.errors import Unavailable
from service.stores.base import LedgerEntry, ReservationHolder, UsageQuery
from service.stores.migrations import Migration, statements
from service.stores.sqlite import SqliteStore
from service.stores.sqlite_schema import EXPECTED_VERSION, SCHEMA

# The schema as mg created it before it was versioned: every table at once, IF NOT EXISTS, and the
# columns added since then by ALTER TABLE when a file was opened (PRE_VERSIONING_ADDED_COLUMNS).
PRE_VERSIONING_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    budget_micros INTEGER, allow TEXT NOT NULL, rpm INTEGER
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(id), key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS rate_limits (bucket TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spend (project_id TEXT PRIMARY KEY, spent_micros INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, amount_micros INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_project ON reservations(project_id, expires_at);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL, project_id TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT NOT NULL, n_requested INTEGER NOT NULL, images_returned INTEGER NOT NULL,
    size TEXT NOT NULL, quality TEXT NOT NULL, cost_micros INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    upstream_latency_ms INTEGER NOT NULL, outcome TEXT NOT NULL, created_at REAL NOT NULL,
    idempotency_key TEXT NOT NULL, upstream_request_id TEXT NOT NULL, extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_by_project ON ledger(project_id, created_at);
CREATE TABLE IF NOT EXISTS idempotency (
    project_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL,
    owner TEXT NOT NULL, lease_expires_at REAL NOT NULL, response BLOB NOT NULL, error TEXT NOT NULL,
    expires_at REAL NOT NULL, PRIMARY KEY (project_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency(expires_at);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS upstream_slots (
    pool TEXT NOT NULL, slot INTEGER NOT NULL, holder TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (pool, slot)
);
"""
PRE_VERSIONING_ADDED_COLUMNS = (
    ("reservations", "key_id", "TEXT NOT NULL DEFAULT ''"),
    ("reservations", "model", "TEXT NOT NULL DEFAULT ''"),
    ("reservations", "started_at", "REAL NOT NULL DEFAULT 0"),
    ("projects", "archived_at", "REAL"),
)


def old_store_file(path: Path, added_columns: int) -> None:
    """A store file as an mg before versioning left it: the first `added_columns` added, a project
    with a key, spend and a ledger entry in it."""
    conn = sqlite3.connect(path)
    conn.executescript(PRE_VERSIONING_SCHEMA)
    for table, column, declaration in PRE_VERSIONING_ADDED_COLUMNS[:added_columns]:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    conn.execute("INSERT INTO projects (id, name, created_at, budget_micros, allow, rpm) "
                 "VALUES ('proj_1', 'acme', 1.5, 9000, '[\"openai/*\"]', 30)")  # fmt: skip
    conn.execute("INSERT INTO keys VALUES ('key_1', 'proj_1', 'hash1', 'mg_live_ab', 2.5, NULL)")
    conn.execute("INSERT INTO spend VALUES ('proj_1', 700)")
    conn.execute(
        "INSERT INTO ledger (request_id, project_id, key_id, model, provider, n_requested, "
        "images_returned, size, quality, cost_micros, input_tokens, upstream_latency_ms, outcome, "
        "created_at, idempotency_key, upstream_request_id, extra) VALUES ('req_1', 'proj_1', 'key_1', "
        "'openai/gpt-image-1', 'openai', 1, 1, '1024x1024', 'low', 700, 5, 900, 'ok', 3.5, '', 'up_1', "
        '\'{"a": "b"}\')'
    )
    conn.commit()
    conn.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


async def test_a_new_file_is_migrated_to_this_version_when_opened(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    assert await store.migrate() == EXPECTED_VERSION
    await store.close()
    assert user_version(tmp_path / "mg.sqlite3") == EXPECTED_VERSION
    again = SqliteStore(tmp_path / "mg.sqlite3")
    assert await again.migrate() == 0
    await again.close()


@pytest.mark.parametrize("added_columns", range(len(PRE_VERSIONING_ADDED_COLUMNS) + 1))
async def test_a_file_from_before_versioning_is_adopted_without_loss(
    tmp_path: Path, added_columns: int
) -> None:
    path = tmp_path / "mg.sqlite3"
    old_store_file(path, added_columns)
    store = SqliteStore(path)
    assert await store.migrate() == EXPECTED_VERSION
    assert user_version(path) == EXPECTED_VERSION
    project = await store.get_project("acme")
    assert project is not None
    assert (project.id, project.budget_micros, project.allow, project.rpm, project.archived_at) == (
        "proj_1", 9000, ("openai/*",), 30, None,
    )  # fmt: skip
    (key,) = await store.list_keys("proj_1")
    assert (key.key_hash, key.prefix, key.revoked_at) == ("hash1", "mg_live_ab", None)
    assert (await store.spend("proj_1")).spent_micros == 700
    (entry,) = await store.ledger("proj_1")
    assert (entry.request_id, entry.cost_micros, entry.extra) == ("req_1", 700, {"a": "b"})
    # what the added columns hold works: holders of reservations, archiving
    holder = ReservationHolder("key_1", "openai/gpt-image-1", time.time())
    assert await store.reserve("proj_1", "r1", 100, 9000, lease_s=30, holder=holder)
    assert [(g.key_id, g.model) for g in await store.in_flight()] == [("key_1", "openai/gpt-image-1")]
    assert await store.set_project_archived("proj_1", 9.5)
    (total,) = await store.usage(UsageQuery())
    assert (total.requests, total.cost_micros) == (1, 700)
    await store.close()
    added = ("key_id", "model", "started_at", "period_anchor", "period_start")
    assert [columns(path, "reservations").count(column) for column in added] == [1] * len(added)


async def test_workers_opening_one_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    stores = [SqliteStore(tmp_path / "mg.sqlite3") for _ in range(4)]
    applied = await asyncio.gather(*(store.migrate() for store in stores))
    assert sorted(applied) == [0, 0, 0, EXPECTED_VERSION]
    for store in stores:
        await store.close()


async def test_a_file_from_a_newer_mg_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mg.sqlite3"
    store = SqliteStore(path)
    await store.migrate()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {EXPECTED_VERSION + 1}")
    before = path.read_bytes()
    newer = SqliteStore(path)
    with pytest.raises(Unavailable, match=f"version {EXPECTED_VERSION + 1}, newer than this mg"):
        await newer.list_projects()
    await newer.close()
    assert user_version(path) == EXPECTED_VERSION + 1
    assert path.read_bytes() == before


async def test_a_migration_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """All the pending migrations are one transaction: none of them is kept when one fails."""
    path = tmp_path / "mg.sqlite3"
    last = SCHEMA.migrations[-1]
    SCHEMA.migrations[-1] = Migration(
        last.version, "broken", "CREATE TABLE half_done (id INTEGER);\nNOT SQL;"
    )
    try:
        store = SqliteStore(path)
        with pytest.raises(Unavailable):
            await store.list_projects()
        await store.close()
    finally:
        SCHEMA.migrations[-1] = last
    assert user_version(path) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []


def test_statements_are_split_at_line_ending_semicolons_outside_comments() -> None:
    sql = "-- a comment;\nCREATE TABLE a (x TEXT DEFAULT ';');\nCREATE INDEX b\n  ON a(x);  -- ok\n"
    assert list(statements(sql)) == ["CREATE TABLE a (x TEXT DEFAULT ';')", "CREATE INDEX b\n  ON a(x)"]


def test_ledger_entry_fields_are_the_ledger_table_columns(tmp_path: Path) -> None:
    """A migration adding a ledger column comes with the field (and the other way round)."""

    async def read() -> list[str]:
        store = SqliteStore(tmp_path / "mg.sqlite3")
        await store.migrate()
        await store.close()
        return columns(tmp_path / "mg.sqlite3", "ledger")

    assert asyncio.run(read())[1:] == list(LedgerEntry.__dataclass_fields__)
