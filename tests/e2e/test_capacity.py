"""Per-provider concurrency limits and circuit breakers, end to end through Envoy and the gateway
to fakes of the providers. The limit is measured at the fake itself (the most requests it was
answering at once), with two workers sharing it through the store, on SQLite and on Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from ulid import ULID

from tests.fakes.openai_compatible import FakeCompatibleServer
from tests.support.checks import assert_error
from tests.support.compatible_stack import compatible_stack
from tests.support.gateway import GatewayProcess
from tests.support.stores import store_env


@dataclass
class Stack:
    gateway: GatewayProcess
    fakes: dict[str, FakeCompatibleServer]

    def key(self) -> str:
        return self.gateway.new_key(f"capacity-{ULID()}")

    def generate(self, key: str, model: str, n: int = 1) -> httpx.Response:
        return self.gateway.generate({"model": model, "prompt": "a lighthouse", "n": n}, key)


@contextmanager
def stack_of(
    root: Path, limits: dict[str, str], aliases: str = "", env: dict[str, str] | None = None
) -> Iterator[Stack]:
    with compatible_stack(root, limits, aliases, env) as stack:
        yield Stack(stack.gateway, stack.fakes)


@pytest.fixture(scope="module", params=("sqlite", "redis"))
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    limits = {
        "alpha": "max_in_flight: 2, max_queue_wait_s: 30",
        "gamma": "max_in_flight: 1, max_queue_wait_s: 0.3",
        "beta": "",
    }
    with (
        store_env(request.param) as env,
        stack_of(
            tmp_path_factory.mktemp(f"capacity-{request.param}"),
            limits,
            "aliases:\n  busy: [gamma/flux, beta/flux]\n",
            env,  # two workers (the default here): the limit holds across them through the store
        ) as stack,
    ):
        yield stack


def test_ten_callers_never_have_more_than_max_in_flight_calls_upstream(limited: Stack) -> None:
    fake = limited.fakes["alpha"]
    fake.reset()
    fake.delay_s = 0.3
    key = limited.key()
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: limited.generate(key, "alpha/flux").status_code, range(10)))
    assert statuses == [200] * 10  # the others waited their turn
    assert len(fake.generation_requests()) == 10
    assert fake.most_in_flight == 2


def test_fanned_out_calls_count_one_by_one(limited: Stack) -> None:
    fake = limited.fakes["alpha"]
    fake.reset()
    fake.delay_s = 0.3
    response = limited.generate(limited.key(), "alpha/flux", n=4)  # 4 upstream calls of 1
    assert response.status_code == 200 and len(response.json()["data"]) == 4
    assert fake.most_in_flight == 2


def test_past_the_queue_time_a_route_moves_on_for_want_of_capacity(limited: Stack) -> None:
    gamma, beta = limited.fakes["gamma"], limited.fakes["beta"]
    gamma.reset()
    beta.reset()
    gamma.delay_s = 2.0
    key = limited.gateway.new_key(name := f"busy-{ULID()}")
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: limited.generate(key, "busy"), range(3)))
    assert [a.status_code for a in answers] == [200] * 3
    served = sorted(a.headers["x-mg-served-by"] for a in answers)
    assert served == ["beta/flux", "beta/flux", "gamma/flux"]
    assert len(gamma.generation_requests()) == 1 and gamma.most_in_flight == 1
    # the ledger has the attempts that reached a provider: none for the two refused for capacity
    usage = {row["model"]: row for row in limited.gateway.usage(name)}
    assert (usage["gamma/flux"]["requests"], usage["beta/flux"]["requests"]) == (1, 2)
    # called directly, the same is a 503 with Retry-After, and nothing is charged for it
    gamma.delay_s = 1.5
    with ThreadPoolExecutor(2) as pool:
        direct = list(pool.map(lambda _: limited.generate(key, "gamma/flux"), range(2)))
    refused = [a for a in direct if a.status_code != 200]
    assert len(refused) == 1
    assert_error(refused[0], 503, "UNAVAILABLE")
    assert "No capacity for gamma" in refused[0].json()["error"]["message"]


@pytest.fixture(scope="module")
def breaker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # One worker: a breaker is per worker, and the test reads the state the one worker holds.
    limits = {"delta": "breaker_failures: 2, breaker_cooldown_s: 2", "beta": ""}
    with stack_of(
        tmp_path_factory.mktemp("breaker"),
        limits,
        "aliases:\n  guarded: [delta/flux, beta/flux]\n",
        {"MG_WORKERS": "1", "MG_UPSTREAM_ATTEMPTS": "1"},
    ) as stack:
        yield stack


def available(stack: Stack, key: str, model: str) -> bool:
    entry = httpx.get(
        f"{stack.gateway.http_url}/v1/models/{model}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    return bool(entry["available"])


def readiness(stack: Stack) -> dict[str, str]:
    return dict(json.loads(httpx.get(f"{stack.gateway.http_url}/readyz").text)["checks"])


def circuit_metric(stack: Stack) -> str:
    metrics = httpx.get(f"http://127.0.0.1:{stack.gateway.metrics_port}/metrics").text
    return next(line for line in metrics.splitlines() if line.startswith('mg_circuit_open{provider="delta"}'))


def test_a_breaker_opens_after_failures_then_closes_after_its_probe(breaker: Stack) -> None:
    delta, beta = breaker.fakes["delta"], breaker.fakes["beta"]
    key = breaker.key()
    delta.outage_status = 500
    for _ in range(2):
        assert_error(breaker.generate(key, "delta/flux"), 502, "UPSTREAM_ERROR")
    assert len(delta.generation_requests()) == 2
    # open: refused at once, without calling it; shown in the models, readiness and metrics
    refused = assert_error(breaker.generate(key, "delta/flux"), 503, "UNAVAILABLE")
    assert "circuit breaker is open" in refused["message"]
    assert len(delta.generation_requests()) == 2
    assert available(breaker, key, "delta/flux") is False and available(breaker, key, "beta/flux") is True
    assert readiness(breaker)["providers"] == "circuit open: delta"
    assert circuit_metric(breaker).endswith(" 1.0")
    # a route passes it over without calling it
    routed = breaker.generate(key, "guarded")
    assert routed.status_code == 200 and routed.headers["x-mg-served-by"] == "beta/flux"
    assert len(delta.generation_requests()) == 2 and len(beta.generation_requests()) == 1
    # after the cool-down one probe goes through; it fails: open again for another cool-down
    time.sleep(2.2)
    assert_error(breaker.generate(key, "delta/flux"), 502, "UPSTREAM_ERROR")
    assert len(delta.generation_requests()) == 3
    assert_error(breaker.generate(key, "delta/flux"), 503, "UNAVAILABLE")
    # the provider is back: the next probe succeeds and the circuit closes
    delta.outage_status = 0
    time.sleep(2.2)
    assert breaker.generate(key, "delta/flux").status_code == 200
    assert breaker.generate(key, "delta/flux").status_code == 200
    assert len(delta.generation_requests()) == 5
    assert available(breaker, key, "delta/flux") is True
    assert readiness(breaker)["providers"] == "ok"
    assert circuit_metric(breaker).endswith(" 0.0")
