"""The generation pipeline: one explicit path from a wire request to delivered, paid-for images.

    admit (resolve, allowlist, validate, provider configured) -> load inputs (reference image, an
    edit's input images and mask, a variation's image)
    -> reserve -> run (fan-out) -> deliver (hosted URLs) -> settle

The servicer calls `Pipeline.run` and gets a typed `Delivered`; interceptors keep only what applies to
every call (request context, observe, auth, idempotency, rate limit).

Charging rule: once anything was sent upstream, the project pays what the provider bills. From the
reservation on, the work runs as a task of its own that the caller only waits for. A caller that
disconnects or reaches its deadline does not cancel it: it completes in the background and is
settled at its real cost, and upstream calls that never answer within the upstream limit (the max
duration plus the background completion time) are charged at their bound. Calls not yet sent when
the caller left are not sent and cost nothing; a call cancelled before its reservation costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import Catalog, usd
from service.errors import MgError, UpstreamTimeout
from service.generation.admission import Admitted, admit_targets
from service.generation.edits import admit_edit, admit_variation, load_inputs, load_mask
from service.generation.fanout import CallerGone, Dispatch, GenerationResult, Generator
from service.generation.pricing import Charge, bound_micros, charge, estimate_micros
from service.generation.reference_images import ReferenceLimits, load_reference
from service.generation.report import CallReport
from service.generation.routing import AttemptNote, attempt_timeout_s, moves_on
from service.generation.spend import Attempt, Settlement, SpendLedger
from service.generation.tokens import count_prompt_tokens
from service.generation.validation import GenerationRequest
from service.hosting.thumbnails import Thumbnails
from service.hosting.urls import Hosting
from service.providers.base import GeneratedImage, PartialImage
from service.runtime.observability import COST_ABOVE_ESTIMATE
from service.stores.base import Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who asks, and how long they wait."""

    project: Project
    key_id: str
    request_id: str
    started: float  # time.monotonic()
    # time.monotonic() after which the caller stops waiting; None: it waits for the work itself (the
    # owner of an idempotency key, whose own caller may leave while the result is still wanted).
    answer_by: float | None
    idempotency_key: str = ""
    report: CallReport | None = None
    # Set when the call streams: takes the partial images of the request as they are made. A caller
    # that left drops them; the work goes on as for any caller that left.
    on_partial: Callable[[GenerationRequest, PartialImage], None] | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    input_image_tokens: int


@dataclass(frozen=True)
class Delivered:
    request: GenerationRequest
    images: Sequence[GeneratedImage]
    urls: list[str] | None  # hosted copies of the images, in order, for response_format=url
    usage: Usage
    cost_micros: int


