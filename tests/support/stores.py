"""The settings that put a gateway on each store, with what the store needs set up and torn down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ulid import ULID

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
