"""The model catalog: which models exist, what each can do, what each costs.

Loaded once from the shipped files, one per provider (`service/catalog/models/<provider>.yaml`). A request's
model name resolves here (aliases included, and bare model names such as "dall-e-3" where exactly one
configured provider offers the model) before anything else looks at it; an unknown name is a 404.

File format (`models:` maps public ids "provider/model-id" to entries; optional `aliases:`):
  upstream_id           what the provider's API calls the model
  sizes                 exact "WxH" sizes offered, or
  size_rule             {min_width, max_width, min_height, max_height, multiple_of,
                         min_ratio, max_ratio (width/height), max_pixels}
  default_size          used when the request has no size
  max_images            the most images one request may ask for (n)
  max_images_per_call   the most one upstream call returns; larger n is split into parallel calls
  qualities, styles, output_formats, reference_image, max_prompt_chars (default 8000)
  max_input_images      the most input images one edit takes (POST /v1/images/edits); default 1
                        with reference_image, else 0 (no edits)
  mask                  whether edits take a mask (default false)
  generations           false for a model that only edits (an inpainting endpoint): a generation
                        without a reference_image is refused; default true
  variations            whether the model makes variations (POST /v1/images/variations)
  price                 USD per image: "default", and overrides by "<quality>", "@<size>" or
                        "<quality>@<size>" (most specific wins); held as integer micro-dollars
  token_prices          {text_input, image_input, output}: USD per million tokens, for providers
                        that bill tokens and report them (the reported usage is then what is charged)
  input_image_price     USD per input image per upstream call, for per-image-priced models whose
                        provider bills input images on top (e.g. GPT image edits): the most one
                        input image can cost, reserved and charged for each one sent
  max_output_tokens     with token_prices: the most output tokens one image is billed for, "default"
                        and overrides keyed like prices; the reservation is built from it, and a
                        charge never exceeds the reservation
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from service.catalog.sizes import Size, parse_size
from service.config import Settings
from service.errors import BadRequest, ModelNotFound, quoted

SHIPPED_MODELS = Path(__file__).with_name("models")
MICROS_PER_USD = 1_000_000
# The largest price or budget: sums of them (spent + reserved + an estimate) stay far inside the
# stores' 64-bit integers.
MAX_USD = 1_000_000_000


def parse_usd(value: object) -> int:
    """Micro-dollars from an amount in USD ("12.5", 0.04); ValueError saying what is wrong with it.
    The one parser of prices (catalog) and budgets (admin CLI)."""
    try:
        micros = Decimal(str(value).strip()) * MICROS_PER_USD
    except InvalidOperation:
        raise ValueError("is not an amount in USD") from None
    if not micros.is_finite():  # NaN, Infinity
        raise ValueError("is not an amount in USD")
    if micros < 0 or micros != micros.to_integral_value():
        raise ValueError("must be >= 0 with at most 6 decimals")
    if micros > MAX_USD * MICROS_PER_USD:
        raise ValueError(f"must be at most {MAX_USD:,} USD")
    return int(micros)


def usd(micros: int) -> str:
    """Micro-dollars as dollars for people: 1234567 -> "$1.234567", 40000 -> "$0.04"."""
    return f"${micros / MICROS_PER_USD:,.6f}".rstrip("0").rstrip(".")


class CatalogError(ValueError):
    """The catalog is malformed; the message names the model and field, `where` the config path."""

    def __init__(self, message: str, where: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class SizeRule:
    min_width: int
    max_width: int
    min_height: int
    max_height: int
    multiple_of: int = 1
    min_ratio: float = 0.0  # width / height
    max_ratio: float = float("inf")
    max_pixels: int = 0  # 0: no limit beyond the sides

    def allows(self, size: Size) -> bool:
        ratio = size.width / size.height
        return (
            self.min_width <= size.width <= self.max_width
            and self.min_height <= size.height <= self.max_height
            and size.width % self.multiple_of == 0
            and size.height % self.multiple_of == 0
            and self.min_ratio <= ratio <= self.max_ratio
            and (not self.max_pixels or size.width * size.height <= self.max_pixels)
        )

    def describe(self) -> str:
        text = (
            f"{self.min_width}-{self.max_width} x {self.min_height}-{self.max_height} pixels, "
            f"multiples of {self.multiple_of}"
        )
        if self.min_ratio or self.max_ratio != float("inf"):
            text += f", aspect ratio (width/height) {self.min_ratio:g}-{self.max_ratio:g}"
        if self.max_pixels:
            text += f", at most {self.max_pixels} pixels"
        return text


@dataclass(frozen=True)
class Capabilities:
    default_size: Size
    max_images: int
    max_images_per_call: int
    sizes: tuple[Size, ...] = ()
    size_rule: SizeRule | None = None
    qualities: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ("png",)
    reference_image: bool = False
    max_prompt_chars: int = 8000
    max_input_images: int = 0
    mask: bool = False
    variations: bool = False
    # False: the model only edits (it needs an input image), as inpainting endpoints do.
    generations: bool = True

    def offers(self, size: Size) -> bool:
        if self.size_rule is not None:
            return self.size_rule.allows(size)
        return size in self.sizes

    def describe_sizes(self) -> str:
        if self.size_rule is not None:
            return self.size_rule.describe()
        return ", ".join(str(s) for s in self.sizes)


def most_specific(default: int, overrides: Mapping[str, int], quality: str | None, size: Size | None) -> int:
    """`default`, overridden by a "<quality>", "@<size>" or "<quality>@<size>" key of `overrides`
    (the most specific that is there wins)."""
    quality = quality or ""
    for key in (f"{quality}@{size}", f"@{size}", quality):
        if key in overrides:
            return overrides[key]
    return default


@dataclass(frozen=True)
class TokenRates:
    """Micro-dollars per million tokens, and the most output tokens one image can be billed for
    (by quality and size, keyed as prices are): what makes a token-billed reservation a true bound."""

    text_input: int
    image_input: int
    output: int
    max_output_tokens: int = 0
    max_output_overrides: Mapping[str, int] = field(default_factory=dict)

    def max_output(self, quality: str | None, size: Size | None) -> int:
        return most_specific(self.max_output_tokens, self.max_output_overrides, quality, size)


@dataclass(frozen=True)
class PriceRule:
    """Micro-dollars per image: `default_micros`, overridden by "<quality>", "@<size>" or
    "<quality>@<size>" keys in `overrides` (most specific first)."""

    default_micros: int
    overrides: Mapping[str, int] = field(default_factory=dict)
    tokens: TokenRates | None = None
    # What each input image of an edit adds per upstream call (per-image-priced models).
    input_image_micros: int = 0

    def per_image(self, quality: str | None, size: Size | None = None) -> int:
        return most_specific(self.default_micros, self.overrides, quality, size)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    provider: str
    upstream_id: str
    created: int
    capabilities: Capabilities
    price: PriceRule
    description: str = ""


class Catalog:
    def __init__(
        self, models: Mapping[str, ModelSpec], aliases: Mapping[str, str | Sequence[str]] | None = None
    ) -> None:
        self._models = dict(models)
        # A name for one model (an alias), or for several in order (a route: an alias whose value is
        # a list; service/generation/routing.py runs it).
        self._aliases = {a: t for a, t in (aliases or {}).items() if isinstance(t, str)}
        declared = {a: tuple(t) for a, t in (aliases or {}).items() if not isinstance(t, str)}
        self._by_bare_name: dict[str, list[ModelSpec]] = {}
        for model in sorted(self._models.values(), key=lambda m: m.id):
            self._by_bare_name.setdefault(model.id.partition("/")[2], []).append(model)
        for alias, target in self._aliases.items():
            if target not in self._models:
                raise CatalogError(f"alias {alias!r} points at unknown model {target!r}", ("aliases", alias))
        self._routes = {name: _expand_route(name, declared, self._aliases, self._models) for name in declared}

    def find(self, name: str, configured: Collection[str] = ()) -> ModelSpec | None:
        """The model `name` (an id, an alias, or a bare model name) stands for, if exactly one."""
        candidates = self._candidates(name, configured)
        return candidates[0] if len(candidates) == 1 else None

    def resolve(self, name: str, configured: Collection[str] = ()) -> ModelSpec:
        """As `find`; an unknown name is a 404, a bare name several providers offer a 400."""
        candidates = self._candidates(name, configured)
        if len(candidates) > 1:
            unconfigured = not any(model.provider in configured for model in candidates)
            raise BadRequest(
                f"The model name {quoted(name)} is ambiguous: it is "
                f"{', '.join(model.id for model in candidates)}"
                f"{' (none of their providers is configured here)' if unconfigured else ''}. "
                "Name one of them.",
                param="model",
            )
        if not candidates:
            raise ModelNotFound(
                f"The model {quoted(name)} does not exist. GET /v1/models lists the available models.",
                param="model",
            )
        return candidates[0]

    def _candidates(self, name: str, configured: Collection[str]) -> list[ModelSpec]:
        """An id or alias names one model. A bare model name ("dall-e-3", as code written for OpenAI
        sends it) names every "<provider>/dall-e-3": those of configured providers if any, else all
        (so that the answer can say the provider is not configured)."""
        model = self._models.get(self._aliases.get(name, name))
        if model is not None:
            return [model]
        if "/" in name:
            return []
        offered = self._by_bare_name.get(name, [])
        return [m for m in offered if m.provider in configured] or offered

    def route(self, name: str) -> tuple[ModelSpec, ...] | None:
        """The models a route tries, in order, if `name` is a route."""
        return self._routes.get(name)

    def routes(self) -> list[tuple[str, tuple[ModelSpec, ...]]]:
        """Every route with its models, by name."""
        return sorted(self._routes.items())

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(sorted(self._models.values(), key=lambda m: m.id))

    def aliases_of(self, model_id: str) -> tuple[str, ...]:
        return tuple(sorted(a for a, target in self._aliases.items() if target == model_id))

    def aliases(self) -> list[tuple[str, ModelSpec]]:
        """Every alias, with the model it names, by alias."""
        return [(alias, self._models[target]) for alias, target in sorted(self._aliases.items())]


def _expand_route(
    name: str,
    routes: Mapping[str, tuple[str, ...]],
    aliases: Mapping[str, str],
    models: Mapping[str, ModelSpec],
    through: tuple[str, ...] = (),
) -> tuple[ModelSpec, ...]:
    """The models route `name` tries, in order: each target is a model id, an alias, or another
    route (its targets in its place). A route that reaches itself, names nothing, names a model
    twice or names what does not exist is an error pointing at its entry."""
    if name in models:
        raise CatalogError(f"route {name!r} has a model's name; give it one of its own", ("aliases", name))
    targets = routes[name]
    if not targets:
        raise CatalogError(f"route {name!r} lists no targets", ("aliases", name))
    expanded: list[ModelSpec] = []
    for index, target in enumerate(targets):
        where = ("aliases", name, str(index))
        if target == name or target in through:
            cycle = " -> ".join((*through, name, target))
            raise CatalogError(f"route {name!r} refers back to {target!r} ({cycle})", where)
        if target in routes:
            found = _expand_route(target, routes, aliases, models, (*through, name))
        elif aliases.get(target, target) in models:
            found = (models[aliases.get(target, target)],)
        else:
            raise CatalogError(f"route {name!r}: {target!r} is not a model, an alias or a route", where)
        for model in found:
            if any(model.id == seen.id for seen in expanded):
                raise CatalogError(f"route {name!r} lists {model.id} twice", where)
            expanded.append(model)
    return tuple(expanded)


def _usd_to_micros(value: object, where: str) -> int:
    try:
        return parse_usd(value)
    except ValueError as exc:
        raise CatalogError(f"{where}: price {value!r} {exc}") from None


def catalog_for(settings: Settings) -> Catalog:
    """The shipped catalog with the operator's config-file models and aliases applied."""
    return load_catalog(overrides=settings.catalog_models, extra_aliases=settings.catalog_aliases)


