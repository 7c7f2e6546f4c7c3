"""The design's floor that `make bench` sets beside mg (tests/bench/floor.py) serves the generation
route through mg's own edge, so its figures are those of the same path without mg's work."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from tests.bench.floor import floor_process
from tests.support.fake_upstream import UPSTREAM_KEY, fake_upstream

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_floor_relays_generations_through_the_same_edge(tmp_path: Path) -> None:
    with fake_upstream() as port:
        floor = floor_process(tmp_path, f"http://127.0.0.1:{port}/v1", UPSTREAM_KEY, {}).start()
        try:
            url = f"{floor.http_url}/v1/images/generations"
            body = {"model": "openai/dall-e-3", "prompt": "a fox", "n": 2, "size": "1024x1024"}
            answered = httpx.post(url, json=body, headers={"Authorization": "Bearer any"}, timeout=30)
            assert answered.status_code == 200, answered.text
            images = answered.json()["data"]
            assert len(images) == 2
            assert all(base64.b64decode(image["b64_json"]).startswith(PNG_SIGNATURE) for image in images)
            # mg's edge itself: a call without a key is refused there, with mg's envelope
            refused = httpx.post(url, json=body, timeout=30)
            assert refused.status_code == 401
            assert refused.json()["error"]["message"].startswith("Missing Authorization header")
        finally:
            floor.stop()
