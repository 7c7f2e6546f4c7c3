"""A full disk under each part that writes to the data dir: the SQLite store, hosted files, the
workers' metric files, and a reservation's release. Each runs on a real tmpfs filled to the last
byte (tests.support.tmpfs: root only, else skipped)."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mg.v1 import image_generation_pb2 as pb
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from ulid import ULID

from service.catalog.catalog import load_catalog
from service.data_dir import free_bytes
from service.errors import InsufficientStorage, Unavailable
from service.generation.spend import Attempt, Settlement, SpendLedger
from service.generation.validation import validate
from service.hosting.blobs import Blob, LocalBlobStore, new_blob_id
from service.stores import retry
from service.stores.base import Project
from service.stores.retry import PendingWrites
from service.stores.sqlite import SqliteStore
from tests.support.tmpfs import fill, small_disk

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def project() -> Project:
    return Project(id=f"proj_{ULID()}", name=f"p-{ULID()}", created_at=time.time())


def blob(size: int) -> Blob:
    return Blob(os.urandom(size), "image/png", "proj_a", time.time())


@pytest.fixture
async def on_small_disk(tmp_path: Path) -> AsyncIterator[tuple[Path, SqliteStore, Project]]:
    """(a 2 MB disk, a SQLite store on it, a project in the store)."""
    with small_disk(tmp_path / "disk", 2 * MIB) as disk:
        store = SqliteStore(disk / "mg.sqlite3")
        try:
            owner = project()
            await store.create_project(owner)
            yield disk, store, owner
        finally:
            await store.close()


async def test_a_full_disk_is_a_503_naming_the_store_which_recovers_with_space(
    on_small_disk: tuple[Path, SqliteStore, Project],
) -> None:
    disk, store, owner = on_small_disk
    ballast = fill(disk)
    # A write transaction whose COMMIT finds no room for its log frames.
    with pytest.raises(Unavailable, match=r"SQLite store cannot write: its disk is full"):
        await store.reserve(owner.id, "r1", 1000, None, lease_s=60)
    with pytest.raises(Unavailable, match=r"SQLite store cannot write"):
        await store.ping()  # readiness sees it: reads alone would still work
    assert (await store.spend(owner.id)).reserved_micros == 0
    ballast.unlink()
    await store.ping()  # the same connections work again
    assert await store.reserve(owner.id, "r2", 1000, None, lease_s=60)
    assert (await store.spend(owner.id)).reserved_micros == 1000


async def test_a_hosted_file_the_full_disk_cannot_take_is_a_507_and_leaves_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 2 * MIB) as disk:
        files = LocalBlobStore(disk / "files")
        kept = new_blob_id()
        await files.put(kept, blob(1000))
        ballast = fill(disk)
        os.truncate(ballast, ballast.stat().st_size - 100_000)  # room for a third of the next one
        with pytest.raises(InsufficientStorage, match="disk full"):
            await files.put(new_blob_id(), blob(300_000))
        assert sorted(os.listdir(disk / "files")) == [kept, f"{kept}.json"]  # no partial file
        stored = await files.get(kept)
        assert stored is not None and len(stored.data) == 1000  # files that exist are still served


async def test_hosted_files_leave_the_store_its_room(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 2 * MIB) as disk:
        files = LocalBlobStore(disk / "files", keep_free_bytes=free_bytes(disk) - 50_000)
        assert await files.check() == "ok"
        await files.put(new_blob_id(), blob(100_000))  # takes the free space below what is kept
        leaves_room = r"disk full \(.* free; hosted files leave .* for the store\)"
        with pytest.raises(InsufficientStorage, match=leaves_room):
            await files.put(new_blob_id(), blob(1000))
        assert (await files.check()).startswith("disk full (")
        assert len(os.listdir(disk / "files")) == 2  # the refused one wrote nothing


def test_metric_files_on_a_full_disk_do_not_kill_the_worker(tmp_path: Path) -> None:
    """prometheus_client maps its files into memory: a new series on a full disk was SIGBUS."""
    with small_disk(tmp_path / "disk", 2 * MIB) as disk:
        metrics = disk / "metrics"
        metrics.mkdir()
        record_on_a_full_disk = f"""
