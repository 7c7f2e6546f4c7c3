"""The store contract: projects, keys, rate-limit state, spend reservations (with what each is held
for: the generations in flight), the ledger and the audit log of admin changes.

Three implementations keep exactly this contract: SQLite (the embedded default, shared by the worker
processes of one gateway through the file), Redis and PostgreSQL (any number of replicas). Every
operation that must be atomic (a rate-limit hit, a reservation against the cap, settling with its
ledger entry) is one transaction (SQLite), one Lua script (Redis) or one SQL statement
(PostgreSQL). tests/contract runs one suite against all three.

Money is integer micro-dollars everywhere.

Upstream slots (a provider's max_in_flight, shared by every worker and replica on the store): slot
0..limit-1 of a pool is taken when free or when its holder's lease lapsed (a dead worker's), in one
atomic step per slot, and released by its holder only.

Idempotency records: a claim is taken atomically when no live record exists (none, a failed one,
or an in-flight one whose lease lapsed because its owner died); otherwise the existing record is
returned and the caller decides (join, replay, or refuse a different request under the same key).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from service.stores.periods import BudgetPeriod


class StoreError(Exception):
    """Base of the store's own errors."""


class ProjectExists(StoreError):
    pass


class UnknownProject(StoreError):
    pass


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created_at: float
    # Hard cap on spend, micro-dollars; None means no cap.
    budget_micros: int | None = None
    # Glob patterns of model ids ("openai/*"); empty means every model.
    allow: tuple[str, ...] = ()
    # Requests per minute per key; None means the gateway default.
    rpm: int | None = None
    # When the project was archived (its keys stop working; its ledger and spend are kept); None
    # while it is active. Only set_project_archived changes it.
    archived_at: float | None = None
    # When the cap renews: "" (never: a lifetime cap), "day", "week", "month" or a rolling "Nd"
    # (stores/periods.py); the anchor is when it was set (whole seconds since the epoch), and the
    # carry what the period in force before had spent, counted in the first period of this one.
    budget_period: str = ""
    budget_anchor: int = 0
    budget_carry_micros: int = 0

    @property
    def period(self) -> BudgetPeriod | None:
        return BudgetPeriod.of(self.budget_period, self.budget_anchor, self.budget_carry_micros)


@dataclass(frozen=True)
class ApiKey:
    id: str
    project_id: str
    key_hash: str  # sha256 hex of the whole key; the key itself is never stored
    prefix: str  # the first characters, for people to recognise a key in lists
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the limiter is back to a full minute's allowance.
    reset_s: float
    # When refused: seconds until one more request is allowed.
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class HeldReservation:
    project_id: str
    reservation_id: str


@dataclass(frozen=True)
class Spend:
    """Of a lifetime cap: everything spent and held. Of a periodic one: what the period in force
    has spent (with what was carried into it) and holds, when it started and when it renews."""

    spent_micros: int
    reserved_micros: int
    period_start: int = 0
    renews_at: int = 0


@dataclass(frozen=True)
class LedgerEntry:
    """One generation attempt that reached the provider stage, successful or not."""

    request_id: str
    project_id: str
    key_id: str
    model: str
    provider: str
    n_requested: int
    images_returned: int
    size: str
    quality: str
    cost_micros: int
    input_tokens: int
    upstream_latency_ms: int
    outcome: str  # "ok", "partial", or the error code
    created_at: float
    idempotency_key: str = ""
    upstream_request_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReservationHolder:
    """What a spend reservation is held for, so every worker's generations in flight can be listed."""

    key_id: str
    model: str
    started_at: float


@dataclass(frozen=True)
class InFlight:
    """A live reservation: a generation running now, on some worker of some replica."""

    reservation_id: str  # the request id
    project_id: str
    amount_micros: int
    expires_at: float
    key_id: str = ""
    model: str = ""
    started_at: float = 0.0


