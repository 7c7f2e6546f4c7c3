"""`mg serve` as one unit: it drains on SIGTERM, dies loudly with Envoy, and restarts lost workers."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.runtime.envoy_admin import admin_request
from tests.fakes.base import png
from tests.support.gateway import GatewayProcess, local_body
from tests.support.image_server import serving


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def generate(gateway: GatewayProcess, delay_ms: int = 0) -> httpx.Response:
    return gateway.generate(local_body(delay_ms))


def test_sigterm_lets_in_flight_generations_finish(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    children = gateway.children()
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.append(generate(gateway, delay_ms=3000)))
    worker.start()
    time.sleep(1)  # the request is now in flight
    gateway.signal(signal.SIGTERM)
    worker.join(30)
    assert results and results[0].status_code == 200, results
    assert gateway.wait(30) == 0
    assert not any(pid_alive(pid) for pid in children)


def test_the_gateway_exits_non_zero_when_envoy_dies(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    children = gateway.children()
    os.kill(gateway.envoy_pid(), signal.SIGKILL)
    assert gateway.wait(30) == 1
    assert "Envoy exited" in "".join(gateway.output)
    assert not any(pid_alive(pid) for pid in children)


def test_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    try:
        envoy = gateway.envoy_pid()
        victim = next(pid for pid in gateway.children() if pid != envoy)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in gateway.children() or len(gateway.children()) < 3:
            assert time.monotonic() < deadline, gateway.output
            time.sleep(0.1)
        assert all(generate(gateway).status_code == 200 for _ in range(6))
    finally:
        gateway.stop()


def test_a_taken_port_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        gateway = GatewayProcess(tmp_path)
        gateway.grpc_port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"gRPC port .* is in use"):
            gateway.start()
        assert gateway.wait(10) == 1


SERVING = re.compile(r"worker (\d+) serving gRPC")


def test_a_metrics_port_taken_during_start_up_stops_it_cleanly(tmp_path: Path) -> None:
    # The metrics server binds last (its thread must not exist while Envoy is forked), after the
    # early check that the port is free: here the port is taken in between, as soon as the first
    # worker process exists (the check comes before any), while the workers start.
    gateway = GatewayProcess(tmp_path)
    squatter = socket.socket()
    workers: list[int] = []

    def take_the_port_once_workers_start() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if gateway.process is not None and gateway.process.poll() is None and gateway.children():
                break
            time.sleep(0.002)
        squatter.bind(("127.0.0.1", gateway.metrics_port))
        squatter.listen()
        while len(workers) < 2 and time.monotonic() < deadline:  # they serve, then are stopped
            workers[:] = [int(m[1]) for line in gateway.output if (m := SERVING.search(line))]
            time.sleep(0.005)

    squatter_thread = threading.Thread(target=take_the_port_once_workers_start)
    squatter_thread.start()
    try:
        with pytest.raises(RuntimeError, match=r"metrics port .* is in use"):
            gateway.start()
        squatter_thread.join()
        assert gateway.wait(10) == 1 and len(workers) == 2
        assert not any(pid_alive(pid) for pid in workers)
        with pytest.raises(OSError):  # Envoy is gone too
            admin_request(gateway.admin_socket, "/ready")
    finally:
        squatter.close()
        gateway.stop()  # (a gateway that started after all would outlive the test)


def test_killing_the_supervisor_takes_workers_and_envoy_with_it(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    children = gateway.children()
    assert gateway.process is not None
    os.kill(gateway.process.pid, signal.SIGKILL)  # the supervisor alone, no chance to clean up
    gateway.process.wait(10)
    deadline = time.monotonic() + 15
    while any(pid_alive(pid) for pid in children):
        assert time.monotonic() < deadline, [pid for pid in children if pid_alive(pid)]
        time.sleep(0.2)


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def test_workers_keep_freed_memory_and_the_supervisor_carries_no_grpc(tmp_path: Path) -> None:
    # An operator's own malloc setting wins over the gateway's default.
    gateway = GatewayProcess(tmp_path, {"MALLOC_TRIM_THRESHOLD_": "1234"}).start()
    try:
        assert generate(gateway).status_code == 200
        workers = [pid for pid in gateway.children() if pid != gateway.envoy_pid()]
        assert len(workers) == 2
        for pid in workers:
            env = environment(pid)
            assert env["MALLOC_MMAP_THRESHOLD_"] == str(64 << 20)
            assert env["MALLOC_TRIM_THRESHOLD_"] == "1234"
            assert env["MALLOC_ARENA_MAX"] == "2"
            assert "cygrpc" in mapped_files(pid)  # the check below can tell
        assert gateway.process is not None
        assert "cygrpc" not in mapped_files(gateway.process.pid)
    finally:
        gateway.stop()


def test_stopping_workers_close_their_provider_connections(tmp_path: Path) -> None:
    answer = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(png()).decode()}]}).encode()
    with serving({"/v1/images/generations": (200, {"content-type": "application/json"}, answer)}) as upstream:
        env = {"OPENAI_API_KEY": "sk-scripted", "OPENAI_BASE_URL": f"{upstream}/v1"}
        gateway = GatewayProcess(tmp_path, env).start()
        try:
            body = {"model": "openai/dall-e-3", "prompt": "a fox"}
            assert gateway.generate(body).status_code == 200  # a kept-alive connection is now open
        finally:
            gateway.stop()
    assert any("mg stopped" in line for line in gateway.output)
    assert not [line for line in gateway.output if '"level":"error"' in line]


def test_a_dead_workers_reservation_is_released_within_one_lease(tmp_path: Path) -> None:
    # One worker, so the one generation in flight is on the worker killed. Its reservation is
    # renewed while it runs; once the worker is dead nothing renews it, and it lapses.
    env = {"MG_WORKERS": "1", "MG_RESERVATION_LEASE_S": "2", "MG_MAX_DURATION_S": "60"}
    gateway = GatewayProcess(tmp_path, env).start()
    try:
        key = gateway.new_key("lease", "--budget-usd", "1")
        slow = threading.Thread(
            target=lambda: _swallow(lambda: gateway.generate(local_body(30_000), key, timeout=40))
        )
        slow.start()
        deadline = time.monotonic() + 10
        while reserved_usd(gateway, "lease") == 0:
            assert time.monotonic() < deadline, gateway.output_tail()
            time.sleep(0.1)
        time.sleep(2.5)  # past the first lease: renewed, so still held
        assert reserved_usd(gateway, "lease") == 0.001
        envoy = gateway.envoy_pid()
        worker = next(pid for pid in gateway.children() if pid != envoy)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        while reserved_usd(gateway, "lease") != 0:
            assert time.monotonic() - killed < 2 + 1.5, "the reservation outlived its lease"
            time.sleep(0.1)
        slow.join(45)
    finally:
        gateway.stop()


def reserved_usd(gateway: GatewayProcess, project: str) -> float:
    return float(gateway.project(project)["reserved_usd"])


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call()
