"""Budget periods' arithmetic (service/stores/periods.py), the reference the stores' Lua and SQL
versions are held to by tests/contract."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.stores.periods import (
    BudgetPeriod,
    PeriodError,
    check_period,
    describe,
    iso,
    period_end,
    period_start,
)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["", "day", "week", "month", "1d", "30d", "366d"])
def test_accepted_periods(text: str) -> None:
    assert check_period(text) == text


@pytest.mark.parametrize(
    "text", ["0d", "367d", "030d", "30", "d", "1w", "Month", " day", "30d ", "1.5d", "-1d"]
)
def test_refused_periods_say_what_is_accepted(text: str) -> None:
    with pytest.raises(PeriodError, match="day, week, month"):
        check_period(text)


@pytest.mark.parametrize(
    ("kind", "at", "start", "end"),
    [
        ("day", "2027-03-09T23:59:59.999", "2027-03-09", "2027-03-10"),
        ("week", "2027-01-03T23:59:59", "2026-12-28", "2027-01-04"),  # Sunday: the week began Monday
        ("week", "2027-01-04T00:00:00", "2027-01-04", "2027-01-11"),
        ("week", "1970-01-01T00:00:00", "1969-12-29", "1970-01-05"),  # a Thursday
        ("month", "2026-12-31T23:59:59", "2026-12-01", "2027-01-01"),
        ("month", "2027-02-28T12:00:00", "2027-02-01", "2027-03-01"),
        ("month", "2028-02-29T12:00:00", "2028-02-01", "2028-03-01"),
        ("month", "2100-02-28T12:00:00", "2100-02-01", "2100-03-01"),  # not a leap year
        ("month", "2027-01-31T00:00:00", "2027-01-01", "2027-02-01"),
    ],
)
def test_calendar_periods(kind: str, at: str, start: str, end: str) -> None:
    period = BudgetPeriod(kind)
    begun = period_start(period, utc(at))
    assert (begun, period_end(period, begun)) == (utc(start), utc(end))


def test_rolling_periods_are_consecutive_from_the_anchor() -> None:
    anchor = int(utc("2027-03-10T13:45:07"))
    period = BudgetPeriod.of("30d", anchor)
    assert period == BudgetPeriod("rolling", 30, anchor)
    assert period_start(period, anchor) == anchor
    assert period_start(period, anchor + 30 * 86_400 - 0.5) == anchor
    assert period_start(period, anchor + 30 * 86_400) == anchor + 30 * 86_400
    assert period_end(period, anchor + 30 * 86_400) == anchor + 60 * 86_400


def test_a_lifetime_cap_has_no_period_and_people_read_the_others() -> None:
    assert BudgetPeriod.of("", 0) is None
    assert (describe("month"), describe("7d"), describe("")) == (
        "the month (UTC)",
        "the rolling 7-day period",
        "",
    )
    assert iso(utc("2027-01-01")) == "2027-01-01T00:00:00Z"
