"""The gateway on the PostgreSQL store (MG_POSTGRES_URL), through Envoy: `mg migrate`, the schema
check at start, a generation, the spend cap's 402, an idempotent replay, and an outage."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from service.stores.postgres_schema import EXPECTED_VERSION, VERSION_TABLE, migrate, migrations
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess, local_body
from tests.support.postgres_server import PrivatePostgres, temporary_database

LATEST = EXPECTED_VERSION

SKETCH_PRICE_MICROS = 1000  # local/sketch at 256x256, catalog


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with temporary_database() as url:
        process = GatewayProcess(tmp_path_factory.mktemp("postgres"), {"MG_POSTGRES_URL": url}).start()
        yield process
        process.stop()


def test_a_generation_is_charged_and_in_the_ledger(gw: GatewayProcess) -> None:
    key = gw.new_key("paid", "--budget-usd", "1")
    response = gw.generate(local_body(), key)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1
    shown = gw.project("paid")
    assert (shown["spent_usd"], shown["reserved_usd"]) == (SKETCH_PRICE_MICROS / 1e6, 0)
    (row,) = gw.usage("paid")
    assert (row["requests"], row["images"], row["cost_micros"]) == (1, 1, SKETCH_PRICE_MICROS)


def test_the_cap_refuses_with_402_and_charges_nothing_more(gw: GatewayProcess) -> None:
    key = gw.new_key("capped", "--budget-usd", "0.002")  # two sketches
    assert [gw.generate(local_body(), key).status_code for _ in range(2)] == [200, 200]
    assert_error(gw.generate(local_body(), key), 402, "BUDGET_EXCEEDED")
    shown = gw.project("capped")
    assert (shown["spent_usd"], shown["reserved_usd"]) == (0.002, 0)


def test_concurrent_requests_never_cross_the_cap(gw: GatewayProcess) -> None:
    key = gw.new_key("race", "--budget-usd", "0.003")  # three sketches
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: gw.generate(local_body(delay_ms=200), key).status_code, range(8)))
    assert sorted(codes) == [200] * 3 + [402] * 5
    assert gw.project("race")["spent_usd"] == 0.003


def test_an_idempotent_retry_replays_without_a_charge(gw: GatewayProcess) -> None:
    key = gw.new_key("replay", "--budget-usd", "0.001")  # one sketch: a replay must not need more
    first = gw.generate(local_body(), key, headers={"x-mg-idempotency-key": "order-1"})
    again = gw.generate(local_body(), key, headers={"x-mg-idempotency-key": "order-1"})
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["x-mg-idempotent-replay"] == "true" and "x-mg-idempotent-replay" not in first.headers
    assert again.json() == first.json()
    (row,) = gw.usage("replay")
    assert (row["requests"], row["cost_micros"]) == (1, SKETCH_PRICE_MICROS)


def test_a_gateway_refuses_an_unmigrated_database_until_mg_migrate(tmp_path: Path) -> None:
    with temporary_database(migrated=False) as url:
        gw = GatewayProcess(tmp_path / "gw", {"MG_POSTGRES_URL": url})
        with pytest.raises(RuntimeError, match="run `mg migrate`"):
            gw.start()
        migrated = gw.mg("migrate")
        assert migrated.stdout.strip() == f"schema at version {LATEST} ({LATEST} migration(s) applied)"
        assert gw.mg("migrate").stdout.strip() == f"schema at version {LATEST} (0 migration(s) applied)"
        gw.start()
        try:
            assert gw.generate(local_body()).status_code == 200
        finally:
            gw.stop()


def test_a_database_at_the_first_version_is_migrated_with_its_data_to_the_admin_api(tmp_path: Path) -> None:
    """A database made by the version before the admin API (schema 1), with a project, a key and a
    reservation in it: `mg migrate` applies what came since, and the gateway runs on it."""
    first = migrations()[0]
    with temporary_database(migrated=False) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(first.sql.encode())
            conn.execute(f"CREATE TABLE {VERSION_TABLE} (version integer PRIMARY KEY, name text NOT NULL, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (1, %s)", (first.name,))
            conn.execute("INSERT INTO reservations VALUES ('old', 'proj_x', 5, 0)")
        gw = GatewayProcess(tmp_path / "gw", {"MG_POSTGRES_URL": url, "MG_ADMIN_TOKEN": "mg_admin_t"})
        with pytest.raises(RuntimeError, match="run `mg migrate`"):
            gw.start()
        applied = gw.mg("migrate").stdout.strip()
        assert applied == f"schema at version {LATEST} ({LATEST - 1} migration(s) applied)"
        gw.start()
        try:
            assert gw.generate(local_body()).status_code == 200
            audit = httpx.get(f"{gw.http_url}/v1/admin/audit", headers={"Authorization": "Bearer mg_admin_t"})
            assert [e["action"] for e in audit.json()["entries"]] == ["key.create", "project.create"]
        finally:
            gw.stop()


def test_a_gateway_refuses_a_database_newer_than_it(tmp_path: Path) -> None:
    with temporary_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO mg_schema_migrations (version, name) VALUES (99, 'future')")
        gw = GatewayProcess(tmp_path / "gw", {"MG_POSTGRES_URL": url})
        with pytest.raises(RuntimeError, match="newer than this mg knows"):
            gw.start()
        refused = gw.mg("migrate", check=False)
        assert refused.returncode == 1 and "newer than this mg knows" in refused.stderr


def test_two_migrations_at_once_apply_each_file_once(tmp_path: Path) -> None:
    with temporary_database(migrated=False) as url:
        gw = GatewayProcess(tmp_path / "gw", {"MG_POSTGRES_URL": url})
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "service", "migrate"], env=gw.env, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = sorted(run.communicate(timeout=60)[0].strip() for run in runs)
        assert [run.returncode for run in runs] == [0, 0]
        assert outputs == [
            f"schema at version {LATEST} (0 migration(s) applied)",
            f"schema at version {LATEST} ({LATEST} migration(s) applied)",
        ]


def test_a_database_outage_is_503_and_the_gateway_recovers(tmp_path: Path) -> None:
    server = PrivatePostgres().start()
    try:
        asyncio.run(migrate(server.url, lambda line: None))
        gw = GatewayProcess(tmp_path / "gw", {"MG_POSTGRES_URL": server.url}).start()
        try:
            key = gw.new_key("outage")
            assert gw.generate(local_body(), key).status_code == 200
            server.stop()
            down = gw.generate(local_body(), key)
            assert_error(down, 503, "UNAVAILABLE")
            assert "PostgreSQL" in down.json()["error"]["message"]
            assert gw.process is not None and gw.process.poll() is None  # still running
            server.start()
            deadline = time.monotonic() + 30
            while (status := gw.generate(local_body(), key).status_code) != 200:
                assert status == 503 and time.monotonic() < deadline
                time.sleep(0.2)
            (row,) = gw.usage("outage")
            # the request that met the outage was charged nothing
            assert (row["images"], row["cost_micros"]) == (2, 2 * SKETCH_PRICE_MICROS)
        finally:
            gw.stop()
    finally:
        server.remove()


def test_a_charge_the_database_could_not_take_lands_when_it_returns(tmp_path: Path) -> None:
    """Nothing the provider bills goes uncharged: the database goes down while a generation runs;
    the images are delivered, and the charge is retried until the database takes it."""
    server = PrivatePostgres().start()
    try:
        asyncio.run(migrate(server.url, lambda line: None))
        gw = GatewayProcess(tmp_path / "gw", {"MG_POSTGRES_URL": server.url}).start()
        try:
            key = gw.new_key("late-charge")
            with ThreadPoolExecutor(1) as pool, psycopg.connect(server.url, autocommit=True) as conn:
                pending = pool.submit(gw.generate, local_body(delay_ms=3000), key)
                deadline = time.monotonic() + 20
                while conn.execute("SELECT count(*) FROM reservations").fetchone() != (1,):
                    assert time.monotonic() < deadline and not pending.done()
                    time.sleep(0.05)
                server.stop()  # reserved, and generating
                response = pending.result()
            assert response.status_code == 200 and len(response.json()["data"]) == 1
            server.start()
            deadline = time.monotonic() + 30
            while True:
                usage = json.loads(
                    gw.mg("usage", "--project", "late-charge", "--json", check=False).stdout or "[]"
                )
                if usage:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.5)
            assert [(r["images"], r["cost_micros"]) for r in usage] == [(1, SKETCH_PRICE_MICROS)]
        finally:
            gw.stop()
    finally:
        server.remove()
