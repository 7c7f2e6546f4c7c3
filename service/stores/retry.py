"""Store writes that must land: retried in the background until the store takes them.

A reservation's release that the store refuses (its disk full, Redis down) would otherwise leave
the project's budget held until the reservation's lease lapses. `write_until_landed` tries once,
and if the store is unavailable keeps trying (backing off up to MAX_DELAY_S) until the write lands
or the lease is over, when the store stops counting the reservation by itself. While any such
write waits, readiness says so (`waiting_writes`). The retries live in the worker process: one
that stops loses them, and the lease covers them then.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from service.errors import Unavailable
from service.stores.base import LedgerEntry, Store

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0

Write = Callable[[], Awaitable[None]]


class PendingWrites:
    def __init__(self, first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S) -> None:
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._waiting: dict[asyncio.Task[None], str] = {}
        self._last_error = ""

    async def write(self, what: str, write: Write, until: float) -> None:
        """Run `write` now; if the store is unavailable, go on retrying it in the background until
        it lands or `until` (time.monotonic()) passes. Returns after the first attempt."""
        try:
            await write()
            return
        except Unavailable as exc:
            self._last_error = exc.message
            log.warning("could not write the %s (%s); retrying until it lands", what, exc.message)
        task = asyncio.create_task(self._retry(what, write, until))
        self._waiting[task] = what
        task.add_done_callback(self._waiting.pop)

    async def _retry(self, what: str, write: Write, until: float) -> None:
        delay = self._first_delay_s
        attempts = 1
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(delay, left))
            attempts += 1
            try:
                await write()
            except Unavailable as exc:
                self._last_error = exc.message
                delay = min(delay * 2, self._max_delay_s)
                continue
            log.info("wrote the %s after %d attempts", what, attempts)
            return
        log.error("gave up writing the %s after %d attempts: its lease is over", what, attempts)

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the waiting writes to land or give up; True if none is left."""
        if self._waiting:
            await asyncio.wait(list(self._waiting), timeout=timeout_s)
        return not self._waiting

    def check(self) -> str:
        """Either "ok" or which writes are waiting for the store, and why."""
        if not self._waiting:
            return "ok"
        waiting = sorted(self._waiting.values())
        shown = ", ".join(waiting[:3]) + (f" and {len(waiting) - 3} more" if len(waiting) > 3 else "")
        return f"{len(waiting)} write(s) waiting for the store ({shown}): {self._last_error}"


# One per worker process: what the spend step's releases and the readiness check share.
PENDING = PendingWrites()


async def write_until_landed(what: str, write: Write, until: float) -> None:
    """See PendingWrites.write."""
    await PENDING.write(what, write, until)


async def release_until_landed(store: Store, reservation_id: str, entry: LedgerEntry, until: float) -> None:
    """Release a reservation and record its ledger entry, retried until that lands or `until`
    (time.monotonic(); the reservation's lease) passes."""
    release = functools.partial(store.release, reservation_id, entry.project_id, entry)
    await write_until_landed(f"release of reservation {reservation_id}", release, until)


def waiting_writes() -> str:
    return PENDING.check()
