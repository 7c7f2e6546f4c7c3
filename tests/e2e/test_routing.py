"""Routes end to end: an alias listing several models, through Envoy and the gateway to fakes of
the providers, on SQLite, Redis and PostgreSQL. The first target fails in each way another provider
could fix (connections refused, 500, 429 with Retry-After, too slow) and the second serves, charged
at its own price, with a ledger entry for each attempt; a content refusal or a target that cannot
honour the request never moves the request on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from ulid import ULID

from tests.fakes.openai_compatible import FakeCompatibleServer
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port
from tests.support.stores import store_env

MAX_DURATION_S = 10  # so a target with one after it has 5 seconds
ALPHA_MICROS, BETA_MICROS, DEAD_MICROS = 40_000, 10_000, 20_000

CONFIG = """\
settings:
  max_duration_s: {max_duration}
providers:
  alpha: {{type: openai-compatible, base_url: "{alpha}/v1"}}
  beta: {{type: openai-compatible, base_url: "{beta}/v1"}}
  dead: {{type: openai-compatible, base_url: "http://127.0.0.1:{closed}/v1"}}
models:
  alpha/flux:
    provider: alpha
    upstream_id: flux-dev
    sizes: [1024x1024, 512x512]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 4
    price: {{default: "0.04"}}
  beta/flux:
    provider: beta
    upstream_id: flux-dev
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 4
    price: {{default: "0.01"}}
  dead/flux:
    provider: dead
    upstream_id: flux-dev
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 4
    price: {{default: "0.02"}}
aliases:
  hero: [alpha/flux, beta/flux]
  down: [dead/flux, beta/flux]
  small: [beta/flux, alpha/flux]
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    alpha: FakeCompatibleServer
    beta: FakeCompatibleServer


@pytest.fixture(scope="module", params=("sqlite", "redis", "postgres"))
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ExitStack() as running:
        alpha, beta = FakeCompatibleServer(), FakeCompatibleServer()
        running.enter_context(alpha.running())
        running.enter_context(beta.running())
        env = running.enter_context(store_env(request.param))
        root = tmp_path_factory.mktemp(f"routing-{request.param}")
        config = root / "mg.yaml"
        config.write_text(
            CONFIG.format(max_duration=MAX_DURATION_S, alpha=alpha.url, beta=beta.url, closed=free_port())
        )
        gateway = GatewayProcess(root / "data", {**env, "MG_CONFIG": str(config)}).start()
        running.callback(gateway.stop)
        yield Stack(gateway, alpha, beta)


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.alpha.reset()
    stack.beta.reset()
    return stack


def project(stack: Stack, *options: str) -> tuple[str, str]:
    name = f"route-{ULID()}"
    return name, stack.gateway.new_key(name, *options)


def usage(stack: Stack, name: str) -> dict[str, dict[str, Any]]:
    rows = stack.gateway.usage(name)
    return {row["model"]: row for row in rows}


def spend(stack: Stack, name: str) -> tuple[float, float]:
    shown = stack.gateway.project(name)
    return shown["spent_usd"], shown["reserved_usd"]


def generate(stack: Stack, key: str, model: str, **fields: Any) -> httpx.Response:
    return stack.gateway.generate({"model": model, "prompt": "a lighthouse", **fields}, key)


