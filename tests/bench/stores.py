"""What the store costs a request on the money path, on each store (not part of `make test`):

    .venv/bin/python tests/bench/stores.py            # Markdown table on stdout
    STORES_BENCH_OUT=stores.json .venv/bin/python tests/bench/stores.py

Per store (SQLite in a temporary directory, Redis on 127.0.0.1:6379 under a prefix of its own,
PostgreSQL on 127.0.0.1:5432 in a new database, PostgreSQL with its rate limits in that Redis), as a
worker process opens it (service/stores/open_store on the default settings: PostgreSQL pool of 10):

- reserve + settle: the two store operations of a paid generation, one after the other (reserve
  against the project's cap, then settle with its ledger row), timed as one round trip;
- rate-limit hit: the one store operation of every request's rate limit;

each at concurrency 1 and 32 (that many asyncio tasks on the one store, as a worker serves that many
requests at once): p50 and p99 latency in milliseconds, and operations per second. The 32 tasks all
reserve against one project (its spend row is the one they contend for, as requests of one busy
project do) and hit one rate-limit bucket each (one key each). Last, reserve + settle at
concurrency 1 again with HELD of the project's generations in flight (reservations held), as a
project holds them when its generations take seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ulid import ULID

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.config import load_settings  # noqa: E402
from service.stores import open_store  # noqa: E402
from service.stores.base import LedgerEntry, Project, ReservationHolder, Store  # noqa: E402
from tests.support.stores import STORES, store_env  # noqa: E402

WARMUP = 50
OPERATIONS = {1: 1000, 32: 3200}  # per concurrency: operations timed (each task does its share)
COST_MICROS = 16_000
LEASE_S = 30.0
# A rate high enough that no hit is refused: a refusal skips the write.
RPM = 10_000_000
HELD = 10_000


def entry(project_id: str, request_id: str) -> LedgerEntry:
    return LedgerEntry(
        request_id=request_id, project_id=project_id, key_id="key_bench", model="openai/dall-e-2",
        provider="openai", n_requested=1, images_returned=1, size="256x256", quality="standard",
        cost_micros=COST_MICROS, input_tokens=5, upstream_latency_ms=900, outcome="ok",
        created_at=time.time(),
    )  # fmt: skip


async def timed(concurrency: int, operation: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    """Runs `operation(task)` OPERATIONS[concurrency] times over `concurrency` tasks; latencies in ms."""
    total = OPERATIONS[concurrency]
    latencies: list[float] = []

    async def warm(number: int) -> None:
        for _ in range(WARMUP // concurrency + 1):
            await operation(number)

    async def task(number: int) -> None:
        for _ in range(total // concurrency):
            began = time.perf_counter()
            await operation(number)
            latencies.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(warm(number) for number in range(concurrency)))
    began = time.perf_counter()
    await asyncio.gather(*(task(number) for number in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "ops_per_s": len(latencies) / elapsed,
    }


async def measure(store: Store) -> dict[str, dict[str, float]]:
    project = Project(f"proj_{ULID()}", f"bench-{ULID()}", time.time(), budget_micros=10**15)
    await store.create_project(project)
    holder = ReservationHolder("key_bench", "openai/dall-e-2", time.time())

    async def reserve_and_settle(task: int) -> None:
        request_id = str(ULID())
        reserved = await store.reserve(
            project.id, request_id, COST_MICROS, project.budget_micros, LEASE_S, holder
        )
        assert reserved, "the cap refused a reservation"
        await store.settle(request_id, entry(project.id, request_id))

    async def rate_limit_hit(task: int) -> None:
        decision = await store.hit_rate_limit(f"bench:{project.id}:{task}", RPM)
        assert decision.allowed

    results = {}
    for concurrency in OPERATIONS:
        results[f"reserve+settle c{concurrency}"] = await timed(concurrency, reserve_and_settle)
        results[f"rate-limit hit c{concurrency}"] = await timed(concurrency, rate_limit_hit)
    for first in range(0, HELD, 100):
        await asyncio.gather(
            *(
                store.reserve(project.id, f"held-{n}", COST_MICROS, None, 3600, holder)
                for n in range(first, first + 100)
            )
        )
    results[f"reserve+settle c1, {HELD:,} held"] = await timed(1, reserve_and_settle)
    return results


async def bench_store(env: dict[str, str]) -> dict[str, dict[str, float]]:
    store = open_store(load_settings(env))
    try:
        return await measure(store)
    finally:
        await store.close()


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    stores = list(results)
    rows = list(next(iter(results.values())))
    lines = [
        "| | " + " | ".join(stores) + " |",
        "|---|" + "---|" * len(stores),
    ]
    for row in rows:
        cells = []
        for store in stores:
            figures = results[store][row]
            cells.append(
                f"{figures['p50_ms']:.2f} / {figures['p99_ms']:.2f} ms, {figures['ops_per_s']:,.0f}/s"
            )
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for name in STORES:
        # (the store's setup, a new PostgreSQL database included, runs outside the timed event loop)
        with tempfile.TemporaryDirectory(prefix="mg-bench-stores-") as data_dir, store_env(name) as env:
            results[name] = asyncio.run(bench_store({**env, "MG_DATA_DIR": data_dir}))
        print(f"{name}: done", file=sys.stderr)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{when}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before the run")
    print("p50 / p99 latency, operations per second")
    print(table(results))
    if out := os.environ.get("STORES_BENCH_OUT"):
        Path(out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
