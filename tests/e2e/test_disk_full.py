"""The whole gateway with its data dir on a small disk that fills up (a real tmpfs: root only).

First hosted images fill it: they are refused with 507 while room is left for the store, b64
answers and existing hosted files go on being served, readiness says "files: disk full" and stays
200, the free space is a metric and a warning. Then the disk is filled to the last byte: the store
cannot write, requests get 503 naming it, a reservation whose release the store refused is
retried until it lands once space returns, no worker dies (the workers' memory-mapped metric
files made every worker die of SIGBUS here), and one killed is replaced by one that starts."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_operations import metric
from tests.support.checks import assert_error, decode_png
from tests.support.gateway import GatewayProcess, local_body
from tests.support.tmpfs import fill, small_disk

MIB = 1024 * 1024
DISK_BYTES = 4 * MIB
KEEP_FREE_BYTES = 1 * MIB


def hosted_image(prompt: str, delay_ms: int = 0) -> dict[str, Any]:
    """A ~350 KB noisy PNG, as a hosted URL."""
    return {
        "model": "local/canvas",
        "prompt": prompt,
        "size": "512x512",
        "response_format": "url",
        "providerOptions": {"local": {"delay_ms": delay_ms}},
    }


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.25)


def test_a_full_data_disk_gives_envelopes_and_keeps_the_gateway_up(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", DISK_BYTES) as disk:
        gw = GatewayProcess(
            disk / "data",
            {
                "MG_FILES_KEEP_FREE_BYTES": str(KEEP_FREE_BYTES),
                "MG_DISK_FREE_WARN_BYTES": str(DISK_BYTES),
                "PYTHONFAULTHANDLER": "1",  # a worker killed by a signal says where
                # Long enough that only the retried release can give the budget back in this test.
                "MG_RESERVATION_LEASE_S": "600",
            },
        ).start()
        try:
            key = gw.new_key("disk", "--budget-usd", "1")

            # 1. Hosted images fill the disk, down to what is kept free for the store.
            urls = []
            for attempt in range(20):
                response = gw.generate(hosted_image(f"image {attempt}"), key)
                if response.status_code != 200:
                    break
                urls.append(response.json()["data"][0]["url"])
            assert 2 <= len(urls) < 20
            error = assert_error(response, 507, "INSUFFICIENT_STORAGE")
            assert "b64_json" in error["message"] and error["type"] == "server_error"
            b64 = gw.generate(local_body(prompt="needs no file"), key)
            assert b64.status_code == 200, b64.text
            for url in urls:
                decode_png(httpx.get(url).content)  # hosted files that exist are still served
            ready = httpx.get(f"{gw.http_url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["store"] == "ok"
            assert ready.json()["checks"]["files"].startswith("disk full (")
            wait_for(
                lambda: 0 < metric(gw, "mg_data_dir_free_bytes") <= KEEP_FREE_BYTES,
                10,
                "the free-space metric to follow the disk",
            )
            wait_for(lambda: any("mg files sweep" in line for line in gw.output), 10, "a low-space warning")
            shown = gw.project("disk")
            assert shown["reserved_usd"] == 0
            assert shown["spent_usd"] == round(0.002 * len(urls) + 0.001, 6)  # the refused image is free

            # 2. The disk fills to the last byte while a generation runs: its image cannot be kept,
            # and the store cannot write the release of its reservation.
            running: list[httpx.Response] = []
            call = threading.Thread(
                target=lambda: running.append(gw.generate(hosted_image("late", delay_ms=3000), key))
            )
            call.start()
            wait_for(lambda: gw.project("disk")["reserved_usd"] > 0, 10, "the reservation")
            ballast = fill(disk)
            call.join(30)
            assert_error(running[0], 507, "INSUFFICIENT_STORAGE")
            assert gw.project("disk")["reserved_usd"] == 0.002  # held: the release is waiting
            refused = gw.generate(local_body(prompt="no room for the ledger"), key)
            assert "SQLite store cannot write" in assert_error(refused, 503, "UNAVAILABLE")["message"]
            not_ready = httpx.get(f"{gw.http_url}/readyz")
            assert not_ready.status_code == 503 and "store:" in not_ready.json()["error"]["message"]
            assert httpx.get(f"{gw.http_url}/healthz").status_code == 200

            # 3. Space returns: the release lands by itself, and the gateway serves again.
            ballast.unlink()
            wait_for(lambda: gw.project("disk")["reserved_usd"] == 0, 30, "the release to land")
            (canvas,) = [row for row in gw.usage("disk") if row["model"] == "local/canvas"]
            assert canvas["failed"] == 2  # the two 507s, the second one's row written by the retry
            wait_for(lambda: httpx.get(f"{gw.http_url}/readyz").status_code == 200, 15, "readiness")
            assert gw.generate(local_body(prompt="space again"), key).status_code == 200

            # 4. A worker that dies while the disk is full (killed here) is replaced, and the full
            # disk is still an envelope from whichever worker answers. (The dead worker's metric
            # files are removed, which frees a little space: the disk is filled up again.)
            ballast = fill(disk)
            worker = next(pid for pid in gw.children() if pid != gw.envoy_pid())
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: worker not in gw.children() and len(gw.children()) == 3, 30, "a new worker")
            fill(disk)
            for _ in range(4):  # whichever worker answers, it is a worker that answers
                full = assert_error(gw.generate(local_body(prompt="full"), key), 503, "UNAVAILABLE")
                assert "SQLite store cannot write" in full["message"]
            ballast.unlink()
            assert gw.generate(local_body(prompt="space again"), key).status_code == 200
            died = [line for line in gw.output if "exited with code" in line or "Fatal Python error" in line]
            assert len(died) == 1 and "exited with code -9" in died[0], gw.output_tail()  # the one killed
            assert gw.process is not None and gw.process.poll() is None
        finally:
            gw.stop()
