"""The admin API through Envoy (REST under /v1/admin/) and over gRPC: every route, its credentials
(admin token, console session cookie + CSRF), what it changes and the audit log of it, against the
real gateway with two workers."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from mg.v1 import admin_pb2 as admin_pb
from mg.v1 import admin_pb2_grpc as admin_grpc
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc
from ulid import ULID

from service.admin_session import COOKIE_NAME, CSRF_HEADER
from service.admin_token import DEV_ADMIN_TOKEN_FILE, token_sha256
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess, local_body
from tests.support.stores import STORES, store_env

SKETCH_PRICE_MICROS = 1000  # local/sketch at 256x256, catalog


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A first start (dev project and admin token made), keeping prompts in the ledger."""
    process = GatewayProcess(tmp_path_factory.mktemp("admin-api"), {"MG_LOG_PROMPTS": "true"}).start()
    yield process
    process.stop()


def admin_token(gw: GatewayProcess) -> str:
    return (gw.data_dir / DEV_ADMIN_TOKEN_FILE).read_text().strip()


def call(
    gw: GatewayProcess,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = "",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A REST call to the admin API with the admin token (token="": the gateway's; None: none)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token or admin_token(gw)}"
    return httpx.request(method, f"{gw.http_url}{path}", headers=sent, json=body, timeout=30)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def unique(name: str) -> str:
    return f"{name}-{ULID()}"


def audit(gw: GatewayProcess) -> list[dict[str, Any]]:
    return list(ok(call(gw, "GET", "/v1/admin/audit?page_size=500"))["entries"])


# --- credentials

ROUTES = [
    ("POST", "/v1/admin/session"),
    ("DELETE", "/v1/admin/session"),
    ("GET", "/v1/admin/projects"),
    ("GET", "/v1/admin/projects/dev"),
    ("POST", "/v1/admin/projects"),
    ("PATCH", "/v1/admin/projects/dev"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys/key_x/revoke"),
    ("GET", "/v1/admin/usage"),
    ("GET", "/v1/admin/ledger"),
    ("GET", "/v1/admin/inflight"),
    ("GET", "/v1/admin/audit"),
]


def test_the_routes_are_the_admin_services_methods() -> None:
    methods = admin_pb.DESCRIPTOR.services_by_name["Admin"].methods
    assert len(ROUTES) == len(methods)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_missing_wrong_or_project_credential(
    gw: GatewayProcess, method: str, path: str
) -> None:
    body: dict[str, Any] | None = {} if method in ("POST", "PATCH") else None
    before = len(audit(gw))
    for token in (None, "mg_admin_wrong", gw.key, admin_token(gw) + "x", token_sha256(admin_token(gw))):
        error = assert_error(call(gw, method, path, body, token=token), 401, "UNAUTHENTICATED")
        assert admin_token(gw) not in error["message"]
    assert_error(
        call(gw, method, path, body, token=None, headers={"Authorization": f"Basic {admin_token(gw)}"}),
        401,
        "UNAUTHENTICATED",
    )
    assert len(audit(gw)) == before


def test_the_admin_token_is_not_an_api_key(gw: GatewayProcess) -> None:
    assert_error(gw.generate(local_body(), admin_token(gw)), 401, "UNAUTHENTICATED")
    response = httpx.get(f"{gw.http_url}/v1/models", headers={"Authorization": f"Bearer {admin_token(gw)}"})
    assert_error(response, 401, "UNAUTHENTICATED")


def test_the_token_is_never_logged(gw: GatewayProcess) -> None:
    call(gw, "GET", "/v1/admin/projects")
    call(gw, "GET", "/v1/admin/projects", token="mg_admin_wrong-" + admin_token(gw)[9:])
    gw.generate(local_body(), admin_token(gw))
    # (the ready block shows the dev setup's token, once, on purpose; the log lines never do)
    logged = "".join(line for line in gw.output if line.startswith("{"))
    assert '"method":"ListProjects"' in logged and admin_token(gw)[9:] not in logged
    envoy_logs = [path.read_text(errors="replace") for path in gw.data_dir.rglob("*.log")]
    assert all(admin_token(gw)[9:] not in text for text in envoy_logs)
    metrics = httpx.get(f"http://127.0.0.1:{gw.metrics_port}/metrics").text
    assert 'method="ListProjects"' in metrics and admin_token(gw)[9:] not in metrics


def test_the_ready_block_prints_the_admin_api_and_its_token(gw: GatewayProcess) -> None:
    ready = "".join(gw.output)
    assert f"Admin API:                {gw.http_url}/v1/admin  (admin token: {admin_token(gw)})" in ready


def test_the_admin_api_works_over_grpc_with_the_admin_token_only(gw: GatewayProcess) -> None:
    with grpc.insecure_channel(gw.grpc_target) as channel:
        stub = admin_grpc.AdminStub(channel)
        answer = stub.ListProjects(
            admin_pb.ListProjectsRequest(), metadata=[("authorization", f"Bearer {admin_token(gw)}")]
        )
        assert "dev" in [p.name for p in answer.projects]
        for wrong in (gw.key, "mg_admin_wrong"):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListProjects(
                    admin_pb.ListProjectsRequest(), metadata=[("authorization", f"Bearer {wrong}")]
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        images = pb_grpc.ImageGenerationStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            images.ListModels(
                pb.ListModelsRequest(), metadata=[("authorization", f"Bearer {admin_token(gw)}")]
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- projects and keys


def test_a_project_and_key_made_through_the_api_generate_at_once(gw: GatewayProcess) -> None:
    name = unique("api")
    created = ok(
        call(gw, "POST", "/v1/admin/projects", {"name": name, "budget_usd": "0.5", "allow": ["local/*"]})
    )
    assert created["name"] == name and created["budget_micros"] == "500000" and created["budget_usd"] == 0.5
    assert created["allow"] == ["local/*"] and "rpm" not in created and created["spent_micros"] == "0"
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))
    assert key["key"].startswith("mg_live_") and key["record"]["project"] == name
    assert key["record"]["prefix"] == key["key"][:12] and "revoked_at" not in key["record"]
    response = gw.generate(local_body(prompt="a lighthouse"), key["key"])
    assert response.status_code == 200, response.text
    shown = ok(call(gw, "GET", f"/v1/admin/projects/{name}"))
    assert (
        shown["spent_micros"] == str(SKETCH_PRICE_MICROS) and shown["spent_usd"] == SKETCH_PRICE_MICROS / 1e6
    )
    # the allowlist set through the API holds at once
    refused = gw.generate({"model": "openai/dall-e-3", "prompt": "x"}, key["key"])
    assert_error(refused, 403, "MODEL_NOT_ALLOWED", "model")
    listed = ok(call(gw, "GET", f"/v1/admin/keys?project={name}"))["keys"]
    assert [k["id"] for k in listed] == [key["record"]["id"]] and "key" not in listed[0]
    assert name in [p["name"] for p in ok(call(gw, "GET", "/v1/admin/projects"))["projects"]]


def test_updates_change_only_what_they_name_and_hold_at_once(gw: GatewayProcess) -> None:
    name = unique("upd")
    ok(
        call(
            gw,
            "POST",
            "/v1/admin/projects",
            {"name": name, "budget_usd": "5", "allow": ["local/*"], "rpm": 7},
        )
    )
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))["key"]
    updated = ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"rpm": 2}))
    assert (updated["rpm"], updated["budget_usd"], updated["allow"]) == (2, 5, ["local/*"])
    ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"allow": {"patterns": []}}))
    allowed = ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"budget_usd": "0.0005"}))
    assert "allow" not in allowed and allowed["budget_micros"] == "500"
    # a cap below one image's price: refused before any provider call
    assert_error(gw.generate(local_body(), key), 402, "BUDGET_EXCEEDED")
    uncapped = ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"no_budget": True}))
    assert "budget_micros" not in uncapped and "budget_usd" not in uncapped
    assert gw.generate(local_body(), key).status_code == 200


