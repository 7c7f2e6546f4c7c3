"""Hard spend caps and the ledger: reserve before anything is sent upstream, then settle or release.

A reservation is the most the request can be charged (`pricing.estimate_micros`), taken atomically
against the project's cap (`spent + reserved + estimate <= cap`, else 402 and no upstream call).
Settling charges what is owed, in the same transaction as the request's ledger entry; releasing
charges nothing and still records the attempt. A reservation carries a short lease that the worker
renews while the work runs (every third of it), so a worker that dies mid-call gives the budget
back within one lease (`MG_RESERVATION_LEASE_S`) of its last renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.catalog.catalog import usd
from service.errors import BudgetExceeded, Unavailable
from service.generation.fanout import GenerationSummary
from service.generation.validation import GenerationRequest
from service.runtime.observability import record_charge
from service.stores.base import LedgerEntry, Project, ReservationHolder, Store
from service.stores.retry import release_until_landed, write_until_landed

log = logging.getLogger(__name__)
# How long a charge the store cannot take is retried: past any outage a gateway should ride out. A
# worker that stops meanwhile loses its pending charges (logged when they were first refused).
SETTLE_RETRY_S = 3600.0


@dataclass(frozen=True)
class Attempt:
    """One generation attempt, as the ledger names it."""

    request_id: str  # also the reservation's id
    project: Project
    key_id: str
    idempotency_key: str
    started: float  # time.monotonic()
    generation: GenerationRequest


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

    @contextlib.asynccontextmanager
    async def reserved(self, attempt: Attempt, estimate: int) -> AsyncIterator[None]:
        """Reserve `estimate` (or raise BudgetExceeded), and keep the reservation's lease renewed
        while the block runs. The block settles or releases it."""
        project = attempt.project
        # Held for this key and model, so every worker's generations in flight can be listed.
        holder = ReservationHolder(attempt.key_id, attempt.generation.model.id, time.time())
        if not await self._store.reserve(
            project.id, attempt.request_id, estimate, project.budget_micros, self._lease_s, holder
        ):
            raise await self._budget_exceeded(project, estimate)
        self._held[attempt.request_id] = (attempt, time.monotonic())
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held())
        try:
            yield
        finally:
            self._held.pop(attempt.request_id, None)

    async def _renew_held(self) -> None:
        """Every third of a lease, renew the held reservations whose lease was set a third of a lease
        ago or more: each is renewed before it is two thirds through its lease, and a call shorter
        than a third of a lease is never renewed at all. Ends when none is held."""
        period = self._lease_s / 3
        while self._held:
            await asyncio.sleep(period)
            now = time.monotonic()
            for request_id, (attempt, since) in list(self._held.items()):
                if now - since < period or request_id not in self._held:
                    continue
                try:
                    renewed = await self._store.renew_reservation(
                        attempt.project.id, request_id, self._lease_s
                    )
                except Unavailable:
                    log.warning("could not renew reservation %s", request_id)
                    continue
                if not renewed:
                    log.warning("reservation %s lapsed before its work ended", request_id)
                if request_id in self._held:
                    self._held[request_id] = (attempt, time.monotonic())

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
        entry = ledger_entry(attempt, settlement, keep_prompt=self._keep_prompts)
        charge = functools.partial(self._store.settle, attempt.request_id, entry)
        what = f"charge of {usd(settlement.cost_micros)} to {attempt.project.name} ({attempt.request_id})"
        await write_until_landed(what, charge, until=time.monotonic() + SETTLE_RETRY_S)

    async def release(self, attempt: Attempt, settlement: Settlement) -> None:
        """Charge nothing and record the attempt; retried while the store cannot write it, until it
        lands or the reservation's lease (at most one lease from now) is over."""
        entry = ledger_entry(attempt, settlement, keep_prompt=self._keep_prompts)
        await release_until_landed(
            self._store, attempt.request_id, entry, until=time.monotonic() + self._lease_s
        )

    async def _budget_exceeded(self, project: Project, estimate: int) -> BudgetExceeded:
        cap = project.budget_micros or 0
        spend = await self._store.spend(project.id)
        left = max(0, cap - spend.spent_micros - spend.reserved_micros)
        return BudgetExceeded(
            f"This request may cost up to {usd(estimate)}; project {project.name!r} has {usd(left)} "
            f"of its {usd(cap)} spend cap left. An admin raises the cap with "
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
        extra={PROMPT_EXTRA: generation.prompt} if keep_prompt and generation.prompt else {},
    )
