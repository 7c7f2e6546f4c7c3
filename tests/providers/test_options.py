"""The one providerOptions rule (service/providers/options.py) and the one warning wording."""

from __future__ import annotations

import math

import pytest

from service.errors import BadRequest
from service.generation.reference_images import ReferenceImage
from service.providers.base import CallWarning, WarningType, adjusted, other, unsupported
from service.providers.options import (
    ARRAY,
    BOOLEAN,
    OBJECT,
    OptionsSchema,
    integer,
    models,
    number,
    string,
    with_reference,
    without_reference,
)
from tests.fakes.base import png
from tests.providers.conftest import call

REFERENCE = ReferenceImage(png(), "image/png", 8, 8)
SCHEMA = OptionsSchema(
    "acme",
    {
        "seed": integer(0, 10),
        "strength": number(0, 1).where(with_reference),
        "mode": string("fast", "slow"),
        "tier": string("1K", "2K", fold_case=True),
        "raw": BOOLEAN.where(models("acme-pro")),
        "controls": OBJECT.where(without_reference),
        "layers": ARRAY,
        "note": string(),
    },
)


def parse(
    options: dict[str, object], model: str = "acme-pro", **fields: object
) -> tuple[dict[str, object], list[str]]:
    parsed, warnings = SCHEMA.parse(call(model, options=options, **fields))
    return parsed, [str(warning) for warning in warnings]


def test_valid_values_pass_and_numbers_take_their_kind() -> None:
    options = {
        "seed": 7.0,
        "mode": "fast",
        "tier": "2k",
        "raw": True,
        "layers": [],
        "note": "",
        "controls": {},
    }
    parsed, warnings = parse(options)
    assert parsed == {
        "seed": 7,
        "mode": "fast",
        "tier": "2K",
        "raw": True,
        "layers": [],
        "note": "",
        "controls": {},
    }
    assert type(parsed["seed"]) is int and warnings == []
    parsed, _ = parse({"strength": 1}, reference_image=REFERENCE)
    assert parsed == {"strength": 1.0} and type(parsed["strength"]) is float


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("seed", 1.5, "an integer between 0 and 10"),
        ("seed", 11, "an integer between 0 and 10"),
        ("seed", True, "an integer between 0 and 10"),
        ("seed", "3", "an integer between 0 and 10"),
        ("seed", math.inf, "an integer between 0 and 10"),
        ("strength", -0.1, "a number between 0 and 1"),
        ("strength", math.nan, "a number between 0 and 1"),
        ("mode", "FAST", "one of fast, slow"),
        ("mode", 1, "one of fast, slow"),
        ("raw", "yes", "a boolean"),
        ("controls", [], "an object"),
        ("layers", {}, "a list"),
        ("note", 5, "a string"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_key(key: str, value: object, expected: str) -> None:
    # checked even where the option would not apply (no reference image here, for strength)
    with pytest.raises(BadRequest) as caught:
        parse({key: value})
    assert caught.value.param == f"providerOptions.acme.{key}" and caught.value.code == "BAD_REQUEST"
    assert caught.value.message == f"providerOptions.acme.{key} must be {expected}; got {value!r}."


def test_unknown_keys_and_keys_that_do_not_apply_are_left_out_with_warnings() -> None:
    parsed, warnings = parse({"colour": "red", "strength": 0.5, "raw": False, "seed": 1}, model="acme-lite")
    assert parsed == {"seed": 1}
    known = "seed, strength, mode, tier, raw, controls, layers, note"
    assert warnings == [
        f"providerOptions.acme.colour ignored: not an option of acme (it takes {known})",
        "providerOptions.acme.strength ignored: it applies only with a reference_image",
        "providerOptions.acme.raw ignored: acme-lite does not take it",
    ]
    parsed, warnings = parse({"controls": {"x": 1}}, reference_image=REFERENCE)
    assert parsed == {} and warnings == [
        "providerOptions.acme.controls ignored: it does not apply with a reference_image"
    ]


def test_null_counts_as_not_given() -> None:
    assert parse({"seed": None, "mode": None, "strength": None}) == ({}, [])


def test_warnings_have_one_wording_per_type() -> None:
    assert (
        str(unsupported("style", "google does not support it")) == "style ignored: google does not support it"
    )
    assert str(adjusted("size", "sent 1:1")) == "size adjusted: sent 1:1"
    assert str(other("n", "1 of 4 removed")) == "n: 1 of 4 removed"
    assert [kind.value for kind in WarningType] == ["unsupported", "compatibility", "other"]
    assert unsupported("a", "b") == CallWarning(WarningType.UNSUPPORTED, "a", "b")  # comparable, hashable
    assert len({unsupported("a", "b"), unsupported("a", "b")}) == 1