@dataclass(frozen=True)
class LedgerQuery:
    """A page of the ledger, newest first; every filter is optional. `since` is inclusive, `until`
    exclusive. `cursor` is the previous page's `next_cursor` (opaque: each store has its own)."""

    project_id: str | None = None
    model: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    cursor: str = ""


@dataclass(frozen=True)
class LedgerPage:
    entries: list[LedgerEntry]
    next_cursor: str  # "" on the last page


# Outcomes that are not failures (anything else is an error code).
SUCCESS_OUTCOMES = ("ok", "partial")
DAY_S = 86400


def day_number(timestamp: float) -> int:
    """The UTC day a time falls on, as days since the epoch: the one formula every store computes
    (`floor(t / 86400)` in IEEE doubles, as SQLite and PostgreSQL do it)."""
    return math.floor(timestamp / DAY_S)


@functools.lru_cache(maxsize=4096)
def day_name(day: int) -> str:
    """YYYY-MM-DD of a day_number."""
    return datetime.fromtimestamp(day * DAY_S, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class UsageQuery:
    """Which ledger entries to total; every filter optional. `since` inclusive, `until` exclusive."""

    project_id: str | None = None
    since: float | None = None
    until: float | None = None
    by_day: bool = False  # one total per UTC day too


@dataclass(frozen=True)
class UsageTotal:
    """The ledger entries of one project and model (and UTC day, when asked), totalled."""

    project_id: str
    model: str
    day: str  # YYYY-MM-DD (UTC) when totalled by day, else ""
    requests: int
    failed: int  # entries whose outcome is an error code
    images: int
    cost_micros: int
    input_tokens: int


class UsageTally:
    """UsageTotals added up here, entries read a batch at a time (what the SQL stores do in the
    database; the Redis store, whose ledger is a stream, does this)."""

    def __init__(self, query: UsageQuery) -> None:
        self._query = query
        self._totals: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])

    def add(self, entries: Iterable[LedgerEntry]) -> None:
        for entry in entries:
            if not _in_usage(entry, self._query):
                continue
            day = day_number(entry.created_at) if self._query.by_day else -1
            row = self._totals[(entry.project_id, entry.model, day)]
            row[0] += 1
            row[1] += entry.outcome not in SUCCESS_OUTCOMES
            row[2] += entry.images_returned
            row[3] += entry.cost_micros
            row[4] += entry.input_tokens

    def totals(self) -> list[UsageTotal]:
        """Sorted by project id, model, day."""
        made = (usage_total(key + tuple(values)) for key, values in self._totals.items())
        return sorted(made, key=usage_order)


def usage_total(row: Sequence[Any]) -> UsageTotal:
    """A UsageTotal from a row of project id, model, day number (-1: not by day), then the sums."""
    project_id, model, day, requests, failed, images, cost, tokens = row
    name = day_name(int(day)) if day >= 0 else ""
    return UsageTotal(
        project_id, model, name, int(requests), int(failed), int(images), int(cost), int(tokens)
    )


def usage_order(total: UsageTotal) -> tuple[str, str, str]:
    return total.project_id, total.model, total.day


def _in_usage(entry: LedgerEntry, query: UsageQuery) -> bool:
    return (
        (query.project_id is None or entry.project_id == query.project_id)
        and (query.since is None or entry.created_at >= query.since)
        and (query.until is None or entry.created_at < query.until)
    )


@dataclass(frozen=True)
class AuditEntry:
    """One change made by an admin: who (the actor), what (action, target, the values set), when."""

    id: str  # aud_<ULID>: ids sort by time
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, str] = field(default_factory=dict)


