"""The system-of-record store: PostgreSQL, for any number of gateway replicas (MG_POSTGRES_URL).

Every operation is one SQL statement, so one round trip and one transaction (autocommit), and
every statement that must be atomic is written so that PostgreSQL's row locks make it so under
READ COMMITTED, however many workers and replicas run it at once:

- a reservation is one conditional upsert of the project's spend row, taken only while
  `spent + reserved + estimate <= cap`: concurrent reservations queue on that row's lock and each
  re-checks the condition against the row as the one before it left it;
- settling deletes the reservation, charges the spend row and appends the ledger row in one
  statement; releasing does the same without the charge;
- a rate-limit hit is one upsert of the bucket's GCRA state (stores/gcra.py's arithmetic);
- an idempotency claim is one upsert that replaces only a record that no longer holds the key.

Under a cap that renews, the same upsert takes the row of the period in force (`period_spend`),
derived from the database's clock in the same statement (`mg_period_start`, migration 0005).

A reservation whose lease lapsed (its worker died) still counts in `reserved_micros` until it is
reclaimed; a reservation refused against the cap reclaims the project's lapsed ones and tries once
more, so a lapsed lease never refuses a request, and `spend` leaves lapsed reservations out.

Times come from the database's clock (`statement_timestamp()`), so replicas with skewed clocks
agree on leases and rate limits. `synchronous_commit` is the server's (on, by default): a statement
that returned is on disk. Connection failures become `Unavailable` (503); the pool opens new
connections by itself when the database is back. A database whose schema is not the version this
mg was built for is refused with the same 503, naming `mg migrate` (postgres_schema.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
from service.stores.gcra import WINDOW_S, gcra
from service.stores.periods import BudgetPeriod, period_end
from service.stores.postgres_schema import mismatch, schema_version

if TYPE_CHECKING:
    from service.stores.redis import RedisStore

T = TypeVar("T")
Row = dict[str, Any]
Connection = psycopg.AsyncConnection[Row]

NOW = "extract(epoch FROM statement_timestamp())::float8"
# Spend statements read the clock the store was given (%(now)s, tests only) or, when it is NULL
# (every deployment), the database's.
CLOCK = f"COALESCE(%(now)s::float8, {NOW})"
# The period in force of the periodic cap in %(kind)s, %(days)s, %(anchor)s (migration 0005).
PERIOD_START = f"mg_period_start(%(kind)s::text, %(days)s::integer, %(anchor)s::bigint, {CLOCK})"
# What a period's first period (the one holding the anchor) carries from the period before it.
CARRIED = "CASE WHEN {start} <= %(anchor)s::bigint THEN %(carry)s::bigint ELSE 0 END"
# How long an operation waits for a pooled connection before it is a 503.
CONNECT_TIMEOUT_S = 5.0
# How long, after a failure, the idle connections' check may take (a dead one fails at once).
CHECK_TIMEOUT_S = 1.0
# Every this many idempotency claims, records past their retention and reservations past their
# lease are deleted (for all projects; claims and refusals replace or reclaim their own as they go).
SWEEP_EVERY = 1000

_LEDGER_COLUMNS = [f.name for f in fields(LedgerEntry)]

# %(project)s's lapsed reservations (or every project's, with %(project)s NULL) deleted and taken
# off their spend rows (the lifetime row, or their period's). SKIP LOCKED: a reservation being
# settled or renewed right now is that statement's business, and two sweeps never wait on each other.
RECLAIM = f"""
WITH lapsed AS (
    DELETE FROM reservations WHERE id IN (
        SELECT id FROM reservations
        WHERE (%(project)s::text IS NULL OR project_id = %(project)s) AND expires_at <= {CLOCK}
        FOR UPDATE SKIP LOCKED
    ) RETURNING project_id, amount_micros, period_anchor, period_start
), freed AS (
    SELECT project_id, SUM(amount_micros) AS amount FROM lapsed
    WHERE period_anchor IS NULL GROUP BY project_id
), freed_in_period AS (
    SELECT project_id, period_anchor, period_start, SUM(amount_micros) AS amount FROM lapsed
    WHERE period_anchor IS NOT NULL GROUP BY project_id, period_anchor, period_start
), lifetime AS (
    UPDATE spend SET reserved_micros = spend.reserved_micros - freed.amount
    FROM freed WHERE spend.project_id = freed.project_id
), periods AS (
    UPDATE period_spend p SET reserved_micros = p.reserved_micros - f.amount FROM freed_in_period f
    WHERE p.project_id = f.project_id AND p.anchor = f.period_anchor AND p.start = f.period_start
)
SELECT count(*) AS reclaimed FROM lapsed
"""

RESERVE = f"""
WITH taken AS (
    INSERT INTO spend AS s (project_id, spent_micros, reserved_micros)
    SELECT %(project)s, 0, %(amount)s WHERE %(cap)s::bigint IS NULL OR %(amount)s <= %(cap)s
    ON CONFLICT (project_id) DO UPDATE SET reserved_micros = s.reserved_micros + excluded.reserved_micros
    WHERE %(cap)s::bigint IS NULL OR s.spent_micros + s.reserved_micros + excluded.reserved_micros <= %(cap)s
    RETURNING 1
)
INSERT INTO reservations (id, project_id, amount_micros, expires_at, key_id, model, started_at)
SELECT %(id)s, %(project)s, %(amount)s, {CLOCK} + %(lease)s, %(key_id)s, %(model)s, %(started_at)s FROM taken
RETURNING 1
"""

# Under a periodic cap: the same upsert on the row of the period in force, derived from the clock in
# this statement, with what was carried into it.
RESERVE_IN_PERIOD = f"""
WITH period AS (
    SELECT {PERIOD_START} AS start
), taken AS (
    INSERT INTO period_spend AS s (project_id, anchor, start, spent_micros, reserved_micros)
    SELECT %(project)s, %(anchor)s, period.start, 0, %(amount)s FROM period
    WHERE %(cap)s::bigint IS NULL OR {CARRIED.format(start="period.start")} + %(amount)s <= %(cap)s
    ON CONFLICT (project_id, anchor, start) DO UPDATE
    SET reserved_micros = s.reserved_micros + excluded.reserved_micros
    WHERE %(cap)s::bigint IS NULL
       OR s.spent_micros + s.reserved_micros + excluded.reserved_micros + {CARRIED.format(start="s.start")}
          <= %(cap)s
    RETURNING s.start
)
INSERT INTO reservations (id, project_id, amount_micros, expires_at, key_id, model, started_at, period_anchor,
                          period_start)
