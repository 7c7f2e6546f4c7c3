"""Several keys for one provider, end to end through Envoy and the gateway to fakes that answer
per key: calls spread by weight, a rate-limited key cools down while the other carries the traffic,
a rejected key is taken out. One worker: what a worker learns of its keys is its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from ulid import ULID

from tests.fakes.openai_compatible import FakeCompatibleServer
from tests.support.checks import assert_error
from tests.support.compatible_stack import compatible_stack
from tests.support.gateway import GatewayProcess

KEYS = {
    "alpha": "[{api_key: k-one}, {api_key: k-two}]",
    "beta": "[{api_key: bad}, {api_key: good}]",
    "gamma": "[{api_key: heavy, weight: 3}, {api_key: light}]",
}


@dataclass
class Stack:
    gateway: GatewayProcess
    fakes: dict[str, FakeCompatibleServer]
    key: str

    def generate(self, provider: str) -> httpx.Response:
        return self.gateway.generate({"model": f"{provider}/flux", "prompt": "a lighthouse"}, self.key)

    def keys_used(self, provider: str) -> list[str]:
        return [
            r.headers["authorization"].removeprefix("Bearer ")
            for r in self.fakes[provider].generation_requests()
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    entries = {name: f"keys: {keys}" for name, keys in KEYS.items()}
    with compatible_stack(tmp_path_factory.mktemp("credentials"), entries, env={"MG_WORKERS": "1"}) as stack:
        yield Stack(stack.gateway, stack.fakes, stack.gateway.new_key(f"credentials-{ULID()}"))


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    for fake in stack.fakes.values():
        fake.reset()
    return stack


def test_calls_are_spread_over_the_keys_by_weight(fresh: Stack) -> None:
    for _ in range(8):
        assert fresh.generate("gamma").status_code == 200
    used = fresh.keys_used("gamma")
    assert (used.count("heavy"), used.count("light")) == (6, 2)
    assert used[:4] in (["heavy", "heavy", "light", "heavy"], ["heavy", "light", "heavy", "heavy"])


def test_a_rate_limited_key_cools_down_and_the_other_carries_the_traffic(fresh: Stack) -> None:
    alpha = fresh.fakes["alpha"]
    alpha.outage_status, alpha.outage_key, alpha.outage_retry_after = 429, "k-one", "30"
    for _ in range(6):
        response = fresh.generate("alpha")
        assert response.status_code == 200, response.text
    used = fresh.keys_used("alpha")
    # k-one answered 429 once (not retried with the same key), and is left alone for its 30 s
    assert used.count("k-one") == 1 and used.count("k-two") == 6
    assert any("key key 1 is rate-limited" in line for line in fresh.gateway.output)


def test_a_rejected_key_is_taken_out_and_reported(fresh: Stack) -> None:
    beta = fresh.fakes["beta"]
    beta.outage_status, beta.outage_key = 401, "bad"
    for _ in range(4):
        assert fresh.generate("beta").status_code == 200
    assert fresh.keys_used("beta").count("bad") == 1
    assert any("rejected key key 1; it is taken out" in line for line in fresh.gateway.output)
    metrics = httpx.get(f"http://127.0.0.1:{fresh.gateway.metrics_port}/metrics").text
    assert 'mg_credentials_rejected_total{credential="key 1",provider="beta"} 1.0' in metrics


def test_with_every_key_rate_limited_the_answer_says_when_to_come_back(fresh: Stack) -> None:
    alpha = fresh.fakes["alpha"]
    alpha.outage_status, alpha.outage_retry_after = 429, "30"
    # (k-one may still be cooling down from the test before: then only k-two is asked)
    assert_error(fresh.generate("alpha"), 429, "UPSTREAM_RATE_LIMITED")
    asked = len(alpha.generation_requests())
    refused = fresh.generate("alpha")
    assert_error(refused, 503, "UNAVAILABLE")
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert len(alpha.generation_requests()) == asked  # no key was asked again