def test_a_budget_period_is_set_shown_and_changed_through_the_api(gw: GatewayProcess) -> None:
    name = unique("period")
    created = ok(
        call(
            gw, "POST", "/v1/admin/projects", {"name": name, "budget_usd": "0.002", "budget_period": "month"}
        )
    )
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    renews = (start + timedelta(days=32)).replace(day=1)
    assert created["budget_period"] == "month"
    assert (created["period_start"], created["renews_at"]) == (start.timestamp(), renews.timestamp())
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))["key"]
    assert gw.generate(local_body(), key).status_code == 200
    shown = ok(call(gw, "GET", f"/v1/admin/projects/{name}"))
    assert (shown["spent_micros"], shown["budget_period"]) == ("1000", "month")
    # A new period starts now and carries what the month spent: no fresh allowance.
    before = time.time()
    changed = ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"budget_period": "7d"}))
    assert changed["budget_period"] == "7d" and changed["spent_micros"] == "1000"
    assert int(before) <= changed["period_start"] <= time.time()
    assert changed["renews_at"] == changed["period_start"] + 7 * 86_400
    assert gw.generate(local_body(), key).status_code == 200
    refused = gw.generate(local_body(), key)
    assert_error(refused, 402, "BUDGET_EXCEEDED")
    assert "left for the rolling 7-day period; it renews at " in refused.json()["error"]["message"]
    lifetime = ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"budget_period": "none"}))
    assert "budget_period" not in lifetime and "renews_at" not in lifetime
    assert lifetime["spent_micros"] == "2000"  # the lifetime total: every charge


