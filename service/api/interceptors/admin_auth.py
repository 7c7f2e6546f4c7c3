"""Admin authentication: the admin API's calls (and only those) need the admin token.

Either `Authorization: Bearer <admin token>`, or the console's session cookie (admin_session.py),
with the session's CSRF value in `x-mg-csrf` on every call that changes something. Project API keys
are not admin tokens and never pass here; the image API's own auth (auth.py) skips these calls, and
an admin token is not an API key there. With no admin token configured the admin API does not exist
for callers: every call is 404. Nothing here logs or echoes what was presented.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api import annotations_pb2
from mg.v1 import admin_pb2

from service.admin_session import CSRF_HEADER, AdminSessions, cookie_header_of
from service.api.interceptors.base import ADMIN_PREFIX, Behavior, UnaryInterceptor
from service.api.interceptors.request_context import AdminCaller, current_request
from service.errors import Forbidden, NotFound, Unauthenticated

_ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
ADMIN_METHODS = frozenset(ADMIN_PREFIX + m.name for m in _ADMIN_SERVICE.methods)
# Calls that change nothing (bound to GET): the session cookie alone is enough for them.
READ_METHODS = frozenset(
    ADMIN_PREFIX + m.name
    for m in _ADMIN_SERVICE.methods
    if m.GetOptions().Extensions[annotations_pb2.http].get
)
# A session is made from the admin token itself, never from another session.
TOKEN_ONLY_METHODS = frozenset({ADMIN_PREFIX + "CreateSession"})

ADMIN_API_OFF = (
    "The admin API is off on this gateway: no admin token is configured "
    "(set MG_ADMIN_TOKEN, or admin_token_sha256 in the config file)."
)
MISSING_ADMIN_CREDENTIALS = (
    "Missing admin credentials: send 'Authorization: Bearer <admin token>', or sign in to the "
    "console (POST /v1/admin/session)."
)
INVALID_ADMIN_TOKEN = "Invalid admin token. (Project API keys do not open the admin API.)"


class AdminAuthInterceptor(UnaryInterceptor):
    only_methods = ADMIN_METHODS

    def __init__(self, sessions: AdminSessions | None) -> None:
        self._sessions = sessions

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        if self._sessions is None:
            raise NotFound(ADMIN_API_OFF)
        metadata = tuple(context.invocation_metadata() or ())
        current_request().admin = authenticate(
            self._sessions,
            metadata,
            change=method not in READ_METHODS,
            token_only=method in TOKEN_ONLY_METHODS,
        )
        return await behavior(request, context)


def authenticate(
    sessions: AdminSessions,
    metadata: tuple[tuple[str, str | bytes], ...],
    *,
    change: bool,
    token_only: bool = False,
) -> AdminCaller:
    """The admin behind a call: by the admin token, or by the console's session cookie, which a call
    that changes something must back with the session's CSRF value. The console's own reads
    (service/console/admin_check.py) are checked here too."""
    authorization = [str(v) for k, v in metadata if k == "authorization"]
    if authorization:
        scheme, _, token = authorization[0].partition(" ")
        if scheme.lower() != "bearer" or not sessions.token.matches(token.strip()):
            raise Unauthenticated(INVALID_ADMIN_TOKEN)
        return AdminCaller(sessions.token.id)
    if token_only:
        raise Unauthenticated("Signing in needs the admin token: send 'Authorization: Bearer <admin token>'.")
    claims = sessions.verify_cookie_header(cookie_header_of(metadata))
    if claims is None:
        raise Unauthenticated(MISSING_ADMIN_CREDENTIALS)
    if change:
        presented = [str(v) for k, v in metadata if k == CSRF_HEADER]
        if not presented or not sessions.csrf_ok(claims, presented[0]):
            raise Forbidden(
                f"A change made with the console's session needs its CSRF value in the {CSRF_HEADER} "
                "header (the csrf_token POST /v1/admin/session answered)."
            )
    return AdminCaller(claims.token_id, claims)
