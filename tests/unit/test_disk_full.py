"""A full disk under each part that writes to the data dir. Each runs on a real tmpfs filled to
the last byte (tests.support.tmpfs: root only, else skipped)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ulid import ULID

from service.errors import Unavailable
from service.stores.base import Project
from service.stores.sqlite import SqliteStore
from tests.support.tmpfs import fill, small_disk

MIB = 1024 * 1024


def project() -> Project:
    return Project(id=f"proj_{ULID()}", name=f"p-{ULID()}", created_at=time.time())


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
