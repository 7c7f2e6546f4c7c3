"""Keys, allowlists, rate limits, spend caps and the ledger, through Envoy with the OpenAI SDK,
against a gateway on each store: SQLite (embedded), Redis, PostgreSQL, and PostgreSQL with its rate
limits in Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from ulid import ULID

from service.config import load_settings
from service.stores import open_store
from service.stores.periods import iso
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess, local_body
from tests.support.sdk import openai_client
from tests.support.stores import STORES, store_env

SKETCH_PRICE_MICROS = 1000  # local/sketch, catalog.yaml


@pytest.fixture(scope="module", params=STORES)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with store_env(request.param) as env:
        process = GatewayProcess(tmp_path_factory.mktemp(f"enforce-{request.param}"), env).start()
        yield process
        process.stop()


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai_client(f"{gw.http_url}/v1", key)


def post(gw: GatewayProcess, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return gw.generate(body or {"model": "local/sketch", "prompt": "a cat", "size": "256x256"}, key)


def unique(name: str) -> str:
    return f"{name}-{ULID()}"


# --- keys


def test_keys_create_prints_the_key_alone(gw: GatewayProcess) -> None:
    gw.mg("projects", "create", name := unique("p"))
    out = gw.mg("keys", "create", "--project", name).stdout
    assert out.startswith("mg_live_") and out.count("\n") == 1 and len(out.strip()) >= 8 + 43
    listed = json.loads(gw.mg("keys", "list", "--project", name, "--json").stdout)
    assert [k["prefix"] for k in listed] == [out.strip()[:12]]
    assert "key_hash" not in listed[0] and out.strip() not in json.dumps(listed)


@pytest.mark.parametrize("key", ["mg_live_" + "A" * 43, "sk-not-ours", "mg_live_short"])
def test_unknown_or_malformed_keys_are_401(gw: GatewayProcess, key: str) -> None:
    assert_error(post(gw, key), 401, "UNAUTHENTICATED")
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, key).models.list()


def test_a_revoked_key_stops_working_at_once(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("revoke"))
    assert post(gw, key).status_code == 200
    key_id = json.loads(gw.mg("keys", "list", "--project", name, "--json").stdout)[0]["id"]
    gw.mg("keys", "revoke", key_id)
    error = assert_error(post(gw, key), 401, "UNAUTHENTICATED")
    assert "revoked" in error["message"]
    assert gw.mg("keys", "revoke", key_id, check=False).returncode == 1  # already revoked


# --- allowlist


def test_models_outside_the_allowlist_are_403_and_hidden(gw: GatewayProcess) -> None:
    key = gw.new_key(unique("allow"), "--allow", "local/canvas")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk(gw, key).images.generate(model="local/sketch", prompt="x", size="256x256")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "MODEL_NOT_ALLOWED" and caught.value.body["param"] == "model"
    assert sdk(gw, key).images.generate(model="local/canvas", prompt="x", size="256x256").data
    assert [m.id for m in sdk(gw, key).models.list()] == ["local/canvas"]


def test_allowlist_globs(gw: GatewayProcess) -> None:
    key = gw.new_key(unique("glob"), "--allow", "local/*")
    assert post(gw, key).status_code == 200


def test_the_allowlist_is_checked_before_validation(gw: GatewayProcess) -> None:
    key = gw.new_key(unique("first"), "--allow", "local/canvas")
    assert_error(
        post(gw, key, {"model": "local/sketch", "prompt": "x", "size": "nope"}),
        403,
        "MODEL_NOT_ALLOWED",
        "model",
    )


# --- rate limits


def test_rate_limit_with_openai_headers_and_retry_after(gw: GatewayProcess) -> None:
    key = gw.new_key(unique("rpm"), "--rpm", "3")
    responses = [post(gw, key) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["2", "1", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in responses)
    assert responses[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = post(gw, key)
    assert_error(refused, 429, "RATE_LIMITED")
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(gw, key).images.generate(model="local/sketch", prompt="x", size="256x256")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "RATE_LIMITED"


def test_rate_limit_holds_across_worker_processes(gw: GatewayProcess) -> None:
    key = gw.new_key(unique("rpm-many"), "--rpm", "5")
    body = local_body(300)
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: post(gw, key, body).status_code, range(20)))
    assert statuses.count(200) == 5 and statuses.count(429) == 15


def test_rate_limits_are_per_key(gw: GatewayProcess) -> None:
    first = gw.new_key(name := unique("perkey"), "--rpm", "1")
    second = gw.mg("keys", "create", "--project", name).stdout.strip()
    assert post(gw, first).status_code == 200
    assert post(gw, first).status_code == 429
    assert post(gw, second).status_code == 200


# --- spend caps and the ledger


def test_budget_exceeded_is_402_and_the_provider_is_not_called(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("cap"), "--budget-usd", "0.0025")
    assert [post(gw, key).status_code for _ in range(2)] == [200, 200]
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gw, key).images.generate(model="local/sketch", prompt="x", size="256x256")
    assert caught.value.status_code == 402
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "BUDGET_EXCEEDED"
    assert "$0.0005" in caught.value.body["message"]
    (row,) = gw.usage(name)
    assert (row["requests"], row["images"], row["cost_micros"]) == (2, 2, 2 * SKETCH_PRICE_MICROS)
    shown = gw.project(name)
    assert (shown["spent_usd"], shown["reserved_usd"]) == (0.002, 0.0)


def reanchor(gw: GatewayProcess, name: str, anchor: int) -> None:
    """Move a rolling period's anchor in the gateway's store, as `mg projects update` would have set
    it at `anchor`: the boundary comes by the store's own clock, with nothing in the gateway faked."""

    async def move() -> None:
        store = open_store(load_settings(gw.env))
        try:
            project = await store.get_project(name)
            assert project is not None
            await store.update_project(replace(project, budget_anchor=anchor))
        finally:
            await store.close()

    asyncio.run(move())


