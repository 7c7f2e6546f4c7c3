"""What an operator relies on: health endpoints, Prometheus metrics that move, one JSON log line per
request without secrets, readiness that follows the store, a config the gateway refuses to start on,
and a SIGTERM that leaves the ledger complete."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from tests.support.gateway import GatewayProcess
from tests.support.redis_server import PrivateRedis

BODY = {"model": "local/sketch", "prompt": "a secret lighthouse", "size": "256x256"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("ops")).start()
    yield process
    process.stop()


def post(gw: GatewayProcess, key: str, body: Mapping[str, object] = BODY, **headers: str) -> httpx.Response:
    return gw.generate(body, key, headers=headers)


def health_status(stub: health_pb2_grpc.HealthStub) -> int:
    # (the grpcio-health-checking stubs leave the stub's methods out)
    return int(stub.Check(health_pb2.HealthCheckRequest()).status)  # type: ignore[attr-defined]


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{gw.metrics_port}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_health_endpoints(gw: GatewayProcess) -> None:
    assert httpx.get(f"{gw.http_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.http_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "files": "ok", "providers": "ok"}}


def test_metrics_move_with_requests(gw: GatewayProcess) -> None:
    key = gw.new_key("metrics", "--rpm", "3")
    labels = {"model": "local/sketch", "project": "metrics"}
    before = metric(gw, "mg_requests_total", code="OK", **labels)
    for _ in range(2):
        assert post(gw, key).status_code == 200
    assert post(gw, key, BODY, **{"x-mg-idempotency-key": "m-1"}).status_code == 200
    assert (
        post(gw, key, BODY, **{"x-mg-idempotency-key": "m-1"}).status_code == 200
    )  # replay: not rate limited
    assert post(gw, key).status_code == 429
    assert metric(gw, "mg_requests_total", code="OK", **labels) - before == 4
    assert metric(gw, "mg_requests_total", code="RATE_LIMITED", **labels) == 1
    assert metric(gw, "mg_images_total", **labels) == 3
    assert metric(gw, "mg_spend_micro_usd_total", **labels) == 3000
    assert metric(gw, "mg_idempotent_total", outcome="replay") >= 1
    assert metric(gw, "mg_rejections_total", reason="rate_limit") >= 1
    rest_calls = {"method": "GenerateImagesJson", "model": "local/sketch"}  # the REST binding's RPC
    assert metric(gw, "mg_request_duration_seconds_count", **rest_calls) >= 5
    assert metric(gw, "mg_upstream_duration_seconds_count", provider="local") >= 3
    assert metric(gw, "mg_generations_in_flight") == 0


def test_caller_chosen_model_names_never_become_metric_labels(gw: GatewayProcess) -> None:
    names = [f"nosuch/{i}-" + "m" * 20_000 for i in range(3)]
    for name in names:  # keyless (401) and keyed-but-unknown (404): neither resolves the name
        assert gw.generate({"model": name, "prompt": "x"}, "mg_live_" + "Z" * 43).status_code == 401
        assert gw.generate({"model": name, "prompt": "x"}, gw.key).status_code == 404
    exposition = httpx.get(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=10).text
    assert not any(name[:40] in exposition for name in names)
    assert metric(gw, "mg_requests_total", code="MODEL_NOT_FOUND", model="unknown") >= 3
    time.sleep(0.3)
    logged = [json.loads(line) for line in "".join(gw.output).splitlines() if "nosuch/" in line]
    assert logged and all(len(line["requested_model"]) <= 100 for line in logged)


def test_one_json_log_line_per_request_and_no_secrets(gw: GatewayProcess) -> None:
    key = gw.new_key("logs")
    response = post(gw, key)
    request_id = response.headers["x-request-id"]
    assert post(gw, "mg_live_" + "Z" * 43).status_code == 401
    time.sleep(0.3)
    output = "".join(gw.output)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{") and request_id in line]
    assert len(lines) == 1
    (line,) = lines
    assert line["logger"] == "mg.request" and line["status"] == 200 and line["project"] == "logs"
    assert line["key"] == key[:12] and line["images"] == 1 and line["cost_usd"] == 0.001
    assert line["model"] == "local/sketch" and line["provider"] == "local" and line["latency_ms"] >= 0
    assert key not in output and "Z" * 43 not in output  # never a key, even a wrong one
    assert "secret lighthouse" not in output  # prompts only with MG_LOG_PROMPTS
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(record.get("code") == "UNAUTHENTICATED" for record in records)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


def test_the_log_line_and_a_histogram_say_how_long_the_edge_held_a_call(gw: GatewayProcess) -> None:
    key = gw.new_key("edge-wait")
    before = metric(gw, "mg_edge_wait_seconds_count", method="GenerateImagesJson")
    # A caller's own stamp (here: the epoch) is replaced by the edge's.
    through_edge = post(gw, key, BODY, **{"x-mg-edge-start": "0"}).headers["x-request-id"]
    channel = grpc.insecure_channel(gw.grpc_target)
    stub = pb_grpc.ImageGenerationStub(channel)
    _, call = stub.GenerateImages.with_call(
        pb.GenerateImagesRequest(model="local/sketch", prompt="x", size="256x256"),
        metadata=[("authorization", f"Bearer {key}")],
    )
    direct = dict(call.initial_metadata())["x-request-id"]
    channel.close()
    time.sleep(0.3)
    lines = {
        record["request_id"]: record
        for record in (json.loads(line) for line in "".join(gw.output).splitlines() if line.startswith("{"))
        if record.get("project") == "edge-wait"
    }
    assert 0 <= lines[through_edge]["edge_wait_ms"] < 5_000
    assert lines[direct]["edge_wait_ms"] is None  # straight to the gRPC port: no edge, no figure
    assert metric(gw, "mg_edge_wait_seconds_count", method="GenerateImagesJson") == before + 1


def test_the_log_line_words_each_warning_one_way(gw: GatewayProcess) -> None:
    body = {
        **BODY,
        "model": "local/canvas",
        "style": "vivid",
        "providerOptions": {"local": {"colour": "red"}},
    }
    response = post(gw, gw.new_key("warnings"), body)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    time.sleep(0.3)
    (line,) = [json.loads(line) for line in "".join(gw.output).splitlines() if request_id in line]
    assert line["warnings"] == [
        "style ignored: 'vivid' asked; local/canvas has no styles",
        "providerOptions.local.colour ignored: not an option of local (it takes seed, delay_ms)",
    ]


def test_readiness_and_grpc_health_follow_the_store(tmp_path: Path) -> None:
    redis_server = PrivateRedis(tmp_path).start()
    gw = GatewayProcess(tmp_path / "gw", {"MG_REDIS_URL": redis_server.url}).start()
    try:
        redis_server.stop()
        not_ready = httpx.get(f"{gw.http_url}/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "UNAVAILABLE"
        assert httpx.get(f"{gw.http_url}/healthz").status_code == 200  # alive, just not ready
        with grpc.insecure_channel(gw.grpc_target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 15
            while health_status(stub) != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            redis_server.start()
            while health_status(stub) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline + 15
                time.sleep(0.5)
        assert httpx.get(f"{gw.http_url}/readyz").status_code == 200
    finally:
        gw.stop()
        redis_server.stop()


def test_a_bad_config_file_stops_start_up_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "mg.yaml"
    config.write_text("settings:\n  shutdown_grace_s: 10\n  max_duration_s: soon\n")
    gateway = GatewayProcess(tmp_path / "data", {"MG_CONFIG": str(config)})
    run = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert f"{config}:3: max_duration_s='soon' is not a valid float" in run.stderr
    check = subprocess.run(
        [sys.executable, "-m", "service", "config", "check"], env=gateway.env, capture_output=True, text=True
    )
    assert check.returncode == 2 and ":3:" in check.stderr


def test_sigterm_drains_and_the_ledger_is_complete(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    key = gw.new_key("drain")
    slow = {**BODY, "providerOptions": {"local": {"delay_ms": 2500}}}
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(post(gw, key, slow).status_code)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)
    gw.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert results == [200, 200, 200]
    assert gw.wait(30) == 0
    rows = gw.usage("drain")
    assert [(r["requests"], r["images"], r["failed"]) for r in rows] == [(3, 3, 0)]
