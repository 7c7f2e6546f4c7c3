"""The PostgreSQL store's schema: versioned migration files, applied by `mg migrate`, checked at start.

Each file in postgres_migrations/ is `NNNN_what.sql`; its number is the schema version it brings
the database to. `migrate` applies the missing ones in one transaction, under an advisory lock, so
two replicas (or two operators) running it at once apply each migration exactly once: the second
waits for the first, then finds nothing left to do. A gateway runs only on the schema version it
was built for (`EXPECTED_VERSION`): an older database needs `mg migrate`, a newer one a newer mg.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
from psycopg.rows import tuple_row

MIGRATIONS_PACKAGE = "service.stores"
MIGRATIONS_DIR = "postgres_migrations"
VERSION_TABLE = "mg_schema_migrations"
# pg_advisory_xact_lock key: any constant that no other application on the database uses ("mg").
MIGRATION_LOCK = 0x6D67


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The shipped migrations, in version order; numbered 1, 2, ... without gaps."""
    found = []
    for entry in files(MIGRATIONS_PACKAGE).joinpath(MIGRATIONS_DIR).iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files are not numbered 1..{len(found)}: {[m.version for m in found]}")
    return found


EXPECTED_VERSION = len(migrations())


def mismatch(version: int) -> str:
    """What to do about a database at `version`, or "" when this gateway runs on it."""
    if version < EXPECTED_VERSION:
        return (
            f"The PostgreSQL store's schema is at version {version}; this mg needs version "
            f"{EXPECTED_VERSION}: run `mg migrate` (with the same MG_POSTGRES_URL) first."
        )
    if version > EXPECTED_VERSION:
        return (
            f"The PostgreSQL store's schema is at version {version}, newer than this mg knows "
            f"({EXPECTED_VERSION}): run the mg version that migrated it, or a newer one."
        )
    return ""


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
    Raises RuntimeError for a database newer than this mg."""
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await schema_version(conn)
        if current > EXPECTED_VERSION:
            raise RuntimeError(mismatch(current))
        pending = [m for m in migrations() if m.version > current]
        for migration in pending:
            report(f"applying {migration.version:04d}_{migration.name}")
            await conn.execute(migration.sql.encode())  # several statements: no parameters
            await conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        return len(pending)