def test_bad_admin_input_is_a_clear_4xx_that_changes_nothing(gw: GatewayProcess) -> None:
    name = unique("bad")
    ok(call(gw, "POST", "/v1/admin/projects", {"name": name}))
    before = (ok(call(gw, "GET", "/v1/admin/projects")), audit(gw))
    cases: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
        ("POST", "/v1/admin/projects", {"name": name}, 400, "BAD_REQUEST"),  # exists
        ("POST", "/v1/admin/projects", {"name": ""}, 400, "BAD_REQUEST"),
        ("POST", "/v1/admin/projects", {"name": "x" * 101}, 400, "BAD_REQUEST"),
        ("POST", "/v1/admin/projects", {"name": unique("n"), "budget_usd": "lots"}, 400, "BAD_REQUEST"),
        ("POST", "/v1/admin/projects", {"name": unique("n"), "rpm": 0}, 400, "BAD_REQUEST"),
        ("POST", "/v1/admin/projects", {"name": unique("n"), "rpm": -1}, 400, "BAD_REQUEST"),
        ("PATCH", f"/v1/admin/projects/{name}", {"budget_usd": "-1"}, 400, "BAD_REQUEST"),
        ("PATCH", f"/v1/admin/projects/{name}", {"budget_usd": "1", "no_budget": True}, 400, "BAD_REQUEST"),
        (
            "POST",
            "/v1/admin/projects",
            {"name": unique("n"), "budget_usd": "1", "budget_period": "fortnight"},
            400,
            "BAD_REQUEST",
        ),
        (
            "POST",
            "/v1/admin/projects",
            {"name": unique("n"), "budget_usd": "1", "budget_period": "0d"},
            400,
            "BAD_REQUEST",
        ),
        ("POST", "/v1/admin/projects", {"name": unique("n"), "budget_period": "month"}, 400, "BAD_REQUEST"),
        ("PATCH", f"/v1/admin/projects/{name}", {"budget_period": "week"}, 400, "BAD_REQUEST"),  # no cap
        (
            "PATCH",
            f"/v1/admin/projects/{name}",
            {"budget_usd": "1", "budget_period": "367d"},
            400,
            "BAD_REQUEST",
        ),
        ("PATCH", "/v1/admin/projects/no-such-project", {"rpm": 5}, 404, "NOT_FOUND"),
        ("GET", "/v1/admin/projects/no-such-project", None, 404, "NOT_FOUND"),
        ("POST", "/v1/admin/keys", {"project": "no-such-project"}, 404, "NOT_FOUND"),
        ("POST", "/v1/admin/keys", {}, 400, "BAD_REQUEST"),
        ("POST", "/v1/admin/keys/key_01NOSUCHKEY/revoke", {}, 404, "NOT_FOUND"),
        ("POST", "/v1/admin/keys/mg_live_abc/revoke", {}, 400, "BAD_REQUEST"),
        ("GET", "/v1/admin/keys?project=no-such-project", None, 404, "NOT_FOUND"),
        ("GET", "/v1/admin/usage?since=yesterday", None, 400, "BAD_REQUEST"),
        ("GET", "/v1/admin/ledger?page_size=501", None, 400, "BAD_REQUEST"),
        ("GET", "/v1/admin/ledger?page_token=nope", None, 400, "BAD_REQUEST"),
        ("GET", "/v1/admin/ledger?until=soon", None, 400, "BAD_REQUEST"),
        ("GET", "/v1/admin/ledger?project=no-such-project", None, 404, "NOT_FOUND"),
        ("GET", "/v1/admin/audit?page_size=501", None, 400, "BAD_REQUEST"),
        ("GET", "/v1/admin/nothing-here", None, 404, "NOT_FOUND"),
    ]
    for method, path, body, status, code in cases:
        response = call(gw, method, path, body)
        assert response.status_code == status, (method, path, body, response.text)
        assert response.json()["error"]["code"] == code, (method, path, response.text)
    raw = httpx.post(
        f"{gw.http_url}/v1/admin/projects",
        headers={"Authorization": f"Bearer {admin_token(gw)}", "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert raw.status_code == 400, raw.text
    assert (ok(call(gw, "GET", "/v1/admin/projects")), audit(gw)) == before


def tcp_connections() -> list[tuple[int, int, str]]:
    """(local port, remote port, socket inode) of every TCP socket on the machine (IPv4 and IPv6:
    gRPC opens IPv6 sockets that carry IPv4 as mapped addresses)."""
    connections = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            connections.append((local, remote, fields[9]))
    return connections


def socket_inodes(pid: int | str) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def workers_serving_this_process(gw: GatewayProcess) -> set[int]:
    """The worker processes holding the server side of this process's connections to them."""
    connections = tcp_connections()
    mine = socket_inodes("self")
    client_ports = {local for local, remote, inode in connections if remote == gw.grpc_port and inode in mine}
    workers = set()
    for pid in gw.children():
        held = socket_inodes(pid)
        if any(
            local == gw.grpc_port and remote in client_ports and inode in held
            for local, remote, inode in connections
        ):
            workers.add(pid)
    return workers


def test_a_key_revoked_through_the_api_stops_at_once_on_every_worker(gw: GatewayProcess) -> None:
    name = unique("rev")
    ok(call(gw, "POST", "/v1/admin/projects", {"name": name}))
    created = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))
    key, key_id = created["key"], created["record"]["id"]
    metadata = [("authorization", f"Bearer {key}")]
    # Connections straight to the workers' shared port: the kernel spreads them over the workers.
    channels = [
        grpc.insecure_channel(gw.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(12)
    ]
    try:
        stubs = [pb_grpc.ImageGenerationStub(channel) for channel in channels]
        for stub in stubs:  # each worker that serves one has just accepted this key
            assert stub.ListModels(pb.ListModelsRequest(), metadata=metadata).data
        workers = [pid for pid in gw.children() if pid != gw.envoy_pid()]
        assert len(workers) == 2
        assert workers_serving_this_process(gw) == set(workers)
        revoked = ok(call(gw, "POST", f"/v1/admin/keys/{key_id}/revoke", {}))
        assert revoked["id"] == key_id and revoked["revoked_at"] > 0
        for stub in stubs:
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListModels(pb.ListModelsRequest(), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        for channel in channels:
            channel.close()
    assert_error(gw.generate(local_body(), key), 401, "UNAUTHENTICATED")
    assert_error(call(gw, "POST", f"/v1/admin/keys/{key_id}/revoke", {}), 404, "NOT_FOUND")
    (listed,) = ok(call(gw, "GET", f"/v1/admin/keys?project={name}"))["keys"]
    assert listed["revoked_at"] == revoked["revoked_at"]


# --- usage, ledger, in flight


def test_usage_is_the_same_as_mg_usage(gw: GatewayProcess) -> None:
    name = unique("use")
    ok(call(gw, "POST", "/v1/admin/projects", {"name": name}))
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))["key"]
    for _ in range(2):
        assert gw.generate(local_body(), key).status_code == 200
    assert gw.generate({**local_body(), "n": 2}, key).status_code == 200
    cli = gw.usage(name)
    rows = ok(call(gw, "GET", f"/v1/admin/usage?project={name}"))["rows"]
    assert [
        (
            r["project"],
            r["model"],
            r["requests"],
            r["failed"],
            r["images"],
            int(r["cost_micros"]),
            r["cost_usd"],
        )
        for r in rows
    ] == [
        (r["project"], r["model"], r["requests"], r["failed"], r["images"], r["cost_micros"], r["cost_usd"])
        for r in cli
    ]
    assert rows[0]["requests"] == 3 and rows[0]["images"] == 4 and "day" not in rows[0]
    by_day = ok(call(gw, "GET", f"/v1/admin/usage?project={name}&by_day=true&since=1h"))["rows"]
    assert [r["day"] for r in by_day] == [time.strftime("%Y-%m-%d", time.gmtime())]
    cli_by_day = json.loads(gw.mg("usage", "--project", name, "--by-day", "--json").stdout)
    assert [(r["day"], r["requests"]) for r in cli_by_day] == [(by_day[0]["day"], 3)]
    everyone = ok(call(gw, "GET", "/v1/admin/usage"))["rows"]
    assert name in {r["project"] for r in everyone}


