"""The ImageGeneration servicer: thin. Each method hands its request to the part that does the work.

Everything that applies to every call (request id, auth, idempotency, rate limit, the log line) is an
interceptor; GenerateImages runs the generation pipeline; errors are raised as `MgError` and
rendered by the error interceptor.

GenerateImagesStream (gRPC) and GenerateImagesJson (the REST binding, streamed or not) are
GenerateImages written as a stream: the interceptors (idempotency replays included) see one response
type, ImagesResponse, whichever way the call came; the event stream interceptor writes it, and the
partial images the pipeline hands it, in the method's encoding (service/api/events.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.message import Message
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.api.interceptors.request_context import RequestContext, current_request
from service.api.responses import alias_entry, images_response, model_entry, models_response, route_entry
from service.api.rest_json import as_http_body
from service.api.uploads import edit_reader, variation_reader
from service.catalog.catalog import Catalog, ModelSpec
from service.generation.admission import model_allowed, resolve_allowed
from service.generation.pipeline import Caller, Delivered, Pipeline
from service.generation.routing import SERVED_BY_HEADER
from service.generation.validation import GenerationRequest
from service.hosting.urls import Hosting
from service.providers.base import PartialImage
from service.stores.base import Project

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = pb.DESCRIPTOR.services_by_name["ImageGeneration"].full_name


class ImageGenerationServicer(pb_grpc.ImageGenerationServicer):
    def __init__(
        self, catalog: Catalog, pipeline: Pipeline, available_providers: Collection[str], hosting: Hosting
    ) -> None:
        self._catalog = catalog
        self._pipeline = pipeline
        self._available_providers = available_providers
        self._hosting = hosting

    async def GenerateImages(self, request: pb.GenerateImagesRequest, context: Context) -> pb.ImagesResponse:
        delivered = await self._pipeline.run(request, caller(current_request()))
        return answer(delivered)

    async def GenerateImagesStream(
        self, request: pb.GenerateImagesRequest, context: Context
    ) -> pb.ImagesResponse:
        """The core of the streamed methods: the response, with partial images handed to the call's
        event stream as they come (when it streams events)."""
        ctx = current_request()
        on_partial = ctx.stream.partial_sink() if ctx.stream is not None else None
        delivered = await self._pipeline.run(request, caller(ctx, on_partial))
        return answer(delivered)

    async def EditImages(self, request: pb.EditImagesRequest, context: Context) -> pb.ImagesResponse:
        delivered = await self._pipeline.edit(request, caller(current_request()))
        return answer(delivered)

    async def CreateImageVariations(
        self, request: pb.CreateImageVariationsRequest, context: Context
    ) -> pb.ImagesResponse:
        delivered = await self._pipeline.vary(request, caller(current_request()))
        return answer(delivered)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        project = current_request().require_principal().project
        visible = [m for m in self._catalog if model_allowed(project, m.id)]
        return models_response(self._catalog, visible, self._available_providers, self._routes(project))

    def _routes(self, project: Project) -> list[tuple[str, tuple[ModelSpec, ...]]]:
        """The routes the project may use, with the targets it may use (those it would try)."""
        routes = []
        for name, targets in self._catalog.routes():
            allowed = tuple(target for target in targets if model_allowed(project, target.id))
            if model_allowed(project, name) and allowed:
                routes.append((name, allowed))
        return routes

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        project = current_request().require_principal().project
        for name, targets in self._routes(project):
            if name == request.id:
                return route_entry(self._catalog, name, targets, self._available_providers)
        model = resolve_allowed(self._catalog, project, request.id, self._available_providers)
        if request.id in self._catalog.aliases_of(model.id):
            return alias_entry(self._catalog, request.id, model, self._available_providers)
        return model_entry(self._catalog, model, self._available_providers)

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> httpbody_pb2.HttpBody:
        blob, valid_for_s = await self._hosting.fetch(request.id, request.exp, request.sig)
        current_request().response_headers.append(("cache-control", f"private, max-age={valid_for_s}"))
        return httpbody_pb2.HttpBody(content_type=blob.media_type, data=blob.data)


def answer(delivered: Delivered) -> pb.ImagesResponse:
    """The response, and the header naming the model that made its images (a route's target)."""
    current_request().response_headers.append((SERVED_BY_HEADER, delivered.request.model.id))
    return images_response(delivered)


def caller(
    ctx: RequestContext, on_partial: Callable[[GenerationRequest, PartialImage], None] | None = None
) -> Caller:
    """The pipeline's view of the call. The owner of an idempotency key waits for the work itself:
    the idempotency interceptor answers its caller at the deadline and keeps the result."""
    principal = ctx.require_principal()
    return Caller(
        project=principal.project,
        key_id=principal.key.id,
        request_id=ctx.request_id,
        started=ctx.started,
        answer_by=None if ctx.idempotency_outcome == "owner" else ctx.deadline,
        idempotency_key=ctx.idempotency_key,
        report=ctx.report,
        on_partial=on_partial,
    )


def add_image_generation(
    servicer: pb_grpc.ImageGenerationServicer, server: grpc.aio.Server, max_upload_file_bytes: int
) -> None:
    """The generated `add_ImageGenerationServicer_to_server`, but the streamed methods (the REST
    binding of generations among them) run GenerateImagesStream, whose messages the event stream
    interceptor writes already serialized, and the REST bindings of edits and variations read their
    HttpBody upload into the typed request (api/uploads.py) and answer with an HttpBody of JSON."""
    handlers = {
        "GenerateImages": _unary(servicer.GenerateImages, pb.GenerateImagesRequest.FromString, _serialize),
        "GenerateImagesStream": _streamed(servicer.GenerateImagesStream),
        "GenerateImagesJson": _streamed(servicer.GenerateImagesStream),
        "EditImages": _unary(servicer.EditImages, pb.EditImagesRequest.FromString, _serialize),
        "EditImagesHttp": _unary(servicer.EditImages, edit_reader(max_upload_file_bytes), as_http_body),
        "CreateImageVariations": _unary(
            servicer.CreateImageVariations, pb.CreateImageVariationsRequest.FromString, _serialize
        ),
        "CreateImageVariationsHttp": _unary(
            servicer.CreateImageVariations, variation_reader(max_upload_file_bytes), as_http_body
        ),
        "ListModels": _unary(servicer.ListModels, pb.ListModelsRequest.FromString, _serialize),
        "GetModel": _unary(servicer.GetModel, pb.GetModelRequest.FromString, _serialize),
        "GetFile": _unary(servicer.GetFile, pb.GetFileRequest.FromString, _serialize),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _streamed(behavior: Any) -> grpc.RpcMethodHandler[Any, Any]:
    # A coroutine: grpc.aio's reader/writer style, so the interceptors can wrap it as one call.
    return grpc.unary_stream_rpc_method_handler(
        behavior, request_deserializer=pb.GenerateImagesRequest.FromString, response_serializer=_as_written
    )


def _as_written(message: bytes) -> bytes:
    return message


def _unary(
    behavior: Any, read: Callable[[bytes], Message], serialize: Callable[[Message], bytes]
) -> grpc.RpcMethodHandler[Any, Any]:
    """A unary handler: `read` makes the request message of the bytes, `serialize` the reverse."""
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=read, response_serializer=serialize
    )
