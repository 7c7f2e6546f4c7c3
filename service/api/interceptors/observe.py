"""One JSON log line and the request metrics for every call, whatever its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from service.api.interceptors.base import Behavior, UnaryInterceptor
from service.api.interceptors.request_context import RequestContext, current_request
from service.errors import MgError
from service.runtime.observability import (
    IDEMPOTENT,
    LATENCY,
    REJECTION_REASONS,
    REJECTIONS,
    REQUESTS,
    UPSTREAM_LATENCY,
)

log = logging.getLogger("mg.request")
CLIENT_CLOSED = 499  # the caller went away (nginx's convention)


class ObserveInterceptor(UnaryInterceptor):
    def __init__(self, log_prompts: bool) -> None:
        self._log_prompts = log_prompts

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        code, status = "OK", 200
        try:
            return await behavior(request, context)
        except MgError as error:
            code, status = error.code, error.kind.http_status
            raise
        except asyncio.CancelledError:
            code, status = "CANCELLED", CLIENT_CLOSED
            raise
        except Exception:
            code, status = "INTERNAL", 500
            raise
        finally:
            self._record(current_request(), method.rsplit("/", 1)[-1], request, code, status)

    def _record(self, ctx: RequestContext, method: str, request: Any, code: str, status: int) -> None:
        generation, summary, principal = ctx.generation, ctx.summary, ctx.principal
        model = generation.model.id if generation else str(getattr(request, "model", ""))
        provider = generation.model.provider if generation else ""
        project = principal.project.name if principal else ""
        elapsed = time.monotonic() - ctx.started
        REQUESTS.labels(method, model, provider, project, code).inc()
        LATENCY.labels(method, model).observe(elapsed)
        if summary is not None:
            UPSTREAM_LATENCY.labels(provider, model).observe(summary.upstream_latency_ms / 1000)
        if ctx.idempotency_outcome in ("join", "replay"):
            IDEMPOTENT.labels(ctx.idempotency_outcome).inc()
        if code in REJECTION_REASONS:
            REJECTIONS.labels(REJECTION_REASONS[code]).inc()
        fields: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": method,
            "project": project,
            "key": principal.key.prefix if principal else "",
            "model": model,
            "provider": provider,
            "status": status,
            "code": code,
            "latency_ms": round(elapsed * 1000),
            "upstream_latency_ms": summary.upstream_latency_ms if summary else None,
            "images": summary.images if summary else 0,
            "cost_usd": ctx.cost_micros / 1_000_000,
            "idempotency": ctx.idempotency_outcome,
        }
        if generation is not None:
            fields.update(n=generation.n, size=str(generation.size))
            if self._log_prompts:
                fields["prompt"] = generation.prompt
        if summary is not None and summary.warnings:
            fields["warnings"] = list(summary.warnings)
        log.info("request", extra={"fields": fields})
