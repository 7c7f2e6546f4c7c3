"""One JSON log line and the request metrics for every call, whatever its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from service.api.interceptors.base import Behavior, UnaryInterceptor
from service.api.interceptors.request_context import RequestContext, current_request
from service.catalog.catalog import Catalog
from service.errors import MgError
from service.runtime.observability import (
    EDGE_WAIT,
    IDEMPOTENT,
    LATENCY,
    REJECTION_REASONS,
    REJECTIONS,
    REQUESTS,
    UPSTREAM_LATENCY,
)

log = logging.getLogger("mg.request")
CLIENT_CLOSED = 499  # the caller went away (nginx's convention)
# A model name that did not resolve is the caller's text: the log line keeps only this much of it.
MAX_LOGGED_MODEL_CHARS = 100


class ObserveInterceptor(UnaryInterceptor):
    def __init__(self, log_prompts: bool, catalog: Catalog) -> None:
        self._log_prompts = log_prompts
        self._catalog = catalog

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
        report, principal = ctx.report, ctx.principal
        requested: str = getattr(request, "model", "")
        # Labels only ever carry catalog ids (a bounded set), never the caller's text: a call refused
        # before the pipeline ran (401, 429, a replay) is labelled with the model its name resolves
        # to, if any.
        known = self._catalog.find(requested) if requested and not report.model else None
        model = report.model or (known.id if known else "unknown")
        provider = report.provider or (known.provider if known else "")
        project = principal.project.name if principal else ""
        elapsed = time.monotonic() - ctx.started
        REQUESTS.labels(method, model, provider, project, code).inc()
        LATENCY.labels(method, model).observe(elapsed)
        if ctx.edge_wait_s is not None:
            EDGE_WAIT.labels(method).observe(ctx.edge_wait_s)
        if report.upstream_latency_ms is not None:
            UPSTREAM_LATENCY.labels(provider, model).observe(report.upstream_latency_ms / 1000)
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
            "upstream_latency_ms": report.upstream_latency_ms,
            "edge_wait_ms": None if ctx.edge_wait_s is None else round(ctx.edge_wait_s * 1000, 1),
            "images": report.images,
            "cost_usd": report.cost_micros / 1_000_000,
            "idempotency": ctx.idempotency_outcome,
        }
        if requested and known is None and not report.model:
            fields["requested_model"] = requested[:MAX_LOGGED_MODEL_CHARS]
        if report.model:  # the pipeline admitted the request
            fields.update(n=report.n, size=report.size)
            if self._log_prompts:
                fields["prompt"] = report.prompt
        if report.warnings:
            fields["warnings"] = [str(warning) for warning in report.warnings]
        if report.attempts:  # a route: every target, skipped or tried, in order
            fields["attempts"] = [str(attempt) for attempt in report.attempts]
        log.info("request", extra={"fields": fields})
