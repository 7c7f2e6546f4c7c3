"""Per-key requests-per-minute, shared by every worker process and replica through the store.

Every answer carries OpenAI's rate-limit headers; a refused call is 429 with Retry-After.
"""

from __future__ import annotations

import math
from typing import Any

import grpc

from service.api.interceptors.auth import PUBLIC_METHODS
from service.api.interceptors.base import Behavior, UnaryInterceptor
from service.api.interceptors.request_context import current_request
from service.errors import RateLimited
from service.stores.base import RateDecision, Store


def rate_limit_headers(decision: RateDecision) -> list[tuple[str, str]]:
    return [
        ("x-ratelimit-limit-requests", str(decision.limit)),
        ("x-ratelimit-remaining-requests", str(decision.remaining)),
        ("x-ratelimit-reset-requests", f"{math.ceil(decision.reset_s)}s"),
    ]


class RateLimitInterceptor(UnaryInterceptor):
    except_methods = PUBLIC_METHODS
    image_api_only = True

    def __init__(self, store: Store, default_rpm: int) -> None:
        self._store = store
        self._default_rpm = default_rpm

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        ctx = current_request()
        principal = ctx.require_principal()
        limit = principal.project.rpm or self._default_rpm
        decision = await self._store.hit_rate_limit(principal.key.id, limit)
        ctx.response_headers.extend(rate_limit_headers(decision))
        if not decision.allowed:
            retry_after = max(1, math.ceil(decision.retry_after_s))
            raise RateLimited(
                f"Rate limit of {limit} requests per minute reached for key {principal.key.prefix}...; "
                f"retry in {retry_after} s.",
                retry_after_s=retry_after,
            )
        return await behavior(request, context)
