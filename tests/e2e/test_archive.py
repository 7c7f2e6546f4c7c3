"""`mg projects archive`: through the real gateway, a project's keys stop working at once on every
worker, and what it spent stays in the ledger; `unarchive` brings them back."""

from __future__ import annotations

import json

import httpx
from ulid import ULID

from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess

BODY = {"model": "local/sketch", "prompt": "archived", "size": "256x256"}


def models(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.get(f"{gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_an_archived_projects_keys_stop_working_and_its_ledger_is_kept(gateway: GatewayProcess) -> None:
    name = f"archive-{ULID()}"
    key = gateway.new_key(name, "--budget-usd", "1")
    assert gateway.generate(BODY, key).status_code == 200
    gateway.mg("projects", "archive", name)
    # Every request after the archive is refused, whichever worker (of two) takes it.
    for _ in range(6):
        error = assert_error(gateway.generate(BODY, key), 401, "UNAUTHENTICATED")
        assert "archived" in error["message"] and f"mg projects unarchive {name}" in error["message"]
        assert_error(models(gateway, key), 401, "UNAUTHENTICATED")
    usage = gateway.usage(name)
    assert [(row["requests"], row["images"], row["cost_micros"]) for row in usage] == [(1, 1, 1000)]
    shown = gateway.project(name)
    assert shown["spent_usd"] == 0.001 and shown["archived_at"] is not None
    listed = json.loads(gateway.mg("projects", "list", "--json").stdout)
    assert name not in [p["name"] for p in listed]
    refused = gateway.mg("keys", "create", "--project", name, check=False)
    assert refused.returncode == 1 and "archived" in refused.stderr
    gateway.mg("projects", "unarchive", name)
    assert gateway.generate(BODY, key).status_code == 200
