"""`providerOptions`, declared: each adapter states the keys it takes as an `OptionsSchema`, and
`OptionsSchema.parse` applies one rule to every provider's entry:

- a key the schema does not name is left out, with an `unsupported` warning naming the keys the
  provider does take (a provider's options grow faster than any gateway, so an option the gateway
  does not know yet must not fail the request);
- a null value counts as not given;
- a value of the wrong type, out of range or not among the choices is a 400 BAD_REQUEST whose
  `param` is `providerOptions.<provider>.<key>`, raised before any upstream call;
- a valid key that does not apply to this call (another model, an edit-only knob without a
  reference_image) is left out, with an `unsupported` warning saying why.

Schemas are restrictive on purpose (as vercel/ai's provider notes advise for user-facing option
schemas): a value the provider would refuse is refused here first, in the gateway's own words.
Checks that need more than one key or the value's content (Recraft's vector styles, OpenAI's mask)
stay in the adapter, after `parse`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from service.errors import BadRequest
from service.providers.base import CallWarning, ImageCall, unsupported

# None when an option applies to this call, else why it does not (the warning's details).
Rule = Callable[[ImageCall], str | None]


class Kind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"


_ARTICLE = {Kind.INTEGER: "an integer", Kind.OBJECT: "an object", Kind.ARRAY: "a list"}


@dataclass(frozen=True)
class Option:
    kind: Kind
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # Choices match whatever the letter case; the value sent is the choice as listed.
    fold_case: bool = False
    rules: tuple[Rule, ...] = ()

    def where(self, *rules: Rule) -> Option:
        """This option, applying only to calls every rule lets through."""
        return replace(self, rules=self.rules + rules)

    def describe(self) -> str:
        """What a valid value is, for error messages and the docs: "an integer between 0 and 6"."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        what = _ARTICLE.get(self.kind, f"a {self.kind.value}")
        if self.minimum is not None and self.maximum is not None:
            return f"{what} between {_text(self.minimum)} and {_text(self.maximum)}"
        if self.minimum is not None:
            return f"{what} of at least {_text(self.minimum)}"
        return what

    def check(self, value: object) -> object | None:
        """The value to send, or None if it is not a valid value of this option."""
        if self.kind is Kind.STRING:
            return self._choice(value) if isinstance(value, str) else None
        if self.kind is Kind.BOOLEAN:
            return value if isinstance(value, bool) else None
        if self.kind is Kind.OBJECT:
            return value if isinstance(value, dict) else None
        if self.kind is Kind.ARRAY:
            return value if isinstance(value, list) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        if self.kind is Kind.INTEGER:
            # providerOptions reach the gateway through a protobuf Struct, where numbers are floats.
            if value != int(value):
                return None
            value = int(value)
        else:
            value = float(value)
        too_low = self.minimum is not None and value < self.minimum
        too_high = self.maximum is not None and value > self.maximum
        return None if too_low or too_high else value

    def _choice(self, value: str) -> str | None:
        if not self.choices:
            return value
        for choice in self.choices:
            if value == choice or (self.fold_case and value.casefold() == choice.casefold()):
                return choice
        return None


def _text(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def string(*choices: str, fold_case: bool = False) -> Option:
    return Option(Kind.STRING, choices=choices, fold_case=fold_case)


def integer(minimum: int | None = None, maximum: int | None = None) -> Option:
    return Option(Kind.INTEGER, minimum, maximum)


def number(minimum: float | None = None, maximum: float | None = None) -> Option:
    return Option(Kind.NUMBER, minimum, maximum)


BOOLEAN = Option(Kind.BOOLEAN)
OBJECT = Option(Kind.OBJECT)
ARRAY = Option(Kind.ARRAY)


def models(*prefixes: str) -> Rule:
    """Applies to upstream models whose id starts with one of `prefixes`."""

    def rule(call: ImageCall) -> str | None:
        model = call.upstream_model
        return None if model.startswith(prefixes) else f"{model} does not take it"

    return rule


def with_reference(call: ImageCall) -> str | None:
    return None if call.reference_image is not None else "it applies only with a reference_image"


def without_reference(call: ImageCall) -> str | None:
    return "it does not apply with a reference_image" if call.reference_image is not None else None


@dataclass(frozen=True)
class OptionsSchema:
    """The providerOptions one provider takes: key -> Option."""

    provider: str
    options: Mapping[str, Option]

    def param(self, key: str) -> str:
        return f"providerOptions.{self.provider}.{key}"

    def parse(self, call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
        """(the valid options that apply to this call, warnings for those left out); a 400 for an
        invalid value. See the module docstring for the rule."""
        parsed: dict[str, Any] = {}
        warnings: list[CallWarning] = []
        for key, value in call.options.items():
            option = self.options.get(key)
            if option is None:
                known = ", ".join(self.options) or "none"
                warnings.append(
                    unsupported(self.param(key), f"not an option of {self.provider} (it takes {known})")
                )
                continue
            if value is None:
                continue
            checked = option.check(value)
            if checked is None:
                raise BadRequest(
                    f"{self.param(key)} must be {option.describe()}; got {value!r}.", param=self.param(key)
                )
            reason = next((why for rule in option.rules if (why := rule(call)) is not None), None)
            if reason is not None:
                warnings.append(unsupported(self.param(key), reason))
                continue
            parsed[key] = checked
        return parsed, warnings
