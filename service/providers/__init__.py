"""Provider adapters, one module each, built from settings by name (no dispatch on provider names)."""

from __future__ import annotations

from collections.abc import Callable

from service.config import Settings
from service.providers.base import ImageProvider
from service.providers.local import LocalProvider

# provider name -> factory; a factory returns None when the provider has no credentials configured.
ProviderFactory = Callable[[Settings], ImageProvider | None]

FACTORIES: dict[str, ProviderFactory] = {
    "local": lambda settings: LocalProvider(),
}


def build_providers(settings: Settings) -> dict[str, ImageProvider]:
    """The providers that can serve requests with these settings."""
    built = {name: factory(settings) for name, factory in FACTORIES.items()}
    return {name: provider for name, provider in built.items() if provider is not None}