def _model_from_entry(model_id: str, entry: Mapping[str, Any]) -> ModelSpec:
    try:
        provider, _, _ = model_id.partition("/")
        rule = entry.get("size_rule")
        sizes = tuple(parse_size(s) for s in entry.get("sizes", ()))
        if (rule is None) == (not sizes):
            raise CatalogError(f"{model_id}: give exactly one of `sizes` and `size_rule`")
        prices = dict(entry["price"])
        default_price = _usd_to_micros(prices.pop("default"), model_id)
        tokens = entry.get("token_prices")
        reference_image = bool(entry.get("reference_image", False))
        capabilities = Capabilities(
            default_size=parse_size(entry["default_size"]),
            max_images=int(entry["max_images"]),
            max_images_per_call=int(entry["max_images_per_call"]),
            sizes=sizes,
            size_rule=SizeRule(**rule) if rule is not None else None,
            qualities=tuple(entry.get("qualities", ())),
            styles=tuple(entry.get("styles", ())),
            output_formats=tuple(entry.get("output_formats", ("png",))),
            reference_image=reference_image,
            max_prompt_chars=int(entry.get("max_prompt_chars", 8000)),
            max_input_images=int(entry.get("max_input_images", 1 if reference_image else 0)),
            mask=bool(entry.get("mask", False)),
            variations=bool(entry.get("variations", False)),
            generations=bool(entry.get("generations", True)),
        )
        if (capabilities.mask or capabilities.max_input_images) and not reference_image:
            raise CatalogError(f"{model_id}: max_input_images and mask need reference_image: true")
        if not capabilities.generations and not capabilities.max_input_images:
            raise CatalogError(f"{model_id}: a model that makes no generations must edit (max_input_images)")
        if not capabilities.offers(capabilities.default_size):
            raise CatalogError(f"{model_id}: default_size {capabilities.default_size} is not offered")
        return ModelSpec(
            id=model_id,
            provider=entry.get("provider", provider),
            upstream_id=str(entry["upstream_id"]),
            created=int(entry.get("created", 0)),
            capabilities=capabilities,
            price=PriceRule(
                default_price,
                {key: _usd_to_micros(p, model_id) for key, p in prices.items()},
                _token_rates(model_id, tokens, entry.get("max_output_tokens")) if tokens else None,
                _usd_to_micros(entry.get("input_image_price", 0), model_id),
            ),
            description=str(entry.get("description", "")),
        )
    except CatalogError as exc:
        raise CatalogError(str(exc), ("models", model_id)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{model_id}: {exc!r}", ("models", model_id)) from exc


def _token_rates(model_id: str, rates: Mapping[str, object], max_output: object) -> TokenRates:
    if not isinstance(max_output, dict) or "default" not in max_output:
        raise CatalogError(
            f"{model_id}: token_prices need max_output_tokens (a 'default' count, and overrides keyed like "
            "prices), so the reservation can bound what the provider bills"
        )
    counts = {key: int(value) for key, value in max_output.items()}
    if any(count <= 0 for count in counts.values()):
        raise CatalogError(f"{model_id}: max_output_tokens must be positive")
    default = counts.pop("default")
    return TokenRates(
        **{name: _usd_to_micros(value, model_id) for name, value in rates.items()},
        max_output_tokens=default,
        max_output_overrides=counts,
    )


def load_catalog(
    paths: Iterable[Path] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    extra_aliases: Mapping[str, str | Sequence[str]] | None = None,
) -> Catalog:
    """The catalog from these files (default: every shipped provider file), then the operator's
    `overrides` (new entries, or keys replacing those of a shipped entry) and `extra_aliases`."""
    entries: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str | Sequence[str]] = {}
    for path in sorted(SHIPPED_MODELS.glob("*.yaml")) if paths is None else paths:
        document = yaml.safe_load(path.read_text()) or {}
        for model_id, entry in (document.get("models") or {}).items():
            if model_id in entries:
                raise CatalogError(f"{path.name}: {model_id} is defined twice")
            entries[model_id] = dict(entry)
        aliases.update(document.get("aliases") or {})
    for model_id, override in (overrides or {}).items():
        if "/" not in model_id:
            raise CatalogError(f"{model_id}: model ids are 'provider/model-id'")
        entries[model_id] = {**entries.get(model_id, {}), **override}
    aliases.update(extra_aliases or {})
    return Catalog({model_id: _model_from_entry(model_id, e) for model_id, e in entries.items()}, aliases)
