"""The plumbing every HTTP adapter shares, so an adapter module holds only its provider's wire format.

`HttpAdapter.create(config, settings)` (a declaration's `factory`) builds the adapter on one `Upstream`
(upstream.py: the connection pool, retries within the deadline, the mapping of error answers) from
the provider's ProviderConfig and the settings; `aclose()` closes it. A subclass says how its
provider authenticates (`headers`, Bearer by default) and, where the provider has its own ways, how
it signals a content refusal or a rejected key in an error answer (`is_refusal`,
`is_credential_error`). providerOptions are checked by the adapter's OptionsSchema (options.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from service.providers.upstream import Upstream

if TYPE_CHECKING:
    from service.config import ProviderConfig, Settings


class HttpAdapter:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self.name = upstream.provider

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> Self:
        upstream = Upstream.from_config(
            config, settings, cls.headers(config), cls.is_refusal, cls.is_credential_error
        )
        return cls(upstream)

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        """The headers every call carries: the credentials."""
        return {"Authorization": f"Bearer {config.api_key}"}

    @staticmethod
    def is_refusal(status: int, body: Any, text: str) -> bool:
        """Whether an error answer (status, parsed JSON or None, text) is a content refusal."""
        return False

    @staticmethod
    def is_credential_error(status: int, body: Any, text: str) -> bool:
        """Whether an error answer other than 401/403 means the provider rejected the gateway's key."""
        return False

    async def aclose(self) -> None:
        await self._upstream.aclose()
