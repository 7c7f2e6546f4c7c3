"""The benchmark's fast fake OpenAI Images upstream (tests/bench/fake_upstream.py), run for a test."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port

FAKE_UPSTREAM = Path(__file__).resolve().parents[1] / "bench" / "fake_upstream.py"
UPSTREAM_KEY = "sk-fake-upstream"


@contextlib.contextmanager
def fake_upstream(*args: str) -> Iterator[int]:
    """The fake on a free loopback port (yielded), requiring UPSTREAM_KEY; `args` are its options
    (`--delay-ms`, `--b64-bytes`...)."""
    port = free_port()
    command = [sys.executable, str(FAKE_UPSTREAM), "--port", str(port), "--api-key", UPSTREAM_KEY, *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the fake upstream did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)
