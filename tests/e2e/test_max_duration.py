"""The max duration holds end to end: Envoy, the gRPC deadline and the server's timer agree."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess, local_body


@pytest.fixture(scope="module")
def short_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("short"), {"MG_MAX_DURATION_S": "6"}).start()
    yield process
    process.stop()


def slow_request(gateway: GatewayProcess, delay_ms: int) -> httpx.Response:
    return gateway.generate(local_body(delay_ms, prompt="slow"))


def test_a_generation_inside_the_max_duration_succeeds(short_gateway: GatewayProcess) -> None:
    # Wide headroom: on a CI machine running the whole suite in parallel, a 1.5 s generation has
    # been seen to take over 3 s end to end.
    assert slow_request(short_gateway, 1000).status_code == 200


def test_past_the_max_duration_the_server_answers_504(short_gateway: GatewayProcess) -> None:
    response = slow_request(short_gateway, 20_000)
    error = assert_error(response, 504, "UPSTREAM_TIMEOUT")
    # The server's own envelope (not Envoy's backstop, which would fire 5 s later with another text).
    assert "within 6 seconds" in error["message"]
    assert response.elapsed.total_seconds() < 10


def test_generations_longer_than_envoys_default_route_timeout_complete(gateway: GatewayProcess) -> None:
    # Envoy's default route timeout is 15 s; with the default 300 s max duration this must succeed.
    assert slow_request(gateway, 16_000).status_code == 200
