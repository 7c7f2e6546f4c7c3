"""Authentication: every mg API call but GetFile (signed URLs) needs `Authorization: Bearer <key>`.

Until projects and keys exist (enforcement issue), any well-formed bearer token is accepted; the
header itself is already required, so clients are written correctly from the start.
"""

from __future__ import annotations

from typing import Any

import grpc

from service.errors import Unauthenticated
from service.interceptors.base import Behavior, UnaryInterceptor

# Hosted files are fetched by browsers and <img> tags; their URL signature is the credential.
PUBLIC_METHODS = frozenset({"/mg.v1.ImageGeneration/GetFile"})


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if not values:
        raise Unauthenticated(
            "Missing Authorization header; send 'Authorization: Bearer <your mg API key>'.",
        )
    scheme, _, token = str(values[0]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Malformed Authorization header; expected 'Bearer <your mg API key>'.")
    return token.strip()


class AuthInterceptor(UnaryInterceptor):
    def applies_to(self, method: str) -> bool:
        return super().applies_to(method) and method not in PUBLIC_METHODS

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        bearer_token(context)
        return await behavior(request, context)
