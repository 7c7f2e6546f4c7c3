"""PostgreSQL with Redis beside it: rate limits are counted in Redis, nothing of them in the database."""

from __future__ import annotations

import psycopg
import redis
from ulid import ULID

from service.config import load_settings
from service.stores import open_store
from service.stores.postgres import PostgresStore
from tests.support.postgres_server import create_database, drop_database
from tests.support.redis_server import SHARED_URL, clear_prefix


async def test_with_both_urls_rate_limits_live_in_redis_and_the_rest_in_postgres() -> None:
    database = await create_database()
    prefix = f"mg-test:{ULID()}:"
    store = open_store(
        load_settings({"MG_POSTGRES_URL": database, "MG_REDIS_URL": SHARED_URL, "MG_REDIS_PREFIX": prefix})
    )
    try:
        assert isinstance(store, PostgresStore)
        assert [(await store.hit_rate_limit("key_1", 2)).allowed for _ in range(3)] == [True, True, False]
        await store.ping()
        client = redis.Redis.from_url(SHARED_URL)
        assert client.exists(f"{prefix}rl:key_1") == 1
        client.close()
        async with await psycopg.AsyncConnection.connect(database) as conn:
            cursor = await conn.execute("SELECT count(*) FROM rate_limits")
            assert await cursor.fetchone() == (0,)
    finally:
        await store.close()
        clear_prefix(SHARED_URL, prefix)
        await drop_database(database)
