"""Admin operations: plain functions over a store, behind both the `mg` command (cli.py) and the
admin API (api/admin_servicer.py), so the two cannot drift. Every change is written to the audit
log with its actor: how the admin API names its caller (`admin token adm_...`), or the `mg`
command and the system user running it."""

from __future__ import annotations

import asyncio
import getpass
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime

from ulid import ULID

from service.catalog.catalog import parse_usd
from service.keys import hash_key, looks_like_key, new_key
from service.stores.base import (
    ApiKey,
    AuditEntry,
    InFlight,
    LedgerEntry,
    LedgerQuery,
    Project,
    ProjectExists,
    Spend,
    Store,
    UnknownProject,
    UsageQuery,
)
from service.stores.periods import PeriodError, check_period

DEV_PROJECT = "dev"
# The first start's project: enough to try every provider, small enough that a leaked dev key cannot
# run up a bill once a provider key is set.
DEV_BUDGET_USD = "5"
MG_SERVE_ACTOR = "mg serve (first start)"
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_EPOCH = re.compile(r"^\d{9,11}(\.\d+)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


class AdminError(ValueError):
    """A bad admin command argument; the message says what to fix."""


class NotFoundError(AdminError):
    """The project or key named does not exist."""


def cli_actor() -> str:
    """How the audit log names a change made with the `mg` command: by the system user running it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = "unknown user"
    return f"mg command ({user})"


async def _audit(store: Store, actor: str, action: str, target: str, **detail: object) -> None:
    entry = AuditEntry(
        id=f"aud_{ULID()}",
        at=time.time(),
        actor=actor,
        action=action,
        target=target,
        detail={k: "" if v is None else str(v) for k, v in detail.items()},
    )
    await store.append_audit(entry)


def usd_to_micros(text: str) -> int:
    try:
        return parse_usd(text)
    except ValueError as exc:
        raise AdminError(f"{text!r} {exc}") from None


def parse_since(text: str, now: float | None = None) -> float:
    """'24h', '7d', '30m' (ago), an ISO date/time ('2026-11-01', '2026-11-01T12:00:00+00:00'), or
    seconds since the epoch ('1796585163.27', as the admin API prints times)."""
    now = time.time() if now is None else now
    if match := _RELATIVE.match(text):
        return now - int(match.group(1)) * _UNIT_S[match.group(2)]
    if _EPOCH.match(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise AdminError(
            f"{text!r} is not a time: use e.g. 24h, 7d, 2026-11-01 or seconds since the epoch"
        ) from exc
    return moment.timestamp() if moment.tzinfo else moment.astimezone().timestamp()


def budget_period(text: str) -> str:
    """A budget period as given (`none` for a lifetime cap) as stored, or AdminError."""
    try:
        return check_period("" if text == "none" else text)
    except PeriodError as exc:
        raise AdminError(str(exc)) from None


def _check_period_has_cap(period: str, budget: int | None) -> None:
    if period and budget is None:
        raise AdminError(
            f"budget period {period!r} renews a spend cap, and there is none: give one (--budget-usd)"
        )


def _check_rpm(rpm: int | None) -> None:
    if rpm is not None and rpm <= 0:
        raise AdminError("rpm (requests per minute per key) must be positive")


async def project_named(store: Store, name: str) -> Project:
    project = await store.get_project(name)
    if project is None:
        raise NotFoundError(f"no project named {name!r} (see `mg projects list`)")
    return project


@dataclass(frozen=True)
class ProjectSpend:
    project: Project
    spend: Spend


async def projects_with_spend(store: Store, name: str | None = None) -> list[ProjectSpend]:
    """Every project (or the one named) with what it has spent and holds reserved: in the period in
    force, for a cap that renews."""
    projects = [await project_named(store, name)] if name is not None else await store.list_projects()
    return [ProjectSpend(p, await store.spend(p.id, p.period)) for p in projects]


async def create_project(
    store: Store,
    name: str,
    budget_usd: str | None,
    allow: list[str],
    rpm: int | None,
    *,
    actor: str,
    period: str = "",
) -> Project:
    if not name or len(name) > 100:
        raise AdminError("a project name is 1-100 characters")
    _check_rpm(rpm)
    budget = usd_to_micros(budget_usd) if budget_usd is not None else None
    period = budget_period(period)
    _check_period_has_cap(period, budget)
    now = time.time()
    project = Project(
        id=f"proj_{ULID()}",
        name=name,
        created_at=now,
        budget_micros=budget,
        allow=tuple(allow),
        rpm=rpm,
        budget_period=period,
        budget_anchor=int(now) if period else 0,
    )
    try:
        await store.create_project(project)
    except ProjectExists:
        raise AdminError(f"a project named {name!r} exists") from None
    await _audit(
        store, actor, "project.create", name, budget_usd=budget_usd, budget_period=period or "none",
        allow=",".join(allow), rpm=rpm,
    )  # fmt: skip
    return project


async def update_project(
    store: Store,
    name: str,
    *,
    budget_usd: str | None = None,
    no_budget: bool = False,
    allow: list[str] | None = None,
    allow_all: bool = False,
    rpm: int | None = None,
    period: str | None = None,
    actor: str,
) -> Project:
    """A changed cap or period holds from the next reservation on. A changed period starts anew
    from now (its anchor) and carries what the period in force had spent into its first period, so a
    change never hands out a fresh allowance; reservations in flight settle into the period they
    were taken in (docs/configuration.md#budget-periods)."""
    project = await project_named(store, name)
    _check_rpm(rpm)
    budget = project.budget_micros
    if no_budget:
        budget = None
    elif budget_usd is not None:
        budget = usd_to_micros(budget_usd)
    new_period = project.budget_period if period is None else budget_period(period)
    if no_budget and period is None:
        new_period = ""  # no cap, nothing to renew
    _check_period_has_cap(new_period, budget)
    patterns = () if allow_all else tuple(allow) if allow is not None else project.allow
    updated = replace(project, budget_micros=budget, allow=patterns, rpm=rpm or project.rpm)
    if new_period != project.budget_period:
        carried = (await store.spend(project.id, project.period)).spent_micros if new_period else 0
        anchor = int(time.time()) if new_period else 0
        if new_period and anchor <= project.budget_anchor:
            # A period's spend is kept under (anchor, start): one set in the same second as the period
            # in force, whose period starts when that one's did (a day and a week on a Monday), would
            # share its spend and count it beside the carry. So it waits for the next second.
            await asyncio.sleep(project.budget_anchor + 1 - time.time())
            anchor = max(int(time.time()), project.budget_anchor + 1)
        updated = replace(
            updated, budget_period=new_period, budget_anchor=anchor, budget_carry_micros=carried
        )
    try:
        await store.update_project(updated)
    except UnknownProject as exc:
        raise NotFoundError(f"no project named {name!r}") from exc
    changes = {
        "budget_usd": "none" if budget is None else f"{budget / 1_000_000:g}",
        "budget_period": updated.budget_period or "none",
        "allow": ",".join(patterns),
        "rpm": updated.rpm,
    }
    await _audit(store, actor, "project.update", name, **changes)
    return updated


async def archive_project(store: Store, name: str, *, actor: str) -> Project:
    """Archive `name`: from the next call on, on every worker and replica, its keys are refused
    (auth reads the project with the key on each call); its ledger, spend and keys are kept."""
    project = await project_named(store, name)
    if project.archived_at is not None:
        return project
    archived = replace(project, archived_at=time.time())
    if not await store.set_project_archived(project.id, archived.archived_at):
        raise NotFoundError(f"no project named {name!r}")
    await _audit(store, actor, "project.archive", name)
    return archived


async def unarchive_project(store: Store, name: str, *, actor: str) -> Project:
    """Bring an archived project back: its keys that were not revoked work again."""
    project = await project_named(store, name)
    if not await store.set_project_archived(project.id, None):
        raise NotFoundError(f"no project named {name!r}")
    await _audit(store, actor, "project.unarchive", name)
    return replace(project, archived_at=None)


async def create_key(store: Store, project_name: str, *, actor: str) -> tuple[str, ApiKey]:
    project = await project_named(store, project_name)
    if project.archived_at is not None:
        raise AdminError(
            f"project {project_name!r} is archived: it gets no new keys (`mg projects unarchive "
            f"{project_name}` brings it back)"
        )
    token, key = new_key(project.id)
    await store.create_key(key)
    await _audit(store, actor, "key.create", key.id, project=project.name, prefix=key.prefix)
    return token, key


async def revoke_key(store: Store, which: str, *, actor: str) -> KeyRow:
    """Revoke the key `which` names: its id, the key itself, or a prefix of it as `mg keys list`
    shows it (refused when more than one active key starts with it). Returns the revoked key."""
    key = await _key_named(store, which)
    at = time.time()
    if not await store.revoke_key(key.id, at):
        raise NotFoundError(f"no active key {which!r} (see `mg keys list`)")
    project = await store.get_project_by_id(key.project_id)
    row = KeyRow(replace(key, revoked_at=at), project.name if project else key.project_id)
    await _audit(store, actor, "key.revoke", key.id, project=row.project, prefix=key.prefix)
    return row


@dataclass(frozen=True)
class KeyRow:
    key: ApiKey
    project: str  # the project's name (its id if it has none)


async def list_keys(store: Store, project_name: str | None) -> list[KeyRow]:
    project_id = (await project_named(store, project_name)).id if project_name else None
    names = {p.id: p.name for p in await store.list_projects()}
    return [KeyRow(k, names.get(k.project_id, k.project_id)) for k in await store.list_keys(project_id)]


async def _key_named(store: Store, which: str) -> ApiKey:
    if looks_like_key(which):
        key = await store.find_key(hash_key(which))
        if key is not None:
            return key
    active = [k for k in await store.list_keys() if k.revoked_at is None]
    if by_id := [k for k in active if k.id == which]:
        return by_id[0]
    by_prefix = (
        [k for k in active if which and k.prefix.startswith(which.rstrip("."))] if len(which) >= 8 else []
    )
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1:
        ids = ", ".join(k.id for k in by_prefix)
        raise AdminError(f"{which!r} is the start of {len(by_prefix)} active keys ({ids}); give the key id")
    raise NotFoundError(
        f"no active key {which!r}: give a key id, the key, or its prefix (see `mg keys list`)"
    )


@dataclass(frozen=True)
class UsageRow:
    project: str
    model: str
    requests: int
    failed: int
    images: int
    cost_micros: int
    input_tokens: int
    day: str = ""  # YYYY-MM-DD (UTC) when counted per day


async def usage(
    store: Store, project_name: str | None, since: float | None, *, by_day: bool = False
) -> list[UsageRow]:
    """Requests, failures, images, spend and input tokens per project and model (and UTC day),
    totalled by the store (in the database, for the SQL stores)."""
    project_id = (await project_named(store, project_name)).id if project_name else None
    names = {p.id: p.name for p in await store.list_projects()}
    totals = await store.usage(UsageQuery(project_id=project_id, since=since, by_day=by_day))
    rows = [
        UsageRow(names.get(t.project_id, t.project_id), t.model, t.requests, t.failed, t.images,
                 t.cost_micros, t.input_tokens, t.day)
        for t in totals
    ]  # fmt: skip
    return sorted(rows, key=lambda r: (r.project, r.model, r.day))


def page_size(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise AdminError(
            f"a page holds 1-{MAX_PAGE_SIZE} entries (page_size, mg's --limit; default {DEFAULT_PAGE_SIZE})"
        )
    return requested or DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class LedgerRow:
    entry: LedgerEntry
    project: str


async def ledger_page(
    store: Store,
    *,
    project: str = "",
    model: str = "",
    outcome: str = "",
    since: str = "",
    until: str = "",
    size: int = 0,
    cursor: str = "",
) -> tuple[list[LedgerRow], str]:
    """A page of the ledger, newest first, filtered; (rows, the next page's cursor or "")."""
    now = time.time()
    query = LedgerQuery(
        project_id=(await project_named(store, project)).id if project else None,
        model=model or None,
        outcome=outcome or None,
        since=parse_since(since, now) if since else None,
        until=parse_since(until, now) if until else None,
        limit=page_size(size),
        cursor=cursor,
    )
    try:
        page = await store.ledger_page(query)
    except ValueError as exc:  # a cursor this store did not make
        raise AdminError(f"page_token {cursor!r} is not one this API returned") from exc
    names = {p.id: p.name for p in await store.list_projects()}
    return [LedgerRow(e, names.get(e.project_id, e.project_id)) for e in page.entries], page.next_cursor


@dataclass(frozen=True)
class InFlightRow:
    generation: InFlight
    project: str


async def in_flight(store: Store) -> list[InFlightRow]:
    names = {p.id: p.name for p in await store.list_projects()}
    return [InFlightRow(g, names.get(g.project_id, g.project_id)) for g in await store.in_flight()]


async def audit_page(store: Store, size: int = 0, cursor: str = "") -> tuple[list[AuditEntry], str]:
    """A page of the audit log, newest first; (entries, the next page's cursor or "")."""
    limit = page_size(size)
    entries = await store.audit_log(limit + 1, cursor)
    more = len(entries) > limit
    entries = entries[:limit]
    return entries, entries[-1].id if more else ""


async def dev_key(store: Store, saved: str | None) -> tuple[str, Project | None] | None:
    """A key to print at start, with its project: on a gateway's first start (no projects at all)
    project `dev` and a new key for it; later, the `saved` key while it is still valid. None when
    there is none."""
    if not await store.list_projects():
        try:
            project = await create_project(store, DEV_PROJECT, DEV_BUDGET_USD, [], None, actor=MG_SERVE_ACTOR)
        except AdminError:
            # Replicas starting together on a new shared store: another one made it between the
            # look and the create. That was its first start, not this one's.
            if await store.get_project(DEV_PROJECT) is None:
                raise
        else:
            token, _ = await create_key(store, DEV_PROJECT, actor=MG_SERVE_ACTOR)
            return token, project
    if saved is None:
        return None
    key = await store.find_key(hash_key(saved))
    if key is None or key.revoked_at is not None:
        return None
    owner = await store.get_project_by_id(key.project_id)
    if owner is not None and owner.archived_at is not None:
        return None
    return saved, owner