SELECT %(id)s, %(project)s, %(amount)s, {CLOCK} + %(lease)s, %(key_id)s, %(model)s, %(started_at)s,
       %(anchor)s, taken.start FROM taken
RETURNING 1
"""

ACQUIRE_SLOT = f"""
INSERT INTO upstream_slots AS s (pool, slot, holder, expires_at)
VALUES (%(pool)s, %(slot)s, %(holder)s, {NOW} + %(lease)s)
ON CONFLICT (pool, slot) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE s.expires_at <= {NOW}
"""

RENEW_RESERVATIONS = f"""
UPDATE reservations r SET expires_at = {CLOCK} + %(lease)s
FROM unnest(%(projects)s::text[], %(ids)s::text[]) AS held(project_id, id)
WHERE r.id = held.id AND r.project_id = held.project_id AND r.expires_at > {CLOCK}
RETURNING r.id
"""

# The reservation (if still there) leaves `reserved` and the cost joins `spent`, of the lifetime row
# and of the period it was taken in (one that lapsed before this: the period in force now, when the
# cap is periodic); then the ledger row is written, in the same statement (FINISH_WITH_LEDGER), or
# nothing more is (FINISH_WITHOUT_LEDGER).
_FINISH = f"""
WITH released AS (
    DELETE FROM reservations WHERE id = %(id)s RETURNING amount_micros, period_anchor, period_start
), charged AS (
    INSERT INTO spend AS s (project_id, spent_micros, reserved_micros) VALUES (%(project_id)s, %(cost)s, 0)
    ON CONFLICT (project_id) DO UPDATE SET
        spent_micros = s.spent_micros + excluded.spent_micros,
        reserved_micros = s.reserved_micros
            - (SELECT COALESCE(SUM(amount_micros), 0) FROM released WHERE period_anchor IS NULL)
), in_period AS (
    SELECT period_anchor AS anchor, period_start AS start, amount_micros FROM released
    WHERE period_anchor IS NOT NULL
    UNION ALL
    SELECT %(anchor)s::bigint, {PERIOD_START}, 0
    WHERE %(kind)s::text IS NOT NULL AND %(cost)s <> 0 AND NOT EXISTS (SELECT 1 FROM released)
), period_charged AS (
    INSERT INTO period_spend AS p (project_id, anchor, start, spent_micros, reserved_micros)
    SELECT %(project_id)s, anchor, start, %(cost)s, 0 FROM in_period
    ON CONFLICT (project_id, anchor, start) DO UPDATE SET
        spent_micros = p.spent_micros + excluded.spent_micros,
        reserved_micros = p.reserved_micros - (SELECT COALESCE(SUM(amount_micros), 0) FROM in_period)
)
"""
FINISH_WITH_LEDGER = _FINISH + "INSERT INTO ledger ({}) VALUES ({})".format(
    ", ".join(_LEDGER_COLUMNS), ", ".join(f"%({c})s" for c in _LEDGER_COLUMNS)
)
FINISH_WITHOUT_LEDGER = _FINISH + "SELECT 1"
COPY_LEDGER = "COPY ledger ({}) FROM STDIN".format(", ".join(_LEDGER_COLUMNS))

SPEND = f"""
SELECT
    COALESCE((SELECT spent_micros FROM spend WHERE project_id = %(project)s), 0) AS spent,
    COALESCE((SELECT reserved_micros FROM spend WHERE project_id = %(project)s), 0)
    - COALESCE((SELECT SUM(amount_micros) FROM reservations
                WHERE project_id = %(project)s AND period_anchor IS NULL AND expires_at <= {CLOCK}), 0)
    AS reserved,
    0 AS start