def test_a_cap_that_renews_refuses_until_its_period_ends_then_serves_again(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("renews"), "--budget-usd", "0.002", "--budget-period", "1d")
    # A day-long rolling period set almost a day ago: it renews a few seconds from now.
    renews = int(time.time()) + 15
    reanchor(gw, name, renews - 86_400)
    assert [post(gw, key).status_code for _ in range(2)] == [200, 200]
    refused = post(gw, key)
    assert_error(refused, 402, "BUDGET_EXCEEDED")
    message = refused.json()["error"]["message"]
    assert "$0 of its $0.002 spend cap left for the rolling 1-day period" in message
    assert f"it renews at {iso(renews)}" in message
    shown = gw.project(name)
    assert (shown["budget_period"], shown["spent_usd"], shown["renews_at"]) == ("1d", 0.002, iso(renews))
    time.sleep(max(0.0, renews + 0.5 - time.time()))
    assert post(gw, key).status_code == 200
    shown = gw.project(name)
    assert (shown["spent_usd"], shown["period_start"], shown["renews_at"]) == (
        0.001,
        iso(renews),
        iso(renews + 86_400),
    )
    (row,) = gw.usage(name)  # the ledger has every charge, across periods
    assert row["cost_micros"] == 3 * SKETCH_PRICE_MICROS


def test_the_estimate_covers_every_requested_image(gw: GatewayProcess) -> None:
    key = gw.new_key(unique("cap-n"), "--budget-usd", "0.003")
    assert_error(
        post(gw, key, {"model": "local/sketch", "prompt": "x", "size": "256x256", "n": 4}),
        402,
        "BUDGET_EXCEEDED",
    )
    assert (
        post(gw, key, {"model": "local/sketch", "prompt": "x", "size": "256x256", "n": 3}).status_code == 200
    )


