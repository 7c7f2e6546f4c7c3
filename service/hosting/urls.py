"""Gateway-hosted image URLs: images go to the blob store and come back as HMAC-signed, expiring
URLs served by GetFile (`/v1/files/{id}?exp=..&sig=..`).

The signature covers the file id and the expiry, so a URL cannot be stretched or moved to another
file (ids are made by the gateway, unique, and each belongs to the one project whose request made
it). It is checked first, in constant time, before anything is read: a URL with a bad signature is
a 403 whether or not the file exists, so a caller cannot probe which ids exist, nor make the
gateway read a file it has not been given a URL for. Only a validly signed URL can learn that its
file is gone (404, e.g. after the retention). Replays of an idempotent request get freshly signed
URLs to the same stored bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import parse_qs, urlsplit

from mg.v1 import image_generation_pb2 as pb

from service.config import Settings
from service.data_dir import create_private_once
from service.errors import Forbidden, NotFound
from service.hosting.blobs import Blob, BlobStore, new_blob_id, valid_blob_id
from service.providers.base import GeneratedImage

SIGNING_KEY_FILE = "url-signing-key"
# Ties a signature to its use: a MAC made for anything else with the same key never passes as one.
SIGNED_PURPOSE = "mg-file-url"


def signing_key(settings: Settings) -> bytes:
    """MG_URL_SIGNING_KEY, or a key generated once in the data dir (shared by its workers)."""
    if settings.url_signing_key:
        return settings.url_signing_key.encode()
    path = settings.data_dir / SIGNING_KEY_FILE
    if not path.exists():
        create_private_once(path, secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


class Hosting:
    def __init__(self, blobs: BlobStore, key: bytes, public_url: str, ttl_s: float) -> None:
        self._blobs = blobs
        self._key = key
        self._public_url = public_url
        self._ttl_s = ttl_s

    def _signature(self, file_id: str, exp: int) -> str:
        # Only what the URL itself carries: the signature must be checkable before any read.
        digest = hmac.new(self._key, f"{SIGNED_PURPOSE}:{file_id}:{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def url(self, file_id: str) -> str:
        exp = int(time.time() + self._ttl_s)
        return f"{self._public_url}/v1/files/{file_id}?exp={exp}&sig={self._signature(file_id, exp)}"

    async def host(self, project_id: str, images: list[GeneratedImage]) -> list[str]:
        urls = []
        for image in images:
            file_id = new_blob_id()
            await self._blobs.put(file_id, Blob(image.data, image.media_type, project_id, time.time()))
            urls.append(self.url(file_id))
        return urls

    def resign(self, response: pb.ImagesResponse) -> pb.ImagesResponse:
        """The same response with every hosted URL signed afresh (same files, new expiry)."""
        fresh = pb.ImagesResponse()
        fresh.CopyFrom(response)
        for image in fresh.data:
            if image.url:
                image.url = self.url(urlsplit(image.url).path.rsplit("/", 1)[-1])
        return fresh

    async def fetch(self, file_id: str, exp: int, sig: str) -> tuple[Blob, int]:
        """(the file, seconds its URL stays valid) for a signed request; 403 / 404 otherwise."""
        if not valid_blob_id(file_id):  # not an id the gateway makes: says nothing of what exists
            raise NotFound(f"No file {file_id!r}.", param="id")
        if not hmac.compare_digest(sig.encode(), self._signature(file_id, exp).encode()):
            raise Forbidden("This file URL's signature is not valid.")
        remaining = exp - int(time.time())
        if remaining <= 0:
            raise Forbidden("This file URL has expired; request the image again for a fresh URL.")
        blob = await self._blobs.get(file_id)  # only now: the URL is one the gateway gave out
        if blob is None:
            raise NotFound(f"No file {file_id!r}.", param="id")
        return blob, remaining


def signed_query(url: str) -> tuple[int, str]:
    """(exp, sig) of a hosted URL, for tests and tools."""
    query = parse_qs(urlsplit(url).query)
    return int(query["exp"][0]), query["sig"][0]
