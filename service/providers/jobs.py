"""What the submit-and-poll adapters share: polling a job until it ends, inside the call's deadline,
and cancelling it upstream when the gateway gives up on it.

A job the gateway stops waiting for goes on costing money at the provider until it ends, so when
the wait ends without the job having ended (the deadline passed, the call was cancelled because the
request's upper limit was reached, a poll answer was unusable), `cancelled_unless_ended` asks the
provider to cancel it. The cancel request gets a few seconds of its own; its failure is logged,
never raised (the caller is told what went wrong with the job, not with its cancellation). Whether
a cancelled job is still billed is the provider's affair: the pipeline charges a call it sent that
never answered at its upper bound (docs/security.md's charging rule).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from service.errors import BadRequest, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from service.providers.upstream import Upstream

log = logging.getLogger(__name__)

T = TypeVar("T")
# How long a cancel request may take, on top of whatever deadline the job had.
CANCEL_BUDGET_S = 10.0
# Cancel requests sent while their job's task was being cancelled: kept so they are not collected
# before they finish.
_detached: set[asyncio.Task[None]] = set()


@dataclass
class Watch:
    """The job being waited for: `state` is the last state the provider reported, for messages; set
    `ended` once that state is final (there is nothing left to cancel)."""

    job: str
    state: object = None
    ended: bool = False


async def poll(
    step: Callable[[], Awaitable[T | None]], deadline: float, interval_s: float, pending: Callable[[], str]
) -> T:
    """`step()` every `interval_s` until it returns something; `UpstreamTimeout(pending())` when the
    deadline comes first."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout(pending())
        await asyncio.sleep(min(interval_s, remaining))
        outcome = await step()
        if outcome is not None:
            return outcome


async def read_job(
    upstream: Upstream, method: str, url: str, deadline: float, job: str, **kwargs: Any
) -> dict[str, Any]:
    """The JSON object a job's status (or result) URL answers. A 4xx there is the provider's
    problem, not the caller's (the caller's request was accepted when the job was made): a 502."""
    try:
        answer, _ = await upstream.json_object(method, url, deadline, **kwargs)
    except BadRequest as exc:
        raise UpstreamError(f"{upstream.provider}: reading job {job} failed: {exc.message}") from None
    return answer


@asynccontextmanager
async def cancelled_unless_ended(
    provider: str, job: str, cancel: Callable[[float], Awaitable[object]]
) -> AsyncIterator[Watch]:
    """Run the block that waits for `job`; if it ends with an exception before the job ended,
    `cancel(deadline)` it upstream. When the block's task is itself being cancelled, the cancel
    request runs as a task of its own (the caller's task cannot await anything any more)."""
    watch = Watch(job)
    try:
        yield watch
    except asyncio.CancelledError:
        if not watch.ended:
            task = asyncio.ensure_future(_cancel_quietly(provider, job, cancel))
            _detached.add(task)
            task.add_done_callback(_detached.discard)
        raise
    except Exception:
        if not watch.ended:
            await _cancel_quietly(provider, job, cancel)
        raise


async def _cancel_quietly(provider: str, job: str, cancel: Callable[[float], Awaitable[object]]) -> None:
    try:
        await cancel(time.monotonic() + CANCEL_BUDGET_S)
    except Exception as exc:  # the job's own failure is what the caller must hear about
        log.warning("%s: could not cancel job %s the gateway gave up on (%s)", provider, job, exc)
    else:
        log.info("%s: cancelled job %s the gateway gave up on", provider, job)
