"""`mg serve` raises its open-files limit for what the edge lets in, and says when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from service.runtime.open_files import raise_open_files_limit
now = raise_open_files_limit(int(sys.argv[3]))
print(json.dumps([now, list(resource.getrlimit(resource.RLIMIT_NOFILE))]))
"""


def run(soft: int, hard: int, max_connections: int) -> tuple[int, list[int], str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(soft), str(hard), str(max_connections)],
        capture_output=True,
        text=True,
        check=True,
    )
    now, limits = json.loads(out.stdout)
    return now, limits, out.stderr


def test_the_soft_limit_is_raised_to_the_hard_one_quietly_when_that_is_enough() -> None:
    now, limits, warnings = run(256, 16_384, 10_000)
    assert now == 16_384 and limits == [16_384, 16_384]
    assert warnings == ""


def test_a_hard_limit_short_of_the_edge_is_named_with_how_to_raise_it() -> None:
    now, limits, warnings = run(256, 2_048, 10_000)
    assert now == 2_048 and limits == [2_048, 2_048]
    assert "limited to 2048" in warnings and "MG_ENVOY_MAX_CONNECTIONS=10000" in warnings
    assert "ulimit -Hn" in warnings