def served(response: httpx.Response, model: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-mg-served-by"] == model
    body = response.json()
    assert len(body["data"]) == 1 and body["data"][0]["b64_json"]


def attempts_logged(stack: Stack, request_id: str) -> list[str]:
    """The `attempts` of the request's log line."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in list(stack.gateway.output):
            if request_id in line and '"attempts"' in line:
                return list(json.loads(line[line.index("{") :])["attempts"])
        time.sleep(0.1)
    raise AssertionError(f"no log line with attempts for {request_id}\n{stack.gateway.output_tail()}")


def assert_both_attempts(
    stack: Stack, name: str, first: str, first_outcome: str, first_cost: int = 0
) -> None:
    rows = usage(stack, name)
    assert (rows[first]["requests"], rows[first]["failed"], rows[first]["images"]) == (1, 1, 0), rows
    assert rows[first]["cost_micros"] == first_cost
    second = rows["beta/flux"]
    assert (second["requests"], second["failed"], second["images"], second["cost_micros"]) == (
        1,
        0,
        1,
        BETA_MICROS,
    )
    assert spend(stack, name) == ((first_cost + BETA_MICROS) / 1e6, 0.0)
    assert first_outcome  # (the outcome itself is in the log line)


def test_a_target_that_refuses_connections_is_passed_over(fresh: Stack) -> None:
    name, key = project(fresh)
    response = generate(fresh, key, "down")
    served(response, "beta/flux")
    assert response.json()["usage"]["output_images"] == 1
    assert_both_attempts(fresh, name, "dead/flux", "UPSTREAM_ERROR")
    notes = attempts_logged(fresh, response.headers["x-request-id"])
    assert [note.split()[:2] for note in notes] == [["dead/flux", "UPSTREAM_ERROR"], ["beta/flux", "ok"]]


def test_a_target_answering_500_is_passed_over(fresh: Stack) -> None:
    name, key = project(fresh)
    fresh.alpha.outage_status = 500
    response = generate(fresh, key, "hero")
    served(response, "beta/flux")
    assert response.json()["model"] == "hero"  # the name the caller asked for, as always
    assert len(fresh.alpha.generation_requests()) == 3  # its own retries first
    assert len(fresh.beta.generation_requests()) == 1
    assert_both_attempts(fresh, name, "alpha/flux", "UPSTREAM_ERROR")


def test_a_target_rate_limiting_with_retry_after_is_passed_over(fresh: Stack) -> None:
    name, key = project(fresh)
    fresh.alpha.outage_status = 429
    response = generate(fresh, key, "hero")
    served(response, "beta/flux")
    assert_both_attempts(fresh, name, "alpha/flux", "UPSTREAM_RATE_LIMITED")
    notes = attempts_logged(fresh, response.headers["x-request-id"])
    assert notes[0].startswith("alpha/flux UPSTREAM_RATE_LIMITED")


def test_a_target_slower_than_its_share_of_the_time_is_passed_over(fresh: Stack) -> None:
    # alpha has half of the max duration and answers after more: its call ends at that deadline as
    # a timeout, charged at its bound (alpha had the request and bills it, whichever of the adapter's
    # and the route's timers ends the wait), and beta serves in the time left.
    name, key = project(fresh)
    fresh.alpha.delay_s = MAX_DURATION_S / 2 + 2
    started = time.monotonic()
    response = generate(fresh, key, "hero")
    served(response, "beta/flux")
    assert MAX_DURATION_S / 2 - 0.5 < time.monotonic() - started < MAX_DURATION_S
    assert_both_attempts(fresh, name, "alpha/flux", "UPSTREAM_TIMEOUT", ALPHA_MICROS)


def test_a_content_refusal_never_moves_on_and_costs_nothing(fresh: Stack) -> None:
    name, key = project(fresh)
    response = fresh.gateway.generate({"model": "hero", "prompt": "BLOCKME please"}, key)
    assert_error(response, 400, "CONTENT_POLICY_VIOLATION")
    assert fresh.beta.generation_requests() == []
    rows = usage(fresh, name)
    assert set(rows) == {"alpha/flux"} and rows["alpha/flux"]["cost_micros"] == 0
    assert spend(fresh, name) == (0.0, 0.0)


def test_targets_that_cannot_honour_the_request_are_skipped(fresh: Stack) -> None:
    name, key = project(fresh)
    response = generate(fresh, key, "small", size="512x512")  # beta offers 1024x1024 only
    served(response, "alpha/flux")
    assert fresh.beta.requests == []
    assert set(usage(fresh, name)) == {"alpha/flux"}
    assert spend(fresh, name) == (ALPHA_MICROS / 1e6, 0.0)
    notes = attempts_logged(fresh, response.headers["x-request-id"])
    assert notes[0] == "beta/flux skipped: UNSUPPORTED_SIZE" and notes[1].startswith("alpha/flux ok")
    # none can: the first target's own answer, and nothing called or charged
    refused = assert_error(generate(fresh, key, "small", size="256x256"), 400, "UNSUPPORTED_SIZE", "size")
    assert "beta/flux" in refused["message"]
    assert fresh.beta.requests == [] and len(fresh.alpha.requests) == 1


def test_the_allowlist_applies_to_the_route_and_each_target(fresh: Stack) -> None:
    _, outside = project(fresh, "--allow", "alpha/*", "--allow", "beta/*")
    assert_error(generate(fresh, outside, "hero"), 403, "MODEL_NOT_ALLOWED", "model")
    name, key = project(fresh, "--allow", "hero", "--allow", "beta/*")
    fresh.alpha.outage_status = 500  # (not called: the project may not use it)
    served(generate(fresh, key, "hero"), "beta/flux")
    assert fresh.alpha.requests == []
    assert set(usage(fresh, name)) == {"beta/flux"}


def test_models_list_routes_with_their_targets(fresh: Stack) -> None:
    _, key = project(fresh)
    listing = httpx.get(f"{fresh.gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    entries = {entry["id"]: entry for entry in listing.json()["data"]}
    assert entries["hero"]["route"] == ["alpha/flux", "beta/flux"] and entries["hero"]["available"] is True
    one = httpx.get(f"{fresh.gateway.http_url}/v1/models/down", headers={"Authorization": f"Bearer {key}"})
    assert one.json()["route"] == ["dead/flux", "beta/flux"]


def test_fifty_concurrent_routed_requests_never_cross_the_cap(fresh: Stack) -> None:
    # Each reservation covers the dearest target (alpha, 0.04); the charge is beta's (0.01).
    name, key = project(fresh, "--budget-usd", "0.10")
    fresh.alpha.outage_status = 500
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: generate(fresh, key, "hero").status_code, range(50)))
    assert set(statuses) <= {200, 402} and statuses.count(200) >= 2, statuses
    spent, reserved = spend(fresh, name)
    assert reserved == 0.0 and spent <= 0.10
    assert round(spent * 1e6) == statuses.count(200) * BETA_MICROS
    assert usage(fresh, name)["beta/flux"]["images"] == statuses.count(200)


def test_an_idempotent_retry_during_the_fallback_gets_the_one_result(fresh: Stack) -> None:
    name, key = project(fresh)
    fresh.alpha.outage_status = 500
    fresh.alpha.delay_s = 0.5  # the first attempt takes a few seconds of retries
    headers = {"Idempotency-Key": f"route-{ULID()}"}
    body = {"model": "hero", "prompt": "a kite"}
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(fresh.gateway.generate(body, key, headers=headers)))
    thread.start()
    time.sleep(1.0)
    assert fresh.alpha.requests and not fresh.beta.requests  # still on the first target
    retry = fresh.gateway.generate(body, key, headers=headers)
    thread.join(30)
    served(first[0], "beta/flux")
    assert retry.status_code == 200 and retry.json()["data"] == first[0].json()["data"]
    assert retry.json()["created"] == first[0].json()["created"]
    assert len(fresh.beta.generation_requests()) == 1
    assert_both_attempts(fresh, name, "alpha/flux", "UPSTREAM_ERROR")