"""

SPEND_IN_PERIOD = f"""
WITH period AS (SELECT {PERIOD_START} AS start), row AS (
    SELECT spent_micros, reserved_micros FROM period_spend, period
    WHERE project_id = %(project)s AND anchor = %(anchor)s AND period_spend.start = period.start
)
SELECT
    COALESCE((SELECT spent_micros FROM row), 0) + {CARRIED.format(start="period.start")} AS spent,
    COALESCE((SELECT reserved_micros FROM row), 0)
    - COALESCE((SELECT SUM(amount_micros) FROM reservations
                WHERE project_id = %(project)s AND period_anchor = %(anchor)s AND period_start = period.start
                  AND expires_at <= {CLOCK}), 0) AS reserved,
    period.start AS start
FROM period
"""

# One hit: the bucket's TAT moves on by one interval if that stays within the window (allowed),
# else stays. The row is written either way, so that the statement returns the TAT as the last
# concurrent hit left it, with this hit's verdict.
_FITS = f"GREATEST(r.tat, {NOW}) + %(interval)s - {NOW} <= %(window)s + 1e-9"
RATE_LIMIT = f"""
INSERT INTO rate_limits AS r (bucket, tat, allowed) VALUES (%(bucket)s, {NOW} + %(interval)s, true)
ON CONFLICT (bucket) DO UPDATE SET
    tat = CASE WHEN {_FITS} THEN GREATEST(r.tat, {NOW}) + %(interval)s ELSE r.tat END,
    allowed = {_FITS}