from pathlib import Path
from service.runtime.observability import REQUESTS
from tests.support.tmpfs import fill
def record(i):
    REQUESTS.labels("GenerateImages", f"local/model-{{i}}", "local", "acme", "OK").inc()
record(0)  # the worker's counter file exists before the disk fills
fill(Path({str(disk)!r}))
for i in range(1, 3000):  # far past the file's first size: it must grow
    record(i)
print("still running")
"""
        worker = subprocess.run(
            [sys.executable, "-c", record_on_a_full_disk],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
            cwd=REPO,  # where `service` and `tests` import from
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode == 0, (worker.returncode, worker.stderr[-2000:])
        assert "still running" in worker.stdout
        assert "cannot record some metrics" in worker.stderr
        # What fitted in the file's reserved space is there, and the files read cleanly.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics))
        recorded = {
            sample.labels["model"]
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "mg_requests_total"
        }
        assert {"local/model-0", "local/model-1"} <= recorded
        assert "local/model-2999" not in recorded  # kept in the worker's memory only


async def test_a_release_the_full_store_refuses_is_retried_until_it_lands(
    on_small_disk: tuple[Path, SqliteStore, Project],
) -> None:
    disk, store, owner = on_small_disk
    assert await store.reserve(owner.id, "r1", 40_000, None, lease_s=60)
    ballast = fill(disk)
    pending = PendingWrites(first_delay_s=0.05, max_delay_s=0.2)
    release = functools.partial(store.release, "r1", owner.id, None)
    await pending.write("release of reservation r1", release, until=time.monotonic() + 60)
    assert pending.check().startswith(
        "1 write(s) waiting for the store (release of reservation r1): The SQLite store cannot write"
    )
    assert (await store.spend(owner.id)).reserved_micros == 40_000  # held while the disk is full
    ballast.unlink()
    assert await pending.wait(timeout_s=10)
    assert pending.check() == "ok"
    assert (await store.spend(owner.id)).reserved_micros == 0


async def test_a_release_stops_being_retried_when_its_lease_is_over(
    on_small_disk: tuple[Path, SqliteStore, Project], caplog: pytest.LogCaptureFixture
) -> None:
    disk, store, owner = on_small_disk
    assert await store.reserve(owner.id, "r1", 40_000, None, lease_s=0.5)
    fill(disk)
    pending = PendingWrites(first_delay_s=0.05, max_delay_s=0.1)
    release = functools.partial(store.release, "r1", owner.id, None)
    with caplog.at_level(logging.INFO, logger="service.stores.retry"):
        await pending.write("release of reservation r1", release, until=time.monotonic() + 0.5)
        assert await pending.wait(timeout_s=5)
    assert pending.check() == "ok"
    assert "gave up writing the release of reservation r1" in caplog.text
    assert (await store.spend(owner.id)).reserved_micros == 0  # the lease lapsed: not counted


async def test_a_charge_the_full_store_refuses_is_retried_until_it_lands(
    on_small_disk: tuple[Path, SqliteStore, Project],
) -> None:
    # The provider billed it: a charge must not be dropped because the store could not write then.
    disk, store, owner = on_small_disk
    ledger = SpendLedger(store, lease_s=30)
    generation = validate(
        pb.GenerateImagesRequest(model="local/sketch", prompt="x", size="256x256"),
        load_catalog().resolve("local/sketch"),
    )
    attempt = Attempt("req_1", owner, "key_1", "", time.monotonic(), generation)
    assert await store.reserve(owner.id, "req_1", 1_000, None, lease_s=60)
    ballast = fill(disk)
    await ledger.settle(attempt, Settlement("ok", images=1, cost_micros=1_000))
    assert retry.waiting_writes().startswith("1 write(s) waiting for the store (charge of $0.001 to ")
    assert (await store.spend(owner.id)).spent_micros == 0
    ballast.unlink()
    assert await retry.PENDING.wait(timeout_s=10)
    spend = await store.spend(owner.id)
    assert (spend.spent_micros, spend.reserved_micros) == (1_000, 0)
    assert [entry.cost_micros for entry in await store.ledger(owner.id)] == [1_000]
