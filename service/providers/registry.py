"""The provider registry: every adapter module's declaration, and the adapters built from settings.

The declarations are listed here, once, as a tuple (`DECLARATIONS`), rather than found by scanning
the package with pkgutil:
- mypy checks each entry is a `ProviderSpec`, and the list reads as what ships;
- importing is explicit: a stray or half-written module in service/providers cannot become a
  provider, or break every start, by being there; and nothing is looked up by file name, which
  behaves the same from a checkout, a wheel or a zip;
- forgetting the line cannot go unnoticed: tests/unit/test_provider_declarations.py scans the
  package itself and fails for any module with a `PROVIDER` that is not listed here.
Nothing here or anywhere else dispatches on a provider's name.

`local` has no credentials, so it is always configured; every other provider runs when its
credentials are set (config.py reads them, as each declaration names them).

A config file can also define providers of its own, of a type listed in `TYPES` (an
`openai-compatible` server); their ProviderConfig carries the type, which names what builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from service.providers import (
    azure,
    bedrock,
    bfl,
    bytedance,
    compatible,
    fal,
    fireworks,
    google,
    ideogram,
    local,
    openai,
    recraft,
    replicate,
    stability,
    together,
    vertex,
    xai,
)
from service.providers.spec import AdapterFactory, ProviderSpec

if TYPE_CHECKING:
    from service.config import Settings
    from service.providers.base import ImageProvider
    from service.stores.base import Store

DECLARATIONS: tuple[ProviderSpec, ...] = (
    local.PROVIDER,
    openai.PROVIDER,
    recraft.PROVIDER,
    bytedance.PROVIDER,
    bfl.PROVIDER,
    google.PROVIDER,
    stability.PROVIDER,
    xai.PROVIDER,
    fal.PROVIDER,
    replicate.PROVIDER,
    together.PROVIDER,
    fireworks.PROVIDER,
    azure.PROVIDER,
    bedrock.PROVIDER,
    vertex.PROVIDER,
    ideogram.PROVIDER,
)

PROVIDERS: Mapping[str, ProviderSpec] = {spec.name: spec for spec in DECLARATIONS}
if len(PROVIDERS) != len(DECLARATIONS):
    raise ValueError("two provider declarations share a name")


# The provider types a config file may define providers of (config_file.TYPES) -> what builds them.
TYPES: Mapping[str, AdapterFactory] = {compatible.TYPE: compatible.CompatibleProvider.create}


def build_providers(settings: Settings, store: Store | None = None) -> dict[str, ImageProvider]:
    """The providers that can serve requests with these settings. A provider with several keys is
    an adapter per key behind a CredentialPool (whose keys' own limits live in `store`)."""
    providers: dict[str, ImageProvider] = {}
    for name, config in settings.providers.items():
        factory = TYPES[config.type] if config.type else PROVIDERS[name].factory
        if not config.keys:
            providers[name] = factory(config, settings)
            continue
        from service.providers.credentials import CredentialPool  # (see config.provider_declarations)

        variable = PROVIDERS[name].credentials[0] if name in PROVIDERS and PROVIDERS[name].credentials else ""
        adapters = [
            (
                key,
                factory(
                    replace(
                        config,
                        api_key=key.api_key,
                        base_url=key.base_url or config.base_url,
                        credentials={**config.credentials, **({variable: key.api_key} if variable else {})},
                        pooled=True,
                    ),
                    settings,
                ),
            )
            for key in config.keys
        ]
        providers[name] = CredentialPool(name, adapters, store, config.limits)
    return providers


def setup_hint(provider: str) -> str:
    """What an operator sets to turn `provider` on, for errors and `mg config check`."""
    spec = PROVIDERS.get(provider)
    if spec is None:
        return f"no adapter is named {provider!r}"
    if not spec.credentials:
        return "always on"
    either = f", or {' or '.join(spec.enabled_by)}" if spec.enabled_by else ""
    probed = (
        f", or {' or '.join(spec.probe_by)} where the cloud's credential chain finds credentials"
        if spec.probe_by
        else ""
    )
    return "set " + " and ".join(spec.credentials) + either + probed
