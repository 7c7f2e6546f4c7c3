"""Idempotency keys through the real stack, on SQLite, Redis and PostgreSQL: what each kind of retry gets."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc
from ulid import ULID

from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess
from tests.support.stores import store_env

BODY = {"model": "local/sketch", "prompt": "a cat", "size": "256x256"}


@pytest.fixture(scope="module", params=["sqlite", "redis", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with store_env(request.param) as env:
        process = GatewayProcess(tmp_path_factory.mktemp(f"idem-{request.param}"), env).start()
        yield process
        process.stop()


def post(
    gw: GatewayProcess,
    key: str,
    idem: str | None,
    body: dict[str, Any] | None = None,
    *,
    header: str = "x-mg-idempotency-key",
    timeout: float = 60,
) -> httpx.Response:
    headers = {header: idem} if idem is not None else {}
    return gw.generate(body or BODY, key, timeout=timeout, headers=headers)


def slow(delay_ms: int) -> dict[str, Any]:
    return {**BODY, "providerOptions": {"local": {"delay_ms": delay_ms}}}


def ledger(gw: GatewayProcess, project: str) -> list[dict[str, Any]]:
    rows = gw.usage(project)
    return list(rows)


def project_key(gw: GatewayProcess, *options: str) -> tuple[str, str]:
    name = f"idem-{ULID()}"
    return name, gw.new_key(name, *options)


def test_a_retry_after_success_replays_the_original(gw: GatewayProcess) -> None:
    name, key = project_key(gw)
    first = post(gw, key, "order-1")
    again = post(gw, key, "order-1")
    assert first.status_code == again.status_code == 200
    assert "x-mg-idempotent-replay" not in first.headers
    assert again.headers["x-mg-idempotent-replay"] == "true"
    assert again.json() == first.json()  # same id, created, image bytes, usage
    assert [(r["requests"], r["images"], r["cost_micros"]) for r in ledger(gw, name)] == [(1, 1, 1000)]


def test_the_ietf_header_is_an_alias(gw: GatewayProcess) -> None:
    _, key = project_key(gw)
    first = post(gw, key, "order-2", header="Idempotency-Key")
    again = post(gw, key, "order-2")
    assert again.headers["x-mg-idempotent-replay"] == "true" and again.json()["id"] == first.json()["id"]


def test_the_same_key_for_a_different_request_is_422_and_runs_nothing(gw: GatewayProcess) -> None:
    name, key = project_key(gw)
    assert post(gw, key, "order-3").status_code == 200
    assert_error(
        post(gw, key, "order-3", {**BODY, "size": "512x512"}),
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "idempotency_key",
    )
    assert_error(
        post(gw, key, "order-3", {**BODY, "user": "someone"}),
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "idempotency_key",
    )
    assert ledger(gw, name)[0]["requests"] == 1


def test_keys_are_scoped_to_the_project(gw: GatewayProcess) -> None:
    _, first_key = project_key(gw)
    _, other_key = project_key(gw)
    first = post(gw, first_key, "shared-name")
    other = post(gw, other_key, "shared-name")
    assert "x-mg-idempotent-replay" not in other.headers and other.json()["id"] != first.json()["id"]


def test_replays_are_served_past_the_budget_and_the_rate_limit(gw: GatewayProcess) -> None:
    name, key = project_key(gw, "--budget-usd", "0.001", "--rpm", "1")
    first = post(gw, key, "paid")
    assert first.status_code == 200
    replay = post(gw, key, "paid")
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert post(gw, key, "new-one").status_code in (402, 429)
    shown = gw.project(name)
    assert shown["spent_usd"] == 0.001


def test_twenty_concurrent_duplicates_make_one_call_and_one_charge(gw: GatewayProcess) -> None:
    name, key = project_key(gw)
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: post(gw, key, "burst", slow(1000)), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    bodies = {json.dumps(r.json(), sort_keys=True) for r in responses}
    assert len(bodies) == 1  # identical responses: one id, one set of bytes
    assert sum("x-mg-idempotent-replay" not in r.headers for r in responses) == 1
    assert [(r["requests"], r["images"], r["cost_micros"]) for r in ledger(gw, name)] == [(1, 1, 1000)]


def test_grpc_callers_pass_the_key_as_metadata(gw: GatewayProcess) -> None:
    _, key = project_key(gw)
    metadata = (("authorization", f"Bearer {key}"), ("x-mg-idempotency-key", "grpc-1"))
    request = pb.GenerateImagesRequest(model="local/sketch", prompt="a cat", size="256x256")
    with grpc.insecure_channel(gw.grpc_target) as channel:
        stub = pb_grpc.ImageGenerationStub(channel)
        first = stub.GenerateImages(request, metadata=metadata)
        again, call = stub.GenerateImages.with_call(request, metadata=metadata)
    assert again == first
    assert dict(call.initial_metadata())["x-mg-idempotent-replay"] == "true"


def test_a_failure_releases_the_key_and_is_never_charged(gw: GatewayProcess) -> None:
    name, key = project_key(gw)
    refused = {**BODY, "providerOptions": {"local": {"seed": "not-a-number"}}}
    param = "providerOptions.local.seed"
    assert_error(post(gw, key, "retry-me", refused), 400, "BAD_REQUEST", param)
    assert_error(post(gw, key, "retry-me", refused), 400, "BAD_REQUEST", param)  # ran again, not replayed
    assert post(gw, key, "retry-me").status_code == 200  # the key is free for a corrected request
    (row,) = ledger(gw, name)
    assert (row["requests"], row["failed"], row["images"], row["cost_micros"]) == (3, 2, 1, 1000)


@pytest.mark.parametrize("idem", ["k" * 256, "tab\there"])
def test_malformed_keys_are_400(gw: GatewayProcess, idem: str) -> None:
    _, key = project_key(gw)
    assert_error(post(gw, key, idem), 400, "BAD_REQUEST", "idempotency_key")


def test_two_different_keys_in_one_request_are_400(gw: GatewayProcess) -> None:
    _, key = project_key(gw)
    response = httpx.post(
        f"{gw.http_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {key}", "x-mg-idempotency-key": "a", "Idempotency-Key": "b"},
        json=BODY,
    )
    assert_error(response, 400, "BAD_REQUEST", "idempotency_key")


def test_a_client_that_gives_up_gets_the_result_on_retry(gw: GatewayProcess) -> None:
    name, key = project_key(gw)
    with pytest.raises(httpx.ReadTimeout):
        post(gw, key, "impatient", slow(2000), timeout=0.5)
    time.sleep(2.5)  # the generation finishes in the background
    retry = post(gw, key, "impatient", slow(2000))
    assert retry.status_code == 200 and retry.headers["x-mg-idempotent-replay"] == "true"
    assert [(r["requests"], r["images"], r["cost_micros"]) for r in ledger(gw, name)] == [(1, 1, 1000)]


# --- gateways of their own: a short max duration, and a crash


def test_a_504_does_not_cancel_the_generation(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, {"MG_MAX_DURATION_S": "2"}).start()
    try:
        name, key = project_key(gw)
        started = time.monotonic()
        assert_error(post(gw, key, "long-one", slow(4000)), 504, "UPSTREAM_TIMEOUT")
        assert time.monotonic() - started < 4
        time.sleep(3)  # the provider finishes at ~4 s, in the background
        retry = post(gw, key, "long-one", slow(4000))
        assert retry.status_code == 200 and retry.headers["x-mg-idempotent-replay"] == "true"
        assert [(r["requests"], r["images"], r["cost_micros"]) for r in ledger(gw, name)] == [(1, 1, 1000)]
        # without a key the generation also goes on (the provider bills it) and is charged once done,
        # but no retry can collect it
        assert_error(post(gw, key, None, slow(4000)), 504, "UPSTREAM_TIMEOUT")
        time.sleep(3)
        rows = ledger(gw, name)
        assert (rows[0]["requests"], rows[0]["failed"], rows[0]["images"], rows[0]["cost_micros"]) == (
            2,
            0,
            2,
            2000,
        )
    finally:
        gw.stop()


def test_a_crashed_servers_claim_lapses_and_the_retry_runs_once(tmp_path: Path) -> None:
    env = {"MG_IDEMPOTENCY_LEASE_S": "2"}
    first = GatewayProcess(tmp_path, env).start()
    name, key = project_key(first)
    thread = threading.Thread(
        target=lambda: _swallow(lambda: post(first, key, "crash", slow(5000), timeout=10))
    )
    thread.start()
    time.sleep(1)  # claimed and running
    first.crash()
    thread.join()
    second = GatewayProcess(tmp_path, env).start()
    try:
        # joins the dead claim until its lease lapses, then runs the generation itself
        retry = post(second, key, "crash", slow(5000))
        assert retry.status_code == 200 and "x-mg-idempotent-replay" not in retry.headers
        again = post(second, key, "crash", slow(5000))
        assert again.headers["x-mg-idempotent-replay"] == "true" and again.json()["id"] == retry.json()["id"]
        rows = ledger(second, name)
        assert [(r["images"], r["cost_micros"]) for r in rows] == [(1, 1000)]
    finally:
        second.stop()


def _swallow(call: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call()
