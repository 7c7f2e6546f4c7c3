"""SQL shared by the SQL stores (SQLite and PostgreSQL): statements alike but for their
placeholders (`:name` in SQLite, `%(name)s` in psycopg) and a function or two."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.stores.base import SUCCESS_OUTCOMES, LedgerQuery, UsageQuery

Placeholder = Callable[[str], str]


def where(param: Placeholder, *conditions: tuple[str, str, object]) -> str:
    """`WHERE a = :a AND ...` of the (column and operator, parameter name, value) whose value is
    given: only the filters given are in the statement (not `x IS NULL OR ...`), so each shape of
    query is planned on its own index."""
    present = [f"{test} {param(name)}" for test, name, value in conditions if value is not None]
    return ("WHERE " + " AND ".join(present)) if present else ""


def ledger_page(param: Placeholder, query: LedgerQuery, before: int | None) -> tuple[str, dict[str, Any]]:
    """A page of the ledger newest first (one entry more than the page, to know there is more);
    `before`: the seq the previous page ended at."""
    values = {
        "project_id": query.project_id, "model": query.model, "outcome": query.outcome,
        "since": query.since, "until": query.until, "before": before, "limit": query.limit + 1,
    }  # fmt: skip
    filters = where(
        param,
        ("project_id =", "project_id", query.project_id),
        ("model =", "model", query.model),
        ("outcome =", "outcome", query.outcome),
        ("created_at >=", "since", query.since),
        ("created_at <", "until", query.until),
        ("seq <", "before", before),
    )
    return f"SELECT * FROM ledger {filters} ORDER BY seq DESC LIMIT {param('limit')}", values


def usage(param: Placeholder, day_of: Callable[[str], str], query: UsageQuery) -> tuple[str, dict[str, Any]]:
    """The usage totals statement and its parameters; `day_of` turns a time column into its
    day_number (base.py) in this database's SQL. Grouped in the order of the store's usage index,
    by only what is asked for, so the database can total it in one pass over that index."""
    day = day_of("created_at") if query.by_day else "-1"
    groups = "project_id, model, day" if query.by_day else "project_id, model"
    filters = where(
        param,
        ("project_id =", "project_id", query.project_id),
        ("created_at >=", "since", query.since),
        ("created_at <", "until", query.until),
    )
    statement = (
        f"SELECT project_id, model, {day} AS day, count(*), "
        f"count(*) FILTER (WHERE outcome NOT IN {SUCCESS_OUTCOMES}), sum(images_returned), "
        f"sum(cost_micros), sum(input_tokens) FROM ledger {filters} "
        f"GROUP BY {groups} ORDER BY {groups}"
    )
    return statement, {"project_id": query.project_id, "since": query.since, "until": query.until}
