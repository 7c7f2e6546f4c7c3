"""Moving a gateway from its embedded SQLite store to PostgreSQL with `mg store copy`: the gateway
restarted on the copy has the same projects, spend and usage, and the keys made before the move
still authenticate and are charged there."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.gateway import GatewayProcess, local_body
from tests.support.postgres_server import temporary_database

SKETCH_PRICE_MICROS = 1000  # local/sketch at 256x256, catalog


def test_a_gateway_moved_to_postgresql_keeps_its_keys_spend_and_usage(tmp_path: Path) -> None:
    embedded = GatewayProcess(tmp_path / "embedded").start()
    try:
        key = embedded.new_key("moving", "--budget-usd", "1")
        assert [embedded.generate(local_body(), key).status_code for _ in range(3)] == [200] * 3
        assert embedded.generate(local_body(), embedded.key).status_code == 200
    finally:
        embedded.stop()
    projects = json.loads(embedded.mg("projects", "list", "--json").stdout)
    usage = json.loads(embedded.mg("usage", "--by-day", "--json").stdout)
    with temporary_database(migrated=False) as url:
        copied = embedded.mg("store", "copy", "--to", url)
        assert "copied and verified: 2 projects, 2 keys, 4 ledger entries" in copied.stdout, copied
        assert "ledger" in copied.stderr and "4/4" in copied.stderr  # the progress bar's last state
        again = embedded.mg("store", "copy", "--to", url, check=False)
        assert again.returncode == 1 and "not empty" in again.stderr
        moved = GatewayProcess(tmp_path / "moved", {"MG_POSTGRES_URL": url}).start()
        try:
            assert json.loads(moved.mg("projects", "list", "--json").stdout) == projects
            assert json.loads(moved.mg("usage", "--by-day", "--json").stdout) == usage
            assert moved.generate(local_body(), key).status_code == 200
            shown = moved.project("moving")
            assert shown["spent_usd"] == 4 * SKETCH_PRICE_MICROS / 1e6
            assert moved.generate(local_body(), "mg_live_" + "x" * 43).status_code == 401
        finally:
            moved.stop()
