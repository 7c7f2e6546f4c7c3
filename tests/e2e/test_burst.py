"""Thousands of generations arriving at once: every one is served, none refused by the gateway itself.

A burst reaches a worker faster than its event loop takes calls in; gRPC holds the rest in a queue
that, on its defaults, starts refusing calls at random past 1,000 (they came out as 499 CANCELLED).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.fake_upstream import UPSTREAM_KEY, fake_upstream
from tests.support.gateway import GatewayProcess

CALLERS = 2_000
UPSTREAM_DELAY_MS = 4_000


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[int]:
    """An OpenAI-shaped upstream that answers every generation after UPSTREAM_DELAY_MS, cheaply."""
    with fake_upstream("--delay-ms", str(UPSTREAM_DELAY_MS)) as port:
        yield port


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory, slow_upstream: int) -> Iterator[GatewayProcess]:
    """One worker, so the whole burst queues at one gRPC server."""
    env = {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{slow_upstream}/v1",
        "MG_WORKERS": "1",
        "MG_DEFAULT_RPM": "1000000",
    }
    process = GatewayProcess(tmp_path_factory.mktemp("burst"), env).start()
    yield process
    process.stop()


async def burst(url: str, key: str, callers: int) -> collections.Counter[int | str]:
    body = {"model": "openai/dall-e-3", "prompt": "a fox in the snow", "size": "1024x1024"}
    outcomes: collections.Counter[int | str] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=240)
    ) as session:

        async def one() -> None:
            try:
                async with session.post(
                    url, json=body, headers={"Authorization": f"Bearer {key}"}
                ) as response:
                    await response.read()
                    outcomes[response.status] += 1
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(one() for _ in range(callers)))
    return outcomes


def test_two_thousand_callers_at_once_are_all_served(one_worker: GatewayProcess) -> None:
    key = one_worker.new_key("burst")
    outcomes = asyncio.run(burst(f"{one_worker.http_url}/v1/images/generations", key, CALLERS))
    assert outcomes == {200: CALLERS}
