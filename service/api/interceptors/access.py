"""Model access: the project's allowlist (glob patterns over model ids), checked first of all the
GenerateImages checks; validation of the request against the model's capabilities; and whether the
model's provider is configured at all. All before any money is reserved."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import grpc

from service.api.interceptors.base import GENERATE_ONLY, Behavior, UnaryInterceptor
from service.api.interceptors.request_context import current_request
from service.catalog.catalog import Catalog
from service.config import PROVIDER_ENV
from service.errors import ModelNotAllowed, Unavailable
from service.generation.validation import validate
from service.stores.base import Project


def model_allowed(project: Project, model_id: str) -> bool:
    return not project.allow or any(fnmatchcase(model_id, pattern) for pattern in project.allow)


class AccessInterceptor(UnaryInterceptor):
    only_methods = GENERATE_ONLY

    def __init__(self, catalog: Catalog, available_providers: frozenset[str]) -> None:
        self._catalog = catalog
        self._available = available_providers

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        ctx = current_request()
        project = ctx.require_principal().project
        model = self._catalog.resolve(request.model) if request.model else None
        if model is not None and not model_allowed(project, model.id):
            allowed = ", ".join(project.allow)
            raise ModelNotAllowed(
                f"Project {project.name!r} may not use {model.id}; its allowlist is {allowed}.", param="model"
            )
        ctx.generation = validate(request, self._catalog)
        provider = ctx.generation.model.provider
        if provider not in self._available:
            variable = PROVIDER_ENV.get(provider, (f"the {provider} API key",))[0]
            raise Unavailable(
                f"{ctx.generation.model.id} is unavailable: provider {provider!r} is not configured on this "
                f"gateway (set {variable}).",
                param="model",
                code="PROVIDER_NOT_CONFIGURED",
            )
        return await behavior(request, context)
