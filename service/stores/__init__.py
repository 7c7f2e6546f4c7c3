"""Store selection: PostgreSQL when MG_POSTGRES_URL is set (with rate limits in Redis when
MG_REDIS_URL is set too), else Redis when MG_REDIS_URL is set, else SQLite in the data dir. Each
store's driver is imported only when it is chosen."""

from __future__ import annotations

from service.config import Settings
from service.stores.base import Store

SQLITE_FILE = "mg.sqlite3"  # in the data dir


def open_store(settings: Settings) -> Store:
    redis = None
    if settings.redis_url:
        from service.stores.redis import RedisStore

        redis = RedisStore(settings.redis_url, settings.redis_prefix)
    if settings.postgres_url:
        from service.stores.postgres import PostgresStore

        return PostgresStore(settings.postgres_url, settings.postgres_pool_size, rate_limits=redis)
    if redis is not None:
        return redis
    from service.stores.sqlite import SqliteStore

    return SqliteStore(settings.data_dir / SQLITE_FILE, settings.sqlite_synchronous)
