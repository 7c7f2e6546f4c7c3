"""What the admin API reads that the generation path writes: who holds a reservation (the list of
generations in flight), the prompt in the ledger only where MG_LOG_PROMPTS allows it, and the
SQLite store's upgrade of a file made before those columns existed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from mg.v1 import image_generation_pb2 as pb

from service.admin import AdminError, parse_since
from service.generation.spend import PROMPT_EXTRA, Attempt, Settlement, SpendLedger
from service.generation.validation import validate
from service.stores.base import Project, ReservationHolder
from service.stores.sqlite import SqliteStore
from tests.support.pipeline import CATALOG

OWNER = Project("proj_1", "p", 0.0)


def attempt(request_id: str, prompt: str = "a <b>cat</b>") -> Attempt:
    request = pb.GenerateImagesRequest(model="local/sketch", prompt=prompt, size="256x256")
    return Attempt(
        request_id, OWNER, "key_1", "", time.monotonic(), validate(request, CATALOG.resolve("local/sketch"))
    )


@pytest.mark.parametrize("keep_prompts", [False, True])
async def test_the_prompt_is_in_the_ledger_only_where_prompts_may_be_kept(
    tmp_path: Path, keep_prompts: bool
) -> None:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    ledger = SpendLedger(store, lease_s=30, keep_prompts=keep_prompts)
    try:
        await store.create_project(OWNER)
        for request_id, settle in (("req_ok", True), ("req_failed", False)):
            async with ledger.reserved(attempt(request_id), 1_000):
                if settle:
                    await ledger.settle(attempt(request_id), Settlement("ok", images=1, cost_micros=1_000))
                else:
                    await ledger.release(attempt(request_id), Settlement("UPSTREAM_ERROR"))
        entries = await store.ledger(OWNER.id)
        expected = ["a <b>cat</b>"] * 2 if keep_prompts else [None, None]
        assert [e.extra.get(PROMPT_EXTRA) for e in entries] == expected
    finally:
        await store.close()


async def test_a_reservation_is_listed_with_its_key_and_model_while_held(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    ledger = SpendLedger(store, lease_s=30)
    try:
        await store.create_project(OWNER)
        before = time.time()
        async with ledger.reserved(attempt("req_1"), 1_234):
            (held,) = await store.in_flight()
            assert (held.reservation_id, held.project_id, held.key_id, held.model, held.amount_micros) == (
                "req_1", OWNER.id, "key_1", "local/sketch", 1_234
            )  # fmt: skip
            assert before <= held.started_at <= time.time()
            await ledger.release(attempt("req_1"), Settlement("CANCELLED"))
        assert await store.in_flight() == []
    finally:
        await store.close()


OLD_RESERVATIONS = """
CREATE TABLE reservations (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, amount_micros INTEGER NOT NULL, expires_at REAL NOT NULL
)
"""


async def test_a_store_file_from_before_the_admin_api_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "mg.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute(OLD_RESERVATIONS)
        old.execute("INSERT INTO reservations VALUES ('old', 'proj_1', 5, ?)", (time.time() + 60,))
    store = SqliteStore(path)
    try:
        assert await store.reserve(
            "proj_1", "new", 7, None, 60, ReservationHolder("key_2", "local/sketch", 1.0)
        )
        listed = {(g.reservation_id, g.key_id, g.model, g.amount_micros) for g in await store.in_flight()}
        assert listed == {("old", "", "", 5), ("new", "key_2", "local/sketch", 7)}
    finally:
        await store.close()
    reopened = SqliteStore(path)  # a second start finds the columns there
    try:
        assert len(await reopened.in_flight()) == 2
    finally:
        await reopened.close()


def test_times_may_be_seconds_since_the_epoch() -> None:
    assert parse_since("1796585163.25") == 1796585163.25
    assert parse_since("1796585163") == 1796585163.0
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    for bad in ("12", "1e9", "-1796585163", "1796585163.", "soon"):
        with pytest.raises(AdminError):
            parse_since(bad)
