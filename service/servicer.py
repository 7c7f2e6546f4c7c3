"""The ImageGeneration servicer: thin. Generate, shape the response.

Everything around a call (request id, auth, rate limit, model access and validation, spend) is an
interceptor; errors are raised as `MgError` and rendered by the request-context interceptor.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.catalog import Catalog
from service.generation import Generator
from service.hosting import Hosting
from service.interceptors.access import model_allowed
from service.interceptors.request_context import current_request
from service.responses import images_response, models_response

Context = grpc.aio.ServicerContext[Any, Any]


class ImageGenerationServicer(pb_grpc.ImageGenerationServicer):
    def __init__(
        self, catalog: Catalog, generator: Generator, available_providers: frozenset[str], hosting: Hosting
    ) -> None:
        self._catalog = catalog
        self._generator = generator
        self._available_providers = available_providers
        self._hosting = hosting

    async def GenerateImages(self, request: pb.GenerateImagesRequest, context: Context) -> pb.ImagesResponse:
        ctx = current_request()
        generation = ctx.require_generation()  # validated (and paid for) by the interceptors
        ctx.result = await self._generator.generate(generation, ctx.upstream_remaining_s())
        urls = None
        if generation.response_format == "url":
            urls = await self._hosting.host(ctx.require_principal().project.id, ctx.result.images)
        return images_response(generation, ctx.result, urls)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        project = current_request().require_principal().project
        visible = [m for m in self._catalog if model_allowed(project, m.id)]
        return models_response(self._catalog, visible, self._available_providers)

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> httpbody_pb2.HttpBody:
        blob, valid_for_s = await self._hosting.fetch(request.id, request.exp, request.sig)
        current_request().response_headers.append(("cache-control", f"private, max-age={valid_for_s}"))
        return httpbody_pb2.HttpBody(content_type=blob.media_type, data=blob.data)
