"""Several keys for one provider (config file `providers.<name>.keys:`): one adapter per key, and a
`CredentialPool` that spreads the calls over them.

    providers:
      openai:
        keys:
          - {api_key_env: OPENAI_KEY_A, weight: 3, max_in_flight: 8}
          - {api_key_env: OPENAI_KEY_B}                 # weight 1
      azure:
        keys:                                           # a deployment per region
          - {api_key_env: AZURE_EAST_KEY, base_url: "https://east.example.openai.azure.com"}
          - {api_key_env: AZURE_WEST_KEY, base_url: "https://west.example.openai.azure.com"}

- Calls go to the keys in proportion to their weights (smooth weighted round robin: with weights
  3 and 1, A A B A, evenly spread rather than in runs).
- A key the provider answers 429 for (after the adapter's own retries) cools down for the answer's
  Retry-After; the call is tried at once with another key, and the next calls go to the others.
- A key the provider rejects (401/403, or its own signal) is taken out for good (until a restart),
  logged and counted in `mg_credentials_rejected_total`; the call is tried with another key.
- A key's own `max_in_flight` caps the calls it carries at once, across workers and replicas (the
  provider's own limit applies on top: service/generation/capacity.py).
- With the provider's `breaker_failures` set, each key also has a circuit breaker of its own: a key
  that keeps failing is passed over for the cool-down, then probed, while the others carry on (the
  provider's breaker opens only when the calls fail whichever key they go to).
- With no key left to try: the last failure, or 503 when every key is cooling down or taken out.
Cool-downs and rejections are each worker's own knowledge, as circuit breakers are.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.config import Credential
from service.config_file import ProviderLimits
from service.errors import Unavailable, UpstreamError, UpstreamRateLimited
from service.generation.capacity import OPEN, CircuitBreaker, InFlightLimit, ProviderGuard
from service.providers.base import ImageCall, ImageCallResult, ImageProvider
from service.providers.upstream import CredentialRejected
from service.runtime.observability import CREDENTIALS_REJECTED
from service.stores.base import Store

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Key:
    credential: Credential
    adapter: ImageProvider
    guard: ProviderGuard  # its own max_in_flight and circuit breaker, when set
    cool_until: float = 0.0  # time.monotonic()
    rejected: bool = False
    current: int = field(default=0)  # smooth weighted round robin's running weight

    @property
    def endpoint(self) -> str:
        return self.credential.base_url

    def usable(self, now: float) -> bool:
        breaker = self.guard.breaker
        return not self.rejected and now >= self.cool_until and (breaker is None or breaker.state != OPEN)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        return await self.guard.call(functools.partial(self.adapter.generate, call), call.deadline)


class CredentialPool:
    def __init__(
        self,
        name: str,
        keys: Sequence[tuple[Credential, ImageProvider]],
        store: Store | None,
        limits: ProviderLimits | None = None,
    ) -> None:
        self.name = name
        limits = limits or ProviderLimits()
        self._keys = [
            _Key(
                credential,
                adapter,
                ProviderGuard(
                    CircuitBreaker(
                        f"{name}:{credential.label}", limits.breaker_failures, limits.breaker_cooldown_s
                    )
                    if limits.breaker_failures
                    else None,
                    InFlightLimit(
                        store, f"{name}:{credential.label}", ProviderLimits(credential.max_in_flight)
                    )
                    if store is not None and credential.max_in_flight
                    else None,
                ),
            )
            for credential, adapter in keys
        ]

    def _pick(self, tried: set[int]) -> _Key | None:
        now = time.monotonic()
        candidates = [key for index, key in enumerate(self._keys) if index not in tried and key.usable(now)]
        if not candidates:
            return None
        for key in candidates:
            key.current += key.credential.weight
        chosen = max(candidates, key=lambda key: key.current)
        chosen.current -= sum(key.credential.weight for key in candidates)
        return chosen

    async def generate(self, call: ImageCall) -> ImageCallResult:
        tried: set[int] = set()
        failure: Exception | None = None
        while (key := self._pick(tried)) is not None and time.monotonic() < call.deadline:
            tried.add(self._keys.index(key))
            try:
                return await key.generate(call)
            except UpstreamRateLimited as limited:
                key.cool_until = time.monotonic() + (limited.retry_after_s or 10)
                log.warning(
                    "%s key %s is rate-limited; not using it for %ss",
                    self.name,
                    key.credential.label,
                    limited.retry_after_s or 10,
                )
                failure = limited
            except CredentialRejected as rejected:
                key.rejected = True
                CREDENTIALS_REJECTED.labels(self.name, key.credential.label).inc()
                log.error(
                    "%s rejected key %s; it is taken out: %s",
                    self.name,
                    key.credential.label,
                    rejected.message,
                )
                failure = rejected
            except Unavailable as unavailable:  # its own capacity or circuit: another key may do
                failure = unavailable
            except UpstreamError as failed:
                # 5xx or unreachable: the call goes on with a key of another endpoint (a region),
                # not with another key of the same one, which would fail the same way.
                tried.update(i for i, other in enumerate(self._keys) if other.endpoint == key.endpoint)
                failure = failed
        if failure is not None:
            raise failure
        raise self._none_usable()

    def _none_usable(self) -> Unavailable:
        now = time.monotonic()
        cooling = [key.cool_until - now for key in self._keys if not key.rejected]
        if not cooling:
            return Unavailable(
                f"Every key of {self.name} was rejected by the provider; an operator must replace them."
            )
        return Unavailable(
            f"Every key of {self.name} is rate-limited for now.", retry_after_s=max(1, round(min(cooling)))
        )

    async def aclose(self) -> None:
        for key in self._keys:
            await key.adapter.aclose()
