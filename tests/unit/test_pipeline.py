"""The generation pipeline's money rules, driven in-process on a real SQLite store.

Once anything was sent upstream the project pays what the provider bills: a caller that leaves does
not cancel the work, which completes in the background and is settled at its real cost; calls that
never answer are charged at their bound; calls not yet sent when the caller left are never sent.
A charge never exceeds the reservation, whatever the provider reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mg.v1 import image_generation_pb2 as pb
from prometheus_client import REGISTRY

from service.catalog.catalog import load_catalog
from service.errors import BudgetExceeded, UpstreamError, UpstreamTimeout
from service.generation.pipeline import Pipeline
from service.generation.report import CallReport
from service.generation.spend import RENEW_BATCH, Attempt, SpendLedger
from service.generation.validation import validate
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult, ProviderUsage
from service.providers.local import LocalProvider
from service.stores.base import HeldReservation, LedgerEntry, Project
from service.stores.sqlite import SqliteStore
from tests.fakes.base import png
from tests.support.pipeline import CATALOG, a_caller, build_pipeline

SKETCH_MICROS = 1000  # local/sketch's price per image
CANVAS_MICROS = 2000


@dataclass
class GatedProvider:
    """Answers each call once `gate` is set (never, if it stays clear), reporting `usage`."""

    name: str = "local"
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    usage: ProviderUsage | None = None
    calls: list[ImageCall] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        self.calls.append(call)
        self.called.set()
        await self.gate.wait()
        images = [GeneratedImage(png(8, 8)) for _ in range(call.n)]
        return ImageCallResult(images, usage=self.usage, upstream_request_id=f"up-{len(self.calls)}")

    async def aclose(self) -> None:
        return None


def sketch(n: int = 1, **fields: Any) -> pb.GenerateImagesRequest:
    return pb.GenerateImagesRequest(model="local/sketch", prompt="a cat", n=n, size="256x256", **fields)


async def ledger(store: SqliteStore, project: Project) -> list[LedgerEntry]:
    return await store.ledger(project.id)


async def test_a_caller_that_leaves_after_the_call_was_sent_pays_for_what_completes(tmp_path: Path) -> None:
    provider = GatedProvider()
    pipeline, store = build_pipeline(tmp_path, {"local": provider})
    project = Project("proj_1", "p", 0.0, budget_micros=10_000)
    try:
        call = asyncio.create_task(pipeline.run(sketch(), a_caller(project)))
        await provider.called.wait()
        call.cancel()  # the caller disconnects while the provider works
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await store.spend(project.id)).reserved_micros == SKETCH_MICROS  # still held
        provider.gate.set()
        await pipeline.drain(5)
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.images_returned, entry.cost_micros) == ("ok", 1, SKETCH_MICROS)
        assert entry.upstream_request_id == "up-1"
        spend = await store.spend(project.id)
        assert (spend.spent_micros, spend.reserved_micros) == (SKETCH_MICROS, 0)
    finally:
        await store.close()


async def test_a_caller_past_its_deadline_gets_a_504_and_the_work_is_charged_when_done(
    tmp_path: Path,
) -> None:
    provider = GatedProvider()
    pipeline, store = build_pipeline(tmp_path, {"local": provider})
    project = Project("proj_1", "p", 0.0)
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await pipeline.run(sketch(n=2), a_caller(project, wait_s=0.2))
        assert "idempotency key" in caught.value.message
        provider.gate.set()
        await pipeline.drain(5)
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.images_returned, entry.cost_micros) == ("ok", 2, 2 * SKETCH_MICROS)
        # no one can be given the URLs of a response no one receives: nothing was hosted
        assert not (tmp_path / "files").exists() or not any((tmp_path / "files").rglob("*.png"))
    finally:
        await store.close()


async def test_calls_not_yet_sent_when_the_caller_leaves_are_never_sent_nor_charged(tmp_path: Path) -> None:
    provider = GatedProvider()
    # local/canvas makes one image per upstream call: n=3 is three calls, one at a time here
    pipeline, store = build_pipeline(tmp_path, {"local": provider}, fanout_concurrency=1)
    project = Project("proj_1", "p", 0.0)
    request = pb.GenerateImagesRequest(model="local/canvas", prompt="a cat", n=3, size="256x256")
    try:
        call = asyncio.create_task(pipeline.run(request, a_caller(project)))
        await provider.called.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        provider.gate.set()
        await pipeline.drain(5)
        assert len(provider.calls) == 1
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.images_returned, entry.cost_micros) == ("partial", 1, CANVAS_MICROS)
    finally:
        await store.close()


async def test_a_caller_that_leaves_before_the_reservation_costs_nothing(tmp_path: Path) -> None:
    provider = GatedProvider()
    provider.gate.set()
    pipeline, store = build_pipeline(tmp_path, {"local": provider})
    project = Project("proj_1", "p", 0.0)
    try:
        call = asyncio.create_task(pipeline.run(sketch(), a_caller(project)))
        await asyncio.sleep(0)  # admitted; the work is created, not started
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await pipeline.drain(5)
        assert provider.calls == []
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.cost_micros) == ("CANCELLED", 0)
        assert (await store.spend(project.id)).reserved_micros == 0
    finally:
        await store.close()


async def test_calls_that_never_answer_are_charged_at_their_bound(tmp_path: Path) -> None:
    provider = GatedProvider()  # never opens
    pipeline, store = build_pipeline(tmp_path, {"local": provider}, upstream_limit_s=0.3)
    project = Project("proj_1", "p", 0.0)
    try:
        with pytest.raises(UpstreamTimeout):
            await pipeline.run(sketch(n=3), a_caller(project))
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.images_returned, entry.cost_micros) == (
            "UPSTREAM_TIMEOUT",
            0,
            3 * SKETCH_MICROS,
        )
        assert (await store.spend(project.id)).spent_micros == 3 * SKETCH_MICROS
    finally:
        await store.close()


@dataclass
class JobProvider:
    """A submit-and-poll provider whose jobs are accepted (their ids reported) and then never answer,
    or fail when `failure` is set. With `accepts=False` it fails before any job is accepted."""

    name: str = "local"
    failure: Exception | None = None
    accepts: bool = True

    async def generate(self, call: ImageCall) -> ImageCallResult:
        if self.accepts:
            call.report_job(f"job-{call.first_index}")
        if self.failure is not None:
            raise self.failure
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


async def test_jobs_that_never_answer_are_charged_with_their_ids_in_the_ledger(tmp_path: Path) -> None:
    pipeline, store = build_pipeline(tmp_path, {"local": JobProvider()}, upstream_limit_s=0.3)
    project = Project("proj_1", "p", 0.0)
    try:
        with pytest.raises(UpstreamTimeout):
            await pipeline.run(sketch(n=1), a_caller(project))
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.cost_micros, entry.upstream_request_id) == (
            "UPSTREAM_TIMEOUT",
            SKETCH_MICROS,
            "job-0",
        )
    finally:
        await store.close()


async def test_a_job_that_failed_keeps_its_id_in_the_ledger_and_costs_nothing(tmp_path: Path) -> None:
    provider = JobProvider(failure=UpstreamError("local: job-0 ended with status 'Error'"))
    pipeline, store = build_pipeline(tmp_path, {"local": provider}, upstream_limit_s=5)
    project = Project("proj_1", "p", 0.0)
    try:
        with pytest.raises(UpstreamError):
            await pipeline.run(sketch(n=1), a_caller(project))
        [entry] = await ledger(store, project)
        assert (entry.outcome, entry.cost_micros, entry.upstream_request_id) == ("UPSTREAM_ERROR", 0, "job-0")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("failure", "accepts", "owed"),
    [
        # the adapter's own timer ended the wait for an answer to a request that went out
        (UpstreamTimeout("local did not answer in time.", billed=True), False, 2 * SKETCH_MICROS),
        # the answer broke off, or the images it named could not be downloaded
        (UpstreamError("The answer from local broke off.", billed=True), False, 2 * SKETCH_MICROS),
        # a job accepted, and the wait for it ran out (a poll found no time left before it went out)
        (UpstreamTimeout("local did not answer in time."), True, 2 * SKETCH_MICROS),
        # the request never went out (the connection was not made in time), or was refused
        (UpstreamTimeout("local did not answer in time."), False, 0),
        (UpstreamError("Could not reach local."), False, 0),
    ],
)
async def test_a_call_the_provider_had_is_charged_its_bound_however_it_failed(
    tmp_path: Path, failure: Exception, accepts: bool, owed: int
) -> None:
    # The same money as a call abandoned at the deadline, whichever timer (the adapter's or the
    # pipeline's) ends the wait first.
    provider = JobProvider(failure=failure, accepts=accepts)
    pipeline, store = build_pipeline(tmp_path, {"local": provider}, upstream_limit_s=5)
    project = Project("proj_1", "p", 0.0)
    try:
        with pytest.raises(type(failure)):
            await pipeline.run(sketch(n=2), a_caller(project))
        [entry] = await ledger(store, project)
        assert (entry.cost_micros, entry.images_returned) == (owed, 0)
        spend = await store.spend(project.id)
        assert (spend.spent_micros, spend.reserved_micros) == (owed, 0)
    finally:
        await store.close()


async def test_a_refused_reservation_sends_nothing(tmp_path: Path) -> None:
    provider = GatedProvider()
    pipeline, store = build_pipeline(tmp_path, {"local": provider})
    project = Project("proj_1", "p", 0.0, budget_micros=SKETCH_MICROS - 1)
    try:
        with pytest.raises(BudgetExceeded):
            await pipeline.run(sketch(), a_caller(project))
        assert provider.calls == [] and await ledger(store, project) == []
    finally:
        await store.close()


def _above_bound_count(model: str) -> float:
    value = REGISTRY.get_sample_value("mg_cost_above_estimate_total", {"provider": "openai", "model": model})
    return value or 0.0


async def test_a_provider_reporting_absurd_usage_is_charged_no_more_than_the_reservation(
    tmp_path: Path,
) -> None:
    provider = GatedProvider(name="openai", usage=ProviderUsage(input_tokens=20, output_tokens=100_000_000))
    provider.gate.set()
    pipeline, store = build_pipeline(tmp_path, {"openai": provider})
    project = Project("proj_1", "p", 0.0, budget_micros=50_000)
    request = pb.GenerateImagesRequest(model="openai/gpt-image-1", prompt="a cat", quality="medium")
    before = _above_bound_count("openai/gpt-image-1")
    report = CallReport()
    try:
        delivered = await pipeline.run(request, a_caller(project, report=report))
        [entry] = await ledger(store, project)
        # the bound: 1,056 output tokens at $40/M plus the prompt (with its margin) at $5/M
        assert delivered.cost_micros == entry.cost_micros <= 50_000
        assert entry.cost_micros >= 1_056 * 40 and report.cost_micros == entry.cost_micros
        assert _above_bound_count("openai/gpt-image-1") == before + 1
    finally:
        await store.close()


async def test_token_billed_requests_never_spend_past_the_cap(tmp_path: Path) -> None:
    # OpenAI's published count for a medium 1024x1024 image is 1,056 output tokens ($0.04224): above
    # the catalog's per-image price ($0.042), so a reservation of the per-image price let 12
    # concurrent requests spend $0.4229 against a cap of $0.42005.
    provider = GatedProvider(name="openai", usage=ProviderUsage(input_tokens=50, output_tokens=1_056))
    provider.gate.set()
    pipeline, store = build_pipeline(tmp_path, {"openai": provider})
    cap = 420_050
    project = Project("proj_1", "p", 0.0, budget_micros=cap)
    request = pb.GenerateImagesRequest(model="openai/gpt-image-1", prompt="a cat", quality="medium")
    try:
        outcomes = await asyncio.gather(
            *(pipeline.run(request, a_caller(project)) for _ in range(12)), return_exceptions=True
        )
        delivered = [o for o in outcomes if not isinstance(o, BaseException)]
        assert all(isinstance(o, BudgetExceeded) for o in outcomes if isinstance(o, BaseException))
        spend = await store.spend(project.id)
        assert spend.spent_micros <= cap and spend.reserved_micros == 0
        assert len(delivered) == 9  # each reserves its bound, $0.042241 (1,056 tokens + the prompt's)
    finally:
        await store.close()


async def test_reservations_outliving_their_lease_stay_held_by_one_renewal_loop(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    ledger = SpendLedger(store, lease_s=0.3)
    project = Project("proj_1", "p", 0.0)
    generation = validate(sketch(), CATALOG.resolve("local/sketch"))
    attempts = [Attempt(f"req_{i}", project, "key_1", "", time.monotonic(), generation) for i in range(3)]
    loops: list[object] = []

    async def hold(attempt: Attempt) -> None:
        async with ledger.reserved(attempt, 1_000):
            loops.append(ledger._renewer)
            await asyncio.sleep(1.0)  # more than three leases
            assert (await store.spend(project.id)).reserved_micros == 3_000

    try:
        await asyncio.gather(*(hold(a) for a in attempts))
        assert len(set(map(id, loops))) == 1  # one loop renewed all three
    finally:
        await store.close()


# --- routes: a target abandoned with its calls still out owes their bound; the rest is reserved anew

ROUTED = load_catalog(
    overrides={
        "other/sketch": {
            "provider": "other",
            "upstream_id": "sketch",
            "sizes": ["256x256"],
            "default_size": "256x256",
            "max_images": 4,
            "max_images_per_call": 4,
            "price": {"default": "0.003"},
        }
    },
    extra_aliases={"pair": ("local/sketch", "other/sketch")},
)
OTHER_MICROS = 3000


def routed(tmp_path: Path, first: object) -> tuple[Pipeline, SqliteStore]:
    # max duration 0.6 s: the first of two targets has 0.3 s
    return build_pipeline(
        tmp_path,
        {"local": first, "other": LocalProvider()},  # type: ignore[dict-item]
        catalog=ROUTED,
        upstream_limit_s=5,
        max_duration_s=0.6,
    )


async def test_a_target_whose_calls_never_answered_is_charged_their_bound_and_the_next_serves(
    tmp_path: Path,
) -> None:
    pipeline, store = routed(tmp_path, GatedProvider())  # ignores its deadline
    project = Project("proj_1", "p", 0.0, budget_micros=10_000)
    await store.create_project(project)
    try:
        report = CallReport()
        delivered = await pipeline.run(
            pb.GenerateImagesRequest(model="pair", prompt="a cat", n=2, size="256x256"),
            a_caller(project, report=report),
        )
        assert delivered.request.model.id == "other/sketch" and delivered.cost_micros == 2 * OTHER_MICROS
        entries = await ledger(store, project)
        assert [(e.model, e.outcome, e.cost_micros, e.extra["attempt"]) for e in entries] == [
            ("local/sketch", "UPSTREAM_TIMEOUT", 2 * SKETCH_MICROS, "1"),
            ("other/sketch", "ok", 2 * OTHER_MICROS, "2"),
        ]
        spend = await store.spend(project.id)
        assert (spend.spent_micros, spend.reserved_micros) == (2 * SKETCH_MICROS + 2 * OTHER_MICROS, 0)
        assert report.cost_micros == 2 * SKETCH_MICROS + 2 * OTHER_MICROS
    finally:
        await store.close()


async def test_a_route_ends_when_the_cap_has_no_room_for_the_rest(tmp_path: Path) -> None:
    pipeline, store = routed(tmp_path, GatedProvider())
    # room for the first reservation (the dearest target, 6,000) but not for a second after the
    # abandoned attempt's 2,000
    project = Project("proj_1", "p", 0.0, budget_micros=7_000)
    await store.create_project(project)
    try:
        with pytest.raises(UpstreamTimeout):
            await pipeline.run(
                pb.GenerateImagesRequest(model="pair", prompt="a cat", n=2, size="256x256"),
                a_caller(project),
            )
        [entry] = await ledger(store, project)
        assert (entry.model, entry.cost_micros) == ("local/sketch", 2 * SKETCH_MICROS)
        spend = await store.spend(project.id)
        assert (spend.spent_micros, spend.reserved_micros) == (2 * SKETCH_MICROS, 0)
    finally:
        await store.close()


class CountingStore(SqliteStore):
    """SQLite, counting the renewal round trips and how many reservations each carried."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.renewals: list[int] = []

    async def renew_reservations(self, held: Sequence[HeldReservation], lease_s: float) -> set[str]:
        self.renewals.append(len(held))
        return await super().renew_reservations(held, lease_s)


