"""The embedded store's schema: versioned migration files (sqlite_migrations/NNNN_what.sql, see
migrations.py), its version kept in the file's `PRAGMA user_version`.

The embedded store migrates itself when a gateway opens it (it belongs to one host, whose workers
all run the same mg, so `make run` needs no step), and `mg migrate` does the same on demand. The
migrations run in one `BEGIN IMMEDIATE` transaction, so workers opening the file at once apply each
exactly once: the first holds the write lock, the others wait for it and find nothing left to do.
A file migrated by a newer mg is refused, never changed.

A file made before the schema was versioned (user_version 0) is adopted: the first migrations create
their tables only where missing, and a column an `ALTER TABLE ... ADD COLUMN` adds is skipped where
that file has it already.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from service.stores.migrations import Schema, load, statements

SCHEMA = Schema("SQLite", load("sqlite_migrations"), "run `mg migrate` with the same MG_DATA_DIR")
EXPECTED_VERSION = SCHEMA.expected

_ADD_COLUMN = re.compile(r"ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(\w+)", re.IGNORECASE)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, report: Callable[[str], None]) -> int:
    """Bring the file to EXPECTED_VERSION; the number of migrations applied. SchemaTooNew (and
    nothing changed) for a file newer than this mg. `conn` is in autocommit mode (no transaction
    open): this opens its own."""
    if schema_version(conn) == EXPECTED_VERSION:  # the usual case: no write lock taken
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        pending = SCHEMA.pending(schema_version(conn))  # again, under the lock
        for migration in pending:
            report(f"applying {migration.label}")
            for statement in statements(migration.sql):
                if not _adds_present_column(conn, statement):
                    conn.execute(statement)
            # (transactional: a failed migration leaves the version where it was)
            conn.execute(f"PRAGMA user_version = {migration.version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(pending)


def _adds_present_column(conn: sqlite3.Connection, statement: str) -> bool:
    """An ADD COLUMN of a column the table has: a file from before versioning got it then."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        return False
    table, column = match.groups()
    return column in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
