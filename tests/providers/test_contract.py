"""Every declared provider, built as the gateway builds it (its declaration's factory, against its
fake), keeps the one providerOptions rule (service/providers/options.py): an unknown key is left out
with an `unsupported` warning, and a value of the wrong type is a 400 naming the key before any
upstream call. A new provider is held to it by being declared."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from service.catalog.catalog import load_catalog
from service.catalog.sizes import parse_size
from service.config import ProviderConfig, Settings
from service.errors import BadRequest
from service.providers.base import ImageCallResult, WarningType
from service.providers.options import Kind
from service.providers.registry import DECLARATIONS
from service.providers.spec import ProviderSpec
from tests.fakes import all_fakes
from tests.fakes.base import FakeProvider
from tests.providers.conftest import call, run

# A value of another JSON type than each kind takes.
WRONG = {
    Kind.STRING: 5,
    Kind.INTEGER: "x",
    Kind.NUMBER: "x",
    Kind.BOOLEAN: "x",
    Kind.OBJECT: "x",
    Kind.ARRAY: "x",
}
OFFLINE_MODEL = "local/sketch"  # providers without a fake make no calls (the offline `local`)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeProvider]]:
    with ExitStack() as running:
        yield {name: running.enter_context(fake().running()) for name, fake in all_fakes().items()}


def generate(
    spec: ProviderSpec, fakes: dict[str, FakeProvider], options: dict[str, object]
) -> ImageCallResult:
    """One call through the adapter the declaration builds, on the fake's model (no fake: offline)."""
    fake = fakes.get(spec.name)
    model = load_catalog().resolve(fake.SMOKE_MODEL if fake else OFFLINE_MODEL)
    size = parse_size(fake.SMOKE_SIZE) if fake else model.capabilities.default_size
    base_url = fake.url + fake.BASE_PATH if fake else ""
    key = fake.api_key if fake else ""
    settings = fake.settings() if fake else {}
    config = ProviderConfig(spec.name, key, base_url, dict.fromkeys(spec.credentials, key), settings=settings)

    async def go() -> ImageCallResult:
        provider = spec.factory(config, Settings())
        try:
            assert provider.name == spec.name
            return await provider.generate(call(model.upstream_id, size=size, options=options))
        finally:
            await provider.aclose()

    return run(go())


@pytest.mark.parametrize("spec", DECLARATIONS, ids=lambda spec: spec.name)
def test_an_unknown_option_is_left_out_with_a_warning(
    spec: ProviderSpec, fakes: dict[str, FakeProvider]
) -> None:
    result = generate(spec, fakes, {"no_such_option": 1})
    assert len(result.images) == 1
    (warning,) = [w for w in result.warnings if w.feature == f"providerOptions.{spec.name}.no_such_option"]
    assert warning.type == WarningType.UNSUPPORTED and ", ".join(spec.options.options) in warning.details
    if spec.name in fakes:
        assert "no_such_option" not in str(fakes[spec.name].generation_requests()[-1].body)


@pytest.mark.parametrize(
    ("spec", "key"),
    [(spec, key) for spec in DECLARATIONS for key in spec.options.options],
    ids=lambda value: value.name if isinstance(value, ProviderSpec) else value,
)
def test_a_value_of_the_wrong_type_is_a_400_before_any_call(
    spec: ProviderSpec, key: str, fakes: dict[str, FakeProvider]
) -> None:
    before = len(fakes[spec.name].requests) if spec.name in fakes else 0
    with pytest.raises(BadRequest) as caught:
        generate(spec, fakes, {key: WRONG[spec.options.options[key].kind]})
    assert caught.value.param == f"providerOptions.{spec.name}.{key}" and caught.value.code == "BAD_REQUEST"
    assert (len(fakes[spec.name].requests) if spec.name in fakes else 0) == before