def test_fifty_concurrent_requests_never_cross_a_cap_of_ten(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("race"), "--budget-usd", "0.010")
    body = local_body(500)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: post(gw, key, body).status_code, range(50)))
    assert statuses.count(200) == 10 and statuses.count(402) == 40
    shown = gw.project(name)
    assert (shown["spent_usd"], shown["reserved_usd"]) == (0.01, 0.0)
    (row,) = gw.usage(name)
    assert (row["requests"], row["images"], row["cost_micros"]) == (10, 10, 10 * SKETCH_PRICE_MICROS)


def test_a_failed_call_costs_nothing_and_is_in_the_ledger(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("fail"), "--budget-usd", "1")
    # The local adapter refuses this option after the reservation was made.
    body = {
        "model": "local/sketch",
        "prompt": "x",
        "size": "256x256",
        "providerOptions": {"local": {"seed": "x"}},
    }
    assert_error(post(gw, key, body), 400, "BAD_REQUEST", "providerOptions.local.seed")
    (row,) = gw.usage(name)
    assert (row["requests"], row["failed"], row["images"], row["cost_micros"]) == (1, 1, 0, 0)
    shown = gw.project(name)
    assert (shown["spent_usd"], shown["reserved_usd"]) == (0.0, 0.0)


def test_a_caller_that_disconnects_after_the_call_was_sent_pays_for_it(gw: GatewayProcess) -> None:
    # The provider bills a generation it started; hanging up must not make it free, however often.
    key = gw.new_key(name := unique("gone"), "--budget-usd", "1")
    body = {**local_body(1500, prompt="hang up"), "size": "256x256"}
    for _ in range(2):
        with pytest.raises(httpx.ReadTimeout):
            gw.generate(body, key, timeout=0.7)
    deadline = time.monotonic() + 10
    while (rows := gw.usage(name)) == [] or rows[0]["images"] < 2:
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert (rows[0]["requests"], rows[0]["failed"], rows[0]["images"], rows[0]["cost_micros"]) == (
        2,
        0,
        2,
        2 * SKETCH_PRICE_MICROS,
    )
    shown = gw.project(name)
    assert (shown["spent_usd"], shown["reserved_usd"]) == (0.002, 0.0)


def test_ledger_entries_carry_the_request(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("ledger"))
    body = {
        "model": "local/sketch",
        "prompt": "a lighthouse at dusk, photorealistic",
        "size": "512x512",
        "n": 2,
        "quality": "hd",
    }
    response = post(gw, key, body)
    assert response.status_code == 200
    # input tokens counted with the o200k_base tokenizer (9 tokens), not estimated from characters
    assert response.json()["usage"]["input_tokens"] == 9
    (row,) = gw.usage(name)
    assert row["model"] == "local/sketch" and row["images"] == 2 and row["input_tokens"] == 9
    assert row["cost_micros"] == 2 * 2000  # hd price
    table = gw.mg("usage", "--project", name, "--since", "1h").stdout
    assert "local/sketch" in table and "$0.004" in table


def test_projects_can_be_updated(gw: GatewayProcess) -> None:
    key = gw.new_key(name := unique("update"), "--budget-usd", "0.001")
    assert post(gw, key).status_code == 200
    assert post(gw, key).status_code == 402
    gw.mg("projects", "update", name, "--budget-usd", "0.002", "--allow", "local/canvas")
    assert post(gw, key).status_code == 403
    gw.mg("projects", "update", name, "--allow-all", "--no-budget")
    assert post(gw, key).status_code == 200
    shown = gw.project(name)
    assert shown["budget_usd"] is None and shown["allow"] == []


def test_admin_cli_rejects_bad_input(gw: GatewayProcess) -> None:
    assert gw.mg("projects", "create", "x", "--budget-usd", "lots", check=False).returncode == 1
    assert gw.mg("projects", "show", unique("missing"), check=False).returncode == 1
    assert gw.mg("keys", "create", "--project", unique("missing"), check=False).returncode == 1
    assert gw.mg("usage", "--since", "yesterday-ish", check=False).returncode == 1
    gw.mg("projects", "create", name := unique("dup"))
    duplicate = gw.mg("projects", "create", name, check=False)
    assert duplicate.returncode == 1 and "exists" in duplicate.stderr
