"""Error rendering: any exception raised below becomes the caller-visible error.

`MgError`s are rendered through `service.errors` (the only place errors are rendered, for gRPC and
REST callers at once); anything else is a bug, logged with the request id and answered as INTERNAL
without detail. Request bytes that did not parse (see request_context.UndecodableRequest) are a 400.
It sits right inside the request context (and a streamed call's event stream), so every interceptor
below sees the raw exceptions. A stream already under way ends with an `error` event instead
(service/api/events.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from service.api.interceptors.base import Behavior, UnaryInterceptor
from service.api.interceptors.request_context import RequestContext, UndecodableRequest, current_request
from service.errors import BadRequest, Internal, MgError, to_grpc_status

log = logging.getLogger(__name__)


class ErrorRenderingInterceptor(UnaryInterceptor):
    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        ctx = current_request()
        try:
            if isinstance(request, UndecodableRequest):
                raise request.error or BadRequest(
                    f"The request is not a valid protobuf message: {request.reason}"
                )
            return await behavior(request, context)
        except MgError as error:
            await _abort(context, error, ctx)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unhandled error in %s (request %s)", method, ctx.request_id)
            await _abort(context, Internal("Internal error; the request id identifies it in the logs."), ctx)
        return None  # a stream that an error event ended


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: MgError, ctx: RequestContext) -> None:
    """The error as the call's status, or, for a stream whose first message has gone, as its last
    event where the encoding has one (REST: the HTTP status has been sent with the first event)."""
    if ctx.stream is not None and await ctx.stream.end_with(error):
        return
    code, message, trailing = to_grpc_status(error, ctx.headers())
    await context.abort(code, message, trailing)
