"""Hard spend caps and the ledger: reserve before anything is sent upstream, then settle or release.

A reservation is the most the request can be charged (`pricing.estimate_micros`), taken atomically
against the project's cap (`spent + reserved + estimate <= cap`, else 402 and no upstream call).
Settling charges what is owed, in the same transaction as the request's ledger entry; releasing
charges nothing and still records the attempt. A reservation carries a short lease that the worker
renews while the work runs (every third of it), so a worker that dies mid-call gives the budget
back within one lease (`MG_RESERVATION_LEASE_S`) of its last renewal.

A routed generation (routing.py) is one reservation for the most its remaining targets can cost,
and a ledger entry per attempt that reached a provider: a failed attempt that owes nothing is
recorded without touching the reservation (`record`); one that owes the bound of calls that never
answered is settled, and the rest of the route reserved anew (`reserve`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass

from service.catalog.catalog import usd
from service.errors import BudgetExceeded, Unavailable
from service.generation.fanout import GenerationSummary
from service.generation.validation import GenerationRequest
from service.runtime.observability import record_charge
from service.stores.base import HeldReservation, LedgerEntry, Project, ReservationHolder, Store
from service.stores.periods import describe, iso
from service.stores.retry import release_until_landed, write_until_landed

log = logging.getLogger(__name__)
# How long a charge the store cannot take is retried: past any outage a gateway should ride out. A
# worker that stops meanwhile loses its pending charges (logged when they were first refused).
SETTLE_RETRY_S = 3600.0
# Reservations renewed per store round trip: a SQLite batch runs on the event loop, so bounded.
RENEW_BATCH = 500


@dataclass(frozen=True)
class Attempt:
    """One generation attempt, as the ledger names it."""

    request_id: str
    project: Project
    key_id: str
    idempotency_key: str
    started: float  # time.monotonic()
    generation: GenerationRequest
    # The reservation it runs under: the request id, unless a route had to reserve anew.
    reservation_id: str = ""
    # For an attempt of a route: the route's name and the attempt's place (1, 2, ...) in it.
    route: str = ""
    number: int = 0

    def __post_init__(self) -> None:
        if not self.reservation_id:
            object.__setattr__(self, "reservation_id", self.request_id)


@dataclass(frozen=True)
class Settlement:
    outcome: str  # "ok", "partial", or the error code
    images: int = 0
    cost_micros: int = 0
    input_tokens: int = 0
    summary: GenerationSummary | None = None
    # Without a summary (no call answered): the ids of the jobs the provider accepted, for the ledger.
    job_ids: tuple[str, ...] = ()


# The ledger entry's `extra` key that holds the prompt, kept only where MG_LOG_PROMPTS allows.
PROMPT_EXTRA = "prompt"


class Reserved:
    """`async with ledger.reserved(attempt, estimate):` (an object rather than an
    asynccontextmanager, whose suspended generator every generation in flight would hold)."""

    __slots__ = ("_attempt", "_estimate", "_ledger")

    def __init__(self, ledger: SpendLedger, attempt: Attempt, estimate: int) -> None:
        self._ledger, self._attempt, self._estimate = ledger, attempt, estimate

    async def __aenter__(self) -> None:
        if not await self._ledger.reserve(self._attempt, self._estimate):
            raise await self._ledger.budget_exceeded(self._attempt.project, self._estimate)

    async def __aexit__(self, *_exc: object) -> None:
        self._ledger.unhold(self._attempt)


class SpendLedger:
    def __init__(self, store: Store, lease_s: float, *, keep_prompts: bool = False) -> None:
        self._store = store
        self._lease_s = lease_s
        # Prompts can be personal data: they go into the ledger only where they may go into logs.
        self._keep_prompts = keep_prompts
        # The reservations this worker holds, and when each lease was last set (time.monotonic()):
        # one loop per worker renews them, rather than a task and a timer per call.
        self._held: dict[str, tuple[Attempt, float]] = {}
        self._renewer: asyncio.Task[None] | None = None

    def reserved(self, attempt: Attempt, estimate: int) -> Reserved:
        """Reserve `estimate` (or raise BudgetExceeded), and keep the reservation's lease renewed
        while the block runs. The block settles or releases it."""
        return Reserved(self, attempt, estimate)

    async def reserve(self, attempt: Attempt, estimate: int) -> bool:
        """Reserve `estimate` under `attempt.reservation_id`, renewing its lease until `unhold`
        (or its settlement or release); False if the project's cap has no room for it."""
        project = attempt.project
        # Held for this key and model, so every worker's generations in flight can be listed.
        holder = ReservationHolder(attempt.key_id, attempt.generation.model.id, time.time())
        if not await self._store.reserve(
            project.id,
            attempt.reservation_id,
            estimate,
            project.budget_micros,
            self._lease_s,
            holder,
            period=project.period,
        ):
            return False
        self._held[attempt.reservation_id] = (attempt, time.monotonic())
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held())
        return True

    def unhold(self, attempt: Attempt) -> None:
        self._held.pop(attempt.reservation_id, None)

    async def _renew_held(self) -> None:
        """Every third of a lease, renew the held reservations whose lease was set a third of a lease
        ago or more: each is renewed before it is two thirds through its lease, and a call shorter
        than a third of a lease is never renewed at all. Ends when none is held. Renewed in batches
        of RENEW_BATCH, one store round trip each: one at a time, thousands held took longer than a
        lease to go round while the worker was busy, and leases lapsed under running work."""
        period = self._lease_s / 3
        while self._held:
            await asyncio.sleep(period)
            now = time.monotonic()
            due = [
                HeldReservation(attempt.project.id, reservation_id)
                for reservation_id, (attempt, since) in self._held.items()
                if now - since >= period
            ]
            for start in range(0, len(due), RENEW_BATCH):
                await self._renew(due[start : start + RENEW_BATCH])

    async def _renew(self, batch: list[HeldReservation]) -> None:
        try:
            renewed = await self._store.renew_reservations(batch, self._lease_s)
        except Unavailable:
            log.warning("could not renew %d reservation(s)", len(batch))
            return
        now = time.monotonic()
        for one in batch:
            held = self._held.get(one.reservation_id)
            if held is None:  # settled or released meanwhile
                continue
            if one.reservation_id not in renewed:
                log.warning("reservation %s lapsed before its work ended", one.reservation_id)
            self._held[one.reservation_id] = (held[0], now)

    async def settle(self, attempt: Attempt, settlement: Settlement) -> None:
        """Charge `settlement.cost_micros` and record it. If the store cannot take it now the images
        are still delivered (they were paid for upstream), and the charge is retried in the
        background until it lands (for up to SETTLE_RETRY_S; readiness says while it waits): a charge
        is never dropped because the store was briefly down or its disk full."""
        generation = attempt.generation
        record_charge(
            attempt.project.name,
            generation.model.id,
            generation.model.provider,
            settlement.images,
            settlement.cost_micros,
        )
        self.unhold(attempt)
        charge = functools.partial(
            self._store.settle,
            attempt.reservation_id,
            ledger_entry(attempt, settlement, keep_prompt=self._keep_prompts),
            attempt.project.period,
        )
        what = f"charge of {usd(settlement.cost_micros)} to {attempt.project.name} ({attempt.request_id})"
        await write_until_landed(what, charge, until=time.monotonic() + SETTLE_RETRY_S)

    async def release(self, attempt: Attempt, settlement: Settlement) -> None:
        """Charge nothing and record the attempt; retried while the store cannot write it, until it
        lands or the reservation's lease (at most one lease from now) is over."""
        self.unhold(attempt)
        entry = ledger_entry(attempt, settlement, keep_prompt=self._keep_prompts)
        await release_until_landed(
            self._store, attempt.reservation_id, entry, until=time.monotonic() + self._lease_s
        )

    async def record(self, attempt: Attempt, settlement: Settlement) -> None:
        """Record an attempt that owes nothing, leaving its reservation held for the attempts after
        it: the release of a reservation that never existed (an id of its own), which records the
        entry and changes no spend (the store contract)."""
        entry = ledger_entry(attempt, settlement, keep_prompt=self._keep_prompts)
        await release_until_landed(
            self._store,
            f"{attempt.request_id}/attempt-{attempt.number}",
            entry,
            until=time.monotonic() + self._lease_s,
        )

    async def budget_exceeded(self, project: Project, estimate: int) -> BudgetExceeded:
        cap = project.budget_micros or 0
        spend = await self._store.spend(project.id, project.period)
        left = max(0, cap - spend.spent_micros - spend.reserved_micros)
        period = describe(project.budget_period)
        renews = f" for {period}; it renews at {iso(spend.renews_at)}" if period else ""
        return BudgetExceeded(
            f"This request may cost up to {usd(estimate)}; project {project.name!r} has {usd(left)} "
            f"of its {usd(cap)} spend cap left{renews}. An admin raises the cap with "
            f"`mg projects update {project.name} --budget-usd AMOUNT`.",
        )


