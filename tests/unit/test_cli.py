"""The `mg` admin commands, run through the CLI's own entry point on a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from service import admin
from service.cli import main
from service.stores.base import LedgerEntry
from service.stores.sqlite import SqliteStore


@pytest.fixture
def mg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("MG_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def keys(mg, project: str) -> list[dict[str, object]]:
    return list(json.loads(mg("keys", "list", "--project", project, "--json")[1]))


def test_a_key_is_revoked_by_its_id_by_itself_or_by_its_listed_prefix(mg) -> None:
    assert mg("projects", "create", "acme")[0] == 0
    tokens = [mg("keys", "create", "--project", "acme")[1].strip() for _ in range(3)]
    listed = {k["prefix"]: k["id"] for k in keys(mg, "acme")}
    by_token = {token: listed[token[:12]] for token in tokens}
    # the key itself (a leaked key), its id, and the prefix `keys list` shows (with or without "...")
    assert mg("keys", "revoke", tokens[0])[1].strip() == by_token[tokens[0]]
    assert mg("keys", "revoke", by_token[tokens[1]])[1].strip() == by_token[tokens[1]]
    assert mg("keys", "revoke", tokens[2][:12] + "...")[1].strip() == by_token[tokens[2]]
    assert all(k["revoked_at"] for k in keys(mg, "acme"))
    code, _, err = mg("keys", "revoke", tokens[0])
    assert code == 1 and "no active key" in err


def test_an_ambiguous_prefix_revokes_nothing(mg) -> None:
    mg("projects", "create", "acme")
    for _ in range(2):
        mg("keys", "create", "--project", "acme")
    code, _, err = mg("keys", "revoke", "mg_live_")
    assert code == 1 and "2 active keys" in err
    assert not any(k["revoked_at"] for k in keys(mg, "acme"))


def test_allowlist_patterns_that_match_no_model_are_warned_about(mg) -> None:
    code, _, err = mg("projects", "create", "acme", "--allow", "openai/gpt-image1", "--allow", "local/*")
    assert code == 0 and "'openai/gpt-image1' matches no model" in err and "local/*" not in err
    code, _, err = mg("projects", "update", "acme", "--allow", "nosuch/*")
    assert code == 0 and "'nosuch/*' matches no model" in err


def test_archived_projects_are_listed_only_with_all_and_get_no_keys(mg) -> None:
    for name in ("acme", "beta"):
        mg("projects", "create", name)
    assert mg("projects", "archive", "acme")[:2] == (0, "acme\n")
    listed = json.loads(mg("projects", "list", "--json")[1])
    assert [p["name"] for p in listed] == ["beta"]
    every = json.loads(mg("projects", "list", "--all", "--json")[1])
    assert [(p["name"], p["archived_at"] is not None) for p in every] == [("acme", True), ("beta", False)]
    assert json.loads(mg("projects", "show", "acme", "--json")[1])["archived_at"] is not None
    code, out, err = mg("keys", "create", "--project", "acme")
    assert code == 1 and out == "" and "archived" in err and "mg projects unarchive acme" in err
    assert mg("projects", "archive", "acme")[0] == 0  # (again: nothing changes)
    assert mg("projects", "unarchive", "acme")[0] == 0
    assert [p["name"] for p in json.loads(mg("projects", "list", "--json")[1])] == ["acme", "beta"]
    assert mg("keys", "create", "--project", "acme")[1].startswith("mg_live_")
    code, _, err = mg("projects", "archive", "ghost")
    assert code == 1 and "no project named 'ghost'" in err


@pytest.mark.parametrize(
    "command",
    [
        ("projects", "list"),
        ("projects", "show", "dev"),
        ("keys", "list"),
        ("usage",),
        ("store", "copy", "--to", "postgresql://postgres@127.0.0.1:5432/never_made"),
    ],
)
def test_reading_commands_never_create_a_store(mg, tmp_path: Path, command: tuple[str, ...]) -> None:
    code, out, err = mg(*command)
    assert code == 1 and f"no store at {tmp_path / 'data' / 'mg.sqlite3'}" in err and out == ""
    assert not (tmp_path / "data").exists()


def test_mg_migrate_brings_the_sqlite_store_to_this_version_once(mg, tmp_path: Path) -> None:
    from service.stores.sqlite_schema import EXPECTED_VERSION

    path = tmp_path / "data" / "mg.sqlite3"
    code, out, _ = mg("migrate")
    assert code == 0 and out == f"SQLite store {path}: schema at version {EXPECTED_VERSION} " \
        f"({EXPECTED_VERSION} migration(s) applied)\n"  # fmt: skip
    assert mg("migrate")[1].endswith("(0 migration(s) applied)\n")


def test_a_store_from_a_newer_mg_is_refused_with_what_to_do(mg, tmp_path: Path) -> None:
    import sqlite3

    from service.stores.sqlite_schema import EXPECTED_VERSION

    assert mg("migrate")[0] == 0
    with sqlite3.connect(tmp_path / "data" / "mg.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version = {EXPECTED_VERSION + 1}")
    for command in (("projects", "create", "acme"), ("migrate",)):
        code, out, err = mg(*command)
        assert code == 1 and out == "", command
        assert f"schema is at version {EXPECTED_VERSION + 1}, newer than this mg knows" in err


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "/tmp/other.sqlite3", ""])
def test_mg_store_copy_takes_only_a_postgresql_url(mg, url: str) -> None:
    assert mg("projects", "create", "acme")[0] == 0
    code, out, err = mg("store", "copy", "--to", url)
    assert code == 1 and "--to takes a PostgreSQL URL" in err and out == ""


def test_every_command_says_which_store_it_opened(mg, tmp_path: Path) -> None:
    code, _, err = mg("projects", "create", "acme")
    assert code == 0 and f"mg: store {tmp_path / 'data' / 'mg.sqlite3'}" in err


def test_without_mg_data_dir_a_checkout_uses_its_own_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import load_settings

    monkeypatch.chdir("/")
    checkout = Path(__file__).resolve().parents[2]
    assert load_settings({}).data_dir == checkout / ".mg"


async def test_the_dev_key_comes_with_its_project_on_the_first_start_and_later(tmp_path: Path) -> None:
    from service import admin
    from service.stores.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "mg.sqlite3")
    try:
        first = await admin.dev_key(store, None)
        assert first is not None
        key, project = first
        assert project is not None and (project.name, project.budget_micros) == ("dev", 5_000_000)
        again = await admin.dev_key(store, key)
        assert again is not None and again[0] == key and again[1] == project
        await admin.archive_project(store, "dev", actor="test")  # (a key that does not work is not printed)
        assert await admin.dev_key(store, key) is None
        await admin.unarchive_project(store, "dev", actor="test")
        assert await admin.dev_key(store, key) == again
        await admin.revoke_key(store, key, actor="test")
        assert await admin.dev_key(store, key) is None
    finally:
        await store.close()


async def test_a_gateway_that_loses_the_race_for_the_dev_project_starts_without_a_key(tmp_path: Path) -> None:
    """Replicas starting together on a new shared store all find no project; the one whose `dev`
    lands first prints its key, the others start with none rather than fail."""
    from service import admin
    from service.stores.base import Project
    from service.stores.sqlite import SqliteStore

    class SeenEmpty(SqliteStore):
        """Its list of projects is read before another gateway's `dev` lands."""

        async def list_projects(self) -> list[Project]:
            return []

    store = SqliteStore(tmp_path / "mg.sqlite3")
    late = SeenEmpty(tmp_path / "mg.sqlite3")
    try:
        won = await admin.dev_key(store, None)
        assert won is not None and won[1] is not None and won[1].name == "dev"
        assert await admin.dev_key(late, None) is None
        assert [k.project_id for k in await store.list_keys()] == [won[1].id]  # no second key made
    finally:
        await store.close()
        await late.close()


