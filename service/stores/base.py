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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
