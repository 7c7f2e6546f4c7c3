"""The ImageGeneration servicer: thin. Each method hands its request to the part that does the work.

Everything that applies to every call (request id, auth, idempotency, rate limit, the log line) is an
interceptor; GenerateImages runs the generation pipeline; errors are raised as `MgError` and
rendered by the error interceptor.

GenerateImagesJson (the REST binding) is GenerateImages with another response serializer: the
interceptors (idempotency replays included) see one response type, ImagesResponse, whichever way
the call came, and only the bytes on the wire differ (rest_json.as_http_body).
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
from service.api.responses import images_response, models_response
from service.api.rest_json import as_http_body
from service.api.uploads import edit_reader, variation_reader
from service.catalog.catalog import Catalog
from service.generation.admission import model_allowed
from service.generation.pipeline import Caller, Pipeline
from service.hosting.urls import Hosting

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
        return images_response(delivered)

    async def EditImages(self, request: pb.EditImagesRequest, context: Context) -> pb.ImagesResponse:
        delivered = await self._pipeline.edit(request, caller(current_request()))
        return images_response(delivered)

    async def CreateImageVariations(
        self, request: pb.CreateImageVariationsRequest, context: Context
    ) -> pb.ImagesResponse:
        delivered = await self._pipeline.vary(request, caller(current_request()))
        return images_response(delivered)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        project = current_request().require_principal().project
        visible = [m for m in self._catalog if model_allowed(project, m.id)]
        return models_response(self._catalog, visible, self._available_providers)

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> httpbody_pb2.HttpBody:
        blob, valid_for_s = await self._hosting.fetch(request.id, request.exp, request.sig)
        current_request().response_headers.append(("cache-control", f"private, max-age={valid_for_s}"))
        return httpbody_pb2.HttpBody(content_type=blob.media_type, data=blob.data)


def caller(ctx: RequestContext) -> Caller:
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
    )


def add_image_generation(
    servicer: pb_grpc.ImageGenerationServicer, server: grpc.aio.Server, max_upload_file_bytes: int
) -> None:
    """The generated `add_ImageGenerationServicer_to_server`, but GenerateImagesJson runs
    GenerateImages and serializes its ImagesResponse as an HttpBody of JSON, and the REST bindings
    of edits and variations read their HttpBody upload into the typed request (api/uploads.py) and
    answer as GenerateImagesJson does."""
    handlers = {
        "GenerateImages": _unary(servicer.GenerateImages, pb.GenerateImagesRequest.FromString, _serialize),
        "GenerateImagesJson": _unary(
            servicer.GenerateImages, pb.GenerateImagesRequest.FromString, as_http_body
        ),
        "EditImages": _unary(servicer.EditImages, pb.EditImagesRequest.FromString, _serialize),
        "EditImagesHttp": _unary(servicer.EditImages, edit_reader(max_upload_file_bytes), as_http_body),
        "CreateImageVariations": _unary(
            servicer.CreateImageVariations, pb.CreateImageVariationsRequest.FromString, _serialize
        ),
        "CreateImageVariationsHttp": _unary(
            servicer.CreateImageVariations, variation_reader(max_upload_file_bytes), as_http_body
        ),
        "ListModels": _unary(servicer.ListModels, pb.ListModelsRequest.FromString, _serialize),
        "GetFile": _unary(servicer.GetFile, pb.GetFileRequest.FromString, _serialize),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _unary(
    behavior: Any, read: Callable[[bytes], Message], serialize: Callable[[Message], bytes]
) -> grpc.RpcMethodHandler[Any, Any]:
    """A unary handler: `read` makes the request message of the bytes, `serialize` the reverse."""
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=read, response_serializer=serialize
    )
