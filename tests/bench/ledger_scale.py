"""`make bench-usage`: `mg usage` and the ledger's pages over a large ledger, on SQLite and PostgreSQL.

Generates LEDGER_ROWS ledger entries (default 1,000,000: 20 projects, 8 models, 90 days, one entry in
six a failure) in a new SQLite file and a new PostgreSQL database (127.0.0.1:5432, as the tests use;
dropped afterwards), written in bulk through the stores' own append_ledger, then times what `mg
usage` and `mg ledger` (and the admin API's usage and ledger routes) run: the admin functions over
each store, each query ROUNDS times, and prints the best and the median. Not a timed test: the
figures go in docs/performance.md.

    LEDGER_ROWS=1000000 ROUNDS=5 .venv/bin/python tests/bench/ledger_scale.py
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from service import admin
from service.stores.base import LedgerEntry, Project, Store
from service.stores.postgres import PostgresStore
from service.stores.sqlite import SqliteStore
from tests.support.postgres_server import create_database, drop_database

ROWS = int(os.environ.get("LEDGER_ROWS", "1000000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
PROJECTS = 20
MODELS = [f"provider{i % 3}/model-{i}" for i in range(8)]
DAYS = 90
BATCH = 50_000


def entries(
    projects: list[Project], now: float, start: int, count: int, rng: random.Random
) -> list[LedgerEntry]:
    """`count` entries in time order (entry i at its share of the DAYS days before `now`)."""
    made = []
    for i in range(start, start + count):
        project = projects[rng.randrange(len(projects))]
        failed = rng.randrange(6) == 0
        made.append(
            LedgerEntry(
                request_id=f"req_{i:08d}", project_id=project.id, key_id=f"key_{project.name}",
                model=MODELS[rng.randrange(len(MODELS))], provider="bench", n_requested=1,
                images_returned=0 if failed else 1, size="1024x1024", quality="medium",
                cost_micros=0 if failed else 40_000 + rng.randrange(2_000), input_tokens=rng.randrange(200),
                upstream_latency_ms=rng.randrange(20_000), outcome="UPSTREAM_ERROR" if failed else "ok",
                created_at=now - DAYS * 86400 * (1 - i / ROWS), extra={},
            )
        )  # fmt: skip
    return made


async def fill(store: Any, label: str) -> list[Project]:
    """Projects and ROWS ledger entries, bulk-written; returns the projects."""
    now = time.time()
    projects = []
    for i in range(PROJECTS):
        projects.append(await admin.create_project(store, f"p{i:02d}", None, [], None, actor="bench"))
    rng = random.Random(7)
    started = time.monotonic()
    for start in range(0, ROWS, BATCH):
        await store.append_ledger(entries(projects, now, start, min(BATCH, ROWS - start), rng))
        print(f"\r{label}: {start + BATCH:,} / {ROWS:,} entries written", end="", file=sys.stderr, flush=True)
    print(f"\r{label}: {ROWS:,} entries written in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return projects


async def timed(run: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(best, median) seconds over ROUNDS runs."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


async def measure(store: Store, projects: list[Project]) -> list[tuple[str, float, float]]:
    one = projects[3].name
    queries: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("mg usage --project (one of 20)", lambda: admin.usage(store, one, None)),
        ("mg usage (all projects)", lambda: admin.usage(store, None, None)),
        ("mg usage --by-day (all, 90 days)", lambda: admin.usage(store, None, None, by_day=True)),
        ("mg usage --since 7d (all)", lambda: admin.usage(store, None, time.time() - 7 * 86400)),
        ("mg ledger (newest page of 50)", lambda: admin.ledger_page(store)),
        ("mg ledger --project", lambda: admin.ledger_page(store, project=one)),
        ("mg ledger --project --since 30d --until 29d",
         lambda: admin.ledger_page(store, project=one, since="30d", until="29d")),
        ("mg ledger --outcome UPSTREAM_ERROR", lambda: admin.ledger_page(store, outcome="UPSTREAM_ERROR")),
    ]  # fmt: skip
    return [(name, *await timed(run)) for name, run in queries]


async def sqlite_figures(directory: Path) -> list[tuple[str, float, float]]:
    store = SqliteStore(directory / "mg.sqlite3")
    try:
        projects = await fill(store, "SQLite")
        return await measure(store, projects)
    finally:
        await store.close()


async def postgres_figures() -> list[tuple[str, float, float]]:
    url = await create_database()
    store = PostgresStore(url)
    try:
        projects = await fill(store, "PostgreSQL")
        # What autovacuum does to a table soon after a bulk load: the visibility map (index-only
        # scans) and the planner's statistics.
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("VACUUM ANALYZE ledger")
        return await measure(store, projects)
    finally:
        await store.close()
        await drop_database(url)


def table(results: dict[str, list[tuple[str, float, float]]]) -> str:
    stores = list(results)
    lines = [
        f"| query ({ROWS:,} ledger rows) | " + " | ".join(f"{s} best / median" for s in stores) + " |",
        "|---|" + "---|" * len(stores),
    ]
    for i, (name, _, _) in enumerate(results[stores[0]]):
        cells = [f"{results[s][i][1] * 1000:.0f} / {results[s][i][2] * 1000:.0f} ms" for s in stores]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mg-bench-usage-") as directory:
        results = {"SQLite": await sqlite_figures(Path(directory))}
    results["PostgreSQL"] = await postgres_figures()
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
