"""Thumbnails of delivered images for the console's gallery (only with MG_KEEP_THUMBNAILS).

A generation's images are otherwise never kept (b64 answers) or kept only behind a signed URL the
caller was given (hosted files). An operator who wants to see what the gateway made opts in: each
delivered image is then also kept as a small WebP, in the blob store beside the hosted files
(`thumb_<request id>_<index>`), for as long as they are, and deleted by the same retention sweep.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Sequence

from service.errors import MgError
from service.hosting.blobs import Blob, BlobStore
from service.providers.base import GeneratedImage

log = logging.getLogger(__name__)

MEDIA_TYPE = "image/webp"
# Fits the gallery's tiles at twice their size (sharp on high-density screens), a few KB each.
MAX_SIDE = 256
QUALITY = 70
# Generations have at most this many images (the catalog's largest max_images).
MAX_INDEX = 16
_REQUEST_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")  # a ULID, as request ids are made


def thumbnail_id(request_id: str, index: int) -> str | None:
    """The blob id of one image's thumbnail; None for a request id or index the gateway never makes."""
    if not _REQUEST_ID.match(request_id) or not 0 <= index < MAX_INDEX:
        return None
    return f"thumb_{request_id}_{index}"


def make_thumbnail(data: bytes) -> bytes:
    """A WebP of the image, at most MAX_SIDE pixels a side (raises ValueError or OSError for an image
    Pillow cannot read). Pillow is imported on first use: a worker without thumbnails never loads it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.thumbnail((MAX_SIDE, MAX_SIDE))
            image = opened if opened.mode in ("RGB", "RGBA") else opened.convert("RGBA")
            out = io.BytesIO()
            image.save(out, "WEBP", quality=QUALITY)
            return out.getvalue()
    except Image.DecompressionBombError as exc:
        raise ValueError(str(exc)) from exc


class Thumbnails:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    async def keep(self, project_id: str, request_id: str, images: Sequence[GeneratedImage]) -> None:
        """Store a thumbnail of each image. Never fails the generation: a thumbnail that cannot be
        made or stored (a full disk) is logged and left out of the gallery."""
        for index, image in enumerate(images[:MAX_INDEX]):
            blob_id = thumbnail_id(request_id, index)
            if blob_id is None:
                return
            try:
                data = await asyncio.to_thread(make_thumbnail, image.data)
                await self._blobs.put(blob_id, Blob(data, MEDIA_TYPE, project_id, time.time()))
            except (MgError, OSError, ValueError) as exc:
                log.warning("request %s: no thumbnail kept for image %d: %s", request_id, index, exc)

    async def get(self, request_id: str, index: int) -> Blob | None:
        blob_id = thumbnail_id(request_id, index)
        return None if blob_id is None else await self._blobs.get(blob_id)
