"""Who can read what mg keeps on the host: the data dir and everything in it belong to the user that
runs mg alone (directories 0700, files 0600), through the real CLI and gateway, with the usual
umask (022) that would otherwise leave them readable by every local user."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess, local_body


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # inherited by the gateway and the CLI
    yield
    os.umask(previous)


def loose_modes(data_dir: Path) -> list[str]:
    """Every path under `data_dir` (itself included) that someone other than its owner may use."""
    loose = []
    for path in [data_dir, *data_dir.rglob("*")]:
        if path.is_symlink():
            continue
        allowed = 0o700 if path.is_dir() else 0o600
        permissions = stat.S_IMODE(path.stat().st_mode)
        if permissions & ~allowed:
            loose.append(f"{path.relative_to(data_dir.parent)} {permissions:04o}")
    return loose


def test_every_directory_and_file_of_the_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gw = GatewayProcess(data_dir).start()
    try:
        key = gw.new_key("modes")
        hosted = gw.generate({**local_body(), "response_format": "url"}, key)
        assert hosted.status_code == 200, hosted.text
        kept = gw.generate(local_body(prompt="kept"), key, headers={"x-mg-idempotency-key": "modes-1"})
        assert kept.status_code == 200, kept.text
        names = {p.name for p in data_dir.rglob("*")}
        # What other users could read before: the store (with the images of idempotency records),
        # its log and index, hosted images, the signing key and the dev key; and the gateway's run files.
        assert {"mg.sqlite3", "mg.sqlite3-wal", "mg.sqlite3-shm", "dev-api-key", "url-signing-key"} <= names
        assert any(name.startswith("file_") for name in names)
        assert {"envoy.log", "envoy.yaml", "errors.lua"} <= names
        assert loose_modes(data_dir) == []
    finally:
        gw.stop()


def test_a_data_dir_left_open_by_an_older_version_is_tightened_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    gw = GatewayProcess(data_dir)
    gw.mg("projects", "create", "older")
    (data_dir / "files").mkdir()
    (data_dir / "files" / "file_01JZ0000000000000000000000").write_bytes(b"\x89PNG")
    for path in [data_dir, data_dir / "files"]:
        path.chmod(0o755)
    for path in data_dir.glob("mg.sqlite3*"):
        path.chmod(0o644)
    gw.start()
    try:
        assert loose_modes(data_dir) == []
        tightened = [line for line in gw.output if "made it private to this user" in line]
        assert tightened and f"{data_dir} 0755 -> 0700" in tightened[0], gw.output_tail()
        assert f"{data_dir / 'mg.sqlite3'} 0644 -> 0600" in tightened[0]
    finally:
        gw.stop()
