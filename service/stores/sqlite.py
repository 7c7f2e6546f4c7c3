"""The embedded store: one SQLite file shared by every worker process of a gateway.

WAL mode lets readers run beside the one writer; every atomic operation is a `BEGIN IMMEDIATE`
transaction, which takes the write lock up front, so concurrent workers serialise on it instead of
failing on upgrade. Each store object owns one connection on one dedicated thread: sqlite3 blocks,
and the event loop must not.

Durability: a transaction is committed before the response is sent. With the default
`synchronous=NORMAL` (WAL) a committed transaction survives a crash or kill of the gateway; set
MG_SQLITE_SYNCHRONOUS=FULL to also survive power loss, at the cost of an fsync per commit.

A full disk or a failing one is an error, never a signal: the file is read and written with
read()/write(), not through a memory map (`mmap_size=0`, whatever the library's build default),
so a write that finds no space fails with SQLITE_FULL. The WAL index (-shm) is mapped, but SQLite
writes a byte into every page of it before mapping the page (unixShmMap), so its pages have their
space before they are touched. SQLITE_FULL and I/O errors become 503 UNAVAILABLE naming the store;
readiness (`ping`) writes, so it says so too.

The schema is versioned (sqlite_schema.py): the first connection migrates the file, and a file
migrated by a newer mg is refused with a 503 saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from service.data_dir import open_private, private_dir
from service.errors import Unavailable
from service.stores import sql
from service.stores.base import (
    ApiKey,
    AuditEntry,
    Claim,
    HeldReservation,
    IdempotencyRecord,
    IdempotencyState,
    InFlight,
    LedgerEntry,
    LedgerPage,
    LedgerQuery,
    Project,
    ProjectExists,
    RateDecision,
    ReservationHolder,
    Spend,
    UnknownProject,
    UsageQuery,
    UsageTotal,
    usage_total,
)
from service.stores.gcra import gcra
from service.stores.migrations import SchemaTooNew
from service.stores.periods import BudgetPeriod, carries, period_end, period_start
from service.stores.sqlite_schema import migrate

T = TypeVar("T")
log = logging.getLogger(__name__)

_LEDGER_COLUMNS = [f.name for f in fields(LedgerEntry)]
_INSERT_LEDGER = "INSERT INTO ledger ({}) VALUES ({})".format(
    ", ".join(_LEDGER_COLUMNS), ", ".join(f":{c}" for c in _LEDGER_COLUMNS)
)


def _project(row: sqlite3.Row) -> Project:
    return Project(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        budget_micros=row["budget_micros"],
        allow=tuple(json.loads(row["allow"])),
        rpm=row["rpm"],
        archived_at=row["archived_at"],
        budget_period=row["budget_period"],
        budget_anchor=row["budget_anchor"],
        budget_carry_micros=row["budget_carry_micros"],
    )


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(**{name: row[name] for name in row.keys()})  # noqa: SIM118 (Row has no __iter__ of keys)


def _ledger_entry(row: sqlite3.Row) -> LedgerEntry:
    values = {name: row[name] for name in _LEDGER_COLUMNS}
    values["extra"] = json.loads(values["extra"])
    return LedgerEntry(**values)


# No connection checkpoints by itself (the event loop's must not: a checkpoint fsyncs); every
# this many operations, the store thread checkpoints (see _checkpoint).
CHECKPOINT_EVERY = 500
# A WAL file keeps its largest size; past a checkpoint it is cut back to this.
WAL_SIZE_LIMIT = 16 << 20
# How long the store thread waits for another process's lock (its operations, not the loop's).
LOCK_WAIT_MS = 10_000
# How long a checkpoint may hold writers off while it waits for readers to leave the WAL.
CHECKPOINT_WAIT_MS = 100
# Every this many operations, the store thread deletes every project's lapsed reservations and the
# idempotency records past their retention (see _sweep), at most this many rows per transaction.
SWEEP_EVERY = 1000
SWEEP_BATCH = 10_000


class SqliteStore:
    """Operations first run on the event loop's own connection, which never waits for a lock: an
    uncontended read or write (the usual case, ~10-20 us) then costs no thread hop. When another
    process holds the write lock, the operation is rerun on the store thread, whose connection
    waits (up to 10 s) without blocking the loop. Operations are single transactions, so a
    refused first attempt has done nothing."""

    def __init__(
        self, path: Path, synchronous: str = "NORMAL", clock: Callable[[], float] | None = None
    ) -> None:
        """`clock`: for tests only, the time spend operations read instead of the host's clock."""
        self._now = clock or time.time
        self._path = path
        self._synchronous = synchronous
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mg-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._inline: sqlite3.Connection | None = None
        self._operations = 0
        self.migrations_applied = 0  # by this store object, when it opened the file

    def _open(self, lock_wait_s: float) -> sqlite3.Connection:
        """A connection as the store uses them all: rows by column name, this store's durability,
        foreign keys, no automatic checkpoints (see _checkpoint), a grown WAL cut back."""
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=lock_wait_s, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        # No memory-mapped reads or writes: through a map, a full disk is SIGBUS, not SQLITE_FULL.
        conn.execute("PRAGMA mmap_size=0")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            private_dir(self._path.parent)
            # Created here, 0600, before SQLite opens it: SQLite gives the -wal and -shm files the
            # database file's mode, and would create the file itself with the umask's.
            os.close(open_private(self._path, os.O_RDONLY | os.O_CREAT))
            conn = self._open(LOCK_WAIT_MS / 1000)
            _enable_wal(conn)
            try:
                self.migrations_applied = migrate(conn, lambda line: log.info("SQLite store: %s", line))
            except BaseException as exc:
                conn.close()
                if isinstance(exc, SchemaTooNew):  # a file from a newer mg: a 503 saying so
                    raise Unavailable(str(exc)) from None
                raise
            self._conn = conn
        return self._conn

    async def migrate(self) -> int:
        """Open the file (creating it), which migrates it; the number of migrations that applied."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._connection)
        return self.migrations_applied

    async def _inline_connection(self) -> sqlite3.Connection:
        if self._inline is None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._connection)  # schema, WAL
            self._inline = self._open(lock_wait_s=0)
        return self._inline

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            return operation(self._connection())

        loop = asyncio.get_running_loop()
        try:
            inline = await self._inline_connection()
            try:
                result = operation(inline)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                result = await loop.run_in_executor(self._thread, call)
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc
        self._operations += 1
        if self._operations % CHECKPOINT_EVERY == 0:
            loop.run_in_executor(self._thread, self._checkpoint)
        if self._operations % SWEEP_EVERY == 0:
            loop.run_in_executor(self._thread, self._sweep)
        return result

    def _checkpoint(self) -> None:
        """RESTART, not PASSIVE: under steady writes a passive checkpoint never catches up with the
        writers, so the WAL never starts over and grows without bound (1 GB within a minute of
        load). RESTART holds writers off while it copies the log back and waits for readers to
        leave it, so the next commit writes from the start of the file again. Writers on the event
        loop meet the lock (timeout 0) and rerun on this thread, behind the checkpoint. Every
        connection has automatic checkpoints off: two checkpoints at once refuse each other."""
        with contextlib.suppress(sqlite3.OperationalError):  # the next one will do
            conn = self._connection()
            # Bounded: waiting on a long read (`mg usage` on a large ledger) must not stall writes.
            conn.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            try:
                conn.execute("PRAGMA wal_checkpoint(RESTART)")
            finally:
                conn.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS}")

    def _sweep(self) -> None:
        """Rows nothing will read again, deleted in the database: every project's lapsed
        reservations (a reservation deletes only its own project's, and spend leaves them out),
        idempotency records past their retention (a claim deletes them too, but only when one
        comes) and reserved totals of nothing. A batch per transaction, so writers wait for no long
        delete."""
        with contextlib.suppress(sqlite3.OperationalError):  # busy, or a full disk: the next one will do
            conn, now = self._connection(), time.time()
            for table in ("reservations", "idempotency"):
                deleted = SWEEP_BATCH
                while deleted == SWEEP_BATCH:
                    with _write(conn):
                        deleted = conn.execute(
                            f"DELETE FROM {table} WHERE rowid IN "
                            f"(SELECT rowid FROM {table} WHERE expires_at <= ? LIMIT ?)",
                            (now, SWEEP_BATCH),
                        ).rowcount
            with _write(conn):  # the totals of periods over, and of projects that hold nothing now
                conn.execute("DELETE FROM reserved_totals WHERE reserved_micros = 0")

    # --- projects

    async def create_project(self, project: Project) -> None:
        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO projects (id, name, created_at, budget_micros, allow, rpm, archived_at, "
                    "budget_period, budget_anchor, budget_carry_micros) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (project.id, project.name, project.created_at, project.budget_micros,
                     json.dumps(list(project.allow)), project.rpm, project.archived_at, project.budget_period,
                     project.budget_anchor, project.budget_carry_micros),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise ProjectExists(project.name) from exc

        await self._run(op)

    async def get_project(self, name: str) -> Project | None:
        return await self._run(
            lambda conn: _one(conn, "SELECT * FROM projects WHERE name = ?", (name,), _project)
        )

    async def get_project_by_id(self, project_id: str) -> Project | None:
        return await self._run(
            lambda conn: _one(conn, "SELECT * FROM projects WHERE id = ?", (project_id,), _project)
        )

    async def list_projects(self) -> list[Project]:
        return await self._run(
            lambda conn: [_project(r) for r in conn.execute("SELECT * FROM projects ORDER BY name")]
        )

    async def update_project(self, project: Project) -> None:
        def op(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE projects SET budget_micros = ?, allow = ?, rpm = ?, budget_period = ?, "
                "budget_anchor = ?, budget_carry_micros = ? WHERE id = ?",
                (
                    project.budget_micros,
                    json.dumps(list(project.allow)),
                    project.rpm,
                    project.budget_period,
                    project.budget_anchor,
                    project.budget_carry_micros,
                    project.id,
                ),
            )
            if cursor.rowcount == 0:
                raise UnknownProject(project.name)

        await self._run(op)

    async def set_project_archived(self, project_id: str, archived_at: float | None) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE projects SET archived_at = ? WHERE id = ?", (archived_at, project_id)
            )
            return cursor.rowcount > 0

        return await self._run(op)

    # --- keys

    async def create_key(self, key: ApiKey) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, key.project_id, key.key_hash, key.prefix, key.created_at, key.revoked_at),
            )
        )

    async def find_key(self, key_hash: str) -> ApiKey | None:
        return await self._run(
            lambda conn: _one(conn, "SELECT * FROM keys WHERE key_hash = ?", (key_hash,), _key)
        )

    async def list_keys(self, project_id: str | None = None) -> list[ApiKey]:
        def op(conn: sqlite3.Connection) -> list[ApiKey]:
            if project_id is None:
                rows = conn.execute("SELECT * FROM keys ORDER BY created_at")
            else:
                rows = conn.execute(
                    "SELECT * FROM keys WHERE project_id = ? ORDER BY created_at", (project_id,)
                )
            return [_key(r) for r in rows]

        return await self._run(op)

    async def revoke_key(self, key_id: str, at: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id)
            )
            return cursor.rowcount == 1

        return await self._run(op)

    # --- rate limiting

    async def hit_rate_limit(self, bucket: str, limit: int) -> RateDecision:
        def op(conn: sqlite3.Connection) -> RateDecision:
            with _write(conn):
                row = conn.execute("SELECT tat FROM rate_limits WHERE bucket = ?", (bucket,)).fetchone()
                decision, new_tat = gcra(row["tat"] if row else None, time.time(), limit)
                if new_tat is not None:
                    conn.execute(
                        "INSERT INTO rate_limits VALUES (?, ?) "
                        "ON CONFLICT(bucket) DO UPDATE SET tat = excluded.tat",
                        (bucket, new_tat),
                    )
                return decision

        return await self._run(op)

    # --- spend

    async def reserve(
        self,
        project_id: str,
        reservation_id: str,
        amount_micros: int,
        cap_micros: int | None,
        lease_s: float,
        holder: ReservationHolder | None = None,
        period: BudgetPeriod | None = None,
    ) -> bool:
        held = holder or ReservationHolder("", "", 0.0)

        def op(conn: sqlite3.Connection) -> bool:
            now = self._now()
            with _write(conn):
                conn.execute(
                    "DELETE FROM reservations WHERE project_id = ? AND expires_at <= ?", (project_id, now)
                )
                if cap_micros is not None:
                    # (the project's lapsed reservations are gone: its total is what holds now)
                    spend = _spend(conn, project_id, now, period, from_totals=True)
                    if spend.spent_micros + spend.reserved_micros + amount_micros > cap_micros:
                        return False
                # The period in force, read from the clock inside the transaction that checked it.
                in_period = (period.anchor, period_start(period, now)) if period else (None, None)
                conn.execute(
                    "INSERT INTO reservations (id, project_id, amount_micros, expires_at, key_id, model, "
                    "started_at, period_anchor, period_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (reservation_id, project_id, amount_micros, now + lease_s, held.key_id, held.model,
                     held.started_at, *in_period),
                )  # fmt: skip
                return True

        return await self._run(op)

    async def renew_reservations(self, held: Sequence[HeldReservation], lease_s: float) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            now = self._now()
            renewed = set()
            with _write(conn):  # one transaction: one commit for all
                for one in held:
                    cursor = conn.execute(
                        "UPDATE reservations SET expires_at = ? "
                        "WHERE id = ? AND project_id = ? AND expires_at > ?",
                        (now + lease_s, one.reservation_id, one.project_id, now),
                    )
                    if cursor.rowcount > 0:
                        renewed.add(one.reservation_id)
            return renewed

        return await self._run(op)

    async def settle(
        self, reservation_id: str, entry: LedgerEntry, period: BudgetPeriod | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with _write(conn):
                # (fetchall: a RETURNING statement left unfinished would hold the transaction open)
                deleted = conn.execute(
                    "DELETE FROM reservations WHERE id = ? RETURNING period_anchor, period_start",
                    (reservation_id,),
                ).fetchall()
                taken_in = deleted[0] if deleted else None
                _charge(conn, entry.project_id, entry.cost_micros)
                if taken_in is not None and taken_in["period_anchor"] is not None:
                    charged: tuple[int, int] | None = (taken_in["period_anchor"], taken_in["period_start"])
                elif taken_in is None and period is not None:  # lapsed: the period in force now
                    charged = (period.anchor, period_start(period, self._now()))
                else:
                    charged = None
                if charged is not None:
                    conn.execute(
                        "INSERT INTO period_spend VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (project_id, anchor, start) "
                        "DO UPDATE SET spent_micros = spent_micros + excluded.spent_micros",
                        (entry.project_id, *charged, entry.cost_micros),
                    )
                _append(conn, entry)

        await self._run(op)

    async def release(self, reservation_id: str, project_id: str, entry: LedgerEntry | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
                if entry is not None:
                    _append(conn, entry)

        await self._run(op)

    async def spend(self, project_id: str, period: BudgetPeriod | None = None) -> Spend:
        return await self._run(lambda conn: _spend(conn, project_id, self._now(), period))

    async def in_flight(self) -> list[InFlight]:
        def op(conn: sqlite3.Connection) -> list[InFlight]:
            rows = conn.execute(
                "SELECT * FROM reservations WHERE expires_at > ? ORDER BY started_at, id", (self._now(),)
            )
            return [
                InFlight(r["id"], r["project_id"], r["amount_micros"], r["expires_at"], r["key_id"],
                         r["model"], r["started_at"])
                for r in rows
            ]  # fmt: skip

        return await self._run(op)

    # --- ledger

    async def ledger(self, project_id: str | None = None, since: float | None = None) -> list[LedgerEntry]:
        def op(conn: sqlite3.Connection) -> list[LedgerEntry]:
            query = "SELECT * FROM ledger WHERE created_at >= ?"
            args: list[object] = [since or 0.0]
            if project_id is not None:
                query += " AND project_id = ?"
                args.append(project_id)
            return [_ledger_entry(r) for r in conn.execute(query + " ORDER BY seq", args)]

        return await self._run(op)

    async def ledger_page(self, query: LedgerQuery) -> LedgerPage:
        """Newest first by seq; the cursor is the last entry's seq."""
        statement, params = sql.ledger_page(param, query, _cursor_int(query.cursor))

        def op(conn: sqlite3.Connection) -> LedgerPage:
            rows = conn.execute(statement, params).fetchall()
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            return LedgerPage([_ledger_entry(r) for r in rows], str(rows[-1]["seq"]) if more else "")

        return await self._run(op)

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        """Totalled in the database, from the ledger_usage index (it holds every column summed)."""
        statement, params = sql.usage(param, day_of, query)
        return await self._run(
            lambda conn: [usage_total(tuple(row)) for row in conn.execute(statement, params)]
        )

    async def ledger_batch(self, after: str, limit: int) -> LedgerPage:
        start = _cursor_int(after) or 0

        def op(conn: sqlite3.Connection) -> LedgerPage:
            rows = conn.execute("SELECT * FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?", (start, limit))
            entries = rows.fetchall()
            return LedgerPage([_ledger_entry(r) for r in entries], str(entries[-1]["seq"]) if entries else "")

        return await self._run(op)

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Entries as they are, in their order, with no charge (copying a store: copy.py), in one
        transaction."""

        def op(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.executemany(_INSERT_LEDGER, (_ledger_values(entry) for entry in entries))

        await self._run(op)

    async def add_spent(self, project_id: str, spent_micros: int) -> None:
        """Spend charged without a ledger entry (copying a store: its ledger is copied apart)."""
        await self._run(lambda conn: _charge(conn, project_id, spent_micros))

    # --- audit

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
                (entry.id, entry.at, entry.actor, entry.action, entry.target, json.dumps(entry.detail)),
            )
        )

    async def audit_log(self, limit: int, before: str = "") -> list[AuditEntry]:
        def op(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT * FROM audit WHERE ? = '' OR id < ? ORDER BY id DESC LIMIT ?", (before, before, limit)
            )
            return [
                AuditEntry(r["id"], r["at"], r["actor"], r["action"], r["target"], json.loads(r["detail"]))
                for r in rows
            ]

        return await self._run(op)

    # --- idempotency

    async def claim_idempotency(
        self, project_id: str, key: str, fingerprint: str, owner: str, lease_s: float, waiting_for: str = ""
    ) -> Claim:
        def op(conn: sqlite3.Connection) -> Claim:
            now = time.time()
            with _write(conn):
                conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
                row = conn.execute(
                    "SELECT * FROM idempotency WHERE project_id = ? AND key = ?", (project_id, key)
                ).fetchone()
                if row is not None:
                    record = _idempotency_record(row)
                    if _blocks_claim(record, now, waiting_for):
                        return Claim(False, record)
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (project_id, key, fingerprint, IdempotencyState.IN_FLIGHT, owner, now + lease_s, b"", "",
                     now + lease_s),
                )  # fmt: skip
                return Claim(True)

        return await self._run(op)

    async def renew_idempotency(self, project_id: str, key: str, owner: str, lease_s: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            until = time.time() + lease_s
            cursor = conn.execute(
                "UPDATE idempotency SET lease_expires_at = ?, expires_at = MAX(expires_at, ?) "
                "WHERE project_id = ? AND key = ? AND owner = ? AND state = ?",
                (until, until, project_id, key, owner, IdempotencyState.IN_FLIGHT),
            )
            return cursor.rowcount == 1

        return await self._run(op)

    async def finish_idempotency(
        self, project_id: str, key: str, owner: str, record: IdempotencyRecord, keep_s: float
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE idempotency SET state = ?, response = ?, error = ?, lease_expires_at = 0, "
                "expires_at = ? WHERE project_id = ? AND key = ? AND owner = ?",
                (record.state, record.response, record.error, time.time() + keep_s, project_id, key, owner),
            )

        await self._run(op)

    # --- upstream slots

    async def acquire_slot(self, pool: str, holder: str, limit: int, lease_s: float) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            now = time.time()
            with _write(conn):
                for slot in range(limit):
                    taken = conn.execute(
                        "INSERT INTO upstream_slots VALUES (?, ?, ?, ?) ON CONFLICT (pool, slot) DO UPDATE "
                        "SET holder = excluded.holder, expires_at = excluded.expires_at "
                        "WHERE upstream_slots.expires_at <= ?",
                        (pool, slot, holder, now + lease_s, now),
                    )
                    if taken.rowcount:
                        return slot
                return None

        return await self._run(op)

    async def release_slot(self, pool: str, slot: int, holder: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(
                    "DELETE FROM upstream_slots WHERE pool = ? AND slot = ? AND holder = ?",
                    (pool, slot, holder),
                )

        await self._run(op)

    async def ping(self) -> None:
        """A write, not a read: a store on a full disk still reads, but serves no generation."""

        def probe(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute("INSERT OR REPLACE INTO write_probe VALUES (1, ?)", (time.time(),))

        await self._run(probe)

    async def close(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None

        def op() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._thread, op)
        self._thread.shutdown(wait=True)


def _cursor_int(cursor: str) -> int | None:
    """A ledger cursor (a seq) as given back; ValueError for text this store did not make."""
    if not cursor:
        return None
    if not cursor.isdigit():
        raise ValueError(cursor)
    return int(cursor)


def param(name: str) -> str:
    return f":{name}"


def day_of(column: str) -> str:
    """day_number (base.py) in SQLite: exactly as the ledger_usage index has it (0004), or the
    totals by day are sorted rather than read in order from the index."""
    return f"CAST({column} / 86400 AS INTEGER)"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _unavailable(exc: sqlite3.OperationalError) -> Unavailable:
    """The 503 for an operation the file or its disk failed, saying which."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        return Unavailable(f"The SQLite store cannot write: its disk is full ({exc}).")
    if primary == sqlite3.SQLITE_IOERR:
        return Unavailable(f"The SQLite store cannot read or write its file ({exc}).")
    return Unavailable(f"The SQLite store is unavailable: {exc}")


def _enable_wal(conn: sqlite3.Connection) -> None:
    """WAL is a property of the file, set once. Switching needs a moment with no other connection,
    and SQLite reports "locked" at once (no busy wait) when workers open the file together, so the
    switch is retried for a while."""
    for _ in range(100):
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            time.sleep(0.05)
    raise sqlite3.OperationalError("could not switch the store to WAL mode")


class _write:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one atomic write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _idempotency_record(row: sqlite3.Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        fingerprint=row["fingerprint"],
        state=row["state"],
        owner=row["owner"],
        lease_expires_at=row["lease_expires_at"],
        response=bytes(row["response"]),
        error=row["error"],
    )


def _blocks_claim(record: IdempotencyRecord, now: float, waiting_for: str) -> bool:
    """A live record keeps the key: a success, a running owner, or the failure a joiner waits on."""
    if record.state == IdempotencyState.IN_FLIGHT:
        return record.lease_expires_at > now
    if record.state == IdempotencyState.FAILED:
        return record.owner == waiting_for
    return True


def _one(
    conn: sqlite3.Connection, query: str, args: tuple[Any, ...], make: Callable[[sqlite3.Row], T]
) -> T | None:
    row = conn.execute(query, args).fetchone()
    return make(row) if row is not None else None


def _spend(
    conn: sqlite3.Connection,
    project_id: str,
    now: float,
    period: BudgetPeriod | None,
    *,
    from_totals: bool = False,
) -> Spend:
    """The project's spend in the period in force (or its lifetime). What it holds reserved is its
    reservations whose lease has not lapsed, added up; `from_totals`: the running total, for a
    caller that just deleted the project's lapsed reservations (see _reserved_total)."""
    count = _reserved_total if from_totals else _reserved_sum
    if period is None:
        spent = conn.execute("SELECT spent_micros FROM spend WHERE project_id = ?", (project_id,)).fetchone()
        return Spend(spent["spent_micros"] if spent else 0, count(conn, project_id, now, None))
    start = period_start(period, now)
    spent = conn.execute(
        "SELECT spent_micros FROM period_spend WHERE project_id = ? AND anchor = ? AND start = ?",
        (project_id, period.anchor, start),
    ).fetchone()
    carried = period.carry_micros if carries(period, start) else 0
    return Spend(
        (spent["spent_micros"] if spent else 0) + carried,
        count(conn, project_id, now, (period.anchor, start)),
        start,
        period_end(period, start),
    )


def _reserved_sum(
    conn: sqlite3.Connection, project_id: str, now: float, period: tuple[int, int] | None
) -> int:
    """The project's reservations in `period` (None: under its lifetime cap) whose lease has not
    lapsed, added up: exact whether or not lapsed ones were deleted yet, for reads."""
    in_period, args = (
        ("period_anchor IS NULL", ())
        if period is None
        else ("period_anchor = ? AND period_start = ?", period)
    )
    row = conn.execute(
        "SELECT COALESCE(SUM(amount_micros), 0) AS total FROM reservations "
        f"WHERE project_id = ? AND {in_period} AND expires_at > ?",
        (project_id, *args, now),
    ).fetchone()
    return int(row["total"])


def _reserved_total(
    conn: sqlite3.Connection, project_id: str, now: float, period: tuple[int, int] | None
) -> int:
    """What the project holds reserved in `period`, from the total the triggers keep (migration
    0006): one row, however many reservations it holds. It counts lapsed reservations until they
    are deleted, so a reservation reads it right after deleting the project's lapsed ones."""
    key = "" if period is None else f"{period[0]}:{period[1]}"
    row = conn.execute(
        "SELECT reserved_micros FROM reserved_totals WHERE project_id = ? AND period = ?", (project_id, key)
    ).fetchone()
    return int(row["reserved_micros"]) if row else 0


def _charge(conn: sqlite3.Connection, project_id: str, micros: int) -> None:
    conn.execute(
        "INSERT INTO spend VALUES (?, ?) ON CONFLICT(project_id) "
        "DO UPDATE SET spent_micros = spent_micros + excluded.spent_micros",
        (project_id, micros),
    )


def _append(conn: sqlite3.Connection, entry: LedgerEntry) -> None:
    conn.execute(_INSERT_LEDGER, _ledger_values(entry))


def _ledger_values(entry: LedgerEntry) -> dict[str, Any]:
    # Attribute by attribute: dataclasses.asdict deep-copies every field (~50 us a request).
    values = {name: getattr(entry, name) for name in _LEDGER_COLUMNS}
    values["extra"] = json.dumps(entry.extra)
    return values
