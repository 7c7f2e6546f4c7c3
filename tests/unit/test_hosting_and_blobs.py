from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ulid import ULID

from service.errors import Forbidden, NotFound
from service.hosting.blobs import Blob, LocalBlobStore, S3BlobStore, new_blob_id
from service.hosting.urls import Hosting, signed_query
from service.providers.base import GeneratedImage
from tests.support.s3_server import S3Server


def hosting(tmp_path: Path, key: bytes = b"k" * 32) -> Hosting:
    return Hosting(LocalBlobStore(tmp_path), key, "https://img.example", ttl_s=60)


def test_a_url_for_another_file_or_key_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        host = hosting(tmp_path)
        (url, other) = await host.host("proj_a", [GeneratedImage(b"\x89PNG\r\n\x1a\nxx")] * 2)
        file_id = url.split("/files/")[1].split("?")[0]
        blob, remaining = await host.fetch(file_id, *signed_query(url))
        assert blob.project_id == "proj_a" and 0 < remaining <= 60
        with pytest.raises(Forbidden):
            await host.fetch(file_id, *signed_query(other))
        with pytest.raises(Forbidden):
            await hosting(tmp_path, key=b"x" * 32).fetch(file_id, *signed_query(url))
        with pytest.raises(NotFound):
            await host.fetch("../../etc/passwd", *signed_query(url))

    asyncio.run(go())


class CountingBlobs(LocalBlobStore):
    """A real local store that counts reads."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.reads = 0

    async def get(self, blob_id: str) -> Blob | None:
        self.reads += 1
        return await super().get(blob_id)


def test_a_bad_signature_is_403_before_any_read_whether_or_not_the_file_exists(tmp_path: Path) -> None:
    async def go() -> None:
        blobs = CountingBlobs(tmp_path)
        host = Hosting(blobs, b"k" * 32, "https://img.example", ttl_s=60)
        (url,) = await host.host("proj_a", [GeneratedImage(b"\x89PNG\r\n\x1a\nxx")])
        known, unknown = url.split("/files/")[1].split("?")[0], new_blob_id()
        exp, sig = signed_query(url)
        answers = []
        for file_id, bad_sig, bad_exp in [
            (known, sig[:-2] + "xx", exp),  # tampered
            (unknown, sig, exp),  # another file's signature
            (known, sig, exp + 3600),  # stretched
            (unknown, sig[:-2] + "xx", int(time.time()) - 10),  # expired and bad
        ]:
            with pytest.raises(Forbidden) as caught:
                await host.fetch(file_id, bad_exp, bad_sig)
            answers.append(caught.value.message)
        assert blobs.reads == 0
        assert len(set(answers)) == 1  # the same answer, known file or not
        # a valid signature for a file that is gone (swept) is the one way to learn it is gone
        with pytest.raises(NotFound):
            await host.fetch(unknown, *signed_query(host.url(unknown)))
        assert blobs.reads == 1

    asyncio.run(go())


def test_local_sweeper_deletes_only_old_files(tmp_path: Path) -> None:
    async def go() -> None:
        store = LocalBlobStore(tmp_path)
        old, new = new_blob_id(), new_blob_id()
        await store.put(old, Blob(b"old", "image/png", "p", time.time() - 100))
        await store.put(new, Blob(b"new", "image/png", "p", time.time()))
        assert await store.delete_older_than(time.time() - 50) == 1
        assert await store.get(old) is None and (await store.get(new)) is not None

    asyncio.run(go())


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


def test_s3_store_round_trip_and_sweep(s3: S3Server) -> None:
    bucket = f"unit-{str(ULID()).lower()}"
    s3.create_bucket(bucket)

    async def go() -> None:
        store = S3BlobStore(bucket, "mg/", s3.client())
        blob_id = new_blob_id()
        await store.put(blob_id, Blob(b"\x89PNG data", "image/png", "proj_1", 123.5))
        blob = await store.get(blob_id)
        assert blob == Blob(b"\x89PNG data", "image/png", "proj_1", 123.5)
        assert await store.get(new_blob_id()) is None
        assert await store.delete_older_than(time.time() + 60) == 1
        assert await store.get(blob_id) is None

    asyncio.run(go())


def test_mg_files_sweep_deletes_old_files_and_shows_progress(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    async def seed() -> None:
        store = LocalBlobStore(tmp_path / "files")
        for age in (7200, 7200, 60):
            await store.put(new_blob_id(), Blob(b"png", "image/png", "p", time.time() - age))

    asyncio.run(seed())
    env = {**os.environ, "MG_DATA_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "service", "files", "sweep", "--older-than", "1h"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert run.stdout == "deleted 2 files older than 3600 s\n"
    assert "checked 3/3 files" in run.stderr
    assert len(list((tmp_path / "files").glob("file_*.json"))) == 1
    everything = subprocess.run(
        [sys.executable, "-m", "service", "files", "sweep", "--older-than", "0s"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert everything.stdout == "deleted 1 files older than 0 s\n"  # not "-1.2e-06 s"
