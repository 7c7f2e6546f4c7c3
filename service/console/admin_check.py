"""Who may read the console's data that is not the Admin service's own (thumbnails, the catalog):
the admin, by the admin token or the console's session cookie, as the admin API checks them
(service/api/interceptors/admin_auth.py, whose messages these are). Only reads are served here, so
no CSRF value is asked for."""

from __future__ import annotations

from typing import Any

import grpc

from service.admin_session import AdminSessions, cookie_header_of
from service.api.interceptors.admin_auth import ADMIN_API_OFF, INVALID_ADMIN_TOKEN, MISSING_ADMIN_CREDENTIALS
from service.errors import NotFound, Unauthenticated


class AdminReadCheck:
    def __init__(self, sessions: AdminSessions | None) -> None:
        self._sessions = sessions  # None: no admin token is configured, so there is no admin

    async def __call__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._sessions is None:
            raise NotFound(ADMIN_API_OFF)
        metadata = tuple(context.invocation_metadata() or ())
        authorization = [str(v) for k, v in metadata if k == "authorization"]
        if authorization:
            scheme, _, token = authorization[0].partition(" ")
            if scheme.lower() != "bearer" or not self._sessions.token.matches(token.strip()):
                raise Unauthenticated(INVALID_ADMIN_TOKEN)
            return
        if self._sessions.verify_cookie_header(cookie_header_of(metadata)) is None:
            raise Unauthenticated(MISSING_ADMIN_CREDENTIALS)
