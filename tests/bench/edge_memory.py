"""How much memory clients can make the edge hold before any key is checked.

Starts the real gateway (`mg serve`) on its own ports and data dir, opens N connections that each
send the headers and all but the last byte of a large POST /v1/images/generations body and then
wait (neither finishing nor closing), and prints Envoy's resident memory before and while they wait:

    .venv/bin/python tests/bench/edge_memory.py                 # no Authorization header
    .venv/bin/python tests/bench/edge_memory.py --auth bogus    # 'Authorization: Bearer bogus'
    .venv/bin/python tests/bench/edge_memory.py --auth bogus --env MG_ENVOY_MAX_HEAP_BYTES=134217728

Only loopback traffic.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.edge import MIB, paused_uploads, rss_bytes
from tests.support.gateway import GatewayProcess


def measure(gateway: GatewayProcess, args: argparse.Namespace) -> dict[str, object]:
    headers = {"Authorization": "Bearer bogus"} if args.auth == "bogus" else {}
    pid = gateway.envoy_pid()
    before = rss_bytes(pid)
    with paused_uploads(gateway.http_port, args.connections, args.body_mib, headers, args.pause_s):
        time.sleep(1.0)
        waiting = rss_bytes(pid)
    return {
        "connections": args.connections,
        "body_mib": args.body_mib,
        "authorization": headers.get("Authorization", "(none)"),
        "envoy_rss_before_mib": round(before / MIB, 1),
        "envoy_rss_waiting_mib": round(waiting / MIB, 1),
        "growth_mib": round((waiting - before) / MIB, 1),
    }


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--body-mib", type=int, default=29)
    parser.add_argument("--pause-s", type=float, default=0.0, help="between one connection and the next")
    parser.add_argument("--auth", choices=["none", "bogus"], default="none")
    parser.add_argument("--env", action="append", default=[], help="MG_X=value for the gateway")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="mg-edge-memory-") as data_dir:
        gateway = GatewayProcess(Path(data_dir), overrides).start()
        try:
            print(json.dumps(measure(gateway, args)))
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
