"""Joining an in-flight call, in one process (awaiting its task) and across processes (polling the
store), with the real interceptor and a real SQLite store; the behaviour is scripted to fail late."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from mg.v1 import image_generation_pb2 as pb
from ulid import ULID

from service.api.interceptors.idempotency import IdempotencyInterceptor
from service.api.interceptors.request_context import Principal, RequestContext, bound
from service.errors import UpstreamError
from service.hosting.blobs import LocalBlobStore
from service.hosting.urls import Hosting
from service.stores.base import ApiKey, Project
from service.stores.sqlite import SqliteStore

PRINCIPAL = Principal(ApiKey("key_1", "proj_1", "h", "mg_live_x", 0.0), Project("proj_1", "p", 0.0))
METHOD = "/mg.v1.ImageGeneration/GenerateImages"


class Context:
    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("x-mg-idempotency-key", "order-7")]


class FailingLate:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: Any, context: Any) -> pb.ImagesResponse:
        self.calls += 1
        await asyncio.sleep(0.3)
        raise UpstreamError("provider exploded")


async def call(interceptor: IdempotencyInterceptor, behavior: FailingLate) -> BaseException | None:
    now = time.monotonic()
    with bound(RequestContext(str(ULID()), METHOD, now, now + 10, principal=PRINCIPAL)):
        try:
            await interceptor.around(behavior, pb.GenerateImagesRequest(prompt="x"), Context(), METHOD)  # type: ignore[arg-type]
        except BaseException as exc:
            return exc
    return None


def interceptor(store: SqliteStore) -> IdempotencyInterceptor:
    hosting = Hosting(LocalBlobStore(Path("/nonexistent")), b"key", "http://gateway", ttl_s=60)
    return IdempotencyInterceptor(store, lease_s=5, retention_s=60, hosting=hosting)


@pytest.fixture
async def stores(tmp_path: Path) -> Any:
    opened = [SqliteStore(tmp_path / "s.sqlite3"), SqliteStore(tmp_path / "s.sqlite3")]
    yield opened
    for store in opened:
        await store.close()


async def test_joiners_in_one_process_get_the_owners_error(stores: list[SqliteStore]) -> None:
    shared, behavior = interceptor(stores[0]), FailingLate()
    errors = await asyncio.gather(*(call(shared, behavior) for _ in range(5)))
    assert behavior.calls == 1
    assert all(isinstance(e, UpstreamError) and e.message == "provider exploded" for e in errors)


async def test_joiners_in_another_process_get_the_owners_error(stores: list[SqliteStore]) -> None:
    owner, other = interceptor(stores[0]), interceptor(stores[1])
    owner_behavior, other_behavior = FailingLate(), FailingLate()
    owner_call = asyncio.create_task(call(owner, owner_behavior))
    await asyncio.sleep(0.05)  # the owner has claimed the key
    joined = await call(other, other_behavior)
    assert isinstance(await owner_call, UpstreamError)
    assert isinstance(joined, UpstreamError) and joined.message == "provider exploded"
    assert (owner_behavior.calls, other_behavior.calls) == (1, 0)
