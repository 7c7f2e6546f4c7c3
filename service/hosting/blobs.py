"""Where generated images are kept for hosted URLs and replays: a local directory, or S3-compatible
object storage (so every replica serves every image).

Each blob is stored with its media type, owning project and creation time; a sweeper deletes blobs
past the retention. Blob ids are opaque (`file_<ULID>`) and never derived from caller input.

The local directory shares its disk with the SQLite store (both in MG_DATA_DIR), and b64 answers,
which store no file, still need the store to write. So files leave room for it: while the disk
has less than MG_FILES_KEEP_FREE_BYTES free, a hosted file is refused (507 INSUFFICIENT_STORAGE)
without being written, and readiness says "disk full" for files only.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ulid import ULID

from service.config import Settings
from service.data_dir import free_bytes, human_bytes, private_dir, write_private
from service.errors import InsufficientStorage, Unavailable

_BLOB_ID = re.compile(r"^file_[0-9A-HJKMNP-TV-Z]{26}$")
# The metadata files the retention sweep looks at.
SWEPT = ("file_*.json", "thumb_*.json")


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str
    project_id: str
    created_at: float


def new_blob_id() -> str:
    return f"file_{ULID()}"


def valid_blob_id(blob_id: str) -> bool:
    return bool(_BLOB_ID.match(blob_id))


# (files checked so far, files to check): for a progress line during long sweeps
Progress = Callable[[int, int], None]


class BlobStore(Protocol):
    async def put(self, blob_id: str, blob: Blob) -> None: ...
    async def get(self, blob_id: str) -> Blob | None: ...
    async def delete_older_than(self, cutoff: float, progress: Progress | None = None) -> int: ...
    async def check(self) -> str:
        """Either "ok" or why hosted files cannot be written now (for readiness)."""
        ...


class LocalBlobStore:
    """Files under one directory: `<id>` holds the bytes, `<id>.json` the metadata (written last,
    so a blob without metadata is incomplete and invisible)."""

    def __init__(self, directory: Path, keep_free_bytes: int = 0) -> None:
        self._dir = directory
        self._keep_free_bytes = keep_free_bytes

    def _space_problem(self) -> str | None:
        free = free_bytes(self._dir)
        if free <= self._keep_free_bytes:
            kept = human_bytes(self._keep_free_bytes)
            return f"disk full ({human_bytes(free)} free; hosted files leave {kept} for the store)"
        return None

    def _put(self, blob_id: str, blob: Blob) -> None:
        problem = self._space_problem()
        if problem is not None:
            raise _not_stored(problem)
        data_path = self._dir / blob_id
        temporary = self._dir / f".{blob_id}.json.tmp"
        meta = {"media_type": blob.media_type, "project_id": blob.project_id, "created_at": blob.created_at}
        try:
            private_dir(self._dir)
            write_private(data_path, blob.data)
            write_private(temporary, json.dumps(meta).encode())
            os.replace(temporary, self._dir / f"{blob_id}.json")
        except OSError as exc:
            # What was written of it is no file anyone can get: give the space back.
            data_path.unlink(missing_ok=True)
            temporary.unlink(missing_ok=True)
            reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
            raise _not_stored(reason) from exc

    def _get(self, blob_id: str) -> Blob | None:
        try:
            meta = json.loads((self._dir / f"{blob_id}.json").read_text())
            data = (self._dir / blob_id).read_bytes()
        except FileNotFoundError:
            return None
        return Blob(data, meta["media_type"], meta["project_id"], meta["created_at"])

    def _sweep(self, cutoff: float, progress: Progress | None) -> int:
        removed = 0
        # Hosted files, and the console's thumbnails kept beside them (service/console/thumbnails.py).
        candidates = [path for pattern in SWEPT for path in self._dir.glob(pattern)]
        for checked, meta_path in enumerate(candidates, 1):
            try:
                if json.loads(meta_path.read_text())["created_at"] < cutoff:
                    meta_path.unlink(missing_ok=True)
                    (self._dir / meta_path.name.removesuffix(".json")).unlink(missing_ok=True)
                    removed += 1
            except (OSError, ValueError, KeyError):
                continue
            finally:
                if progress is not None and (checked % 200 == 0 or checked == len(candidates)):
                    progress(checked, len(candidates))
        return removed

    async def put(self, blob_id: str, blob: Blob) -> None:
        await asyncio.to_thread(self._put, blob_id, blob)

    async def get(self, blob_id: str) -> Blob | None:
        return await asyncio.to_thread(self._get, blob_id)

    async def delete_older_than(self, cutoff: float, progress: Progress | None = None) -> int:
        return await asyncio.to_thread(self._sweep, cutoff, progress) if self._dir.exists() else 0

    async def check(self) -> str:
        return await asyncio.to_thread(self._space_problem) or "ok"


def _not_stored(reason: str) -> InsufficientStorage:
    return InsufficientStorage(
        f"The image could not be stored for a hosted URL: {reason}. Ask for response_format "
        '"b64_json", which needs no file, or retry later.'
    )


class S3BlobStore:
    """An S3-compatible bucket (AWS S3, MinIO, R2, ...), through boto3 on worker threads."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        import boto3  # only deployments that use S3 pay for importing it
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            # empty: boto3's usual credential chain (instance role, ~/.aws, ...)
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30
            ),
        )
        return cls(settings.s3_bucket, settings.s3_prefix, client)

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self._client, operation), **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise Unavailable(f"Object storage refused {operation}: {exc}") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"Object storage is unavailable: {exc}") from exc

    async def put(self, blob_id: str, blob: Blob) -> None:
        metadata = {"project-id": blob.project_id, "created-at": repr(blob.created_at)}
        await self._call(
            "put_object",
            Bucket=self._bucket,
            Key=self._prefix + blob_id,
            Body=blob.data,
            ContentType=blob.media_type,
            Metadata=metadata,
        )

    async def get(self, blob_id: str) -> Blob | None:
        reply = await self._call("get_object", Bucket=self._bucket, Key=self._prefix + blob_id)
        if reply is None:
            return None
        data = await asyncio.to_thread(reply["Body"].read)
        meta = reply.get("Metadata", {})
        return Blob(
            data, reply["ContentType"], meta.get("project-id", ""), float(meta.get("created-at", "0"))
        )

    async def check(self) -> str:
        return "ok"  # object storage has no disk of ours to fill; its failures are 503s as they come

    async def delete_older_than(self, cutoff: float, progress: Progress | None = None) -> int:
        removed = 0
        paginator = self._client.get_paginator("list_objects_v2")
        pages = await asyncio.to_thread(
            lambda: list(paginator.paginate(Bucket=self._bucket, Prefix=self._prefix))
        )
        stale = [
            {"Key": item["Key"]}
            for page in pages
            for item in page.get("Contents", [])
            if item["LastModified"].timestamp() < cutoff
        ]
        for start in range(0, len(stale), 1000):
            await self._call(
                "delete_objects", Bucket=self._bucket, Delete={"Objects": stale[start : start + 1000]}
            )
            removed += len(stale[start : start + 1000])
            if progress is not None:
                progress(removed, len(stale))
        return removed


def open_blob_store(settings: Settings) -> BlobStore:
    if settings.s3_bucket:
        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(settings.data_dir / "files", settings.files_keep_free_bytes)


async def sweep_forever(blobs: BlobStore, retention_s: float, interval_s: float = 600.0) -> None:
    """Delete blobs past the retention, now and then (every worker may run it: deletes are idempotent)."""
    while True:
        await blobs.delete_older_than(time.time() - retention_s)
        await asyncio.sleep(interval_s)