class Pipeline:
    def __init__(
        self,
        *,
        catalog: Catalog,
        configured_providers: Collection[str],
        reference_limits: ReferenceLimits,
        generator: Generator,
        spend: SpendLedger,
        hosting: Hosting,
        upstream_limit_s: float,
        max_duration_s: float,
        thumbnails: Thumbnails | None = None,
    ) -> None:
        self._catalog = catalog
        self._configured = configured_providers
        self._reference_limits = reference_limits
        self._generator = generator
        self._spend = spend
        self._hosting = hosting
        self._upstream_limit_s = upstream_limit_s
        self._max_duration_s = max_duration_s
        self._thumbnails = thumbnails  # set with MG_KEEP_THUMBNAILS: the console's gallery
        self._background: set[asyncio.Task[Delivered]] = set()

    async def run(self, request: pb.GenerateImagesRequest, caller: Caller) -> Delivered:
        admitted = admit_targets(
            request, caller.project, self._catalog, self._configured, streamed=caller.on_partial is not None
        )
        self._admitted(caller, admitted)
        if request.reference_image:  # admission checked that every target takes one
            reference = await load_reference(request.reference_image, self._reference_limits)
            admitted = _with_inputs(admitted, reference=reference)
        return await self._reserve_and_run(admitted, caller)

    async def edit(self, request: pb.EditImagesRequest, caller: Caller) -> Delivered:
        admitted = admit_edit(
            request, caller.project, self._catalog, self._configured, streamed=caller.on_partial is not None
        )
        self._admitted(caller, admitted)
        inputs = await load_inputs(request.images, self._reference_limits)
        mask = (
            await load_mask(request.mask, inputs[0], self._reference_limits)
            if request.HasField("mask")
            else None
        )
        return await self._reserve_and_run(_with_inputs(admitted, inputs=inputs, mask=mask), caller)

    async def vary(self, request: pb.CreateImageVariationsRequest, caller: Caller) -> Delivered:
        admitted = admit_variation(request, caller.project, self._catalog, self._configured)
        self._admitted(caller, admitted)
        image = await load_inputs([request.image], self._reference_limits)
        return await self._reserve_and_run(_with_inputs(admitted, inputs=image), caller)

    def _admitted(self, caller: Caller, admitted: Admitted) -> None:
        if caller.report is not None:
            _report_admitted(caller.report, admitted)

    async def _reserve_and_run(self, admitted: Admitted, caller: Caller) -> Delivered:
        """From the reservation on: the work, as a task of its own that the caller waits for."""
        dispatch = Dispatch()
        work = asyncio.create_task(self._work(admitted, caller, dispatch))
        self._background.add(work)
        work.add_done_callback(lambda done: self._finished(done, dispatch))
        try:
            if caller.answer_by is None:
                return await asyncio.shield(work)
            # asyncio.wait, unlike wait_for, never cancels the work: the caller only stops waiting.
            await asyncio.wait({work}, timeout=max(0.0, caller.answer_by - time.monotonic()))
        except asyncio.CancelledError:
            dispatch.caller_gone = True
            raise
        if not work.done():
            dispatch.caller_gone = True
            waited_s = caller.answer_by - caller.started
            raise UpstreamTimeout(
                f"{_asked(admitted.first)} did not return images within {waited_s:.3g} seconds. Calls "
                "already sent go on in the background and are charged when they complete; send an "
                "idempotency key to be able to collect the result."
            )
        return work.result()

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: let work that outlived its callers finish (and be charged)."""
        if self._background:
            log.info("waiting up to %gs for %d generation(s)", timeout_s, len(self._background))
            await asyncio.wait(self._background, timeout=timeout_s)

    def _finished(self, work: asyncio.Task[Delivered], dispatch: Dispatch) -> None:
        self._background.discard(work)
        if work.cancelled():
            return
        # Read here, since a caller that left never reads the outcome of its work.
        failure = work.exception()
        if dispatch.caller_gone and failure is not None and not isinstance(failure, MgError | CallerGone):
            log.error("a generation whose caller had left failed unexpectedly", exc_info=failure)

    async def _work(self, admitted: Admitted, caller: Caller, dispatch: Dispatch) -> Delivered:
        """Reserve the most the targets can cost, then try them in order (one, unless the request
        named a route: routing.py) until one makes the images, and settle."""
        targets = admitted.targets
        prompt_tokens = (
            await count_prompt_tokens(targets[0].prompt)
            if any(target.model.price.tokens for target in targets)
            else None
        )
        attempt = Attempt(
            caller.request_id,
            caller.project,
            caller.key_id,
            caller.idempotency_key,
            caller.started,
            targets[0],
            route=admitted.route,
            number=1 if admitted.route else 0,
        )
        # The route's time: its fallbacks happen before the max duration (or the caller's deadline).
        route_end = min(caller.answer_by or math.inf, caller.started + self._max_duration_s)
        async with self._spend.reserved(attempt, _most(targets, prompt_tokens or 0)):
            for index, generation in enumerate(targets):
                later = targets[index + 1 :]
                timeout_s = attempt_timeout_s(
                    time.monotonic(), route_end, caller.started + self._upstream_limit_s, len(later)
                )
                partials = _Partials(caller, generation)
                try:
                    result = await self._generator.generate(generation, timeout_s, dispatch, partials.sink())
                except BaseException as failure:
                    if (
                        later
                        and moves_on(failure)
                        and not dispatch.caller_gone
                        and not partials.sent
                        and time.monotonic() < route_end
                    ):
                        # (shielded: the ledger entry and the reservation must not be cut halfway)
                        attempt = await asyncio.shield(
                            self._fall_back(attempt, caller, dispatch, failure, later, prompt_tokens or 0)
                        )
                        dispatch.restart()
                        continue
                    await asyncio.shield(
                        self._close_failed(attempt, caller, dispatch, failure, prompt_tokens or 0)
                    )
                    raise
                return await self._settle(attempt, caller, dispatch, result, prompt_tokens)
        raise AssertionError("unreachable: the last target returns or raises")

    async def _fall_back(
        self,
        attempt: Attempt,
        caller: Caller,
        dispatch: Dispatch,
        failure: BaseException,
        later: Sequence[GenerationRequest],
        prompt_tokens: int,
    ) -> Attempt:
        """Close a failed attempt of a route and return the next one, under a reservation that
        covers the targets left. An attempt that reached the provider and owes nothing is recorded
        and the reservation kept;
        one that owes the bound of calls that never answered is charged it, and the rest of the route
        reserved anew: if the cap has no room left for that, the route ends with `failure`."""
        assert isinstance(failure, MgError)
        _note(caller, attempt, failure.code)
        log.info(
            "request %s: %s failed (%s); trying %s",
            attempt.request_id,
            attempt.generation.model.id,
            failure.code,
            later[0].model.id,
        )
        following = replace(attempt, generation=later[0], number=attempt.number + 1, started=time.monotonic())
        jobs = tuple(dispatch.job_ids)
        if not dispatch.unfinished_calls:
            if dispatch.sent_calls:  # (one refused before any call, for capacity or an open circuit,
                # never reached the provider: the log line lists it, the ledger does not)
                await self._spend.record(attempt, Settlement(failure.code, job_ids=jobs))
            return following
        await self._settle_unfinished(attempt, caller, dispatch, failure.code, prompt_tokens)
        following = replace(following, reservation_id=f"{attempt.request_id}/{following.number}")
        if not await self._spend.reserve(following, _most(later, prompt_tokens)):
            log.warning(
                "request %s: no room left under the spend cap for the rest of route %s",
                attempt.request_id,
                attempt.route,
            )
            raise failure
        return following

    async def _settle(
        self,
        attempt: Attempt,
        caller: Caller,
        dispatch: Dispatch,
        result: GenerationResult,
        prompt_tokens: int | None,
    ) -> Delivered:
        """Deliver the images and charge them, at the price of the target that made them."""
        generation = attempt.generation
        try:
            urls = await self._deliver(generation, caller, result, dispatch)
        except MgError as error:
            # The images could not be stored for their URLs: not delivered, so not charged.
            _note(caller, attempt, error.code)
            await asyncio.shield(self._spend.release(attempt, Settlement(error.code, summary=result.summary)))
            raise
        if prompt_tokens is None and (
            result.summary.usage is None or result.summary.usage.input_tokens is None
        ):
            prompt_tokens = await count_prompt_tokens(generation.prompt)
        usage = _usage(result, prompt_tokens or 0)
        owed = _charge(generation, result, dispatch, prompt_tokens or 0)
        outcome = "ok" if len(result.images) == generation.n else "partial"
        settlement = Settlement(
            outcome,
            images=len(result.images),
            cost_micros=owed.micros,
            input_tokens=usage.input_tokens,
            summary=result.summary,
        )
        await asyncio.shield(self._spend.settle(attempt, settlement))
        _note(caller, attempt, outcome, owed.micros)
        if self._thumbnails is not None:
            await asyncio.shield(self._thumbnails.keep(caller.project.id, caller.request_id, result.images))
        if caller.report is not None:
            _report_settled(caller.report, generation, result, owed.micros)
        return Delivered(generation, result.images, urls, usage, owed.micros)

    async def _deliver(
        self, generation: GenerationRequest, caller: Caller, result: GenerationResult, dispatch: Dispatch
    ) -> list[str] | None:
        if generation.response_format != "url" or dispatch.caller_gone:
            return None  # (no one would ever be given the URLs)
        return await self._hosting.host(caller.project.id, result.images)

    async def _close_failed(
        self, attempt: Attempt, caller: Caller, dispatch: Dispatch, failure: BaseException, prompt_tokens: int
    ) -> None:
        """No images: release the reservation, unless calls were sent that never answered. Those
        the provider bills, so they are charged at their bound."""
        outcome = failure.code if isinstance(failure, MgError) else "CANCELLED"
        _note(caller, attempt, outcome)
        if not dispatch.unfinished_calls:
            await self._spend.release(attempt, Settlement(outcome, job_ids=tuple(dispatch.job_ids)))
            return
        await self._settle_unfinished(attempt, caller, dispatch, outcome, prompt_tokens)

    async def _settle_unfinished(
        self, attempt: Attempt, caller: Caller, dispatch: Dispatch, outcome: str, prompt_tokens: int
    ) -> None:
        generation = attempt.generation
        cost = bound_micros(generation, dispatch.unfinished_images, dispatch.unfinished_calls, prompt_tokens)
        log.warning(
            "request %s: %d upstream call(s) to %s never answered; charged their bound, %s",
            attempt.request_id,
            dispatch.unfinished_calls,
            generation.model.provider,
            usd(cost),
        )
        settlement = Settlement(outcome, cost_micros=cost, job_ids=tuple(dispatch.job_ids))
        await self._spend.settle(attempt, settlement)
        if caller.report is not None:
            caller.report.cost_micros += cost


def _charge(
    generation: GenerationRequest, result: GenerationResult, dispatch: Dispatch, prompt_tokens: int
) -> Charge:
    summary = result.summary
    owed = charge(
        generation,
        images=len(result.images),
        calls=summary.answered_calls,
        usage=summary.usage,
        prompt_tokens=prompt_tokens,
        unfinished_images=dispatch.unfinished_images,
        unfinished_calls=dispatch.unfinished_calls,
    )
    if owed.above_bound:
        COST_ABOVE_ESTIMATE.labels(generation.model.provider, generation.model.id).inc()
        log.warning(
            "%s reported usage costing %s more than the most this request could cost; charged the bound",
            generation.model.id,
            usd(owed.above_bound),
        )
    return owed


def _usage(result: GenerationResult, prompt_tokens: int) -> Usage:
    """The response's usage: the provider's counts where it reported them, else the prompt as the
    tokenizer counts it."""
    reported = result.summary.usage
    input_tokens = reported.input_tokens if reported and reported.input_tokens is not None else prompt_tokens
    output_tokens = reported.output_tokens if reported and reported.output_tokens is not None else 0
    image_tokens = reported.input_image_tokens if reported and reported.input_image_tokens is not None else 0
    return Usage(input_tokens, output_tokens, image_tokens)


def _report_admitted(report: CallReport, admitted: Admitted) -> None:
    generation = admitted.first
    report.model = generation.model.id
    report.provider = generation.model.provider
    report.n = generation.n
    report.size = str(generation.size)
    report.prompt = generation.prompt
    if admitted.skipped:
        report.attempts = tuple(AttemptNote(model, f"skipped: {why.code}") for model, why in admitted.skipped)


def _report_settled(
    report: CallReport, generation: GenerationRequest, result: GenerationResult, cost_micros: int
) -> None:
    report.model = generation.model.id  # the target that made the images
    report.provider = generation.model.provider
    report.images = len(result.images)
    report.cost_micros += cost_micros
    report.upstream_latency_ms = result.summary.upstream_latency_ms
    report.warnings = result.summary.warnings


def _note(caller: Caller, attempt: Attempt, outcome: str, cost_micros: int = 0) -> None:
    """An attempt of a route, for the log line (a single model's call has its own fields)."""
    if caller.report is not None and attempt.route:
        latency_ms = round((time.monotonic() - attempt.started) * 1000)
        note = AttemptNote(attempt.generation.model.id, outcome, latency_ms, cost_micros)
        caller.report.attempts = (*caller.report.attempts, note)


def _most(targets: Sequence[GenerationRequest], prompt_tokens: int) -> int:
    """The reservation of a route: what its most expensive target can cost."""
    return max(estimate_micros(target, prompt_tokens) for target in targets)


def _asked(generation: GenerationRequest) -> str:
    """The model or route the caller named, for messages."""
    return generation.model_name or generation.model.id


def _with_inputs(admitted: Admitted, **inputs: object) -> Admitted:
    """Every target with the request's loaded input images (loaded once, whichever target runs)."""
    return replace(admitted, targets=tuple(replace(target, **inputs) for target in admitted.targets))  # type: ignore[arg-type]


class _Partials:
    """A streamed call's partial images for one attempt: handed to the caller, and remembered, since
    a route must not move on once the caller has seen a partial image of this attempt."""

    def __init__(self, caller: Caller, generation: GenerationRequest) -> None:
        self.sent = False
        self._caller = caller
        self._generation = generation

    def sink(self) -> Callable[[PartialImage], None] | None:
        if self._caller.on_partial is None or not self._generation.partial_images:
            return None
        return self._hand_over

    def _hand_over(self, partial: PartialImage) -> None:
        self.sent = True
        assert self._caller.on_partial is not None
        self._caller.on_partial(self._generation, partial)
