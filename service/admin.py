"""Admin operations behind `mg projects`, `mg keys` and `mg usage`: plain functions over a store."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime

from ulid import ULID

from service.catalog.catalog import parse_usd
from service.keys import hash_key, looks_like_key, new_key
from service.stores.base import ApiKey, Project, Store, UnknownProject

DEV_PROJECT = "dev"
# The first start's project: enough to try every provider, small enough that a leaked dev key cannot
# run up a bill once a provider key is set.
DEV_BUDGET_USD = "5"
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class AdminError(ValueError):
    """A bad admin command argument; the message says what to fix."""


def usd_to_micros(text: str) -> int:
    try:
        return parse_usd(text)
    except ValueError as exc:
        raise AdminError(f"{text!r} {exc}") from None


def parse_since(text: str, now: float | None = None) -> float:
    """'24h', '7d', '30m' (ago), or an ISO date/time ('2026-11-01', '2026-11-01T12:00:00+00:00')."""
    now = time.time() if now is None else now
    if match := _RELATIVE.match(text):
        return now - int(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise AdminError(f"{text!r} is not a time: use e.g. 24h, 7d or 2026-11-01") from exc
    return moment.timestamp() if moment.tzinfo else moment.astimezone().timestamp()


async def project_named(store: Store, name: str) -> Project:
    project = await store.get_project(name)
    if project is None:
        raise AdminError(f"no project named {name!r} (see `mg projects list`)")
    return project


async def create_project(
    store: Store, name: str, budget_usd: str | None, allow: list[str], rpm: int | None
) -> Project:
    if not name or len(name) > 100:
        raise AdminError("a project name is 1-100 characters")
    if rpm is not None and rpm <= 0:
        raise AdminError("--rpm must be positive")
    project = Project(
        id=f"proj_{ULID()}",
        name=name,
        created_at=time.time(),
        budget_micros=usd_to_micros(budget_usd) if budget_usd is not None else None,
        allow=tuple(allow),
        rpm=rpm,
    )
    await store.create_project(project)
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
) -> Project:
    project = await project_named(store, name)
    if rpm is not None and rpm <= 0:
        raise AdminError("--rpm must be positive")
    budget = project.budget_micros
    if no_budget:
        budget = None
    elif budget_usd is not None:
        budget = usd_to_micros(budget_usd)
    patterns = () if allow_all else tuple(allow) if allow is not None else project.allow
    updated = replace(project, budget_micros=budget, allow=patterns, rpm=rpm or project.rpm)
    try:
        await store.update_project(updated)
    except UnknownProject as exc:
        raise AdminError(f"no project named {name!r}") from exc
    return updated


async def archive_project(store: Store, name: str) -> Project:
    """Archive `name`: from the next call on, on every worker and replica, its keys are refused
    (auth reads the project with the key on each call); its ledger, spend and keys are kept."""
    project = await project_named(store, name)
    if project.archived_at is not None:
        return project
    archived = replace(project, archived_at=time.time())
    if not await store.set_project_archived(project.id, archived.archived_at):
        raise AdminError(f"no project named {name!r}")
    return archived


async def unarchive_project(store: Store, name: str) -> Project:
    """Bring an archived project back: its keys that were not revoked work again."""
    project = await project_named(store, name)
    if not await store.set_project_archived(project.id, None):
        raise AdminError(f"no project named {name!r}")
    return replace(project, archived_at=None)


async def create_key(store: Store, project_name: str) -> tuple[str, ApiKey]:
    project = await project_named(store, project_name)
    if project.archived_at is not None:
        raise AdminError(
            f"project {project_name!r} is archived: it gets no new keys (`mg projects unarchive "
            f"{project_name}` brings it back)"
        )
    token, key = new_key(project.id)
    await store.create_key(key)
    return token, key


async def revoke_key(store: Store, which: str) -> ApiKey:
    """Revoke the key `which` names: its id, the key itself, or a prefix of it as `mg keys list`
    shows it (refused when more than one active key starts with it). Returns the revoked key."""
    key = await _key_named(store, which)
    if not await store.revoke_key(key.id, time.time()):
        raise AdminError(f"no active key {which!r} (see `mg keys list`)")
    return key


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
    raise AdminError(f"no active key {which!r}: give a key id, the key, or its prefix (see `mg keys list`)")


@dataclass(frozen=True)
class UsageRow:
    project: str
    model: str
    requests: int
    failed: int
    images: int
    cost_micros: int
    input_tokens: int


async def usage(store: Store, project_name: str | None, since: float | None) -> list[UsageRow]:
    project_id = (await project_named(store, project_name)).id if project_name else None
    names = {p.id: p.name for p in await store.list_projects()}
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for entry in await store.ledger(project_id, since):
        row = totals[(names.get(entry.project_id, entry.project_id), entry.model)]
        row[0] += 1
        row[1] += entry.outcome not in ("ok", "partial")
        row[2] += entry.images_returned
        row[3] += entry.cost_micros
        row[4] += entry.input_tokens
    return [UsageRow(project, model, *values) for (project, model), values in sorted(totals.items())]


async def dev_key(store: Store, saved: str | None) -> tuple[str, Project | None] | None:
    """A key to print at start, with its project: on a gateway's first start (no projects at all)
    project `dev` and a new key for it; later, the `saved` key while it is still valid. None when
    there is none."""
    if not await store.list_projects():
        project = await create_project(store, DEV_PROJECT, DEV_BUDGET_USD, [], None)
        token, _ = await create_key(store, DEV_PROJECT)
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
