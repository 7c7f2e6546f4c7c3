"""Hard spend caps and the ledger.

Before the provider is called, the most the request can cost is reserved atomically against the
project's cap (`spent + reserved + estimate <= cap`, else 402 and no upstream call). Afterwards the
reservation is settled with the cost of the images actually returned, in the same transaction as
the request's ledger entry; a failed call releases everything, costs nothing, and is still
recorded. A reservation carries a lease, so a worker that dies mid-call cannot hold budget forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from service.api.interceptors.base import GENERATE_ONLY, Behavior, UnaryInterceptor
from service.api.interceptors.request_context import RequestContext, current_request
from service.catalog.catalog import usd
from service.errors import BudgetExceeded, MgError, Unavailable
from service.generation.pricing import cost_micros, estimate_micros
from service.generation.tokens import count_prompt_tokens
from service.runtime.observability import record_charge
from service.stores.base import LedgerEntry, Store

log = logging.getLogger(__name__)
# A reservation outlives the longest possible call by this much before its lease lapses.
LEASE_MARGIN_S = 60.0


def ledger_entry(ctx: RequestContext, outcome: str, images: int, cost: int, input_tokens: int) -> LedgerEntry:
    principal = ctx.require_principal()
    generation = ctx.require_generation()
    summary = ctx.summary
    latency_ms = summary.upstream_latency_ms if summary else round((time.monotonic() - ctx.started) * 1000)
    return LedgerEntry(
        request_id=ctx.request_id,
        project_id=principal.project.id,
        key_id=principal.key.id,
        model=generation.model.id,
        provider=generation.model.provider,
        n_requested=generation.n,
        images_returned=images,
        size=str(generation.size),
        quality=generation.quality or "",
        cost_micros=cost,
        input_tokens=input_tokens,
        upstream_latency_ms=latency_ms,
        outcome=outcome,
        created_at=time.time(),
        upstream_request_id=",".join(summary.upstream_request_ids) if summary else "",
        idempotency_key=ctx.idempotency_key,
    )


class SpendInterceptor(UnaryInterceptor):
    only_methods = GENERATE_ONLY

    def __init__(self, store: Store, upstream_limit_s: float) -> None:
        self._store = store
        self._lease_s = upstream_limit_s + LEASE_MARGIN_S

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        ctx = current_request()
        project = ctx.require_principal().project
        generation = ctx.require_generation()
        prompt_tokens = await count_prompt_tokens(generation.prompt) if generation.model.price.tokens else 0
        estimate = estimate_micros(generation, prompt_tokens)
        reservation = ctx.request_id
        if not await self._store.reserve(
            project.id, reservation, estimate, project.budget_micros, self._lease_s
        ):
            raise await self._budget_exceeded(ctx, estimate)
        try:
            response = await behavior(request, context)
        except MgError as error:
            await asyncio.shield(self._release(ctx, error.code))
            raise
        except BaseException:
            # Cancelled (caller gone) or a bug: nothing was delivered, so nothing is charged.
            await asyncio.shield(self._release(ctx, "CANCELLED"))
            raise
        images = len(response.data)
        cost = cost_micros(generation, images, ctx.summary.usage if ctx.summary else None)
        outcome = "ok" if images == generation.n else "partial"
        entry = ledger_entry(ctx, outcome, images, cost, response.usage.input_tokens)
        ctx.cost_micros = cost
        record_charge(project.name, generation.model.id, generation.model.provider, images, cost)
        try:
            await asyncio.shield(self._store.settle(reservation, entry))
        except Unavailable:
            # The images exist and were paid for upstream: deliver them. The reservation keeps the
            # budget held until its lease lapses; the log line lets an operator reconcile.
            log.error(
                "could not settle %s: %s for project %s not recorded", reservation, usd(cost), project.name
            )
        return response

    async def _release(self, ctx: RequestContext, outcome: str) -> None:
        entry = ledger_entry(ctx, outcome, images=0, cost=0, input_tokens=0)
        try:
            await self._store.release(ctx.request_id, entry.project_id, entry)
        except Unavailable:
            log.error("could not release reservation %s; it lapses with its lease", ctx.request_id)

    async def _budget_exceeded(self, ctx: RequestContext, estimate: int) -> BudgetExceeded:
        project = ctx.require_principal().project
        cap = project.budget_micros or 0
        spend = await self._store.spend(project.id)
        left = max(0, cap - spend.spent_micros - spend.reserved_micros)
        return BudgetExceeded(
            f"This request may cost up to {usd(estimate)}; project {project.name!r} has {usd(left)} "
            f"of its {usd(cap)} spend cap left.",
        )