def ledger_entry(attempt: Attempt, settlement: Settlement, *, keep_prompt: bool = False) -> LedgerEntry:
    generation, summary = attempt.generation, settlement.summary
    latency_ms = (
        summary.upstream_latency_ms if summary else round((time.monotonic() - attempt.started) * 1000)
    )
    return LedgerEntry(
        request_id=attempt.request_id,
        project_id=attempt.project.id,
        key_id=attempt.key_id,
        model=generation.model.id,
        provider=generation.model.provider,
        n_requested=generation.n,
        images_returned=settlement.images,
        size=str(generation.size),
        quality=generation.quality or "",
        cost_micros=settlement.cost_micros,
        input_tokens=settlement.input_tokens,
        upstream_latency_ms=latency_ms,
        outcome=settlement.outcome,
        created_at=time.time(),
        upstream_request_id=",".join(summary.upstream_request_ids if summary else settlement.job_ids),
        idempotency_key=attempt.idempotency_key,
        extra=_extra(attempt, keep_prompt),
    )


def _extra(attempt: Attempt, keep_prompt: bool) -> dict[str, str]:
    """What a ledger entry carries besides its columns: a route attempt's place, and the prompt
    where MG_LOG_PROMPTS keeps it."""
    extra = {"route": attempt.route, "attempt": str(attempt.number)} if attempt.route else {}
    if keep_prompt and attempt.generation.prompt:
        extra[PROMPT_EXTRA] = attempt.generation.prompt
    return extra
