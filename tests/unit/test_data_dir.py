"""The data dir's files are private from their first byte, whatever the umask; an older data dir
left open to other users is tightened, and the change logged."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.data_dir import create_private_once, make_private, open_private, private_dir, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: any mode the code does not choose itself would show as world-readable."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_a_private_file_has_its_mode_before_its_first_byte(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fd = open_private(fresh)
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600  # nothing written yet
    finally:
        os.close(fd)
    older = tmp_path / "older"
    older.write_bytes(b"")
    older.chmod(0o644)
    fd = open_private(older)
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)


@pytest.mark.usefixtures("open_umask")
def test_private_files_and_directories_whatever_the_umask(tmp_path: Path) -> None:
    data = private_dir(tmp_path / "a" / "data")
    assert mode(tmp_path / "a") == mode(data) == 0o700
    write_private(data / "dev-api-key", b"mg_live_x\n")
    create_private_once(data / "url-signing-key", "secret")
    create_private_once(data / "url-signing-key", "another")  # the first one stays
    assert mode(data / "dev-api-key") == mode(data / "url-signing-key") == 0o600
    assert (data / "url-signing-key").read_text() == "secret"
    assert sorted(os.listdir(data)) == ["dev-api-key", "url-signing-key"]  # no temporary left


def test_an_older_data_dir_is_tightened_and_the_change_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    (data / "files").mkdir(parents=True)
    (data / "mg.sqlite3").write_bytes(b"")
    (data / "files" / "file_1").write_bytes(b"")
    for path, older in ((data, 0o755), (data / "files", 0o755)):
        path.chmod(older)
    for path in (data / "mg.sqlite3", data / "files" / "file_1"):
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="service.data_dir"):
        make_private(data)
    assert mode(data) == mode(data / "files") == 0o700
    assert mode(data / "mg.sqlite3") == mode(data / "files" / "file_1") == 0o600
    assert f"{data} 0755 -> 0700" in caplog.text and f"{data / 'mg.sqlite3'} 0644 -> 0600" in caplog.text
    caplog.clear()
    make_private(data)
    assert caplog.text == ""  # nothing to change, nothing said
