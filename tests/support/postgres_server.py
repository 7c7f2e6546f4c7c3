"""PostgreSQL for tests: the machine's server (127.0.0.1:5432, trust auth), one new database per use."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from ulid import ULID

from service.stores.postgres_schema import migrate
from tests.support.ports import free_port

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


class PrivatePostgres:
    """A PostgreSQL server of its own on a free port, which a test may stop and start again (outage
    tests). Its data lives in a directory of its own under the system's temporary directory (the
    server refuses to run as root, so as root it runs as the `postgres` user, who must reach it);
    `remove` stops it and deletes that directory."""

    BIN = Path("/usr/lib/postgresql")

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="mg-test-pg-"))
        self.running = False
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.directory), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        binaries = sorted(self.BIN.glob(f"*/bin/{tool}"))
        assert binaries, f"{tool} is not installed under {self.BIN}"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, str(binaries[-1]), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        # (its output to a log file: the server must not hold this process's pipes open)
        log = self.directory / "server.log"
        self._run("pg_ctl", "-D", str(self.directory), "-o", options, "-l", str(log), "-w", "start")
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.directory), "-m", "immediate", "stop")
            self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