def test_the_ledger_pages_and_filters_and_keeps_prompts_where_allowed(gw: GatewayProcess) -> None:
    name = unique("led")
    ok(call(gw, "POST", "/v1/admin/projects", {"name": name}))
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))["key"]
    started = time.time()
    for i in range(5):
        assert gw.generate(local_body(prompt=f"<b>prompt {i}</b>"), key).status_code == 200
    seen: list[dict[str, Any]] = []
    token = ""
    pages = 0
    while True:
        page = ok(call(gw, "GET", f"/v1/admin/ledger?project={name}&page_size=2&page_token={token}"))
        seen += page["entries"]
        pages += 1
        token = page.get("next_page_token", "")
        if not token:
            break
    assert pages == 3
    assert [e["prompt"] for e in seen] == [f"<b>prompt {i}</b>" for i in range(4, -1, -1)]
    first = seen[-1]
    assert first["project"] == name and first["model"] == "local/sketch" and first["outcome"] == "ok"
    assert first["cost_micros"] == str(SKETCH_PRICE_MICROS) and first["images_returned"] == 1
    assert first["created_at"] >= started and first["request_id"]
    # a microsecond before the entry, so printing six decimals cannot round past it
    since_s = seen[1]["created_at"] - 1e-6
    since = ok(call(gw, "GET", f"/v1/admin/ledger?project={name}&since={since_s:.6f}"))
    assert [e["request_id"] for e in since["entries"]][-1] in {seen[1]["request_id"], seen[2]["request_id"]}
    none = ok(call(gw, "GET", f"/v1/admin/ledger?project={name}&outcome=UPSTREAM_ERROR"))
    assert none == {}
    models = ok(call(gw, "GET", "/v1/admin/ledger?model=local/sketch&page_size=500"))["entries"]
    assert {e["request_id"] for e in seen} <= {e["request_id"] for e in models}