class IdempotencyState:
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class IdempotencyRecord:
    """What one idempotency key (scoped to a project) stands for."""

    fingerprint: str
    state: str  # IdempotencyState
    owner: str  # request id of the call that claimed the key
    lease_expires_at: float  # in-flight claims lapse at this time unless renewed
    response: bytes = b""  # the serialized response, once succeeded
    error: str = ""  # the error envelope (JSON) the owner got, once failed


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to claim a key: `claimed`, or the record that is already there."""

    claimed: bool
    record: IdempotencyRecord | None = None


class Store(Protocol):
    # projects
    async def create_project(self, project: Project) -> None: ...
    async def get_project(self, name: str) -> Project | None: ...
    async def get_project_by_id(self, project_id: str) -> Project | None: ...
    async def list_projects(self) -> list[Project]: ...
    async def update_project(self, project: Project) -> None: ...
    # archive (a time) or unarchive (None); False if there is no such project
    async def set_project_archived(self, project_id: str, archived_at: float | None) -> bool: ...

    # keys
    async def create_key(self, key: ApiKey) -> None: ...
    async def find_key(self, key_hash: str) -> ApiKey | None: ...
    async def list_keys(self, project_id: str | None = None) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: str, at: float) -> bool: ...

    # rate limiting: one request against `limit` per minute for `bucket`
    async def hit_rate_limit(self, bucket: str, limit: int) -> RateDecision: ...

    # spend: reserve before the upstream call, then settle (with its ledger entry) or release.
    # With a `period`, the cap holds for the period in force at the store's clock, counting what it
    # spent and the reservations taken in it; a reservation is charged to the period it was taken in
    # however late it settles (one whose lapsed reservation was given back before it settled: to the
    # period in force then).
    async def reserve(
        self,
        project_id: str,
        reservation_id: str,
        amount_micros: int,
        cap_micros: int | None,
        lease_s: float,
        holder: ReservationHolder | None = None,
        period: BudgetPeriod | None = None,
    ) -> bool: ...
    # the live ones among `held` get their lease extended to `lease_s` from now, in one round trip;
    # returns their ids (one gone or lapsed is not among them)
    async def renew_reservations(self, held: Sequence[HeldReservation], lease_s: float) -> set[str]: ...
    async def settle(
        self, reservation_id: str, entry: LedgerEntry, period: BudgetPeriod | None = None
    ) -> None: ...
    async def release(self, reservation_id: str, project_id: str, entry: LedgerEntry | None) -> None: ...
    async def spend(self, project_id: str, period: BudgetPeriod | None = None) -> Spend: ...
    # every project's live reservations (lapsed ones left out), oldest first
    async def in_flight(self) -> list[InFlight]: ...

    # ledger
    async def ledger(
        self, project_id: str | None = None, since: float | None = None
    ) -> list[LedgerEntry]: ...
    async def ledger_page(self, query: LedgerQuery) -> LedgerPage: ...
    # totals per project and model (and day), computed where the ledger is, sorted as total_usage's
    async def usage(self, query: UsageQuery) -> list[UsageTotal]: ...
    # every entry, oldest first, `limit` at a time (`after`: the previous batch's next_cursor), for
    # copying a store; the cursor is the store's own, as ledger_page's
    async def ledger_batch(self, after: str, limit: int) -> LedgerPage: ...

    # audit log: appended by admin operations, read newest first (`before`: an entry id, exclusive)
    async def append_audit(self, entry: AuditEntry) -> None: ...
    async def audit_log(self, limit: int, before: str = "") -> list[AuditEntry]: ...

    # idempotency: claim / renew / finish a key; records live for their retention, failures briefly
    # `waiting_for`: the owner a joiner waits on; its failure is returned to the joiner, not claimed over.
    async def claim_idempotency(
        self, project_id: str, key: str, fingerprint: str, owner: str, lease_s: float, waiting_for: str = ""
    ) -> Claim: ...
    async def renew_idempotency(self, project_id: str, key: str, owner: str, lease_s: float) -> bool: ...
    async def finish_idempotency(
        self, project_id: str, key: str, owner: str, record: IdempotencyRecord, keep_s: float
    ) -> None: ...

    # upstream slots: at most `limit` holders of `pool` at once (a provider's max_in_flight), each
    # for its lease. Returns the slot taken (to release it with), or None when all are held.
    async def acquire_slot(self, pool: str, holder: str, limit: int, lease_s: float) -> int | None: ...
    async def release_slot(self, pool: str, slot: int, holder: str) -> None: ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...
