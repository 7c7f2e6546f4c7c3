"""The data directory (MG_DATA_DIR) on disk: private to the user that runs mg, and its free space.

What mg keeps there is for that user alone: the store holds key hashes and the images inside
idempotency records, `files/` the hosted images (readable by anyone who can read the file, signed
URL or not), the signing key and the dev key their secrets. So directories are made 0700 and files
0600 from their first byte: they are created with that mode, never chmod-ed after being written.
SQLite creates its -wal and -shm files with the mode of the database file, so the store creates
that file first. A data dir made by an older version (0755, files 0644) is tightened at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Bits that let anyone but the owner in.
_OTHERS = 0o077


def private_dir(path: Path) -> Path:
    """`path`, created (with any missing parents) as a directory only its owner can enter. One that
    exists is left as it is: `make_private` tightens the data dir at start, and says so."""
    missing = []
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another worker meanwhile
            directory.mkdir(mode=PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """A file descriptor on `path`, a file only its owner can read, before a byte is written.

    O_CREAT applies the mode only to a new file: one that exists keeps its own, so it is tightened
    here too, still before anything is written through the descriptor."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & _OTHERS:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (replacing what it held), as a file only its owner can read."""
    with os.fdopen(open_private(path), "wb") as file:
        file.write(data)


def create_private_once(path: Path, content: str) -> None:
    """Write `content` to `path` unless another process got there first (link is atomic)."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_private(temporary, content.encode())
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)


def make_private(data_dir: Path) -> None:
    """Tighten a data dir an older version left readable by others (directories 0755, files 0644):
    the data dir, the store and keys at its top, and the directories mg makes in it with all they
    hold (looked through only when the directory itself was open: then an older version made it).
    Logs what it changed."""
    if not data_dir.is_dir():
        return
    changed = _tighten(data_dir, PRIVATE_DIR)
    for entry in os.scandir(data_dir):
        if entry.is_file(follow_symlinks=False):
            changed += _tighten(Path(entry.path), PRIVATE_FILE)
    for directory in (data_dir / "files", data_dir / "run"):
        if not directory.is_dir() or directory.is_symlink():
            continue
        opened = _tighten(directory, PRIVATE_DIR)
        if opened:
            entries = [path for path in directory.rglob("*") if not path.is_symlink()]
            for path in entries:
                _tighten(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)
            changed += [*opened, f"the {len(entries)} entries in {directory} -> 0600 (directories 0700)"]
    if changed:
        log.warning(
            "the data dir was readable by other users; made it private to this user: %s", ", ".join(changed)
        )


def _tighten(path: Path, mode: int) -> list[str]:
    """chmod `path` to `mode` if it lets others in; a description of the change, if any."""
    was = stat.S_IMODE(path.lstat().st_mode)
    if not was & _OTHERS:
        return []
    path.chmod(mode)
    return [f"{path} {was:04o} -> {mode:04o}"]


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding `path` (or, if it
    does not exist yet, its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = os.statvfs(path)
    return usage.f_bavail * usage.f_frsize


def human_bytes(size: int) -> str:
    """A size for a log line or message: 512 kB, 12.3 MB, 1.1 GB (powers of 1000, like df -H)."""
    if size < 1_000_000:
        return f"{size / 1000:.0f} kB"
    if size < 1_000_000_000:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e9:.1f} GB"