def test_generations_in_flight_are_listed_from_every_worker(gw: GatewayProcess) -> None:
    name = unique("fly")
    ok(call(gw, "POST", "/v1/admin/projects", {"name": name}))
    created = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))
    answers: list[int] = []
    slow = [
        threading.Thread(
            target=lambda: answers.append(gw.generate(local_body(delay_ms=4000), created["key"]).status_code)
        )
        for _ in range(4)
    ]
    for thread in slow:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        mine: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(mine) < 4:
            listed = ok(call(gw, "GET", "/v1/admin/inflight")).get("generations", [])
            mine = [g for g in listed if g["project"] == name]
            time.sleep(0.1)
        assert len(mine) == 4
        for generation in mine:
            assert generation["model"] == "local/sketch" and generation["key_id"] == created["record"]["id"]
            assert int(generation["reserved_micros"]) >= SKETCH_PRICE_MICROS and generation["started_at"] > 0
    finally:
        for thread in slow:
            thread.join()
    assert answers == [200] * 4
    listed = ok(call(gw, "GET", "/v1/admin/inflight")).get("generations", [])
    assert [g for g in listed if g["project"] == name] == []


# --- sessions


def sign_in(gw: GatewayProcess, headers: dict[str, str] | None = None) -> tuple[httpx.Response, str, str]:
    """(the answer, the cookie's value, the CSRF value)."""
    answer = call(gw, "POST", "/v1/admin/session", {}, headers=headers)
    body = ok(answer)
    cookie = answer.headers["set-cookie"]
    value = cookie.split(";", 1)[0].removeprefix(f"{COOKIE_NAME}=")
    return answer, value, body["csrf_token"]


