"""A small filesystem that a test can fill: a tmpfs of a few MB, mounted for the test (root only).

Disk-full behaviour cannot be shown on the machine's real disk, and a fake filesystem would not
show what matters (SIGBUS from memory-mapped files, SQLITE_FULL, ENOSPC): so tests that need it
mount a real tmpfs, which needs root (CI runs as root), and are skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK = 64 * 1024


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted on `path` (created if missing) for the duration."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CI runs the tests as root)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazily, so a process still holding a file there (a gateway being stopped) cannot keep it.
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(directory: Path, name: str = "ballast") -> Path:
    """Write a file into `directory` until its filesystem has no byte left; returns the file."""
    ballast = directory / name
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (CHUNK, 4096, 1):  # big pieces first, then the last page's remainder
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return ballast
