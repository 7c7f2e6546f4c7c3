"""Faithful fakes of the image providers (one module per provider, a FakeProvider subclass each).

Tests that run every provider alike find the fakes here instead of listing them, so a new
provider's fake joins them by existing."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from service.providers.registry import PROVIDERS
from tests.fakes.base import FakeProvider


def all_fakes() -> dict[str, type[FakeProvider]]:
    """provider name -> its fake: each FakeProvider subclass defined in a module of this package."""
    fakes: dict[str, type[FakeProvider]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, FakeProvider)
                and cls.__module__ == module.__name__
                and hasattr(cls, "PROVIDER")
            ):
                assert cls.PROVIDER not in fakes, f"two fakes of {cls.PROVIDER}"
                fakes[cls.PROVIDER] = cls
    return fakes


def environment(fake: FakeProvider) -> dict[str, str]:
    """The variables an operator would set to point the gateway at this running fake: each of the
    provider's credential variables holds the fake's key, its base URL variable the fake's URL, and
    the fake's own settings the rest."""
    spec = PROVIDERS[fake.PROVIDER]
    return {
        **{variable: fake.api_key for variable in spec.credentials},
        spec.base_url_env: fake.url + fake.BASE_PATH,
        **fake.settings(),
    }
