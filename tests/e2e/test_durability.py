"""State survives a restart (SQLite); a Redis outage is a clean 503 and the gateway recovers by itself."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess
from tests.support.redis_server import PrivateRedis


def post(gw: GatewayProcess, key: str) -> httpx.Response:
    return gw.generate({"model": "local/sketch", "prompt": "x", "size": "256x256"}, key)


def test_ledger_spend_and_keys_survive_a_restart(tmp_path: Path) -> None:
    first = GatewayProcess(tmp_path).start()
    try:
        key = first.new_key("durable", "--budget-usd", "1")
        assert [post(first, key).status_code for _ in range(3)] == [200, 200, 200]
        dev_key = first.key
    finally:
        first.stop()
    second = GatewayProcess(tmp_path).start()  # same data dir, new ports
    try:
        usage = second.usage("durable")
        assert [(r["requests"], r["images"], r["cost_micros"]) for r in usage] == [(3, 3, 3000)]
        shown = second.project("durable")
        assert shown["spent_usd"] == 0.003
        assert post(second, key).status_code == 200
        # the first start's dev key is printed again and still works
        assert dev_key in "".join(second.output)
        assert post(second, dev_key).status_code == 200
    finally:
        second.stop()


def test_redis_outage_is_503_and_the_gateway_recovers(tmp_path: Path) -> None:
    redis_server = PrivateRedis(tmp_path).start()
    gw = GatewayProcess(tmp_path / "gw", {"MG_REDIS_URL": redis_server.url}).start()
    try:
        key = gw.new_key("outage")
        assert post(gw, key).status_code == 200
        redis_server.stop()
        down = post(gw, key)
        assert_error(down, 503, "UNAVAILABLE")
        assert "Redis" in down.json()["error"]["message"]
        assert_error(
            httpx.get(f"{gw.http_url}/v1/models", headers={"Authorization": f"Bearer {key}"}),
            503,
            "UNAVAILABLE",
        )
        assert gw.process is not None and gw.process.poll() is None  # still running
        redis_server.start()
        deadline = time.monotonic() + 20
        while (status := post(gw, key).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.2)
        usage = gw.usage("outage")
        # the request that met the outage was charged nothing
        assert [(r["images"], r["cost_micros"]) for r in usage] == [(2, 2000)]
    finally:
        gw.stop()
        redis_server.stop()