def test_a_session_cookie_reads_and_with_its_csrf_value_writes(gw: GatewayProcess) -> None:
    answer, cookie, csrf = sign_in(gw)
    attributes = [part.strip() for part in answer.headers["set-cookie"].split(";")]
    assert attributes[1:] == ["Path=/", "Max-Age=28800", "HttpOnly", "SameSite=Strict"]
    assert answer.json()["expires_at"] == pytest.approx(time.time() + 28800, abs=30)
    session = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    assert "dev" in [
        p["name"] for p in ok(call(gw, "GET", "/v1/admin/projects", token=None, headers=session))["projects"]
    ]
    name = unique("web")
    before = len(audit(gw))
    # a write by cookie alone (what a cross-site form could make a browser send) is refused
    for headers in (session, {**session, CSRF_HEADER: "wrong"}, {**session, CSRF_HEADER: sign_in(gw)[2]}):
        refused = call(gw, "POST", "/v1/admin/projects", {"name": name}, token=None, headers=headers)
        assert_error(refused, 403, "FORBIDDEN")
    assert len(audit(gw)) == before
    assert_error(call(gw, "GET", f"/v1/admin/projects/{name}"), 404, "NOT_FOUND")
    written = call(
        gw, "POST", "/v1/admin/projects", {"name": name}, token=None, headers={**session, CSRF_HEADER: csrf}
    )
    assert ok(written)["name"] == name
    entry = audit(gw)[0]
    token_id = answer.json()["token_id"]
    assert (entry["action"], entry["target"], entry["actor"]) == (
        "project.create",
        name,
        f"session of admin token {token_id}",
    )
    # a session cannot make another session: signing in takes the admin token
    assert_error(
        call(gw, "POST", "/v1/admin/session", {}, token=None, headers={**session, CSRF_HEADER: csrf}),
        401,
        "UNAUTHENTICATED",
    )
    # signing out clears the cookie (and is a write: it takes the CSRF value too)
    assert_error(call(gw, "DELETE", "/v1/admin/session", token=None, headers=session), 403, "FORBIDDEN")
    out = call(gw, "DELETE", "/v1/admin/session", token=None, headers={**session, CSRF_HEADER: csrf})
    assert (
        ok(out) == {}
        and f"{COOKIE_NAME}=;" in out.headers["set-cookie"]
        and "Max-Age=0" in out.headers["set-cookie"]
    )


