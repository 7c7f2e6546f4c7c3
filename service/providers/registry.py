"""The provider registry: adapters built from settings by name (no dispatch on provider names).

`local` always runs; every other provider runs when its API key is set (see config.PROVIDER_ENV).
"""

from __future__ import annotations

from collections.abc import Callable

from service.config import ProviderConfig, Settings
from service.providers.base import ImageProvider
from service.providers.bfl import BFLProvider
from service.providers.bytedance import BytedanceProvider
from service.providers.google import GoogleProvider
from service.providers.local import LocalProvider
from service.providers.openai import OpenAIProvider
from service.providers.recraft import RecraftProvider
from service.providers.stability import StabilityProvider
from service.providers.xai import XAIProvider

AdapterFactory = Callable[[ProviderConfig, Settings], ImageProvider]

ADAPTERS: dict[str, AdapterFactory] = {
    "bfl": BFLProvider.create,
    "bytedance": BytedanceProvider.create,
    "google": GoogleProvider.create,
    "openai": OpenAIProvider.create,
    "recraft": RecraftProvider.create,
    "stability": StabilityProvider.create,
    "xai": XAIProvider.create,
}


def build_providers(settings: Settings) -> dict[str, ImageProvider]:
    """The providers that can serve requests with these settings."""
    providers: dict[str, ImageProvider] = {"local": LocalProvider(settings.local_max_delay_ms)}
    for name, config in settings.providers.items():
        if name in ADAPTERS:
            providers[name] = ADAPTERS[name](config, settings)
    return providers
