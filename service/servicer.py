"""The ImageGeneration servicer: thin. Validate, generate, shape the response.

Cross-cutting concerns (request id, auth, and later rate limits, idempotency, spend) live in the
interceptors; errors are raised as `MgError` and rendered by the request-context interceptor.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api import httpbody_pb2
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.catalog import Catalog
from service.errors import NotFound
from service.generation import Generator
from service.interceptors.request_context import current_request
from service.responses import images_response, models_response
from service.validation import validate

Context = grpc.aio.ServicerContext[Any, Any]


class ImageGenerationServicer(pb_grpc.ImageGenerationServicer):
    def __init__(self, catalog: Catalog, generator: Generator, available_providers: frozenset[str]) -> None:
        self._catalog = catalog
        self._generator = generator
        self._available_providers = available_providers

    async def GenerateImages(self, request: pb.GenerateImagesRequest, context: Context) -> pb.ImagesResponse:
        generation = validate(request, self._catalog)
        result = await self._generator.generate(generation, current_request().remaining_s())
        return images_response(generation, result)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return models_response(self._catalog, self._available_providers)

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> httpbody_pb2.HttpBody:
        # Hosted URLs (response_format=url) arrive with the blob store; until then no file exists.
        raise NotFound(f"No file {request.id!r}.", param="id")
