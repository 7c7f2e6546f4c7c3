"""A provider is added by one adapter module (with its declaration), one catalog file, one fake and
one test module; everything else is derived from the declaration or held to it here. Each test
fails, naming what is missing, when a provider is only half added (CONTRIBUTING.md has the list)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import yaml

import service.providers
from service.catalog.catalog import SHIPPED_MODELS, load_catalog
from service.providers.registry import DECLARATIONS, PROVIDERS
from service.providers.spec import ProviderSpec
from tests.fakes import all_fakes
from tests.support.markdown import first_table

ROOT = Path(__file__).resolve().parents[2]
TABLE_HEADING = "# Providers"


def test_every_module_that_declares_a_provider_is_registered() -> None:
    declared = {}
    for module_info in pkgutil.iter_modules(service.providers.__path__):
        module = importlib.import_module(f"service.providers.{module_info.name}")
        if isinstance(getattr(module, "PROVIDER", None), ProviderSpec):
            declared[module.PROVIDER.name] = module_info.name
    unregistered = {name: module for name, module in declared.items() if name not in PROVIDERS}
    assert not unregistered, f"add these modules' PROVIDER to DECLARATIONS in registry.py: {unregistered}"
    assert set(declared) == set(PROVIDERS)


def test_every_declaration_has_a_catalog_file_and_every_catalog_file_a_declaration() -> None:
    files = {path.stem for path in SHIPPED_MODELS.glob("*.yaml")}
    assert not set(PROVIDERS) - files, f"no service/catalog/models/<name>.yaml for {set(PROVIDERS) - files}"
    assert not files - set(PROVIDERS), (
        f"catalog files without a provider declaration: {files - set(PROVIDERS)}"
    )
    for name in files:
        document = yaml.safe_load((SHIPPED_MODELS / f"{name}.yaml").read_text())
        for model_id, entry in document["models"].items():
            assert entry.get("provider", model_id.partition("/")[0]) == name, f"{name}.yaml: {model_id}"


def test_every_http_provider_has_a_fake_and_every_fake_a_declaration() -> None:
    fakes = all_fakes()
    needing = {spec.name for spec in DECLARATIONS if spec.credentials}
    assert not needing - set(fakes), f"no fake under tests/fakes for {needing - set(fakes)}"
    assert not set(fakes) - set(PROVIDERS), f"fakes of undeclared providers: {set(fakes) - set(PROVIDERS)}"
    catalog = load_catalog()
    for name, fake in fakes.items():
        assert catalog.resolve(fake.SMOKE_MODEL).provider == name, f"{fake.__name__}.SMOKE_MODEL"


def test_every_provider_has_a_test_module() -> None:
    missing = [
        spec.name for spec in DECLARATIONS if not (ROOT / f"tests/providers/test_{spec.name}.py").exists()
    ]
    assert not missing, f"no tests/providers/test_<name>.py for {missing}"


PROBED = "; set alone, on when the cloud's credential chain finds credentials"


def provider_table() -> str:
    """docs/providers.md's provider table, as the declarations and the shipped catalog make it."""
    catalog = list(load_catalog())
    rows = [
        "| provider | models (`GET /v1/models` has sizes, qualities and prices) | variables "
        "| `providerOptions` keys (the adapter's docstring says what they do) |",
        "|---|---|---|---|",
    ]
    for spec in DECLARATIONS:
        models = ", ".join(f"`{m.id.partition('/')[2]}`" for m in catalog if m.provider == spec.name)
        variables = ", ".join(f"`{variable}`" for variable in spec.credentials) or "none: always on"
        if spec.enabled_by:
            either = ", or " if len(spec.enabled_by) == 1 else ", or one of "
            variables += either + ", ".join(f"`{variable}`" for variable in spec.enabled_by)
        if spec.base_url_env:
            default = f" (default `{spec.default_base_url}`)" if spec.default_base_url else " (required)"
            if spec.base_url_env in spec.probe_by:
                default = default.replace(")", f"{PROBED})")
            variables += f"; `{spec.base_url_env}`{default}"
        variables += "".join(
            f"; `{variable}` (optional{PROBED if variable in spec.probe_by else ''})"
            for variable in spec.settings
        )
        options = ", ".join(f"`{key}`" for key in spec.options.options) or "none"
        rows.append(f"| `{spec.name}` | {spec.summary}: {models} | {variables} | {options} |")
    return "\n".join(rows)


def test_the_readme_provider_table_is_the_declarations() -> None:
    table = "\n".join(first_table((ROOT / "docs" / "providers.md").read_text(), TABLE_HEADING))
    expected = provider_table()
    assert table == expected, f"docs/providers.md's table under {TABLE_HEADING!r} should read:\n{expected}"


def test_compose_passes_every_credential_through_and_nothing_undeclared() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["service"]["environment"]
    for spec in DECLARATIONS:
        for variable in spec.credentials:
            assert environment.get(variable) == f"${{{variable}:-}}", (
                f"docker-compose.yml: pass {variable} through"
            )
    declared = {variable for spec in DECLARATIONS for variable in spec.variables}
    # (PGPASSWORD: libpq's own variable, the PostgreSQL store's password kept out of its URL)
    undeclared = {name for name in environment if not name.startswith("MG_")} - declared - {"PGPASSWORD"}
    assert not undeclared, f"docker-compose.yml sets variables no declaration reads: {undeclared}"
