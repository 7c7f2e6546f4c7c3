"""The official OpenAI SDK pointed at a gateway, for tests. Every client made here is closed after
the test that made it (conftest's autouse fixture), so no connection outlives its test: an unclosed
one is a ResourceWarning whenever the garbage collector happens to find it, in whatever test runs."""

from __future__ import annotations

from typing import Any

import openai

_open: list[openai.OpenAI] = []


def openai_client(base_url: str, key: str, **options: Any) -> openai.OpenAI:
    client = openai.OpenAI(base_url=base_url, api_key=key, **{"max_retries": 0, "timeout": 60, **options})
    _open.append(client)
    return client


def close_clients() -> None:
    while _open:
        _open.pop().close()
