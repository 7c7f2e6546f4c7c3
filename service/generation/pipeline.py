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
import functools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import Catalog, usd
from service.errors import MgError, UpstreamTimeout
from service.generation.admission import admit
from service.generation.edits import admit_edit, admit_variation, load_inputs, load_mask
from service.generation.fanout import CallerGone, Dispatch, GenerationResult, Generator
from service.generation.pricing import Charge, bound_micros, charge, estimate_micros
from service.generation.reference_images import ReferenceLimits, load_reference
from service.generation.report import CallReport
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
        thumbnails: Thumbnails | None = None,
    ) -> None:
        self._catalog = catalog
        self._configured = configured_providers
        self._reference_limits = reference_limits
        self._generator = generator
        self._spend = spend
        self._hosting = hosting
        self._upstream_limit_s = upstream_limit_s
        self._thumbnails = thumbnails  # set with MG_KEEP_THUMBNAILS: the console's gallery
        self._background: set[asyncio.Task[Delivered]] = set()

    async def run(self, request: pb.GenerateImagesRequest, caller: Caller) -> Delivered:
        generation = admit(
            request, caller.project, self._catalog, self._configured, streamed=caller.on_partial is not None
        )
        self._admitted(caller, generation)
        if request.reference_image:  # admission checked that the model takes one
            reference = await load_reference(request.reference_image, self._reference_limits)
            generation = replace(generation, reference=reference)
        return await self._reserve_and_run(generation, caller)

    async def edit(self, request: pb.EditImagesRequest, caller: Caller) -> Delivered:
        generation = admit_edit(request, caller.project, self._catalog, self._configured)
        self._admitted(caller, generation)
        inputs = await load_inputs(request.images, self._reference_limits)
        mask = (
            await load_mask(request.mask, inputs[0], self._reference_limits)
            if request.HasField("mask")
            else None
        )
        return await self._reserve_and_run(replace(generation, inputs=inputs, mask=mask), caller)

    async def vary(self, request: pb.CreateImageVariationsRequest, caller: Caller) -> Delivered:
        generation = admit_variation(request, caller.project, self._catalog, self._configured)
        self._admitted(caller, generation)
        image = await load_inputs([request.image], self._reference_limits)
        return await self._reserve_and_run(replace(generation, inputs=image), caller)

    def _admitted(self, caller: Caller, generation: GenerationRequest) -> None:
        if caller.report is not None:
            _report_admitted(caller.report, generation)

    async def _reserve_and_run(self, generation: GenerationRequest, caller: Caller) -> Delivered:
        """From the reservation on: the work, as a task of its own that the caller waits for."""
        dispatch = Dispatch()
        work = asyncio.create_task(self._work(generation, caller, dispatch))
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
                f"{generation.model.id} did not return images within {waited_s:.3g} seconds. Calls already "
                "sent go on in the background and are charged when they complete; send an idempotency key "
                "to be able to collect the result."
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

    async def _work(self, generation: GenerationRequest, caller: Caller, dispatch: Dispatch) -> Delivered:
        prompt_tokens = (
            await count_prompt_tokens(generation.prompt) if generation.model.price.tokens else None
        )
        attempt = Attempt(
            caller.request_id,
            caller.project,
            caller.key_id,
            caller.idempotency_key,
            caller.started,
            generation,
        )
        async with self._spend.reserved(attempt, estimate_micros(generation, prompt_tokens or 0)):
            timeout_s = caller.started + self._upstream_limit_s - time.monotonic()
            on_partial = (
                functools.partial(caller.on_partial, generation)
                if caller.on_partial is not None and generation.partial_images
                else None
            )
            try:
                result = await self._generator.generate(generation, timeout_s, dispatch, on_partial)
            except BaseException as failure:
                await asyncio.shield(
                    self._close_failed(attempt, caller, dispatch, failure, prompt_tokens or 0)
                )
                raise
            try:
                urls = await self._deliver(generation, caller, result, dispatch)
            except MgError as error:
                # The images could not be stored for their URLs: not delivered, so not charged.
                await asyncio.shield(
                    self._spend.release(attempt, Settlement(error.code, summary=result.summary))
                )
                raise
        if prompt_tokens is None and (
            result.summary.usage is None or result.summary.usage.input_tokens is None
        ):
            prompt_tokens = await count_prompt_tokens(generation.prompt)
        usage = _usage(result, prompt_tokens or 0)
        owed = _charge(generation, result, dispatch, prompt_tokens or 0)
        settlement = Settlement(
            "ok" if len(result.images) == generation.n else "partial",
            images=len(result.images),
            cost_micros=owed.micros,
            input_tokens=usage.input_tokens,
            summary=result.summary,
        )
        await asyncio.shield(self._spend.settle(attempt, settlement))
        if self._thumbnails is not None:
            await asyncio.shield(self._thumbnails.keep(caller.project.id, caller.request_id, result.images))
        if caller.report is not None:
            _report_settled(caller.report, result, owed.micros)
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
        jobs = tuple(dispatch.job_ids)
        if not dispatch.unfinished_calls:
            await self._spend.release(attempt, Settlement(outcome, job_ids=jobs))
            return
        generation = attempt.generation
        cost = bound_micros(generation, dispatch.unfinished_images, dispatch.unfinished_calls, prompt_tokens)
        log.warning(
            "request %s: %d upstream call(s) to %s never answered; charged their bound, %s",
            attempt.request_id,
            dispatch.unfinished_calls,
            generation.model.provider,
            usd(cost),
        )
        await self._spend.settle(attempt, Settlement(outcome, cost_micros=cost, job_ids=jobs))
        if caller.report is not None:
            caller.report.cost_micros = cost


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


def _report_admitted(report: CallReport, generation: GenerationRequest) -> None:
    report.model = generation.model.id
    report.provider = generation.model.provider
    report.n = generation.n
    report.size = str(generation.size)
    report.prompt = generation.prompt


def _report_settled(report: CallReport, result: GenerationResult, cost_micros: int) -> None:
    report.images = len(result.images)
    report.cost_micros = cost_micros
    report.upstream_latency_ms = result.summary.upstream_latency_ms
    report.warnings = result.summary.warnings