async def test_hundreds_of_held_reservations_are_renewed_in_a_few_round_trips(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "mg.sqlite3")
    ledger = SpendLedger(store, lease_s=2.0)  # renewed every third of it
    project = Project("proj_1", "p", 0.0)
    generation = validate(sketch(), CATALOG.resolve("local/sketch"))
    held = 700
    attempts = [Attempt(f"req_{i}", project, "key_1", "", time.monotonic(), generation) for i in range(held)]
    release = asyncio.Event()

    async def hold(attempt: Attempt, made: asyncio.Event) -> None:
        async with ledger.reserved(attempt, 10):
            made.set()
            await release.wait()

    try:
        # Made one after another, as calls arrive: SQLite writes on the event loop, so 700 tasks
        # started at once make all 700 reservations before the renewer first runs, and on a loaded
        # machine (a parallel test run) that took longer than the lease: the first ones had lapsed.
        holders = []
        for attempt in attempts:
            made = asyncio.Event()
            holders.append(asyncio.create_task(hold(attempt, made)))
            await made.wait()
        store.renewals.clear()  # the round trips from here on, with all of them held
        await asyncio.sleep(4.5)  # more than two leases
        assert (await store.spend(project.id)).reserved_micros == held * 10  # none lapsed
        # each held reservation renewed at least twice, in round trips of at most RENEW_BATCH
        assert sum(store.renewals) >= 2 * held
        assert max(store.renewals) == RENEW_BATCH
        # a pass every 2/3 s, at most three round trips each (one per reservation renewed, before)
        assert len(store.renewals) <= 8 * -(-held // RENEW_BATCH)
        release.set()
        await asyncio.gather(*holders)
    finally:
        await store.close()
