"""Budget periods: when a project's spend cap renews.

A project's cap holds for its lifetime (no period, the default) or per period: `day`, `week` (ISO
weeks, from Monday 00:00 UTC), `month` (calendar months in UTC), or rolling `Nd` (consecutive N-day
periods from the moment the period was set, its anchor). A period is identified by its anchor and
its start (whole seconds since the epoch), so periods of a period set later never share spend with
those of one set earlier.

The start of the period in force is derived from the store's clock inside the store's atomic step
(this module for SQLite, a Lua function in stores/redis.py, a SQL function in the PostgreSQL
migration 0005): the three are kept equal by tests/contract. The end of a period follows from its
start alone (`period_end`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAY_S = 86_400
CALENDAR = ("day", "week", "month")
# The longest rolling period: a year and a bit, far inside every store's integer range.
MAX_ROLLING_DAYS = 366
_ROLLING = re.compile(r"^([1-9]\d{0,2})d$")


class PeriodError(ValueError):
    """A budget period that is not one of the accepted forms; the message says which are."""


def check_period(text: str) -> str:
    """`text` as stored ("" for none), or PeriodError."""
    if text in ("", *CALENDAR):
        return text
    match = _ROLLING.match(text)
    if match and int(match.group(1)) <= MAX_ROLLING_DAYS:
        return text
    raise PeriodError(
        f"{text!r} is not a budget period: use day, week, month (calendar periods in UTC), "
        f"a rolling Nd such as 30d (1-{MAX_ROLLING_DAYS} days), or none"
    )


@dataclass(frozen=True)
class BudgetPeriod:
    """What a store needs to find the period in force: the kind, N for a rolling period, the
    anchor (when the period was set), and what the period in force before it had spent, which
    counts against the first period of this one (the one holding the anchor)."""

    kind: str  # "day", "week", "month" or "rolling"
    days: int = 0
    anchor: int = 0
    carry_micros: int = 0

    @classmethod
    def of(cls, period: str, anchor: int, carry_micros: int = 0) -> BudgetPeriod | None:
        """The period of a project (its `budget_period` text); None for a lifetime cap."""
        if not period:
            return None
        if period in CALENDAR:
            return cls(period, 0, anchor, carry_micros)
        return cls("rolling", int(check_period(period)[:-1]), anchor, carry_micros)


def period_start(period: BudgetPeriod, now: float) -> int:
    """The start of the period holding `now` (seconds since the epoch, UTC)."""
    if period.kind == "rolling":
        length = period.days * DAY_S
        return period.anchor + ((int(now) - period.anchor) // length) * length
    day = int(now) // DAY_S
    if period.kind == "day":
        return day * DAY_S
    if period.kind == "week":
        return (day - (day + 3) % 7) * DAY_S  # 1970-01-01 was a Thursday
    moment = datetime.fromtimestamp(day * DAY_S, UTC)
    return int(moment.replace(day=1).timestamp())


def period_end(period: BudgetPeriod, start: int) -> int:
    """When the period that started at `start` ends, and the next one starts."""
    if period.kind == "rolling":
        return start + period.days * DAY_S
    if period.kind == "day":
        return start + DAY_S
    if period.kind == "week":
        return start + 7 * DAY_S
    first = datetime.fromtimestamp(start, UTC)
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return int(following.timestamp())


def carries(period: BudgetPeriod, start: int) -> bool:
    """Whether the period starting at `start` is the first of `period`: the one holding its anchor,
    which the spend carried over from the period before counts against."""
    return start <= period.anchor


def describe(period: str) -> str:
    """How a message names the period: 'the day', 'the 30-day period'; '' for none."""
    if not period:
        return ""
    if period in CALENDAR:
        return f"the {period} (UTC)"
    return f"the rolling {period[:-1]}-day period"


def iso(timestamp: float) -> str:
    """A UTC time as people read it: 2027-01-01T00:00:00Z."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
