"""Each fake provider server is shared by the tests of a module and reset between them: `reset()`
must put back every piece of state a test can change, or one test's leftovers decide another's
outcome. Every public attribute (the fake's own and its class's settings, such as BFL's sample
lifetime) is changed, then reset() must give back what a new fake has."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import all_fakes
from tests.fakes.base import FakeProvider

FAKES = sorted(all_fakes().values(), key=lambda fake: fake.__name__)
DIRTY = "left over by an earlier test"


def settable_state(fake: FakeProvider) -> dict[str, Any]:
    """The public attributes a test can change: the instance's, and its class's plain values."""
    names = {name for name in vars(fake) if not name.startswith("_")}
    for cls in type(fake).__mro__[:-1]:  # not object's
        names |= {
            name
            for name, value in vars(cls).items()
            if not name.startswith("_")
            and not name.isupper()  # constants, not settings
            and isinstance(value, bool | int | float | str | type(None))
        }
    return {name: getattr(fake, name) for name in sorted(names)}


def dirty(fake: FakeProvider, name: str, value: Any) -> None:
    """Change one attribute as a test would: containers in place, plain values by assignment."""
    if isinstance(value, list):
        value.append(DIRTY)
    elif isinstance(value, dict):
        value[DIRTY] = 1
    elif isinstance(value, set):
        value.add(DIRTY)
    elif isinstance(value, bool):
        setattr(fake, name, not value)
    elif isinstance(value, int | float):
        setattr(fake, name, value + 1)
    elif isinstance(value, str):
        setattr(fake, name, value + DIRTY)
    elif value is None:
        setattr(fake, name, 1.0)
    else:
        pytest.fail(f"{type(fake).__name__}.{name}: no way to change a {type(value).__name__} here")


@pytest.mark.parametrize("fake_type", FAKES, ids=lambda t: t.__name__)
def test_reset_gives_back_a_new_fakes_state(fake_type: type[FakeProvider]) -> None:
    new = settable_state(fake_type())
    fake = fake_type()
    for name, value in settable_state(fake).items():
        dirty(fake, name, value)
    assert settable_state(fake) != new  # (the test changed something)
    fake.reset()
    assert settable_state(fake) == new
