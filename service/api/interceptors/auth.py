"""Authentication: `Authorization: Bearer mg_live_...` -> the key and its project.

Every image API call needs it except the public ones (hosted files, whose signed URL is their own
credential, health and the API document); the admin API's calls have their own credential
(admin_auth.py) and skip this one, so a key never opens them. Keys and their project are looked up on
every call (no cache), so a revoked key, or every key of an archived project, stops working at once on
every replica.
"""

from __future__ import annotations

from typing import Any

import grpc

from service.api.interceptors.base import Behavior, UnaryInterceptor
from service.api.interceptors.request_context import Principal, current_request
from service.errors import MISSING_KEY, Unauthenticated
from service.keys import hash_key, looks_like_key
from service.stores.base import Store

# Hosted files are fetched by browsers and <img> tags; their URL signature is the credential.
# The console's files hold no data; its thumbnails are checked against the admin's session there.
PUBLIC_METHODS = frozenset(
    {
        "/mg.v1.ImageGeneration/GetFile",
        "/mg.v1.Operations/Liveness",
        "/mg.v1.Operations/Readiness",
        "/mg.v1.Operations/ApiDocument",
        "/mg.v1.Console/GetConsoleFile",
        "/mg.v1.Console/GetThumbnail",
        "/mg.v1.Console/ListCatalog",
    }
)
INVALID_KEY = "Invalid API key. Keys look like 'mg_live_...'; create one with `mg keys create`."


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if not values:
        raise Unauthenticated(MISSING_KEY)
    scheme, _, token = str(values[0]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Malformed Authorization header; expected 'Bearer <your mg API key>'.")
    return token.strip()


class AuthInterceptor(UnaryInterceptor):
    except_methods = PUBLIC_METHODS
    image_api_only = True

    def __init__(self, store: Store) -> None:
        self._store = store

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        token = bearer_token(context)
        if not looks_like_key(token):
            raise Unauthenticated(INVALID_KEY)
        key = await self._store.find_key(hash_key(token))
        if key is None:
            raise Unauthenticated(INVALID_KEY)
        if key.revoked_at is not None:
            raise Unauthenticated(f"The API key {key.prefix}... has been revoked.")
        project = await self._store.get_project_by_id(key.project_id)
        if project is None:
            raise Unauthenticated(f"The API key {key.prefix}... belongs to no project.")
        if project.archived_at is not None:
            raise Unauthenticated(
                f"The API key {key.prefix}... belongs to project {project.name!r}, which is archived "
                f"(`mg projects unarchive {project.name}` restores it)."
            )
        current_request().principal = Principal(key, project)
        return await behavior(request, context)