RETURNING tat, allowed, {NOW} AS now
"""

CLAIM = f"""
INSERT INTO idempotency AS i
    (project_id, key, fingerprint, state, owner, lease_expires_at, response, error, expires_at)
VALUES (%(project)s, %(key)s, %(fingerprint)s, %(in_flight)s, %(owner)s, {NOW} + %(lease)s, '', '',
        {NOW} + %(lease)s)
ON CONFLICT (project_id, key) DO UPDATE SET
    fingerprint = excluded.fingerprint, state = excluded.state, owner = excluded.owner,
    lease_expires_at = excluded.lease_expires_at, response = excluded.response, error = excluded.error,
    expires_at = excluded.expires_at
WHERE i.expires_at <= {NOW}
   OR (i.state = %(in_flight)s AND i.lease_expires_at <= {NOW})
   OR (i.state = %(failed)s AND i.owner <> %(waiting_for)s)
RETURNING 1
"""

RENEW_IDEMPOTENCY = f"""
UPDATE idempotency SET lease_expires_at = {NOW} + %(lease)s,
                       expires_at = GREATEST(expires_at, {NOW} + %(lease)s)
WHERE project_id = %(project)s AND key = %(key)s AND owner = %(owner)s AND state = %(in_flight)s
"""

FINISH_IDEMPOTENCY = f"""
UPDATE idempotency SET state = %(state)s, response = %(response)s, error = %(error)s,
                       lease_expires_at = 0, expires_at = {NOW} + %(keep)s
