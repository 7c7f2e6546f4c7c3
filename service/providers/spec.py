"""The one declaration each adapter module makes: `PROVIDER = ProviderSpec(...)`.

Everything else about a provider follows from it: the registry builds adapters with `factory`
(registry.py), the settings read `credentials` and `base_url_env` from the environment (config.py),
`mg config check` reports what is set and what is missing, and tests hold docs/providers.md's provider
table, docker-compose.yml's variables, the catalog file, the fake and the test module to it
(tests/unit/test_provider_declarations.py). CONTRIBUTING.md has the checklist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.providers.options import OptionsSchema

if TYPE_CHECKING:
    from service.config import ProviderConfig, Settings
    from service.providers.base import ImageProvider

AdapterFactory = Callable[["ProviderConfig", "Settings"], "ImageProvider"]


@dataclass(frozen=True)
class ProviderSpec:
    # The prefix of its public model ids ("openai" in openai/gpt-image-1), and the name of its
    # catalog file (service/catalog/models/<name>.yaml).
    name: str
    # Builds the adapter from its ProviderConfig and the settings (adapters never read the environment).
    factory: AdapterFactory
    # What providerOptions.<name> may hold (options.py).
    options: OptionsSchema
    # Environment variables that must all be set for the provider to run; the first is its API key,
    # which a config file's providers.<name>.api_key or api_key_env may give instead. None: the
    # provider always runs (the offline `local`).
    credentials: tuple[str, ...] = ()
    # The variable that moves the provider's API (to a proxy, a regional endpoint, a test fake), and
    # where it is otherwise; an empty default means there is none, so the variable must be set.
    base_url_env: str = ""
    default_base_url: str = ""
    # What the provider is, in a few words, for docs/providers.md's provider table.
    summary: str = ""
    # Variables any one of which turns the provider on without its credentials: the adapter then finds
    # credentials the way the cloud's own SDK does (AWS's credential chain for a profile or a role).
    # Those set reach it in ProviderConfig.settings, by name, as `settings` do.
    enabled_by: tuple[str, ...] = ()
    # Variables that, set when nothing above is, make the provider worth a `probe`: whether the cloud
    # SDK's own credential chain finds credentials no variable names (an instance role found through
    # a region). Run once when settings load, before any event loop; True turns the provider on.
    probe_by: tuple[str, ...] = ()
    probe: Callable[[Mapping[str, str]], bool] | None = None
    # Optional environment variables the adapter also takes (an API version, a region): those set
    # reach it in ProviderConfig.settings, by name.
    settings: tuple[str, ...] = ()
    # Keys a config file's providers.<name> entry may hold besides the API key and base URL (a
    # mapping of deployment names): they reach the adapter in ProviderConfig.settings, by key.
    file_settings: tuple[str, ...] = ()
    # What is wrong with those keys' values in a config file entry, as (key, message), or None: run
    # when settings load, so `mg config check` points at the line rather than a worker failing later.
    check_file_settings: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None

    # What is missing from a provider turned on (credentials -> value, settings -> value), or None:
    # run when settings load, so `mg config check` says it (Entra ID's client id without its secret).
    check_credentials: Callable[[Mapping[str, str], Mapping[str, Any]], str | None] | None = None

    def __post_init__(self) -> None:
        if self.options.provider != self.name:
            raise ValueError(f"{self.name}: its options schema is named {self.options.provider!r}")
        if self.credentials and not self.base_url_env:
            raise ValueError(f"{self.name}: a provider with credentials needs a base URL variable")

    @property
    def variables(self) -> tuple[str, ...]:
        """Every environment variable the provider reads."""
        base_url = (self.base_url_env,) if self.base_url_env else ()
        return (*self.credentials, *base_url, *self.enabled_by, *self.settings)
