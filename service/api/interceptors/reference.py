"""Reference images: fetched (safely), decoded and checked before any money is reserved, so a bad
image is a clean 400 that changes nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc

from service.api.interceptors.base import GENERATE_ONLY, Behavior, UnaryInterceptor
from service.api.interceptors.request_context import current_request
from service.generation.reference_images import ReferenceLimits, load_reference


class ReferenceImageInterceptor(UnaryInterceptor):
    only_methods = GENERATE_ONLY

    def __init__(self, limits: ReferenceLimits) -> None:
        self._limits = limits

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        if not request.reference_image:  # validation checked that the model takes one
            return await behavior(request, context)
        ctx = current_request()
        generation = ctx.require_generation()
        try:
            ctx.generation = replace(
                generation, reference=await load_reference(request.reference_image, self._limits)
            )
            return await behavior(request, context)
        finally:
            # Spent once the call below is done: the context must not keep it (see RequestContext).
            ctx.generation = generation
