"""Outermost interceptor: the call's request id, deadline and response headers.

It gives every call a `RequestContext` (readable anywhere in the call via `current_request()`) and
sends the gathered response headers with a successful response (errors carry them in their
trailers: see error_rendering.py, the next interceptor in).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from ulid import ULID

from service.admin_session import SessionClaims
from service.api.edge_wait import edge_wait_s
from service.api.interceptors.base import Behavior, UnaryInterceptor
from service.errors import MgError
from service.generation.report import CallReport
from service.stores.base import ApiKey, Project

if TYPE_CHECKING:
    from service.api.events import EventStream


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key that authenticated, and its project."""

    key: ApiKey
    project: Project


@dataclass(frozen=True)
class AdminCaller:
    """Who calls the admin API: the admin token (by its id), directly or through a console session."""

    token_id: str
    session: SessionClaims | None = None  # set when the session cookie authenticated the call

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        who = f"admin token {self.token_id}"
        return f"session of {who}" if self.session is not None else who


@dataclass
class RequestContext:
    """What the interceptors learn about a call, for the ones after them and the servicer: who calls,
    until when, and the headers to answer with. No request data: the servicer passes that on
    explicitly.

    It must not keep payloads (images, a reference image). Every asyncio timer a call schedules holds
    the call's contextvars Context, so this object, and a cancelled timer stays in the event loop's
    queue until it is due or until cancelled timers outnumber live ones: with the minutes-long
    generation timeouts, the last ~50 calls' contexts (more under load) stay alive."""

    request_id: str
    method: str
    started: float  # time.monotonic()
    deadline: float  # time.monotonic() by which the answer is due
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    idempotency_key: str = ""
    principal: Principal | None = None  # set by auth
    admin: AdminCaller | None = None  # set by admin auth, on the admin API's calls
    idempotency_outcome: str = ""  # set by idempotency: owner | join | replay
    # What the generation pipeline learned, for the log line and metrics (observe.py).
    report: CallReport = field(default_factory=CallReport)
    # A streamed call's messages (set by the event stream interceptor; see service/api/events.py).
    stream: EventStream | None = None
    headers_sent: bool = False
    # How long the call waited between the edge and this worker (edge_wait.py); None when unknown.
    edge_wait_s: float | None = None

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise RuntimeError("no principal: the auth interceptor must run first")
        return self.principal

    def require_admin(self) -> AdminCaller:
        if self.admin is None:
            raise RuntimeError("no admin caller: the admin auth interceptor must run first")
        return self.admin

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", self.request_id), *self.response_headers)

    async def send_headers(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """The success headers, once: with the response, or before a stream's first message."""
        if not self.headers_sent:
            self.headers_sent = True
            await context.send_initial_metadata(self.headers())


_current: ContextVar[RequestContext] = ContextVar("mg_request_context")


def current_request() -> RequestContext:
    return _current.get()


@contextmanager
def bound(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make `ctx` the current request's context for the code inside."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@dataclass(frozen=True)
class UndecodableRequest:
    """A call's request bytes that are not a message of the method's request type, or an upload
    (api/uploads.py) that does not read: `error` then says exactly why."""

    reason: str
    error: MgError | None = None


class RequestContextInterceptor(UnaryInterceptor):
    def __init__(self, max_duration_s: float) -> None:
        self._max_duration_s = max_duration_s
        self._serving_since = time.time()  # no call the edge stamped earlier can reach this worker

    def request_deserializer(self, handler: grpc.RpcMethodHandler[Any, Any]) -> Callable[[bytes], Any] | None:
        """Bytes that do not parse become an UndecodableRequest, which error_rendering.py answers with
        a 400.
        Left to grpc.aio, a parse error is an UNKNOWN status naming the exception class, with a
        traceback in the log for every such call."""
        parse = handler.request_deserializer
        if parse is None:
            return None

        def tolerant(raw: bytes) -> Any:
            try:
                return parse(raw)
            except DecodeError as exc:
                return UndecodableRequest(str(exc))
            except MgError as exc:
                return UndecodableRequest(exc.message, exc)

        return tolerant

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        started = time.monotonic()
        # The caller's own gRPC deadline may be shorter than the gateway's maximum; never longer.
        caller_remaining = context.time_remaining()
        budget = self._max_duration_s
        if caller_remaining is not None:
            budget = min(budget, caller_remaining)
        ctx = RequestContext(str(ULID()), method, started, started + budget)
        ctx.edge_wait_s = edge_wait_s(context.invocation_metadata() or (), time.time(), self._serving_since)
        with bound(ctx):
            response = await behavior(request, context)
            # Errors must be raised before any initial metadata is sent (or their trailers are lost),
            # so success headers go out only here, with the response (or a stream's first message).
            await ctx.send_headers(context)
            return response
