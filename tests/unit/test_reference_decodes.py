"""Reference-image decodes: one check, and at most one more shared by every call of a fanned-out
request (a tiny file can hold a picture of many megapixels, so a decode per call multiplied a
worker's memory by `n`); never more than the worker's decode slots at once."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from mg.v1 import image_generation_pb2 as pb
from PIL import Image, ImageFile

from service.catalog.catalog import load_catalog
from service.generation.fanout import Generator
from service.generation.reference_images import (
    DecodeSlots,
    ReferenceImage,
    ReferenceLimits,
    load_reference,
)
from service.generation.validation import validate
from service.providers.local import LocalProvider
from tests.fakes.base import png

CATALOG = load_catalog()
LIMITS = ReferenceLimits(max_bytes=1_000_000, max_pixels=4096 * 4096, timeout_s=5)


class Decodes:
    """Counts Pillow's pixel decodes (ImageFile.load on a file not yet loaded), and how many ran at once."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.count = 0
        self.running = 0
        self.most_at_once = 0
        self._hold_s = hold_s
        self._lock = threading.Lock()

    def wrap(self, load):
        def counted(image: ImageFile.ImageFile):
            if not image.tile:  # decoded already: load() only returns its pixels
                return load(image)
            with self._lock:
                self.count += 1
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                time.sleep(self._hold_s)
                return load(image)
            finally:
                with self._lock:
                    self.running -= 1

        return counted


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Decodes]:
    counter = Decodes()
    monkeypatch.setattr(ImageFile.ImageFile, "load", counter.wrap(ImageFile.ImageFile.load))
    yield counter


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("n", [1, 8])
def test_the_calls_of_a_fanned_out_request_share_one_decode(decodes: Decodes, n: int) -> None:
    """local/canvas makes one image per upstream call: n=8 is 8 calls. They once decoded the picture
    once per image (1 + 8 decodes); now 1 to check it and 1 shared, whatever n is."""

    async def go() -> list[bytes]:
        reference = await load_reference(b64(png(600, 400)), LIMITS)
        request = pb.GenerateImagesRequest(model="local/canvas", prompt="over it", n=n, size="128x128")
        generation = replace(validate(request, CATALOG.resolve(request.model)), reference=reference)
        result = await Generator({"local": LocalProvider()}, fanout_concurrency=4).generate(generation, 30)
        return [image.data for image in result.images]

    images = asyncio.run(go())
    assert len(images) == n and len(set(images)) == n
    assert decodes.count == 2


def test_a_re_encoding_is_shared_by_the_calls_that_need_it(decodes: Decodes) -> None:
    out = io.BytesIO()
    Image.new("RGB", (30, 20), "red").save(out, format="GIF")
    gif = ReferenceImage(out.getvalue(), "image/gif", 30, 20)

    async def calls() -> list[tuple[bytes, str]]:  # as the adapters of 4 fanned-out calls ask, on threads
        return await asyncio.gather(*(asyncio.to_thread(gif.in_formats, ("image/png",)) for _ in range(4)))

    answers = asyncio.run(calls())
    assert len(set(answers)) == 1 and answers[0][1] == "image/png"
    assert Image.open(io.BytesIO(answers[0][0])).mode == "RGBA"
    assert decodes.count == 1


def test_a_worker_runs_no_more_decodes_at_once_than_its_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Decodes(hold_s=0.05)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counter.wrap(ImageFile.ImageFile.load))
    one_at_a_time = replace(LIMITS, decodes=DecodeSlots(1))

    async def go() -> None:
        await asyncio.gather(*(load_reference(b64(png(64, 64)), one_at_a_time) for _ in range(6)))

    asyncio.run(go())
    assert counter.count == 6 and counter.most_at_once == 1


def test_a_cancelled_call_does_not_cancel_the_decode_the_others_share() -> None:
    slots = DecodeSlots(1)
    reference = ReferenceImage(png(40, 30), "image/png", 40, 30, slots)
    release = threading.Event()

    async def go() -> tuple[int, int]:
        busy = slots.submit(release.wait)  # the only slot is taken: the shared decode waits in line
        first = asyncio.create_task(reference.scaled_rgb(20, 15))
        second = asyncio.create_task(reference.scaled_rgb(20, 15))
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.sleep(0.05)  # the cancellation lands while the decode still waits for its slot
        release.set()
        image = await second
        await asyncio.wrap_future(busy)
        return image.size

    assert asyncio.run(go()) == (20, 15)
