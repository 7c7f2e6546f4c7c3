"""Idempotency keys: a retry gets the original result and is never charged twice.

With `x-mg-idempotency-key` (or the IETF `Idempotency-Key`) on GenerateImages, scoped to the project:
- the first call claims the key (a lease, renewed while it runs) and runs the rest of the chain;
- a duplicate while it runs joins it and gets exactly the response (or error) it gets: no second
  upstream call, no second charge. Joiners in the same process await the run; others poll the store;
- a duplicate after success replays the stored response (same id, created, bytes) with
  `x-mg-idempotent-replay: true`, before rate limits and spend: no charge, even past the cap;
- the same key with a different request is 422 IDEMPOTENCY_KEY_REUSED and nothing runs;
- a failure releases the key, so a retry runs again; failures are never charged;
- the caller going away (disconnect, or the 504 at the max duration) does not cancel the run: it
  completes in the background (up to MG_BACKGROUND_COMPLETION_S more), is stored and charged once;
- a dead server's claim lapses with its lease and the next retry runs once.
This sits right after auth, so everything after it (rate limit, access, spend, generation) runs only
for the call that owns the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from mg.v1 import image_generation_pb2 as pb

from service.api.interceptors.base import GENERATE_ONLY, Behavior, UnaryInterceptor
from service.api.interceptors.request_context import RequestContext, current_request
from service.errors import (
    BadRequest,
    IdempotencyKeyReused,
    Internal,
    MgError,
    UpstreamTimeout,
    error_from_json,
    error_to_json,
)
from service.hosting.urls import Hosting
from service.stores.base import IdempotencyRecord, IdempotencyState, Store

log = logging.getLogger(__name__)

HEADERS = ("x-mg-idempotency-key", "idempotency-key")
REPLAY_HEADER = ("x-mg-idempotent-replay", "true")
MAX_KEY_CHARS = 255
# How long a failure stays visible to the calls that joined it (then the key is free anyway).
FAILURE_LINGER_S = 60.0
POLL_INTERVAL_S = 0.1


def idempotency_key(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    values = {str(v) for k, v in context.invocation_metadata() or () if k in HEADERS}
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(
            "x-mg-idempotency-key and Idempotency-Key differ; send one key.", param="idempotency_key"
        )
    key = values.pop()
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise BadRequest(
            f"An idempotency key is 1-{MAX_KEY_CHARS} printable ASCII characters.", param="idempotency_key"
        )
    return key


@dataclass(frozen=True)
class _Owned:
    """A key this call claimed: the record's address, what it guards, and who owns it."""

    project_id: str
    key: str
    fingerprint: str
    owner: str  # the owning call's request id


def fingerprint(request: Message) -> str:
    """Every field of the request (all of them can change the output or the response). Edits and
    variations also hash their message type, so the same key cannot replay another kind of call."""
    digest = hashlib.sha256()
    if not isinstance(request, pb.GenerateImagesRequest):
        digest.update(request.DESCRIPTOR.full_name.encode() + b"\0")
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


