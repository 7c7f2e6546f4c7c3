"""`mg migrate` and `mg store copy`: the store's schema and moving a store, with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TextIO

from service import admin
from service.config import Settings
from service.stores import SQLITE_FILE, open_store

BAR_WIDTH = 30


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Bring the store's schema to this mg's version: PostgreSQL's (the gateway refuses to start on an
    older one) or the embedded SQLite file's (which a gateway also migrates when it opens it)."""
    if settings.postgres_url:
        migrate_postgres(settings.postgres_url)
        return 0
    if settings.redis_url:
        print("nothing to migrate: the Redis store has no schema")
        return 0
    from service.stores.sqlite import SqliteStore
    from service.stores.sqlite_schema import EXPECTED_VERSION

    path = settings.data_dir.resolve() / SQLITE_FILE

    async def run() -> int:
        store = SqliteStore(path, settings.sqlite_synchronous)
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = asyncio.run(run())
    print(f"SQLite store {path}: schema at version {EXPECTED_VERSION} ({applied} migration(s) applied)")
    return 0


def migrate_postgres(url: str) -> None:
    import psycopg

    from service.stores.postgres_schema import EXPECTED_VERSION, migrate

    try:
        applied = asyncio.run(migrate(url, lambda line: print(line, file=sys.stderr)))
    except psycopg.OperationalError as exc:
        raise admin.AdminError(f"cannot reach PostgreSQL: {exc}") from None
    except RuntimeError as exc:  # a database newer than this mg
        raise admin.AdminError(str(exc)) from None
    print(f"schema at version {EXPECTED_VERSION} ({applied} migration(s) applied)")


def cmd_store_copy(settings: Settings, args: argparse.Namespace) -> int:
    """Copy the store these settings select into the PostgreSQL database at --to (migrated first,
    and empty), then verify the copy (stores/copy.py)."""
    from service.stores.copy import CopyError, copy_store
    from service.stores.postgres import PostgresStore

    target_url: str = args.to
    if not target_url.startswith(("postgresql://", "postgres://")):
        raise admin.AdminError("--to takes a PostgreSQL URL (postgresql://user@host:5432/database)")
    if target_url == settings.postgres_url:
        raise admin.AdminError("--to is the store these settings already use: name another database")
    if not settings.redis_url and not settings.postgres_url:
        path = settings.data_dir.resolve() / SQLITE_FILE
        if not path.exists():
            raise admin.AdminError(f"no store at {path}: set MG_DATA_DIR to the gateway's data dir")
        print(f"mg: copying the store {path}", file=sys.stderr)
    migrate_postgres(target_url)
    bar = ProgressBar(sys.stderr)

    async def run() -> None:
        source, target = open_store(settings), PostgresStore(target_url, pool_size=2)
        try:
            summary = await copy_store(source, target, bar.update)
        except CopyError as exc:
            raise admin.AdminError(str(exc)) from None
        finally:
            bar.finish()
            await source.close()
            await target.close()
        print(
            f"copied and verified: {summary.projects} projects, {summary.keys} keys, "
            f"{summary.ledger_entries} ledger entries, {summary.audit_entries} audit entries, "
            f"spend ${summary.spent_micros / 1e6:,.6f}"
        )

    asyncio.run(run())
    print(
        "not copied: rate-limit state, reservations in flight, idempotency records. "
        "Point the gateway at it with MG_POSTGRES_URL."
    )
    return 0


class ProgressBar:
    """One line per stage, redrawn in place on a terminal (at most ten times a second); elsewhere
    (a log) the line is written once, when its stage is done."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._live = out.isatty()
        self._stage = ""
        self._line = ""
        self._drawn_at = 0.0

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.finish()
            self._stage = stage
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        self._line = f"{stage:<9} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:,}/{total:,}"
        now = time.monotonic()
        if self._live and (now - self._drawn_at >= 0.1 or done == total):
            self._out.write(f"\r{self._line}")
            self._out.flush()
            self._drawn_at = now

    def finish(self) -> None:
        """End the current stage's line."""
        if self._line:
            self._out.write(("\r" if self._live else "") + self._line + "\n")
            self._out.flush()
        self._line = ""
