"""Thumbnails for the console's gallery: small WebPs kept beside hosted files, swept with them."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image
from ulid import ULID

from service.hosting.blobs import Blob, LocalBlobStore, new_blob_id
from service.hosting.thumbnails import MAX_SIDE, Thumbnails, make_thumbnail, thumbnail_id
from service.providers.base import GeneratedImage


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_a_thumbnail_is_a_small_webp_of_the_image() -> None:
    made = make_thumbnail(png(1024, 512))
    with Image.open(io.BytesIO(made)) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (MAX_SIDE, MAX_SIDE // 2)
    assert len(made) < 4096


def test_only_ids_the_gateway_makes_name_a_thumbnail() -> None:
    request_id = str(ULID())
    assert thumbnail_id(request_id, 0) == f"thumb_{request_id}_0"
    for bad_id, index in (
        ("../file", 0),
        (request_id + "/x", 0),
        ("", 0),
        (request_id, -1),
        (request_id, 99),
    ):
        assert thumbnail_id(bad_id, index) is None


async def test_kept_thumbnails_are_read_back_and_swept_with_hosted_files(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    thumbnails = Thumbnails(blobs)
    request_id = str(ULID())
    images = [GeneratedImage(png(64, 64), "image/png"), GeneratedImage(png(32, 32), "image/png")]
    await thumbnails.keep("proj_1", request_id, images)
    first = await thumbnails.get(request_id, 0)
    assert first is not None and first.media_type == "image/webp" and first.project_id == "proj_1"
    assert await thumbnails.get(request_id, 1) is not None
    assert await thumbnails.get(request_id, 2) is None
    file_id = new_blob_id()
    await blobs.put(file_id, Blob(b"x", "image/png", "proj_1", time.time()))
    assert await blobs.delete_older_than(time.time() + 1) == 3
    assert await thumbnails.get(request_id, 0) is None and await blobs.get(file_id) is None


async def test_an_image_that_cannot_be_read_is_left_out_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thumbnails = Thumbnails(LocalBlobStore(tmp_path))
    request_id = str(ULID())
    await thumbnails.keep("p", request_id, [GeneratedImage(b"not an image", "image/png")])
    assert await thumbnails.get(request_id, 0) is None
    assert "no thumbnail kept" in caplog.text