def test_a_forged_or_foreign_cookie_is_refused(gw: GatewayProcess) -> None:
    _, cookie, csrf = sign_in(gw)
    version, token_id, expires, nonce, signature = cookie.split(".")
    for forged in (
        f"{version}.{token_id}.{int(expires) + 86400}.{nonce}.{signature}",
        f"{version}.{token_id}.{expires}.{nonce}.{signature[::-1]}",
        "v1.adm_000000000000.9999999999.x.y",
        "garbage",
    ):
        headers = {"Cookie": f"{COOKIE_NAME}={forged}", CSRF_HEADER: csrf}
        assert_error(
            call(gw, "GET", "/v1/admin/projects", token=None, headers=headers), 401, "UNAUTHENTICATED"
        )
    # the cookie is not an API key either
    response = httpx.get(f"{gw.http_url}/v1/models", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
    assert_error(response, 401, "UNAUTHENTICATED")


def test_the_cookie_is_secure_when_the_browser_came_over_tls(gw: GatewayProcess) -> None:
    answer, _, _ = sign_in(gw, {"X-Forwarded-Proto": "https"})
    assert answer.headers["set-cookie"].endswith("; Secure")
    out = call(gw, "DELETE", "/v1/admin/session", headers={"X-Forwarded-Proto": "https"})
    assert out.headers["set-cookie"].endswith("; Secure")


# --- audit


def test_every_change_through_the_api_is_audited_with_its_token_id(gw: GatewayProcess) -> None:
    token_id = "adm_" + token_sha256(admin_token(gw))[:12]
    name = unique("aud")
    ok(
        call(
            gw,
            "POST",
            "/v1/admin/projects",
            {"name": name, "budget_usd": "2", "allow": ["local/*"], "rpm": 9},
        )
    )
    ok(call(gw, "PATCH", f"/v1/admin/projects/{name}", {"no_budget": True}))
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))["record"]
    ok(call(gw, "POST", f"/v1/admin/keys/{key['id']}/revoke", {}))
    gw.mg("projects", "update", name, "--rpm", "3")
    entries = audit(gw)[:5]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("project.update", name),
        ("key.revoke", key["id"]),
        ("key.create", key["id"]),
        ("project.update", name),
        ("project.create", name),
    ]
    assert entries[0]["actor"].startswith("mg command (")
    assert {e["actor"] for e in entries[1:]} == {f"admin token {token_id}"}
    assert entries[4]["detail"] == {
        "budget_usd": "2",
        "budget_period": "none",
        "allow": "local/*",
        "rpm": "9",
    }
    assert entries[3]["detail"]["budget_usd"] == "none"
    assert entries[2]["detail"] == {"project": name, "prefix": key["prefix"]}
    assert all(e["at"] > 0 and e["id"].startswith("aud_") for e in entries)
    assert all(admin_token(gw) not in json.dumps(e) for e in audit(gw))
    # reads are not changes
    ok(call(gw, "GET", "/v1/admin/projects"))
    assert audit(gw)[:5] == entries
    # paged
    first = ok(call(gw, "GET", "/v1/admin/audit?page_size=2"))
    second = ok(call(gw, "GET", f"/v1/admin/audit?page_size=2&page_token={first['next_page_token']}"))
    assert [e["id"] for e in first["entries"] + second["entries"]] == [e["id"] for e in entries[:4]]


# --- no admin token configured


def test_without_an_admin_token_every_admin_route_is_404(tmp_path: Path) -> None:
    """A gateway whose data dir had a project before its first start made no dev setup, so no admin
    token: the admin API is off, whatever is presented."""
    off = GatewayProcess(tmp_path)
    off.mg("projects", "create", "prod")
    off.start()
    try:
        assert not (tmp_path / DEV_ADMIN_TOKEN_FILE).exists()
        assert "Admin API:                off" in "".join(off.output)
        for method, path in ROUTES:
            body: dict[str, Any] | None = {} if method in ("POST", "PATCH") else None
            for headers in ({}, {"Authorization": "Bearer mg_admin_anything"}):
                response = httpx.request(method, f"{off.http_url}{path}", headers=headers, json=body)
                assert_error(response, 404, "NOT_FOUND")
    finally:
        off.stop()