def _next_month(now: datetime) -> datetime:
    return (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def test_projects_show_and_list_say_the_period_what_it_spent_and_when_it_renews(mg) -> None:
    assert mg("projects", "create", "acme", "--budget-usd", "5", "--budget-period", "month")[0] == 0
    assert mg("projects", "create", "plain", "--budget-usd", "5")[0] == 0
    renews = f"{_next_month(datetime.now(UTC)):%Y-%m-%dT%H:%M:%SZ}"
    shown = json.loads(mg("projects", "show", "acme", "--json")[1])
    assert (shown["budget_period"], shown["spent_usd"], shown["renews_at"]) == ("month", 0.0, renews)
    assert shown["period_start"] == f"{datetime.now(UTC):%Y-%m}-01T00:00:00Z"
    table = mg("projects", "list")[1].splitlines()
    assert table[0].split()[:7] == ["name", "id", "budget", "period", "spent", "reserved", "renews"]
    acme, plain = (line.split() for line in table[1:])
    assert (acme[3], acme[6]) == ("month", renews)
    assert (plain[3], plain[6]) == ("lifetime", "never")
    assert json.loads(mg("projects", "show", "plain", "--json")[1])["renews_at"] is None


async def _spend(data: Path, name: str, micros: int) -> None:
    """A charge of `micros` to `name`, as a generation settles it."""
    store = SqliteStore(data / "mg.sqlite3")
    try:
        project = await store.get_project(name)
        assert project is not None
        assert await store.reserve(project.id, "r1", micros, None, 60, period=project.period)
        await store.settle("r1", _charge(project.id, micros), project.period)
    finally:
        await store.close()


def _charge(project_id: str, micros: int) -> LedgerEntry:
    return LedgerEntry(
        "r1",
        project_id,
        "key_1",
        "local/sketch",
        "local",
        1,
        1,
        "256x256",
        "",
        micros,
        0,
        1,
        "ok",
        time.time(),
    )


def test_a_changed_period_starts_now_and_carries_what_was_spent(mg, tmp_path: Path) -> None:
    mg("projects", "create", "acme", "--budget-usd", "5", "--budget-period", "week")
    asyncio.run(_spend(tmp_path / "data", "acme", 1_250_000))
    before = int(time.time())
    assert mg("projects", "update", "acme", "--budget-period", "30d")[:2] == (0, "acme\n")
    shown = json.loads(mg("projects", "show", "acme", "--json")[1])
    start = datetime.fromisoformat(shown["period_start"]).timestamp()
    assert before <= start <= time.time()
    assert datetime.fromisoformat(shown["renews_at"]).timestamp() == start + 30 * 86_400
    assert (shown["budget_period"], shown["spent_usd"], shown["budget_usd"]) == ("30d", 1.25, 5.0)
    # A cap change keeps the period; a second change of period carries again, nothing twice.
    mg("projects", "update", "acme", "--budget-usd", "7")
    assert json.loads(mg("projects", "show", "acme", "--json")[1])["period_start"] == shown["period_start"]
    mg("projects", "update", "acme", "--budget-period", "day")
    assert json.loads(mg("projects", "show", "acme", "--json")[1])["spent_usd"] == 1.25
    mg("projects", "update", "acme", "--budget-period", "none")
    lifetime = json.loads(mg("projects", "show", "acme", "--json")[1])
    assert (lifetime["budget_period"], lifetime["renews_at"], lifetime["spent_usd"]) == ("", None, 1.25)


async def test_periods_set_within_one_second_never_share_spend(tmp_path: Path, monkeypatch) -> None:
    # A Monday: the week and the day in force start at the same moment.
    monday = datetime(2026, 12, 7, 10, tzinfo=UTC).timestamp()
    monkeypatch.setattr(admin, "time", SimpleNamespace(time=lambda: monday))
    store = SqliteStore(tmp_path / "mg.sqlite3", clock=lambda: monday)
    try:
        project = await admin.create_project(store, "acme", "5", [], None, actor="test", period="week")
        assert await store.reserve(project.id, "r1", 1_250_000, None, 60, period=project.period)
        await store.settle("r1", _charge(project.id, 1_250_000), project.period)
        for period in ("30d", "day", "week", "day"):
            project = await admin.update_project(store, "acme", period=period, actor="test")
            assert (await store.spend(project.id, project.period)).spent_micros == 1_250_000, period
    finally:
        await store.close()


def test_a_bad_budget_period_is_refused_and_changes_nothing(mg) -> None:
    mg("projects", "create", "acme", "--budget-usd", "5", "--budget-period", "day")
    for bad in ("fortnight", "0d", "367d", "30", "-1d", "Month"):
        code, _, err = mg("projects", "update", "acme", f"--budget-period={bad}")
        assert code == 1 and f"{bad!r} is not a budget period" in err
    code, _, err = mg("projects", "create", "free", "--budget-period", "month")
    assert code == 1 and "renews a spend cap, and there is none" in err
    assert json.loads(mg("projects", "show", "acme", "--json")[1])["budget_period"] == "day"
    assert [p["name"] for p in json.loads(mg("projects", "list", "--json")[1])] == ["acme"]
    # Removing the cap removes what renews it.
    mg("projects", "update", "acme", "--no-budget")
    assert json.loads(mg("projects", "show", "acme", "--json")[1])["budget_period"] == ""