WHERE project_id = %(project)s AND key = %(key)s AND owner = %(owner)s
"""


def _project(row: Row) -> Project:
    return Project(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        budget_micros=row["budget_micros"],
        allow=tuple(row["allow"]),
        rpm=row["rpm"],
        archived_at=row["archived_at"],
        budget_period=row["budget_period"],
        budget_anchor=int(row["budget_anchor"]),
        budget_carry_micros=int(row["budget_carry_micros"]),
    )


def _project_params(project: Project) -> dict[str, Any]:
    return {f.name: getattr(project, f.name) for f in fields(Project)} | {"allow": list(project.allow)}


def _key(row: Row) -> ApiKey:
    return ApiKey(**row)


def _ledger_entry(row: Row) -> LedgerEntry:
    return LedgerEntry(**{name: row[name] for name in _LEDGER_COLUMNS})


class PostgresStore:
    """One connection pool per store object (one per worker process). With `rate_limits` (the Redis
    store, when MG_REDIS_URL is set too), rate limits are counted there: a hit is then one Lua
    script in memory rather than a row written to disk, and the database sees only what it must
    keep."""

    def __init__(
        self,
        url: str,
        pool_size: int = 10,
        rate_limits: RedisStore | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock`: for tests only, the time spend statements use instead of the database's."""
        self._clock = clock
        self._url = url
        self._pool_size = pool_size
        self._rate_limits = rate_limits
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._opening = asyncio.Lock()
        self._schema_checked = False
        self._claims = 0

    async def _ready_pool(self) -> AsyncConnectionPool[Connection]:
        """The pool, opened on first use, once the database's schema is the one this mg expects.
        Checked on every use until it is (then never again): a database migrated while the gateway
        waited is used as soon as it is ready."""
        if self._pool is not None and self._schema_checked:
            return self._pool
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    timeout=CONNECT_TIMEOUT_S,
                    open=False,
                    name="mg-store",
                )
                await pool.open()
                self._pool = pool
        async with self._pool.connection() as conn:
            problem = mismatch(await schema_version(conn))
        if problem:
            raise Unavailable(problem)
        self._schema_checked = True
        return self._pool

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        try:
            pool = await self._ready_pool()
            async with pool.connection() as conn:
                return await operation(conn)
        except (psycopg.OperationalError, PoolTimeout, OSError) as exc:
            await self._drop_broken_connections()
            raise Unavailable(f"The PostgreSQL store is unavailable: {exc}") from exc

    async def _drop_broken_connections(self) -> None:
        """After a failure, test the idle connections: when the database restarted (or failed
        over), every pooled connection is dead, and without this each would fail one request."""
        if self._pool is not None:
            with contextlib.suppress(Exception):  # whatever the check meets, the 503 stands
                await asyncio.wait_for(self._pool.check(), CHECK_TIMEOUT_S)

    async def _one(self, query: str, params: dict[str, Any]) -> Row | None:
        async def op(conn: Connection) -> Row | None:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

        return await self._run(op)

    async def _all(self, query: str, params: dict[str, Any] | None = None) -> list[Row]:
        async def op(conn: Connection) -> list[Row]:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

        return await self._run(op)

    async def _count(self, query: str, params: dict[str, Any]) -> int:
        """Rows the statement changed."""

        async def op(conn: Connection) -> int:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

        return await self._run(op)

    # --- projects

    async def create_project(self, project: Project) -> None:
        try:
            await self._count(
                "INSERT INTO projects (id, name, created_at, budget_micros, allow, rpm, archived_at, "
                "budget_period, budget_anchor, budget_carry_micros) VALUES (%(id)s, %(name)s, "
                "%(created_at)s, %(budget_micros)s, %(allow)s, %(rpm)s, %(archived_at)s, %(budget_period)s, "
                "%(budget_anchor)s, %(budget_carry_micros)s)",
                _project_params(project),
            )
        except psycopg.errors.UniqueViolation as exc:
            raise ProjectExists(project.name) from exc

    async def get_project(self, name: str) -> Project | None:
        row = await self._one("SELECT * FROM projects WHERE name = %(name)s", {"name": name})
        return _project(row) if row else None

    async def get_project_by_id(self, project_id: str) -> Project | None:
        row = await self._one("SELECT * FROM projects WHERE id = %(id)s", {"id": project_id})
        return _project(row) if row else None

    async def list_projects(self) -> list[Project]:
        return [_project(r) for r in await self._all("SELECT * FROM projects ORDER BY name")]

    async def update_project(self, project: Project) -> None:
        changed = await self._count(
            "UPDATE projects SET budget_micros = %(budget_micros)s, allow = %(allow)s, rpm = %(rpm)s, "
            "budget_period = %(budget_period)s, budget_anchor = %(budget_anchor)s, "
            "budget_carry_micros = %(budget_carry_micros)s WHERE id = %(id)s",
            _project_params(project),
        )
        if changed == 0:
            raise UnknownProject(project.name)

    async def set_project_archived(self, project_id: str, archived_at: float | None) -> bool:
        changed = await self._count(
            "UPDATE projects SET archived_at = %(at)s WHERE id = %(id)s",
            {"at": archived_at, "id": project_id},
        )
        return changed > 0

    # --- keys

    async def create_key(self, key: ApiKey) -> None:
        await self._count(
            "INSERT INTO keys VALUES (%(id)s, %(project_id)s, %(key_hash)s, %(prefix)s, %(created_at)s, "
            "%(revoked_at)s)",
            {f.name: getattr(key, f.name) for f in fields(ApiKey)},
        )

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = await self._one("SELECT * FROM keys WHERE key_hash = %(hash)s", {"hash": key_hash})
        return _key(row) if row else None

    async def list_keys(self, project_id: str | None = None) -> list[ApiKey]:
        rows = await self._all(
            "SELECT * FROM keys WHERE %(project)s::text IS NULL OR project_id = %(project)s "
            "ORDER BY created_at",
            {"project": project_id},
        )
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, at: float) -> bool:
        changed = await self._count(
            "UPDATE keys SET revoked_at = %(at)s WHERE id = %(id)s AND revoked_at IS NULL",
            {"at": at, "id": key_id},
        )
        return changed == 1

    # --- rate limiting

    async def hit_rate_limit(self, bucket: str, limit: int) -> RateDecision:
        if self._rate_limits is not None:
            return await self._rate_limits.hit_rate_limit(bucket, limit)
        interval = WINDOW_S / limit
        row = await self._one(RATE_LIMIT, {"bucket": bucket, "interval": interval, "window": WINDOW_S})
        assert row is not None
        # The TAT the database started from reproduces its decision (allowed: one interval back).
        decision, _ = gcra(row["tat"] - interval if row["allowed"] else row["tat"], row["now"], limit)
        return decision

    # --- spend

    def _clock_params(self, period: BudgetPeriod | None = None) -> dict[str, Any]:
        """The clock (None: the database's) and the period (None: a lifetime cap) a statement uses."""
        now = None if self._clock is None else self._clock()
        if period is None:
            return {"now": now, "kind": None, "days": None, "anchor": None, "carry": 0}
        return {"now": now, "kind": period.kind, "days": period.days, "anchor": period.anchor,
                "carry": period.carry_micros}  # fmt: skip

    async def _reclaim(self, project_id: str | None) -> int:
        row = await self._one(RECLAIM, {"project": project_id, **self._clock_params()})
        return int(row["reclaimed"]) if row else 0

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
        params = {
            "project": project_id, "id": reservation_id, "amount": amount_micros, "cap": cap_micros,
            "lease": lease_s, "key_id": held.key_id, "model": held.model, "started_at": held.started_at,
            **self._clock_params(period),
        }  # fmt: skip
        statement = RESERVE if period is None else RESERVE_IN_PERIOD
        if await self._count(statement, params):
            return True
        if cap_micros is None:
            return False
        # Refused: lapsed reservations may be what fills the cap. Give them back, then try again.
        if not await self._reclaim(project_id):
            return False
        return bool(await self._count(statement, params))

    async def renew_reservations(self, held: Sequence[HeldReservation], lease_s: float) -> set[str]:
        if not held:
            return set()
        params = {
            "projects": [one.project_id for one in held],
            "ids": [one.reservation_id for one in held],
            "lease": lease_s,
            **self._clock_params(),
        }
        return {str(row["id"]) for row in await self._all(RENEW_RESERVATIONS, params)}

    async def settle(
        self, reservation_id: str, entry: LedgerEntry, period: BudgetPeriod | None = None
    ) -> None:
        await self._finish(reservation_id, entry.project_id, entry.cost_micros, entry, period)

    async def release(self, reservation_id: str, project_id: str, entry: LedgerEntry | None) -> None:
        await self._finish(reservation_id, project_id, 0, entry, None)

    async def _finish(
        self,
        reservation_id: str,
        project_id: str,
        cost: int,
        entry: LedgerEntry | None,
        period: BudgetPeriod | None,
    ) -> None:
        params: dict[str, Any] = {
            "id": reservation_id, "project_id": project_id, "cost": cost, **self._clock_params(period)
        }  # fmt: skip
        if entry is None:
            await self._count(FINISH_WITHOUT_LEDGER, params)
            return
        # Attribute by attribute: dataclasses.asdict deep-copies every field.
        values = {name: getattr(entry, name) for name in _LEDGER_COLUMNS}
        values["extra"] = Jsonb(entry.extra)
        await self._count(FINISH_WITH_LEDGER, {**values, **params})

    async def spend(self, project_id: str, period: BudgetPeriod | None = None) -> Spend:
        statement = SPEND if period is None else SPEND_IN_PERIOD
        row = await self._one(statement, {"project": project_id, **self._clock_params(period)})
        assert row is not None
        if period is None:
            return Spend(int(row["spent"]), int(row["reserved"]))
        start = int(row["start"])
        return Spend(int(row["spent"]), int(row["reserved"]), start, period_end(period, start))

    async def in_flight(self) -> list[InFlight]:
        rows = await self._all(
            f"SELECT id, project_id, amount_micros, expires_at, key_id, model, started_at FROM reservations "
            f"WHERE expires_at > {CLOCK} ORDER BY started_at, id",
            self._clock_params(),
        )
        return [
            InFlight(r["id"], r["project_id"], int(r["amount_micros"]), r["expires_at"], r["key_id"],
                     r["model"], r["started_at"])
            for r in rows
        ]  # fmt: skip

    # --- ledger

    async def ledger(self, project_id: str | None = None, since: float | None = None) -> list[LedgerEntry]:
        rows = await self._all(
            "SELECT * FROM ledger WHERE created_at >= %(since)s "
            "AND (%(project)s::text IS NULL OR project_id = %(project)s) ORDER BY seq",
            {"since": since or 0.0, "project": project_id},
        )
        return [_ledger_entry(r) for r in rows]

    async def ledger_page(self, query: LedgerQuery) -> LedgerPage:
        """Newest first by seq; the cursor is the last entry's seq."""
        if query.cursor and not query.cursor.isdigit():
            raise ValueError(query.cursor)
        rows = await self._all(*sql.ledger_page(_param, query, int(query.cursor) if query.cursor else None))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return LedgerPage([_ledger_entry(r) for r in rows], str(rows[-1]["seq"]) if more else "")

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        """Totalled in the database (GROUP BY), from the ledger_usage index."""
        statement, params = sql.usage(_param, _day_of, query)

        async def op(conn: Connection) -> list[UsageTotal]:
            async with conn.cursor(row_factory=tuple_row) as cursor:
                await cursor.execute(statement, params)
                return [usage_total(row) for row in await cursor.fetchall()]

        return await self._run(op)

    async def ledger_batch(self, after: str, limit: int) -> LedgerPage:
        if after and not after.isdigit():
            raise ValueError(after)
        rows = await self._all(
            "SELECT * FROM ledger WHERE seq > %(after)s ORDER BY seq LIMIT %(limit)s",
            {"after": int(after or 0), "limit": limit},
        )
        return LedgerPage([_ledger_entry(r) for r in rows], str(rows[-1]["seq"]) if rows else "")

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Entries as they are, in their order, with no charge (copying a store: copy.py); COPY, so
        a batch of thousands is one round trip."""

        async def op(conn: Connection) -> None:
            async with conn.cursor() as cursor, cursor.copy(COPY_LEDGER) as copy:
                for entry in entries:
                    await copy.write_row(
                        [json.dumps(entry.extra) if name == "extra" else getattr(entry, name)
                         for name in _LEDGER_COLUMNS]
                    )  # fmt: skip

        await self._run(op)

    async def add_spent(
        self,
        project_id: str,
        spent_micros: int,
        period: tuple[int, int] | None = None,
        period_micros: int = 0,
    ) -> None:
        """Spend charged without a ledger entry (copying a store: its ledger is copied apart), and what
        the period `(anchor, start)` of a cap that renews has spent of it."""
        await self._count(
            "INSERT INTO spend AS s (project_id, spent_micros, reserved_micros) VALUES (%(p)s, %(m)s, 0) "
            "ON CONFLICT (project_id) DO UPDATE SET spent_micros = s.spent_micros + excluded.spent_micros",
            {"p": project_id, "m": spent_micros},
        )
        if period is not None:
            await self._count(
                "INSERT INTO period_spend AS s (project_id, anchor, start, spent_micros, reserved_micros) "
                "VALUES (%(p)s, %(a)s, %(s)s, %(m)s, 0) ON CONFLICT (project_id, anchor, start) "
                "DO UPDATE SET spent_micros = s.spent_micros + excluded.spent_micros",
                {"p": project_id, "a": period[0], "s": period[1], "m": period_micros},
            )

    # --- audit

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._count(
            "INSERT INTO audit VALUES (%(id)s, %(at)s, %(actor)s, %(action)s, %(target)s, %(detail)s)",
            {f.name: getattr(entry, f.name) for f in fields(AuditEntry)} | {"detail": Jsonb(entry.detail)},
        )

    async def audit_log(self, limit: int, before: str = "") -> list[AuditEntry]:
        rows = await self._all(
            "SELECT * FROM audit WHERE %(before)s = '' OR id < %(before)s ORDER BY id DESC LIMIT %(limit)s",
            {"before": before, "limit": limit},
        )
        return [AuditEntry(**r) for r in rows]

    # --- idempotency

    async def claim_idempotency(
        self, project_id: str, key: str, fingerprint: str, owner: str, lease_s: float, waiting_for: str = ""
    ) -> Claim:
        self._claims += 1
        if self._claims % SWEEP_EVERY == 0:
            await self._sweep()
        params = {
            "project": project_id, "key": key, "fingerprint": fingerprint, "owner": owner, "lease": lease_s,
            "waiting_for": waiting_for, "in_flight": IdempotencyState.IN_FLIGHT,
            "failed": IdempotencyState.FAILED,
        }  # fmt: skip
        while True:
            if await self._count(CLAIM, params):
                return Claim(True)
            row = await self._one(
                "SELECT * FROM idempotency WHERE project_id = %(project)s AND key = %(key)s", params
            )
            if row is not None:  # (else it was swept between the two statements: claim again)
                return Claim(False, _idempotency_record(row))

    async def renew_idempotency(self, project_id: str, key: str, owner: str, lease_s: float) -> bool:
        params = {"project": project_id, "key": key, "owner": owner, "lease": lease_s,
                  "in_flight": IdempotencyState.IN_FLIGHT}  # fmt: skip
        return await self._count(RENEW_IDEMPOTENCY, params) == 1

    async def finish_idempotency(
        self, project_id: str, key: str, owner: str, record: IdempotencyRecord, keep_s: float
    ) -> None:
        params = {
            "project": project_id, "key": key, "owner": owner, "state": record.state,
            "response": record.response, "error": record.error, "keep": keep_s,
        }  # fmt: skip
        await self._count(FINISH_IDEMPOTENCY, params)

    async def _sweep(self) -> None:
        """Records past their retention and every project's lapsed reservations, in the database."""
        await self._count(f"DELETE FROM idempotency WHERE expires_at <= {NOW}", {})
        await self._reclaim(None)

    # --- upstream slots (in Redis when it is set, as rate limits are)

    async def acquire_slot(self, pool: str, holder: str, limit: int, lease_s: float) -> int | None:
        if self._rate_limits is not None:
            return await self._rate_limits.acquire_slot(pool, holder, limit, lease_s)
        for slot in range(limit):  # each one statement: taken atomically, or not at all
            params = {"pool": pool, "slot": slot, "holder": holder, "lease": lease_s}
            if await self._count(ACQUIRE_SLOT, params):
                return slot
        return None

    async def release_slot(self, pool: str, slot: int, holder: str) -> None:
        if self._rate_limits is not None:
            await self._rate_limits.release_slot(pool, slot, holder)
            return
        await self._count(
            "DELETE FROM upstream_slots WHERE pool = %(pool)s AND slot = %(slot)s AND holder = %(holder)s",
            {"pool": pool, "slot": slot, "holder": holder},
        )

    async def ping(self) -> None:
        """A write, not a read: a database that reads but cannot write serves no generation."""
        if self._rate_limits is not None:
            await self._rate_limits.ping()
        await self._count(
            f"INSERT INTO write_probe VALUES (1, {NOW}) ON CONFLICT (id) DO UPDATE SET at = excluded.at", {}
        )

    async def close(self) -> None:
        if self._rate_limits is not None:
            await self._rate_limits.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _param(name: str) -> str:
    return f"%({name})s"


def _day_of(column: str) -> str:
    """day_number (base.py) in PostgreSQL: exactly as the ledger_usage index and its statistics
    have it (migration 0006), or the planner knows nothing of the groups."""
    return f"floor({column} / 86400)::bigint"


def _idempotency_record(row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        fingerprint=row["fingerprint"],
        state=row["state"],
        owner=row["owner"],
        lease_expires_at=row["lease_expires_at"],
        response=bytes(row["response"]),
        error=row["error"],
    )
