"""A credential that expires (a cloud's temporary keys, an OAuth2 access token), kept fresh off the
request path.

The first call waits for it (nothing to sign with yet). After that a call uses the one held and,
once the holder says it is due for renewal (minutes before it expires), starts one renewal in the
background: calls go on with the current credential meanwhile. Only a credential that is about to
expire (the holder's `expiring`) is renewed while the call waits, as it would be refused anyway.
One renewal runs at a time; a background renewal that fails is logged and tried again by a call
RETRY_S later, while the current credential lasts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_S = 10.0  # between background renewals: a source that keeps failing is not asked at call rate


class Renewing(Generic[T]):
    def __init__(
        self,
        name: str,
        fetch: Callable[[], Awaitable[T]],
        due: Callable[[T], bool],
        expiring: Callable[[T], bool],
    ) -> None:
        self._name = name
        self._fetch = fetch
        self._due = due  # renew in the background
        self._expiring = expiring  # renew before using it
        self._value: T | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._tried_at = -RETRY_S  # time.monotonic() of the last background renewal started

    async def get(self) -> T:
        value = self._value
        if value is None or self._expiring(value):
            async with self._lock:
                value = self._value
                if value is None or self._expiring(value):
                    value = self._value = await self._fetch()
        elif (
            self._due(value)
            and (self._background is None or self._background.done())
            and time.monotonic() - self._tried_at >= RETRY_S
        ):
            self._tried_at = time.monotonic()
            self._background = asyncio.create_task(self._renew())
        return value

    async def _renew(self) -> None:
        async with self._lock:
            value = self._value
            if value is not None and not self._due(value):
                return  # renewed meanwhile by a call that could not wait
            try:
                self._value = await self._fetch()
            except Exception as exc:  # the current credential still serves; a later call retries
                log.warning(
                    "%s: renewing its credentials failed (%r); using the current ones", self._name, exc
                )

    async def aclose(self) -> None:
        if self._background is not None and not self._background.done():
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
