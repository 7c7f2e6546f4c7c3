"""Running a validated request against its provider: fan-out of `n`, deadline, partial success.

`n` larger than the model's per-call maximum becomes several upstream calls run in parallel (bounded);
the images that arrive are concatenated in call order. If some calls fail, the request still succeeds
with what arrived; if all fail, the first failure is raised. A `Dispatch` follows the calls as they
go, so that the pipeline can charge exactly what was sent upstream, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from service.errors import Internal, MgError, Unavailable, UpstreamError, UpstreamTimeout
from service.generation.capacity import ProviderGuard
from service.generation.validation import VARIATION, GenerationRequest
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ImageProvider,
    PartialSink,
    ProviderUsage,
    no_job_report,
)
from service.runtime.observability import IN_FLIGHT

log = logging.getLogger(__name__)


class CallerGone(Exception):
    """A call not sent upstream because nobody waits for its answer any more."""


@dataclass
class Dispatch:
    """The upstream calls of one generation as they go. `caller_gone` is set by the pipeline when no
    one waits for the answer: calls not yet sent are then not sent. The counts say what was handed to
    the provider and what came back (answered or failed), so what never came back is known."""

    caller_gone: bool = False
    sent_calls: int = 0
    sent_images: int = 0
    returned_calls: int = 0
    returned_images: int = 0
    # The ids of the jobs submit-and-poll providers accepted (ImageCall.report_job), answered or not.
    job_ids: list[str] = field(default_factory=list)
    # Calls that failed after the provider had them (`owes`): unfinished, as the provider bills
    # them, but not abandoned at the deadline.
    billed_calls: int = 0
    # The calls (by first_index) whose job the provider accepted.
    accepted: set[int] = field(default_factory=set)

    def restart(self) -> None:
        """Count afresh, for the next target of a route (the last one's calls are settled)."""
        self.sent_calls = self.sent_images = self.returned_calls = self.returned_images = 0
        self.billed_calls = 0
        self.job_ids = []
        self.accepted = set()

    def report_job(self, first_index: int, job: str) -> None:
        self.job_ids.append(job)
        self.accepted.add(first_index)

    def owes(self, call: ImageCall, failure: MgError) -> bool:
        """Whether the provider bills a call that failed: it had the request (`MgError.billed`), or
        it accepted the call's job and the wait for it ran out, however the adapter noticed."""
        return failure.billed or (isinstance(failure, UpstreamTimeout) and call.first_index in self.accepted)

    @property
    def unfinished_calls(self) -> int:
        return self.sent_calls - self.returned_calls

    @property
    def unfinished_images(self) -> int:
        return self.sent_images - self.returned_images


@dataclass(frozen=True)
class GenerationSummary:
    """What the ledger, the log line and the metrics need to know of a generation: no image bytes."""

    images: int
    usage: ProviderUsage | None
    warnings: tuple[CallWarning, ...]
    answered_calls: int = 1
    failed_calls: int = 0
    # Wall time of the upstream calls (all of them, in parallel), for the ledger.
    upstream_latency_ms: int = 0
    upstream_request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    summary: GenerationSummary


def plan_calls(
    request: GenerationRequest,
    deadline: float,
    on_partial: PartialSink | None = None,
    report_job: Callable[[int, str], None] | None = None,
) -> list[ImageCall]:
    """Split the request into upstream calls of `request.images_per_call` images at most.
    `report_job(first_index, job)` hears of each job a provider accepts for a call."""
    per_call = request.images_per_call
    calls = []
    for first in range(0, request.n, per_call):
        calls.append(
            ImageCall(
                upstream_model=request.model.upstream_id,
                prompt=request.prompt,
                n=min(per_call, request.n - first),
                size=request.size,
                deadline=deadline,
                first_index=first,
                quality=request.quality,
                style=request.style,
                output_format=request.output_format,
                background=request.background,
                moderation=request.moderation,
                output_compression=request.output_compression,
                user=request.user,
                options=request.provider_options,
                input_images=request.inputs,
                mask=request.mask,
                input_fidelity=request.input_fidelity,
                variation=request.operation == VARIATION,
                partial_images=request.partial_images if on_partial else 0,
                on_partial=on_partial,
                report_job=functools.partial(report_job, first) if report_job else no_job_report,
            )
        )
    return calls


def _sum_usage(results: list[ImageCallResult]) -> ProviderUsage | None:
    reported = [r.usage for r in results if r.usage is not None]
    if not reported:
        return None

    def total(name: str) -> int | None:
        values = [getattr(u, name) for u in reported if getattr(u, name) is not None]
        return sum(values) if values else None

    return ProviderUsage(
        input_tokens=total("input_tokens"),
        output_tokens=total("output_tokens"),
        input_image_tokens=total("input_image_tokens"),
    )


class Generator:
    def __init__(
        self,
        providers: Mapping[str, ImageProvider],
        fanout_concurrency: int,
        guards: Mapping[str, ProviderGuard] | None = None,
    ) -> None:
        self._providers = providers
        self._fanout_concurrency = max(1, fanout_concurrency)
        # Providers with a concurrency limit or a circuit breaker (capacity.py); most have none.
        self._guards = guards or {}

    async def generate(
        self,
        request: GenerationRequest,
        timeout_s: float,
        dispatch: Dispatch | None = None,
        on_partial: PartialSink | None = None,
    ) -> GenerationResult:
        """The images of `request`, within `timeout_s`. Calls still running at the deadline are
        abandoned (`dispatch` counts them as unfinished): what arrived is returned, and with nothing
        arrived it is a 504. Partial images, where the provider makes them, go to `on_partial`."""
        provider = self._providers.get(request.model.provider)
        if provider is None:
            raise Unavailable(
                f"Provider {request.model.provider!r} is not configured on this gateway.", param="model"
            )
        with IN_FLIGHT.track_inprogress():
            return await self._run(provider, request, timeout_s, dispatch or Dispatch(), on_partial)

    async def _run(
        self,
        provider: ImageProvider,
        request: GenerationRequest,
        timeout_s: float,
        dispatch: Dispatch,
        on_partial: PartialSink | None,
    ) -> GenerationResult:
        limit = asyncio.Semaphore(self._fanout_concurrency)
        started = time.monotonic()
        guard = self._guards.get(request.model.provider)

        async def send(call: ImageCall) -> ImageCallResult:
            dispatch.sent_calls += 1
            dispatch.sent_images += call.n
            try:
                result = await provider.generate(call)
            except MgError as failure:
                if dispatch.owes(call, failure):  # (as if it never returned)
                    dispatch.billed_calls += 1
                else:
                    returned(call)
                raise
            except BaseException:
                # (not when cancelled at the deadline: that call stays unfinished)
                if not _cancelling():
                    returned(call)
                raise
            returned(call)
            return result

        def returned(call: ImageCall) -> None:
            dispatch.returned_calls += 1
            dispatch.returned_images += call.n

        async def one(call: ImageCall) -> ImageCallResult:
            async with limit:
                if dispatch.caller_gone:
                    raise CallerGone
                if guard is None:
                    result = await send(call)
                else:
                    result = await guard.call(functools.partial(send, call), call.deadline)
            if not result.images:
                raise UpstreamError(f"{provider.name} returned no images.")
            return result

        calls = plan_calls(request, started + timeout_s, on_partial, dispatch.report_job)
        outcomes: list[ImageCallResult | BaseException] = []
        if len(calls) == 1:  # the usual case: no task, no gather
            try:
                async with asyncio.timeout(timeout_s):
                    outcomes = [await one(calls[0])]
            except TimeoutError:
                pass
            except Exception as exc:
                outcomes = [exc]
        else:
            tasks = [asyncio.create_task(one(call)) for call in calls]
            try:
                await asyncio.wait(tasks, timeout=timeout_s)
            finally:
                for task in tasks:
                    task.cancel()
            done = [task for task in tasks if task.done() and not task.cancelled()]
            outcomes = [task.exception() or task.result() for task in done]
        results = [o for o in outcomes if isinstance(o, ImageCallResult)]
        failures = [o for o in outcomes if not isinstance(o, ImageCallResult)]
        if not results:
            if dispatch.unfinished_calls > dispatch.billed_calls or not failures:  # (some abandoned)
                raise UpstreamTimeout(
                    f"{request.model.id} did not return images within {timeout_s:.3g} seconds."
                )
            sent_and_failed = [f for f in failures if not isinstance(f, CallerGone)]
            raise _as_mg_error((sent_and_failed or failures)[0], provider.name)
        for failure in failures:
            if not isinstance(failure, CallerGone):
                log.warning("partial failure of a fanned-out call to %s: %r", provider.name, failure)
        warnings = list(request.warnings)
        for result in results:
            warnings.extend(result.warnings)
        images = [image for result in results for image in result.images][: request.n]
        summary = GenerationSummary(
            len(images),
            _sum_usage(results),
            tuple(dict.fromkeys(warnings)),  # once each: every call of a fan-out says the same
            answered_calls=len(results),
            failed_calls=len(failures),
            upstream_latency_ms=round((time.monotonic() - started) * 1000),
            upstream_request_ids=tuple(r.upstream_request_id for r in results if r.upstream_request_id),
        )
        return GenerationResult(images, summary)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _as_mg_error(failure: BaseException, provider: str) -> BaseException:
    if isinstance(failure, MgError | TimeoutError | CallerGone):
        return failure
    log.error("unexpected failure in the %s adapter", provider, exc_info=failure)
    return Internal(f"The {provider} adapter failed unexpectedly.")
