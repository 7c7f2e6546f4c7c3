"""The PostgreSQL store's schema: versioned migration files, applied by `mg migrate`, checked at start.

The files are postgres_migrations/NNNN_what.sql (migrations.py). `migrate` applies the missing ones
in one transaction, under an advisory lock, so two replicas (or two operators) running it at once
apply each migration exactly once: the second waits for the first, then finds nothing left to do.
A gateway runs only on the schema version it was built for (`EXPECTED_VERSION`): an older database
needs `mg migrate`, a newer one a newer mg.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from service.stores.migrations import Migration, Schema, load

VERSION_TABLE = "mg_schema_migrations"
# pg_advisory_xact_lock key: any constant that no other application on the database uses ("mg").
MIGRATION_LOCK = 0x6D67

SCHEMA = Schema(
    "PostgreSQL", load("postgres_migrations"), "run `mg migrate` (with the same MG_POSTGRES_URL) first"
)
EXPECTED_VERSION = SCHEMA.expected


def migrations() -> list[Migration]:
    """The shipped migrations, in version order."""
    return SCHEMA.migrations


def mismatch(version: int) -> str:
    """What to do about a database at `version`, or "" when this gateway runs on it."""
    return SCHEMA.mismatch(version)


async def schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The database's schema version; 0 for a database mg has never migrated."""
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,))
        exists = await cursor.fetchone()
        if exists is None or not exists[0]:
            return 0
        await cursor.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}")
        row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0


async def migrate(url: str, report: Callable[[str], None]) -> int:
    """Bring the database at `url` to EXPECTED_VERSION; returns the number of migrations applied.
    Raises SchemaTooNew (a RuntimeError) for a database newer than this mg."""
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        pending = SCHEMA.pending(await schema_version(conn))
        for migration in pending:
            report(f"applying {migration.label}")
            await conn.execute(migration.sql.encode())  # several statements: no parameters
            await conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        return len(pending)
