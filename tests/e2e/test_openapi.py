"""GET /openapi.json through the real edge, and schemathesis against the running gateway from it.

schemathesis generates requests from docs/openapi.json (valid ones, from the document's examples and
its schemas, and invalid ones), sends them through Envoy to the workers on the offline provider with
a valid key, and checks every answer: no 5xx, and status, content type, headers and body as the
document says. The number of cases per operation is bounded and the seed fixed, so a run takes
well under a minute and finds the same cases each time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from ulid import ULID

from tests.support.gateway import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.json"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TAGS = ("Admin", "Console")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def test_the_gateway_serves_its_openapi_document_without_a_key(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.http_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == DOCUMENT.read_bytes()


# Past the suite's 120 s: on a slow VM in a parallel run a schemathesis run took longer; its own
# subprocess timeout (180 s) bounds it.
@pytest.mark.timeout(240)
def test_schemathesis_finds_nothing_wrong(gateway: GatewayProcess, tmp_path: Path) -> None:
    project = f"schemathesis-{ULID()}"
    key = gateway.new_key(project, "--budget-usd", "5")
    run = _schemathesis(gateway, key, tmp_path, max_examples=25)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


@pytest.mark.timeout(240)
def test_schemathesis_finds_nothing_wrong_in_the_admin_api(tmp_path: Path) -> None:
    """The admin and console routes with the admin token, on a gateway of their own: generated
    projects, keys and revocations change nothing the other tests use."""
    token = f"mg_admin_{ULID()}"
    admin = GatewayProcess(tmp_path / "gateway", {"MG_ADMIN_TOKEN": token}).start()
    try:
        run = _schemathesis(
            admin,
            token,
            tmp_path,
            max_examples=10,
            only=tuple(option for tag in TAGS for option in ("--include-tag", tag)),
        )
    finally:
        admin.stop()
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    document = json.loads(DOCUMENT.read_text())
    tagged = [op for item in document["paths"].values() for op in item.values() if op["tags"][0] in TAGS]
    assert f"{len(tagged)} selected" in run.stdout  # (the filter took every admin and console route)


def _schemathesis(
    gateway: GatewayProcess, bearer: str, cwd: Path, max_examples: int, only: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            str(DOCUMENT),
            "--url",
            gateway.http_url,
            "--header",
            f"Authorization: Bearer {bearer}",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(max_examples),
            "--seed",
            "20261206",
            # One worker: two share Hypothesis's caches across threads, which can fail a run with an
            # internal error that says nothing about the gateway.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--no-color",
            *only,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
    )
