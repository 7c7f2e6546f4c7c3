"""The workers' metric files, made so that a full disk cannot kill a worker.

In multiprocess mode prometheus_client keeps each worker's values in files under
PROMETHEUS_MULTIPROC_DIR (MG_DATA_DIR/run/metrics), which it maps into memory and writes through
the map. It sizes a file with truncate(), which reserves no disk space: the pages past the data
are holes, and the first write into a hole when the filesystem is full is a SIGBUS, which killed
workers (and, with a replacement that could not start, the gateway) when the data disk filled.

`install` (run by every worker before its first metric exists) makes each size a file takes
reserved first with posix_fallocate, so a full disk is an OSError at that moment instead; a value
that gets no file space is kept in the worker's memory only (missing from /metrics, with a
warning), and the request that made it goes on.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import mmap_dict, values

log = logging.getLogger(__name__)


def _entry_bytes(key: str) -> int:
    """Bytes one value takes in the file (prometheus_client's layout: length, key padded to 8 bytes,
    value and timestamp), with room to spare so that an estimate never falls short."""
    encoded = len(key.encode())
    return 4 + encoded + (8 - (encoded + 4) % 8) + 16 + 8


class ReservedMmapedDict(mmap_dict.MmapedDict):
    """prometheus_client's file of one worker's values, with the disk space of every size it takes
    reserved before any of it is mapped."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, os.fstat(fd).st_size or mmap_dict._INITIAL_MMAP_SIZE)
            except OSError:
                # An empty file would break the supervisor's reading of them all: leave none.
                if os.fstat(fd).st_size == 0:
                    os.unlink(filename)
                raise
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]

    def _init_value(self, key: str) -> None:
        capacity = self._capacity
        while self._used + _entry_bytes(key) > capacity:
            capacity *= 2
        if capacity > self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)  # type: ignore[no-untyped-call]


def install() -> None:
    """In a process that records metrics for the supervisor (multiprocess mode), before its first
    metric: reserved files, and values kept in memory when no file space can be had."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return
    values.MmapedDict = ReservedMmapedDict  # type: ignore[attr-defined]
    values.ValueClass = _kept_in_memory_if_no_space(values.ValueClass)


def _kept_in_memory_if_no_space(file_backed: Any) -> Any:
    warned = False

    def value(*args: Any, **kwargs: Any) -> Any:
        nonlocal warned
        try:
            return file_backed(*args, **kwargs)
        except OSError as exc:
            if not warned:
                warned = True
                log.warning(
                    "worker %d cannot record some metrics in its file (%s); they are missing from "
                    "/metrics until it restarts with space to write",
                    os.getpid(),
                    exc,
                )
            return values.MutexValue(*args, **kwargs)  # type: ignore[no-untyped-call]

    value._multiprocess = True  # type: ignore[attr-defined]
    return value