class IdempotencyInterceptor(UnaryInterceptor):
    only_methods = GENERATE_ONLY

    def __init__(self, store: Store, lease_s: float, retention_s: float, hosting: Hosting) -> None:
        self._store = store
        self._hosting = hosting
        self._lease_s = lease_s
        self._retention_s = retention_s
        self._running: dict[tuple[str, str], asyncio.Task[Any]] = {}

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        key = idempotency_key(context)
        if key is None:
            return await behavior(request, context)
        ctx = current_request()
        ctx.idempotency_key = key
        project_id = ctx.require_principal().project.id
        request_fingerprint = fingerprint(request)
        waiting_for = ""
        while True:
            claim = await self._store.claim_idempotency(
                project_id, key, request_fingerprint, ctx.request_id, self._lease_s, waiting_for
            )
            if claim.claimed:
                ctx.idempotency_outcome = "owner"
                owned = _Owned(project_id, key, request_fingerprint, ctx.request_id)
                return await self._own(behavior, request, context, ctx, owned)
            record = claim.record
            assert record is not None
            if record.fingerprint != request_fingerprint:
                raise IdempotencyKeyReused(
                    "This idempotency key was used for a different request; use a new key for a new request.",
                    param="idempotency_key",
                )
            if record.state == IdempotencyState.SUCCEEDED:
                ctx.idempotency_outcome = "join" if waiting_for else "replay"
                ctx.response_headers.append(REPLAY_HEADER)
                # hosted URLs are signed afresh: same files, a new expiry
                return self._hosting.resign(pb.ImagesResponse.FromString(record.response))
            if record.state == IdempotencyState.FAILED:
                ctx.idempotency_outcome = "join"
                raise error_from_json(record.error)
            waiting_for = record.owner
            await self._wait(ctx, project_id, key)

    async def _wait(self, ctx: RequestContext, project_id: str, key: str) -> None:
        """Until the owner may have finished, within this call's own deadline."""
        if ctx.remaining_s() <= 0:
            raise UpstreamTimeout(
                "The first request with this idempotency key is still running; retry with the same key to "
                "get its result."
            )
        running = self._running.get((project_id, key))
        if running is None:
            await asyncio.sleep(min(POLL_INTERVAL_S, ctx.remaining_s()))
            return
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(running), timeout=ctx.remaining_s())

    async def _own(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        ctx: RequestContext,
        owned: _Owned,
    ) -> Any:
        # The work may outlive this call: it runs as its own task, which the caller only waits for
        # (the pipeline bounds it by the upstream limit).
        run = asyncio.create_task(self._run(behavior, request, context, owned))
        self._running[(owned.project_id, owned.key)] = run
        run.add_done_callback(lambda task: self._finished(task, owned))
        try:
            return await asyncio.wait_for(asyncio.shield(run), timeout=ctx.remaining_s())
        except TimeoutError:
            raise UpstreamTimeout(
                "No result within the max duration. The generation goes on; retry with the same idempotency "
                "key to get its result when it completes (it is charged once)."
            ) from None

    async def _run(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        owned: _Owned,
    ) -> Any:
        heartbeat = asyncio.create_task(self._renew(owned))
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            failure = (
                exc
                if isinstance(exc, MgError)
                else Internal("The first request with this idempotency key failed.")
            )
            await self._finish(owned, IdempotencyState.FAILED, error=error_to_json(failure))
            raise
        finally:
            heartbeat.cancel()
        await self._finish(owned, IdempotencyState.SUCCEEDED, response=response.SerializeToString())
        return response

    async def _finish(self, owned: _Owned, state: str, *, response: bytes = b"", error: str = "") -> None:
        record = IdempotencyRecord(owned.fingerprint, state, owned.owner, 0.0, response=response, error=error)
        keep_s = self._retention_s if state == IdempotencyState.SUCCEEDED else FAILURE_LINGER_S
        try:
            await self._store.finish_idempotency(owned.project_id, owned.key, owned.owner, record, keep_s)
        except MgError:
            # The claim lapses with its lease, so a retry runs again rather than waiting for ever.
            log.error(
                "could not record the outcome of idempotency key for %s (request %s)",
                owned.project_id,
                owned.owner,
            )

    async def _renew(self, owned: _Owned) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                renewed = await self._store.renew_idempotency(
                    owned.project_id, owned.key, owned.owner, self._lease_s
                )
            except MgError:
                log.warning("could not renew the idempotency claim of request %s", owned.owner)
                continue
            if not renewed:
                log.warning("request %s lost its idempotency claim", owned.owner)
                return

    def _finished(self, task: asyncio.Task[Any], owned: _Owned) -> None:
        if self._running.get((owned.project_id, owned.key)) is task:
            del self._running[(owned.project_id, owned.key)]
        if (
            not task.cancelled()
            and task.exception() is not None
            and not isinstance(task.exception(), MgError)
        ):
            log.error("idempotent generation failed", exc_info=task.exception())

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: let generations that outlived their callers finish (and be stored, charged)."""
        running = list(self._running.values())
        if running:
            log.info("waiting up to %gs for %d background generation(s)", timeout_s, len(running))
            await asyncio.wait(running, timeout=timeout_s)
