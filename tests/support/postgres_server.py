"""PostgreSQL for tests: the machine's server (127.0.0.1:5432, trust auth), one new database per use."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from ulid import ULID

from service.stores.postgres_schema import migrate

SERVER_URL = "postgresql://postgres@127.0.0.1:5432"


async def create_database(*, migrated: bool = True) -> str:
    """The URL of a new database with a unique name, migrated to this mg's schema unless told not."""
    name = f"mg_test_{str(ULID()).lower()}"
    async with await psycopg.AsyncConnection.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{SERVER_URL}/{name}"
    if migrated:
        await migrate(url, lambda line: None)
    return url


async def drop_database(url: str) -> None:
    """Drops it with whatever connections are still open to it."""
    name = url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_database(*, migrated: bool = True) -> Iterator[str]:
    """create_database ... drop_database, for tests without an event loop."""
    url = asyncio.run(create_database(migrated=migrated))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
