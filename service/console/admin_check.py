"""Who may read the console's data that is not the Admin service's own (thumbnails, the catalog):
the admin, by the admin token or the console's session cookie, as the admin API checks them
(service/api/interceptors/admin_auth.py's `authenticate`). Only reads are served here, so
no CSRF value is asked for."""

from __future__ import annotations

from typing import Any

import grpc

from service.admin_session import AdminSessions
from service.api.interceptors.admin_auth import ADMIN_API_OFF, authenticate
from service.errors import NotFound


class AdminReadCheck:
    def __init__(self, sessions: AdminSessions | None) -> None:
        self._sessions = sessions  # None: no admin token is configured, so there is no admin

    async def __call__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._sessions is None:
            raise NotFound(ADMIN_API_OFF)
        authenticate(self._sessions, tuple(context.invocation_metadata() or ()), change=False)
