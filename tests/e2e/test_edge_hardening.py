"""What the edge (real Envoy, started by `mg serve`) lets a caller or a local user do.

Its admin interface is a Unix socket only the gateway's user can open, and its log is private; a
call without a key is refused from its headers, before its body is read; uploads are bounded in
time and, through Envoy's overload manager, in memory; and no caller header shortens or repeats a
call that has gone upstream.
"""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import cast

import grpc
import httpx
import pytest
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.errors import MISSING_KEY
from service.runtime.envoy_admin import admin_request
from tests.support.checks import assert_error
from tests.support.edge import MIB, listening_tcp_ports, paused_uploads, rss_bytes, start_upload
from tests.support.gateway import GatewayProcess, local_body

REQUEST_TIMEOUT_S = 1.0
MG_VERSION = version("mg-gateway")
HEADERS_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("edge")
    # A log left world-readable by an earlier version of the gateway.
    (data_dir / "run").mkdir()
    (data_dir / "run" / "envoy.log").touch(mode=0o644)
    (data_dir / "run" / "envoy.log").chmod(0o644)
    overrides = {
        "MG_ENVOY_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "MG_ENVOY_HEADERS_TIMEOUT_S": str(HEADERS_TIMEOUT_S),
    }
    process = GatewayProcess(data_dir, overrides).start()
    yield process
    process.stop()


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the HTTP/1.1 response on `sock`, which must start within
    `timeout_s` (socket.timeout otherwise)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


# --- the admin interface and the log (finding 5) -------------------------------------------------


def test_no_tcp_port_of_envoy_serves_its_admin_interface(gw: GatewayProcess) -> None:
    # Before: the admin interface on 127.0.0.1:<admin port>, where any local user could POST
    # /logging?http=debug (Envoy then logged API keys) or /quitquitquit (the gateway stopped).
    ports = listening_tcp_ports(gw.envoy_pid())
    assert ports == {gw.http_port, gw.envoy_stats_port}
    for port in sorted(ports):
        for method, path in [("GET", "/ready"), ("POST", "/logging?level=debug"), ("POST", "/quitquitquit")]:
            url = f"http://127.0.0.1:{port}{path}"
            response = httpx.request(method, url, headers={"Authorization": f"Bearer {gw.key}"})
            assert response.status_code == 404, (port, path, response.text)
    assert gw.generate(local_body()).status_code == 200  # still serving


def test_envoys_stats_are_served_on_their_port(gw: GatewayProcess) -> None:
    text = httpx.get(f"http://127.0.0.1:{gw.envoy_stats_port}/stats/prometheus").text
    assert "envoy_http_downstream_rq_total" in text


def test_the_admin_socket_and_the_envoy_log_are_private(gw: GatewayProcess) -> None:
    # Before: no socket (admin on TCP). The log: a debug level would write API keys there.
    mode = gw.admin_socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE((gw.data_dir / "run" / "envoy.log").stat().st_mode) == 0o600
    assert admin_request(gw.admin_socket, "/ready") == (200, b"LIVE\n")


# --- refused before the body is read (finding 7) ------------------------------------------------


