"""The Admin service: the admin API's gRPC surface (REST under /v1/admin/ through Envoy).

Thin, like servicer.py: each method reads its request, calls the admin operation (service/admin.py,
the same functions the `mg` command runs) and prints the answer. Who is calling was settled by the
admin auth interceptor; its actor is what the audit log records.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from mg.v1 import admin_pb2 as pb
from mg.v1 import admin_pb2_grpc as pb_grpc

from service import admin
from service.admin_session import AdminSessions, set_cookie
from service.api.interceptors.request_context import current_request
from service.errors import BadRequest, NotFound
from service.generation.spend import PROMPT_EXTRA
from service.stores.base import ApiKey, AuditEntry, Store

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def _usd(micros: int) -> float:
    return micros / 1_000_000


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(
        self, store: Store, sessions: AdminSessions | None, default_rpm: int, public_url: str
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._default_rpm = default_rpm
        self._public_url = public_url

    # --- sessions

    async def CreateSession(self, request: pb.CreateSessionRequest, context: Context) -> pb.AdminSession:
        # (the admin auth interceptor answers 404 before any call when there are no sessions)
        sessions = self._sessions
        assert sessions is not None
        value, claims = sessions.issue()
        secure = self._over_tls(context)
        current_request().response_headers.append(
            ("set-cookie", set_cookie(value, int(sessions.ttl_s), secure=secure))
        )
        return pb.AdminSession(
            csrf_token=sessions.csrf_token(claims), expires_at=claims.expires_at, token_id=claims.token_id
        )

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: Context
    ) -> pb.DeleteSessionResponse:
        current_request().response_headers.append(
            ("set-cookie", set_cookie("", 0, secure=self._over_tls(context)))
        )
        return pb.DeleteSessionResponse()

    def _over_tls(self, context: Context) -> bool:
        """Whether the browser reached the gateway over TLS: a TLS-terminating proxy in front says so
        in x-forwarded-proto; MG_PUBLIC_URL says so for every request."""
        forwarded = [str(v) for k, v in context.invocation_metadata() or () if k == "x-forwarded-proto"]
        return self._public_url.startswith("https://") or (
            bool(forwarded) and forwarded[0].lower() == "https"
        )

    # --- projects

    def _project(self, row: admin.ProjectSpend) -> pb.AdminProject:
        p, spend = row.project, row.spend
        message = pb.AdminProject(
            id=p.id,
            name=p.name,
            created_at=p.created_at,
            allow=list(p.allow),
            default_rpm=self._default_rpm,
            spent_micros=spend.spent_micros,
            spent_usd=_usd(spend.spent_micros),
            reserved_micros=spend.reserved_micros,
            reserved_usd=_usd(spend.reserved_micros),
        )
        if p.budget_micros is not None:
            message.budget_micros = p.budget_micros
            message.budget_usd = _usd(p.budget_micros)
        if p.rpm is not None:
            message.rpm = p.rpm
        if p.budget_period:
            message.budget_period = p.budget_period
            message.period_start = spend.period_start
            message.renews_at = spend.renews_at
        return message

    async def ListProjects(
        self, request: pb.ListProjectsRequest, context: Context
    ) -> pb.ListProjectsResponse:
        rows = await _run(admin.projects_with_spend(self._store))
        return pb.ListProjectsResponse(projects=[self._project(row) for row in rows])

    async def GetProject(self, request: pb.GetProjectRequest, context: Context) -> pb.AdminProject:
        (row,) = await _run(admin.projects_with_spend(self._store, request.name))
        return self._project(row)

    async def CreateProject(self, request: pb.CreateProjectRequest, context: Context) -> pb.AdminProject:
        project = await _run(
            admin.create_project(
                self._store,
                request.name,
                request.budget_usd if request.HasField("budget_usd") else None,
                list(request.allow),
                request.rpm if request.HasField("rpm") else None,
                actor=_actor(),
                period=request.budget_period,
            )
        )
        return await self.GetProject(pb.GetProjectRequest(name=project.name), context)

    async def UpdateProject(self, request: pb.UpdateProjectRequest, context: Context) -> pb.AdminProject:
        if request.no_budget and request.HasField("budget_usd"):
            raise BadRequest("Give budget_usd or no_budget, not both.", param="no_budget")
        allow = list(request.allow.patterns) if request.HasField("allow") else None
        await _run(
            admin.update_project(
                self._store,
                request.name,
                budget_usd=request.budget_usd if request.HasField("budget_usd") else None,
                no_budget=request.no_budget,
                allow=allow,
                allow_all=allow == [],
                rpm=request.rpm if request.HasField("rpm") else None,
                period=request.budget_period if request.HasField("budget_period") else None,
                actor=_actor(),
            )
        )
        return await self.GetProject(pb.GetProjectRequest(name=request.name), context)

    # --- keys

    @staticmethod
    def _key(key: ApiKey, project: str) -> pb.AdminKey:
        message = pb.AdminKey(
            id=key.id,
            project_id=key.project_id,
            project=project,
            prefix=key.prefix,
            created_at=key.created_at,
        )
        if key.revoked_at is not None:
            message.revoked_at = key.revoked_at
        return message

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        rows = await _run(admin.list_keys(self._store, request.project or None))
        return pb.ListKeysResponse(keys=[self._key(row.key, row.project) for row in rows])

    async def CreateKey(self, request: pb.CreateKeyRequest, context: Context) -> pb.CreatedKey:
        if not request.project:
            raise BadRequest("project is required: the name of the project the key is for.", param="project")
        token, key = await _run(admin.create_key(self._store, request.project, actor=_actor()))
        return pb.CreatedKey(key=token, record=self._key(key, request.project))

    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: Context) -> pb.AdminKey:
        if not request.id.startswith("key_"):
            raise BadRequest("id must be a key id (key_...), as ListKeys shows it.", param="id")
        row = await _run(admin.revoke_key(self._store, request.id, actor=_actor()))
        return self._key(row.key, row.project)

    # --- usage, ledger, in flight, audit

    async def GetUsage(self, request: pb.UsageRequest, context: Context) -> pb.UsageResponse:
        since = _run_sync(admin.parse_since, request.since) if request.since else None
        rows = await _run(admin.usage(self._store, request.project or None, since, by_day=request.by_day))
        return pb.UsageResponse(
            rows=[
                pb.UsageRow(
                    project=r.project,
                    model=r.model,
                    day=r.day,
                    requests=r.requests,
                    failed=r.failed,
                    images=r.images,
                    cost_micros=r.cost_micros,
                    cost_usd=_usd(r.cost_micros),
                    input_tokens=r.input_tokens,
                )
                for r in rows
            ]
        )

    async def ListLedger(self, request: pb.LedgerRequest, context: Context) -> pb.LedgerResponse:
        rows, cursor = await _run(
            admin.ledger_page(
                self._store,
                project=request.project,
                model=request.model,
                outcome=request.outcome,
                since=request.since,
                until=request.until,
                size=request.page_size,
                cursor=request.page_token,
            )
        )
        entries = []
        for row in rows:
            e = row.entry
            message = pb.LedgerRow(
                request_id=e.request_id,
                project_id=e.project_id,
                project=row.project,
                key_id=e.key_id,
                model=e.model,
                provider=e.provider,
                n_requested=e.n_requested,
                images_returned=e.images_returned,
                size=e.size,
                quality=e.quality,
                cost_micros=e.cost_micros,
                cost_usd=_usd(e.cost_micros),
                input_tokens=e.input_tokens,
                upstream_latency_ms=e.upstream_latency_ms,
                outcome=e.outcome,
                created_at=e.created_at,
                idempotency_key=e.idempotency_key,
                upstream_request_id=e.upstream_request_id,
            )
            if PROMPT_EXTRA in e.extra:
                message.prompt = e.extra[PROMPT_EXTRA]
            entries.append(message)
        return pb.LedgerResponse(entries=entries, next_page_token=cursor)

    async def ListInFlight(self, request: pb.InFlightRequest, context: Context) -> pb.InFlightResponse:
        rows = await _run(admin.in_flight(self._store))
        return pb.InFlightResponse(
            generations=[
                pb.InFlightGeneration(
                    request_id=r.generation.reservation_id,
                    project_id=r.generation.project_id,
                    project=r.project,
                    key_id=r.generation.key_id,
                    model=r.generation.model,
                    reserved_micros=r.generation.amount_micros,
                    reserved_usd=_usd(r.generation.amount_micros),
                    started_at=r.generation.started_at,
                )
                for r in rows
            ]
        )

    async def ListAudit(self, request: pb.AuditRequest, context: Context) -> pb.AuditResponse:
        entries, cursor = await _run(admin.audit_page(self._store, request.page_size, request.page_token))
        return pb.AuditResponse(entries=[_audit_entry(e) for e in entries], next_page_token=cursor)


def _audit_entry(entry: AuditEntry) -> pb.AuditEntry:
    return pb.AuditEntry(
        id=entry.id,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        detail=entry.detail,
    )


def _actor() -> str:
    return current_request().require_admin().actor


def _error(exc: admin.AdminError) -> BadRequest | NotFound:
    """An admin operation's refusal as the caller's error: 404 for what does not exist, else 400."""
    message = str(exc)
    message = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
    return NotFound(message) if isinstance(exc, admin.NotFoundError) else BadRequest(message)


async def _run(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except admin.AdminError as exc:
        raise _error(exc) from None


def _run_sync(function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except admin.AdminError as exc:
        raise _error(exc) from None


def add_admin(server: grpc.aio.Server, servicer: AdminServicer) -> None:
    pb_grpc.add_AdminServicer_to_server(servicer, server)
