"""A finished call leaves no image behind in its request context.

Every asyncio timer a call schedules (the generation timeout, the HTTP client's) keeps the call's
contextvars Context, so its RequestContext, and a cancelled timer stays in the event loop's queue
until it is due: minutes, for generation timeouts. Anything the RequestContext holds lives that
long. These tests run a call through the real servicer and generation pipeline (local provider,
SQLite store, real timers) and look for image payloads still alive once the call is over, while the
loop that ran it is still running (as a worker's is).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mg.v1 import image_generation_pb2 as pb
from ulid import ULID

from service.api.interceptors.request_context import Principal, RequestContext, bound
from service.api.servicer import ImageGenerationServicer
from service.generation.reference_images import ReferenceImage
from service.hosting.blobs import LocalBlobStore
from service.hosting.urls import Hosting
from service.providers.base import GeneratedImage
from service.stores.base import ApiKey, Project
from tests.fakes.base import png
from tests.support.pipeline import CATALOG, build_pipeline

PRINCIPAL = Principal(ApiKey("key_1", "proj_1", "h", "mg_live_x", 0.0), Project("proj_1", "p", 0.0))
METHOD = "/mg.v1.ImageGeneration/GenerateImages"


def alive(kind: type, data: set[bytes]) -> list[Any]:
    """Objects of `kind` holding one of these payloads that something still refers to (other tests
    may leave objects of the same kinds behind; these payloads are this test's own)."""
    gc.collect()  # garbage does not count
    return [o for o in gc.get_objects() if isinstance(o, kind) and getattr(o, "data", None) in data]


@pytest.fixture(autouse=True)
async def earlier_timer() -> AsyncIterator[None]:
    """A live timer due before the calls' timeouts, as a serving worker has (other calls' timers):
    the loop drops cancelled timers only from the front of its queue, so with none before them
    the cancelled ones would go as soon as the loop turns (the first prompt count does, waiting
    for the vocabulary to load)."""
    handle = asyncio.get_running_loop().call_later(60, lambda: None)
    yield
    handle.cancel()


async def generate(request: pb.GenerateImagesRequest, tmp_path: Path) -> tuple[RequestContext, set[bytes]]:
    pipeline, store = build_pipeline(tmp_path)
    servicer = ImageGenerationServicer(
        catalog=CATALOG,
        pipeline=pipeline,
        available_providers=frozenset({"local"}),
        hosting=Hosting(LocalBlobStore(tmp_path), b"key", "http://gateway", ttl_s=60),
    )
    now = time.monotonic()
    ctx = RequestContext(str(ULID()), METHOD, now, now + 300, principal=PRINCIPAL)
    try:
        with bound(ctx):
            response = await servicer.GenerateImages(request, None)  # type: ignore[arg-type]
    finally:
        await store.close()
    assert len(response.data) == request.n
    return ctx, {image.b64_json for image in response.data}


async def test_images_are_not_kept_by_the_context_of_a_finished_call(tmp_path: Path) -> None:
    # a prompt of its own: the local provider's images depend on it, so no other test makes these
    request = pb.GenerateImagesRequest(model="local/sketch", prompt=f"a fox {ULID()}", n=3, size="256x256")
    ctx, images = await generate(request, tmp_path)
    # The generation timeout was cancelled, and its timer still holds the call's context.
    loop = asyncio.get_running_loop()
    assert any(h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
    assert ctx.report.images == 3
    assert alive(GeneratedImage, images) == []


async def test_the_reference_image_is_dropped_once_the_call_is_done(tmp_path: Path) -> None:
    reference = png(64, 64, color=(17, 171, 91))  # a payload no other test makes
    request = pb.GenerateImagesRequest(
        model="local/canvas",
        prompt="a fox",
        n=1,
        size="256x256",
        reference_image=base64.b64encode(reference).decode(),
    )
    _, images = await generate(request, tmp_path)
    assert alive(ReferenceImage, {reference}) == [] and alive(GeneratedImage, images) == []
