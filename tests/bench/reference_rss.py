"""A worker's memory under a reference-image pixel bomb: resident set size (RSS) before, at the peak
of, and after requests whose reference_image is a tiny PNG of very many pixels.

For each case a fresh gateway with one worker, on its default settings, gets a few requests to
local/canvas (one image per upstream call, so `n` fans out into `n` calls); the worker's RSS is read
from /proc/<pid>/status every 10 ms while they run. Prints one Markdown row per case.

    .venv/bin/python -m tests.bench.reference_rss              # 7000x7000 n=8 and 4096x4096 n=8
    RSS_CASES=7000x7000x8,4096x4096x8,4096x4096x1 RSS_REQUESTS=1 .venv/bin/python -m tests.bench.reference_rss
"""

from __future__ import annotations

import base64
import io
import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from tests.support.gateway import GatewayProcess


def bomb(width: int, height: int) -> bytes:
    """A greyscale PNG of width x height pixels, a few tens of kB (7000x7000: 47 kB)."""
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG")
    return out.getvalue()


def worker_pid(gateway: GatewayProcess) -> int:
    assert gateway.process is not None
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children").read_text().split()
    for pid in children:
        if b"service.runtime.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    raise RuntimeError("no worker process found")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(gateway: GatewayProcess, pid: int, width: int, height: int, n: int, requests: int) -> str:
    body = {
        "model": "local/canvas",
        "prompt": "a bomb",
        "size": "256x256",
        "n": n,
        "reference_image": base64.b64encode(bomb(width, height)).decode(),
    }
    before, peak, statuses = rss_mb(pid), 0.0, []
    done = threading.Event()

    def send() -> None:
        for _ in range(requests):
            statuses.append(gateway.generate(body, timeout=300).status_code)
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    while not done.is_set():
        peak = max(peak, rss_mb(pid))
        time.sleep(0.01)
    sender.join()
    time.sleep(1.0)  # let freed memory settle
    after = rss_mb(pid)
    size_kb = len(body["reference_image"]) * 3 // 4 // 1024  # type: ignore[arg-type]
    answers = ", ".join(str(status) for status in sorted(set(statuses)))
    cells = [
        f"{width}x{height} ({size_kb} kB)",
        n,
        requests,
        answers,
        f"{before:.0f}",
        f"{peak:.0f}",
        f"{after:.0f}",
    ]
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def main() -> None:
    cases = os.environ.get("RSS_CASES", "7000x7000x8,4096x4096x8")
    requests = int(os.environ.get("RSS_REQUESTS", "3"))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print("| reference | n | requests | HTTP | RSS before (MB) | peak (MB) | after (MB) |")
    print("|---|---|---|---|---|---|---|")
    for case in cases.split(","):
        width, height, n = (int(part) for part in case.split("x"))
        with tempfile.TemporaryDirectory() as data_dir:  # a fresh worker per case
            gateway = GatewayProcess(Path(data_dir), {"MG_WORKERS": "1"}).start()
            try:
                gateway.generate({"model": "local/canvas", "prompt": "warm-up", "size": "256x256"})
                print(measure(gateway, worker_pid(gateway), width, height, n, requests), flush=True)
            finally:
                gateway.stop()


if __name__ == "__main__":
    main()
