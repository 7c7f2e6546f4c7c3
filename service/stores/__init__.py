"""Store selection: SQLite in the data dir by default, Redis when MG_REDIS_URL is set."""

from __future__ import annotations

from service.config import Settings
from service.stores.base import Store

SQLITE_FILE = "mg.sqlite3"  # in the data dir


def open_store(settings: Settings) -> Store:
    if settings.redis_url:
        from service.stores.redis import RedisStore

        return RedisStore(settings.redis_url, settings.redis_prefix)
    from service.stores.sqlite import SqliteStore

    return SqliteStore(settings.data_dir / SQLITE_FILE, settings.sqlite_synchronous)