def server_envelope_for_a_missing_key(gw: GatewayProcess) -> dict[str, object]:
    """The envelope the gRPC server itself gives a call without a key (straight to a worker)."""
    with grpc.insecure_channel(gw.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ImageGenerationStub(channel).GenerateImages(pb.GenerateImagesRequest(prompt="x"))
    trailers = {str(k): v for k, v in cast(grpc.Call, caught.value).trailing_metadata() or ()}
    return dict(json.loads(trailers["x-mg-error"]))


def test_a_call_without_a_key_is_refused_before_its_body_is_read(gw: GatewayProcess) -> None:
    # Before: Envoy buffered the body (up to 32 MiB) and waited for all of it before the server
    # could say 401; this connection has sent 64 KiB of 29 MiB and gets no answer.
    sock = start_upload(gw.http_port, 29 * MIB, {}, sent_bytes=64 * 1024)
    with sock:
        status, headers, body = read_response(sock, timeout_s=5)
    assert status == 401 and headers["content-type"] == "application/json" and headers["x-request-id"]
    assert json.loads(body) == server_envelope_for_a_missing_key(gw)
    assert json.loads(body)["error"] == {
        "code": "UNAUTHENTICATED",
        "message": MISSING_KEY,
        "type": "authentication_error",
        "param": None,
    }
    assert_error(httpx.get(f"{gw.http_url}/v1/models"), 401, "UNAUTHENTICATED")


def test_a_native_grpc_call_without_a_key_through_the_edge_is_unauthenticated(gw: GatewayProcess) -> None:
    edge = grpc.insecure_channel(f"127.0.0.1:{gw.http_port}")
    with edge as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ImageGenerationStub(channel).GenerateImages(pb.GenerateImagesRequest(prompt="x"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == MISSING_KEY


def test_public_routes_need_no_key_and_take_no_large_body(gw: GatewayProcess) -> None:
    assert httpx.get(f"{gw.http_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gw.http_url}/readyz").status_code == 200
    assert_error(httpx.get(f"{gw.http_url}/v1/files/file_123"), 404, "NOT_FOUND", "id")
    # Before: a keyless GET with a body was buffered like any upload (up to 32 MiB).
    response = httpx.request("GET", f"{gw.http_url}/v1/files/file_123", content=b" " * (256 * 1024))
    assert_error(response, 413, "REQUEST_TOO_LARGE")


def test_keyless_uploads_leave_envoys_memory_flat(gw: GatewayProcess) -> None:
    # Finding 7's measurement: 8 connections each sending 29 MiB without a key, then waiting.
    # Before: Envoy grew by ~235 MB (all of it buffered); now each is refused at its headers.
    pid = gw.envoy_pid()
    before = rss_bytes(pid)
    with paused_uploads(gw.http_port, count=8, body_mib=29, headers={}):
        time.sleep(0.5)
        grown = rss_bytes(pid) - before
    assert grown < 32 * MIB, f"Envoy grew by {grown / MIB:.0f} MiB"


# --- time bounds on uploads (finding 7) ----------------------------------------------------------


def test_a_request_slower_than_the_request_timeout_gets_a_408_envelope(gw: GatewayProcess) -> None:
    # Before: no request timeout; a client sending its body slowly held the stream for minutes.
    sock = start_upload(gw.http_port, 1000, {"Authorization": f"Bearer {gw.key}"}, sent_bytes=10)
    with sock:
        started = time.monotonic()
        status, _, body = read_response(sock, timeout_s=REQUEST_TIMEOUT_S + 5)
    assert status == 408 and time.monotonic() - started < REQUEST_TIMEOUT_S + 3
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_headers_slower_than_the_headers_timeout_are_cut_off(gw: GatewayProcess) -> None:
    # Before: no headers timeout; half-sent headers held the connection until the idle timeout (1 h).
    with socket.create_connection(("127.0.0.1", gw.http_port)) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(HEADERS_TIMEOUT_S + 5)
        started = time.monotonic()
        while sock.recv(65536):  # whatever Envoy says (408), then it closes
            pass
    assert time.monotonic() - started < HEADERS_TIMEOUT_S + 3


# --- no caller header sets the deadline (finding 1, the edge part) -------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "grpc-timeout: 100m",
        "x-envoy-upstream-rq-timeout-ms: 100",
        "x-envoy-upstream-rq-per-try-timeout-ms: 100",
        "x-envoy-expected-rq-timeout-ms: 100",
    ],
)
def test_no_caller_header_cuts_a_generation_short(gw: GatewayProcess, header: str) -> None:
    # Before: `grpc-timeout` reached the gRPC server as the call's deadline (504 after 0.1 s, the
    # provider call already sent). The generation also outlasts the 1 s request timeout: that
    # timer stops once the request is upstream.
    name, _, value = header.partition(": ")
    response = gw.generate(local_body(delay_ms=1500, prompt=name), headers={name: value})
    assert response.status_code == 200, response.text
    assert response.elapsed.total_seconds() >= 1.5


# --- memory bound for calls that carry some key (finding 7) ---------------------------------------


def test_the_overload_manager_bounds_what_uploads_with_a_key_can_hold(tmp_path: Path) -> None:
    # A request with any Authorization is buffered before the server checks the key. Past 95 % of
    # MG_ENVOY_MAX_HEAP_BYTES Envoy answers new requests 503, past 98 % it stops taking connections
    # and aborts uploads still sending. Before: no overload manager; all 8 x 29 MiB were held
    # (~235 MB), and a request on a kept-alive connection was served.
    limit = 96 * MIB
    gateway = GatewayProcess(tmp_path, {"MG_ENVOY_MAX_HEAP_BYTES": str(limit)}).start()
    try:
        pid = gateway.envoy_pid()
        before = rss_bytes(pid)
        url = f"{gateway.http_url}/v1/images/generations"
        with httpx.Client(headers={"Authorization": f"Bearer {gateway.key}"}, timeout=60) as caller:
            assert caller.post(url, json=local_body()).status_code == 200  # a kept-alive connection
            with paused_uploads(gateway.http_port, 8, 29, {"Authorization": "Bearer mg_live_x"}, 0.5):
                grown = rss_bytes(pid) - before
                shed = caller.post(url, json=local_body())
        assert grown < limit + 32 * MIB, f"Envoy grew by {grown / MIB:.0f} MiB"
        assert shed.status_code == 503 and shed.headers["content-type"] == "application/json"
        assert shed.json()["error"] == {
            "code": "UNAVAILABLE",
            "message": "The gateway is overloaded; retry shortly.",
            "type": "server_error",
            "param": None,
        }
        deadline = time.monotonic() + 10  # the held buffers are freed, and the edge serves again
        while True:
            try:
                if gateway.generate(local_body()).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the edge did not recover"
            time.sleep(0.5)
    finally:
        gateway.stop()


# --- every answer names the gateway's version ------------------------------------------------------


def assert_versioned(headers: httpx.Headers | dict[str, str], what: str) -> None:
    assert headers.get("server") == f"mg/{MG_VERSION}", (what, dict(headers))
    assert headers.get("x-mg-version") == MG_VERSION, (what, dict(headers))


def test_every_answer_carries_the_version_errors_and_the_edges_own_included(gw: GatewayProcess) -> None:
    key = {"Authorization": f"Bearer {gw.key}"}
    url = gw.http_url
    answers = {
        "a worker's answer": httpx.get(f"{url}/v1/models", headers=key),
        "health": httpx.get(f"{url}/healthz"),
        "the API document": httpx.get(f"{url}/openapi.json"),
        "a stream": gw.generate({**local_body(), "stream": True}),
        "a worker's error": gw.generate({**local_body(), "model": "nope/x"}),
        "the edge's 401 (Lua, before the body)": httpx.get(f"{url}/v1/models"),
        "the transcoder's unknown route": httpx.get(f"{url}/v2/nothing", headers=key),
        "the transcoder's malformed JSON": httpx.post(
            f"{url}/v1/images/generations", headers=key, content=b"{nope"
        ),
        "the buffer filter's 413": httpx.request("GET", f"{url}/healthz", content=b" " * (256 * 1024)),
        "a HEAD": httpx.head(f"{url}/v1/models", headers=key),
    }
    for what, response in answers.items():
        assert_versioned(response.headers, what)
    assert [answers[w].status_code for w in ("a stream", "a worker's error", "the buffer filter's 413")] == [
        200,
        404,
        413,
    ]
    # The connection manager's own reply (the request timeout), which no filter sees.
    sock = start_upload(gw.http_port, 1000, key, sent_bytes=10)
    with sock:
        status, headers, _ = read_response(sock, timeout_s=REQUEST_TIMEOUT_S + 5)
    assert status == 408
    assert_versioned(headers, "the request timeout's 408")
