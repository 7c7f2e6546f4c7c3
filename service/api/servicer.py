"""The ImageGeneration servicer: thin. Generate, shape the response.

Everything around a call (request id, auth, rate limit, model access and validation, spend) is an
interceptor; errors are raised as `MgError` and rendered by the request-context interceptor.

GenerateImagesJson (the REST binding) is GenerateImages with another response serializer: the
interceptors (idempotency replays included) see one response type, ImagesResponse, whichever way
the call came, and only the bytes on the wire differ (rest_json.as_http_body).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.message import Message
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.api.interceptors.access import model_allowed
from service.api.interceptors.request_context import current_request
from service.api.responses import images_response, models_response
from service.api.rest_json import as_http_body
from service.catalog.catalog import Catalog
from service.generation.fanout import Generator
from service.hosting.urls import Hosting

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = pb.DESCRIPTOR.services_by_name["ImageGeneration"].full_name


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
        result = await self._generator.generate(generation, ctx.upstream_remaining_s())
        ctx.summary = result.summary  # not the images: see RequestContext
        urls = None
        if generation.response_format == "url":
            urls = await self._hosting.host(ctx.require_principal().project.id, result.images)
        return await images_response(generation, result, urls)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        project = current_request().require_principal().project
        visible = [m for m in self._catalog if model_allowed(project, m.id)]
        return models_response(self._catalog, visible, self._available_providers)

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> httpbody_pb2.HttpBody:
        blob, valid_for_s = await self._hosting.fetch(request.id, request.exp, request.sig)
        current_request().response_headers.append(("cache-control", f"private, max-age={valid_for_s}"))
        return httpbody_pb2.HttpBody(content_type=blob.media_type, data=blob.data)


def add_image_generation(servicer: pb_grpc.ImageGenerationServicer, server: grpc.aio.Server) -> None:
    """The generated `add_ImageGenerationServicer_to_server`, but GenerateImagesJson runs
    GenerateImages and serializes its ImagesResponse as an HttpBody of JSON."""
    handlers = {
        "GenerateImages": _unary(servicer.GenerateImages, pb.GenerateImagesRequest, _serialize),
        "GenerateImagesJson": _unary(servicer.GenerateImages, pb.GenerateImagesRequest, as_http_body),
        "ListModels": _unary(servicer.ListModels, pb.ListModelsRequest, _serialize),
        "GetFile": _unary(servicer.GetFile, pb.GetFileRequest, _serialize),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _unary(
    behavior: Any, request_type: type[Message], serialize: Callable[[Message], bytes]
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=request_type.FromString, response_serializer=serialize
    )