def test_a_configured_token_or_its_hash_opens_the_admin_api(tmp_path: Path) -> None:
    token = "mg_admin_" + "c" * 43
    configured = GatewayProcess(tmp_path, {"MG_ADMIN_TOKEN_SHA256": token_sha256(token)}).start()
    try:
        assert not (tmp_path / DEV_ADMIN_TOKEN_FILE).exists()
        assert "(with the configured admin token)" in "".join(configured.output)
        answer = httpx.get(
            f"{configured.http_url}/v1/admin/projects", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok(answer)["projects"][0]["name"] == "dev"
        wrong = httpx.get(
            f"{configured.http_url}/v1/admin/projects", headers={"Authorization": "Bearer mg_admin_x"}
        )
        assert_error(wrong, 401, "UNAUTHENTICATED")
    finally:
        configured.stop()


# --- shared stores


@pytest.mark.parametrize("store", [s for s in STORES if s != "sqlite"])
def test_on_a_shared_store_the_admin_api_takes_a_configured_token_and_works_end_to_end(
    tmp_path: Path, store: str
) -> None:
    """Replicas have data dirs of their own: a gateway on a shared store makes no admin token on its
    first start, and with one configured the admin API runs on that store."""
    with store_env(store) as env:
        unset = GatewayProcess(tmp_path / "unset", env).start()
        try:
            assert not (unset.data_dir / DEV_ADMIN_TOKEN_FILE).exists()
            assert "Admin API:                off" in "".join(unset.output)
            assert_error(httpx.get(f"{unset.http_url}/v1/admin/projects"), 404, "NOT_FOUND")
        finally:
            unset.stop()
        token = "mg_admin_" + "r" * 43
        shared = GatewayProcess(tmp_path / "shared", {**env, "MG_ADMIN_TOKEN": token}).start()
        try:
            name = unique("shared")
            ok(call(shared, "POST", "/v1/admin/projects", {"name": name, "budget_usd": "1"}, token=token))
            created = ok(call(shared, "POST", "/v1/admin/keys", {"project": name}, token=token))
            slow = threading.Thread(target=lambda: shared.generate(local_body(delay_ms=2000), created["key"]))
            slow.start()
            try:
                deadline = time.monotonic() + 10
                flying: list[dict[str, Any]] = []
                while not flying and time.monotonic() < deadline:
                    listed = ok(call(shared, "GET", "/v1/admin/inflight", token=token)).get("generations", [])
                    flying = [g for g in listed if g["project"] == name]
                assert [(g["model"], g["key_id"]) for g in flying] == [
                    ("local/sketch", created["record"]["id"])
                ]
            finally:
                slow.join()
            page = ok(call(shared, "GET", f"/v1/admin/ledger?project={name}&model=local/sketch", token=token))
            assert [e["cost_micros"] for e in page["entries"]] == [str(SKETCH_PRICE_MICROS)]
            ok(call(shared, "POST", f"/v1/admin/keys/{created['record']['id']}/revoke", {}, token=token))
            assert_error(shared.generate(local_body(), created["key"]), 401, "UNAUTHENTICATED")
            entries = ok(call(shared, "GET", "/v1/admin/audit?page_size=3", token=token))["entries"]
            assert [e["action"] for e in entries] == ["key.revoke", "key.create", "project.create"]
        finally:
            shared.stop()


def test_mg_ledger_and_mg_audit_show_what_the_api_shows(gw: GatewayProcess) -> None:
    name = unique("cli")
    ok(call(gw, "POST", "/v1/admin/projects", {"name": name}))
    key = ok(call(gw, "POST", "/v1/admin/keys", {"project": name}))["key"]
    for _ in range(3):
        assert gw.generate(local_body(), key).status_code == 200
    api = ok(call(gw, "GET", f"/v1/admin/ledger?project={name}&page_size=2"))["entries"]
    cli = json.loads(gw.mg("ledger", "--project", name, "--limit", "2", "--json").stdout)
    assert [(e["request_id"], e["project"], e["model"], e["outcome"]) for e in cli] == [
        (e["request_id"], e["project"], e["model"], e["outcome"]) for e in api
    ]
    assert "local/sketch" in gw.mg("ledger", "--project", name).stdout
    api_audit = ok(call(gw, "GET", "/v1/admin/audit?page_size=3"))["entries"]
    cli_audit = json.loads(gw.mg("audit", "--limit", "3", "--json").stdout)
    assert [(e["id"], e["actor"], e["action"], e["target"], e["detail"]) for e in cli_audit] == [
        (e["id"], e["actor"], e["action"], e["target"], e["detail"]) for e in api_audit
    ]
    assert name in gw.mg("audit").stdout
    refused = gw.mg("ledger", "--limit", "501", check=False)
    assert refused.returncode == 1 and "1-500 entries" in refused.stderr
