"""The settings that put a gateway on each store, with what the store needs set up and torn down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ulid import ULID

from service.stores.base import LedgerEntry
from tests.support.postgres_server import temporary_database
from tests.support.redis_server import SHARED_URL, clear_prefix

# sqlite: the embedded default; postgres+redis: PostgreSQL with its rate limits in Redis.
STORES = ("sqlite", "redis", "postgres", "postgres+redis")


@contextmanager
def store_env(store: str) -> Iterator[dict[str, str]]:
    """MG_* variables for a gateway on `store`: a Redis key prefix of its own, a new PostgreSQL
    database (migrated), both cleared afterwards."""
    env: dict[str, str] = {}
    prefix = f"mg-test:{ULID()}:"
    if store.endswith("redis"):
        env |= {"MG_REDIS_URL": SHARED_URL, "MG_REDIS_PREFIX": prefix}
    try:
        if store.startswith("postgres"):
            with temporary_database() as url:
                yield env | {"MG_POSTGRES_URL": url}
        else:
            yield env
    finally:
        if store.endswith("redis"):
            clear_prefix(SHARED_URL, prefix)


def ledger_entry(project_id: str, cost: int, outcome: str = "ok", **fields: object) -> LedgerEntry:
    """A ledger entry of a generation of `project_id` that cost `cost` micro-dollars; `fields` replace
    any of the others."""
    values: dict[str, object] = {
        "request_id": str(ULID()), "project_id": project_id, "key_id": "key_1", "model": "local/sketch",
        "provider": "local", "n_requested": 1, "images_returned": 1 if outcome == "ok" else 0,
        "size": "1024x1024", "quality": "", "cost_micros": cost, "input_tokens": 5, "upstream_latency_ms": 12,
        "outcome": outcome, "created_at": time.time(), **fields,
    }  # fmt: skip
    return LedgerEntry(**values)  # type: ignore[arg-type]
