from __future__ import annotations

from pathlib import Path

import pytest

from service.catalog.catalog import CatalogError, PriceRule, load_catalog
from service.catalog.sizes import Size, parse_size
from service.errors import BadRequest, ModelNotFound


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    return path


MODEL = """
models:
  acme/one:
    upstream_id: one-v1
    sizes: [512x512, 1024x1024]
    default_size: 1024x1024
    max_images: 4
    max_images_per_call: 2
    price: {default: "0.04", hd: "0.080001"}
aliases:
  fast: acme/one
"""


def test_loads_models_prices_and_aliases(tmp_path: Path) -> None:
    catalog = load_catalog([write(tmp_path, MODEL)])
    model = catalog.resolve("fast")
    assert model.id == "acme/one" and model.provider == "acme" and model.upstream_id == "one-v1"
    assert model.price == PriceRule(40_000, {"hd": 80_001})
    assert model.price.per_image("hd") == 80_001 and model.price.per_image(None) == 40_000
    assert catalog.aliases_of("acme/one") == ("fast",)
    assert model.capabilities.offers(Size(512, 512)) and not model.capabilities.offers(Size(256, 256))


def test_unknown_models_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        load_catalog([write(tmp_path, MODEL)]).resolve("acme/two")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('price: {default: "0.04", hd: "0.080001"}', 'price: {default: "0.0000001"}'), "at most 6 decimals"),
        (('price: {default: "0.04", hd: "0.080001"}', 'price: {default: "cheap"}'), "not an amount"),
        (('price: {default: "0.04", hd: "0.080001"}', "price: {default: .nan}"), "not an amount"),
        (('price: {default: "0.04", hd: "0.080001"}', "price: {default: .inf}"), "not an amount"),
        (('price: {default: "0.04", hd: "0.080001"}', "price: {default: 1e12}"), "at most"),
        (("default_size: 1024x1024", "default_size: 256x256"), "not offered"),
        (("    sizes: [512x512, 1024x1024]\n", ""), "exactly one of"),
        (("fast: acme/one", "fast: acme/none"), "unknown model"),
        (("    max_images: 4\n", ""), "max_images"),
        (("    max_images: 4\n", "    max_images: 4\n    mask: true\n"), "need reference_image"),
        (("    max_images: 4\n", "    max_images: 4\n    max_input_images: 2\n"), "need reference_image"),
        (("    max_images: 4\n", "    max_images: 4\n    generations: false\n"), "must edit"),
    ],
)
def test_malformed_entries_are_refused_with_the_model_named(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog([write(tmp_path, MODEL.replace(*change))])


def test_the_shipped_catalog_loads() -> None:
    ids = [m.id for m in load_catalog()]
    assert "local/sketch" in ids and "local/canvas" in ids


def test_prices_by_quality_and_size(tmp_path: Path) -> None:
    text = MODEL.replace(
        'price: {default: "0.04", hd: "0.080001"}',
        'price: {default: "0.04", hd: "0.08", "@512x512": "0.03", "hd@512x512": "0.05"}',
    )
    price = load_catalog([write(tmp_path, text)]).resolve("acme/one").price
    assert price.per_image("hd", Size(512, 512)) == 50_000
    assert price.per_image("standard", Size(512, 512)) == 30_000
    assert price.per_image("hd", Size(1024, 1024)) == 80_000
    assert price.per_image(None, Size(1024, 1024)) == 40_000


def test_size_helpers() -> None:
    assert str(parse_size("1536x1024")) == "1536x1024"
    assert Size(1536, 1024).nearest_ratio(["1:1", "3:2", "16:9"]) == "3:2"


def test_edit_capabilities_default_from_reference_image(tmp_path: Path) -> None:
    plain = load_catalog([write(tmp_path, MODEL)]).resolve("acme/one").capabilities
    assert (plain.max_input_images, plain.mask, plain.variations) == (0, False, False)
    edits = MODEL.replace("    max_images: 4\n", "    max_images: 4\n    reference_image: true\n")
    one = load_catalog([write(tmp_path, edits)]).resolve("acme/one").capabilities
    assert (one.max_input_images, one.mask, one.variations) == (1, False, False)


TWO_PROVIDERS = MODEL.replace(
    "aliases:",
    """  other/one:
    upstream_id: one
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 1
    max_images_per_call: 1
    price: {default: "0.01"}
  other/two:
    upstream_id: two
    sizes: [1024x1024]
    default_size: 1024x1024
    max_images: 1
    max_images_per_call: 1
    price: {default: "0.01"}
aliases:
  one: other/two""",
)


def test_a_bare_model_name_resolves_when_one_configured_provider_offers_it(tmp_path: Path) -> None:
    catalog = load_catalog([write(tmp_path, TWO_PROVIDERS)])
    assert catalog.resolve("two").id == "other/two"  # one provider offers it, configured or not
    assert catalog.resolve("one", ["acme"]).id == "other/two"  # an alias wins over a bare name
    assert catalog.resolve("other/one", ["acme"]).id == "other/one"  # ids are never bare names


def test_an_ambiguous_bare_name_is_a_400_naming_the_candidates(tmp_path: Path) -> None:
    text = TWO_PROVIDERS.replace("  one: other/two\n", "  fast: acme/one\n")
    catalog = load_catalog([write(tmp_path, text)])
    assert catalog.resolve("one", ["other"]).id == "other/one"  # only one of them is configured
    assert catalog.resolve("one", ["acme", "local"]).id == "acme/one"
    for configured in (["acme", "other"], []):
        with pytest.raises(BadRequest) as caught:
            catalog.resolve("one", configured)
        assert "acme/one, other/one" in caught.value.message and caught.value.param == "model"
    assert catalog.find("one", ["acme", "other"]) is None
    with pytest.raises(ModelNotFound):
        catalog.resolve("three", ["acme", "other"])


def test_aliases_are_listed_with_their_models(tmp_path: Path) -> None:
    catalog = load_catalog([write(tmp_path, TWO_PROVIDERS)])
    assert [(alias, model.id) for alias, model in catalog.aliases()] == [
        ("fast", "acme/one"),
        ("one", "other/two"),
    ]


ROUTES = """
models:
  acme/one: {upstream_id: one, sizes: [512x512], default_size: 512x512, max_images: 1,
             max_images_per_call: 1, price: {default: "0.04"}}
  acme/two: {upstream_id: two, sizes: [512x512], default_size: 512x512, max_images: 1,
             max_images_per_call: 1, price: {default: "0.02"}}
  other/three: {upstream_id: three, sizes: [512x512], default_size: 512x512, max_images: 1,
                max_images_per_call: 1, price: {default: "0.01"}}
aliases:
  cheap: other/three
  pair: [acme/two, cheap]
  hero: [acme/one, pair]
"""


def test_a_route_lists_its_targets_in_order_through_aliases_and_routes(tmp_path: Path) -> None:
    catalog = load_catalog([write(tmp_path, ROUTES)])
    route = catalog.route("hero")
    assert route is not None and [model.id for model in route] == ["acme/one", "acme/two", "other/three"]
    assert catalog.route("cheap") is None and catalog.route("acme/one") is None
    assert [name for name, _ in catalog.routes()] == ["hero", "pair"]
    with pytest.raises(ModelNotFound):  # a route is not one model
        catalog.resolve("hero")
