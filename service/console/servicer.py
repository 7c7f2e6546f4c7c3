"""The Console service: the console's files at /console, and the gallery's thumbnails.

Both answer a `google.api.HttpBody` that Envoy's transcoder sends as the HTTP body, with the headers
the call's context gathers (as GetFile does for hosted images). Everything the pages show comes from
the Admin API; these methods hand out no data but the thumbnails, which need the admin's session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc
from google.api import httpbody_pb2
from mg.v1 import console_pb2 as pb
from mg.v1 import console_pb2_grpc as pb_grpc
from mg.v1.image_generation_pb2 import ListModelsResponse

from service.api.interceptors.request_context import current_request
from service.api.responses import models_response
from service.catalog.catalog import Catalog
from service.console.files import SECURITY_HEADERS, ConsoleFiles
from service.errors import NotFound
from service.hosting.thumbnails import Thumbnails

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = pb.DESCRIPTOR.services_by_name["Console"].full_name
# The console's data (thumbnails, the catalog) is the admin's: these calls need no API key (the
# auth interceptor's PUBLIC_METHODS) and are checked against the admin's session by `require_admin`.
ADMIN_READ_METHODS = frozenset({f"/{SERVICE}/GetThumbnail", f"/{SERVICE}/ListCatalog"})
OFF = "The console is turned off on this gateway (MG_CONSOLE=false)."

# Raises Unauthenticated unless the call carries the admin's console session (or admin token).
AdminCheck = Callable[[Context], Awaitable[None]]


class ConsoleServicer(pb_grpc.ConsoleServicer):
    def __init__(
        self,
        files: ConsoleFiles | None,
        thumbnails: Thumbnails | None,
        require_admin: AdminCheck,
        catalog: Catalog,
        available_providers: Collection[str],
    ) -> None:
        self._files = files  # None: the console is off
        self._thumbnails = thumbnails  # None: MG_KEEP_THUMBNAILS is off
        self._require_admin = require_admin
        self._catalog = catalog
        self._available_providers = available_providers

    async def GetConsoleFile(
        self, request: pb.GetConsoleFileRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        if self._files is None:
            raise NotFound(OFF)
        file = self._files.get(request.path)
        if file is None:
            raise NotFound(f"The console has no file {request.path!r}.", param="path")
        headers = current_request().response_headers
        headers.extend(SECURITY_HEADERS)
        headers.append(("cache-control", file.cache_control))
        return httpbody_pb2.HttpBody(content_type=file.media_type, data=file.data)

    async def ListCatalog(self, request: pb.ListCatalogRequest, context: Context) -> ListModelsResponse:
        if self._files is None:
            raise NotFound(OFF)
        await self._require_admin(context)
        return models_response(
            self._catalog, self._catalog, self._available_providers, self._catalog.routes()
        )

    async def GetThumbnail(self, request: pb.GetThumbnailRequest, context: Context) -> httpbody_pb2.HttpBody:
        if self._files is None:
            raise NotFound(OFF)
        await self._require_admin(context)
        blob = await self._thumbnails.get(request.request_id, request.index) if self._thumbnails else None
        if blob is None:
            raise NotFound(f"No thumbnail {request.index} of request {request.request_id!r}.")
        headers = current_request().response_headers
        headers.extend(SECURITY_HEADERS)
        # Only the signed-in browser may keep it, and not past the retention of the image.
        headers.append(("cache-control", "private, max-age=3600"))
        return httpbody_pb2.HttpBody(content_type=blob.media_type, data=blob.data)


def add_console(servicer: ConsoleServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_ConsoleServicer_to_server(servicer, server)
