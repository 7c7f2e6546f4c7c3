"""The streamed scenario of `make bench` (BENCH_SCENARIOS=stream-c8): time to the first partial image
and to the completed event, through the gateway and straight to the fake OpenAI it streams from.

`stream: true, partial_images: 2` to openai/gpt-image-1 at concurrency 8 for BENCH_DURATION seconds,
against stream_upstream.py, which answers server-sent events as OpenAI documents them (small images,
no pause: what is measured is what the path adds, not a provider's pace). Each request is read as
the SDKs read it, line by line as the bytes arrive. Unpinned, on the gateway's defaults, with a
project without a spend cap.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port

UPSTREAM = Path(__file__).with_name("stream_upstream.py")
UPSTREAM_KEY = "sk-bench-stream"

NAME = "stream-c8"
CONCURRENCY = 8
PARTIAL_IMAGES = 2


async def _one(client: httpx.AsyncClient, url: str, key: str, model: str) -> tuple[float, float]:
    body = {"model": model, "prompt": "a harbour at dawn", "stream": True, "partial_images": PARTIAL_IMAGES}
    started = time.monotonic()
    first = None
    async with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("event: ") and line.endswith(".partial_image"):
                first = time.monotonic() - started
    if first is None:
        raise ValueError("no partial image")
    return first, time.monotonic() - started


async def _load(url: str, key: str, model: str, duration_s: float) -> dict[str, Any]:
    timings: list[tuple[float, float]] = []
    errors = 0
    stop_at = time.monotonic() + duration_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            try:
                timings.append(await _one(client, url, key, model))
            except (httpx.HTTPError, ValueError):
                errors += 1

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    return {"requests": len(timings), "errors": errors, **_percentiles(timings)}


def _percentiles(timings: list[tuple[float, float]]) -> dict[str, float]:
    def ms(values: list[float], q: int) -> float:
        return round(statistics.quantiles(values, n=100)[q - 1] * 1000, 2) if len(values) > 1 else 0.0

    first, done = [t[0] for t in timings], [t[1] for t in timings]
    return {
        "first_partial_p50_ms": ms(first, 50),
        "first_partial_p99_ms": ms(first, 99),
        "completed_p50_ms": ms(done, 50),
        "completed_p99_ms": ms(done, 99),
    }


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the streaming upstream did not start") from None
            time.sleep(0.1)


def run(duration_s: float, rounds: int, placed: list[str]) -> dict[str, Any]:
    """`placed`: the command prefix placing the gateway and the upstream on CPUs (bench.placed)."""
    cells: dict[str, list[dict[str, Any]]] = {"mg": [], "direct": []}
    port = free_port()
    upstream = subprocess.Popen([*placed, sys.executable, str(UPSTREAM), "--port", str(port)])
    _wait_for(port)
    env = {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "MG_DEFAULT_RPM": "100000000",
    }
    data_dir = Path(tempfile.mkdtemp(prefix="mg-bench-stream-"))
    gateway = GatewayProcess(data_dir, env).start(command_prefix=placed)
    try:
        targets = {
            "mg": (f"{gateway.http_url}/v1", gateway.new_key("bench-stream"), "openai/gpt-image-1"),
            "direct": (f"http://127.0.0.1:{port}/v1", UPSTREAM_KEY, "gpt-image-1"),
        }
        for round_ in range(rounds):
            for target in ("mg", "direct") if round_ % 2 == 0 else ("direct", "mg"):
                base, key, model = targets[target]
                cells[target].append(asyncio.run(_load(f"{base}/images/generations", key, model, duration_s)))
    finally:
        gateway.stop()
        upstream.terminate()
        upstream.wait(10)

    def median(target: str, key: str) -> float:
        return round(float(statistics.median(cell[key] for cell in cells[target])), 2)

    keys = ("first_partial_p50_ms", "first_partial_p99_ms", "completed_p50_ms", "completed_p99_ms", "errors")
    summary = {target: {key: median(target, key) for key in keys} for target in cells}
    return {
        "description": f"stream: true, partial_images: {PARTIAL_IMAGES}, concurrency {CONCURRENCY}",
        **summary,
        "added_first_partial_p50_ms": round(
            summary["mg"]["first_partial_p50_ms"] - summary["direct"]["first_partial_p50_ms"], 2
        ),
        "cells": cells,
    }


def table(result: dict[str, Any]) -> str:
    mg, direct = result["mg"], result["direct"]
    return "\n".join(
        [
            f"{NAME}: {result['description']}",
            "",
            "| target | first partial p50 / p99 ms | completed p50 / p99 ms | errors |",
            "|---|---|---|---|",
            *(
                f"| {name} | {row['first_partial_p50_ms']} / {row['first_partial_p99_ms']} "
                f"| {row['completed_p50_ms']} / {row['completed_p99_ms']} | {row['errors']:g} |"
                for name, row in (("mg", mg), ("direct", direct))
            ),
        ]
    )
