"""Streamed calls: the call's EventStream, and its final message once the chain below returns.

Everything below (error rendering, observe, auth, idempotency, rate limit, the servicer) sees a
streamed call as one call returning its ImagesResponse; the servicer hands the pipeline the
stream's partial-image sink, and this writes the response at the end (as the completed event, or as
the one JSON body of a REST call that did not ask to stream). So a replayed or joined idempotent
call, which never reaches the servicer, is answered as a stream holding the completed event.
It sits right inside the request context, outside error rendering, which ends a stream already
under way with an error event (see service/api/events.py).
"""

from __future__ import annotations

from typing import Any

import grpc

from service.api.events import EventStream, encoding_for
from service.api.interceptors.base import STREAMED, Behavior, UnaryInterceptor
from service.api.interceptors.request_context import current_request


class EventStreamInterceptor(UnaryInterceptor):
    only_methods = STREAMED

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        ctx = current_request()
        stream = EventStream(context, ctx, encoding_for(method, request))
        ctx.stream = stream
        try:
            response = await behavior(request, context)
            if response is not None:  # (None: an error event ended the stream)
                await stream.finish(response)
            return response
        finally:
            stream.close()
            # The stream and the request context refer to each other: left so, the pair (and the
            # gRPC context and messages the stream holds) would wait for the cyclic collector, which
            # runs rarely (server.py's GC_THRESHOLDS), instead of going as the call ends.
            ctx.stream = None
