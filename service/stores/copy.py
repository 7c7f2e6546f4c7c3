"""Copying a store into a new, empty one (`mg store copy`): from the embedded SQLite store (or any
store) to PostgreSQL, when a gateway moves on to replicas.

What is copied: projects (archived ones too, with their budget periods), keys (their hashes: every key
keeps working), what each project has spent (in all, and in the period in force of a cap that
renews: earlier periods no longer count against any cap), the whole ledger (every entry, in its
order, in batches) and the audit log. What
is not: rate-limit state (it refills within a minute), reservations (generations in flight: stop
the gateway before copying, or they settle in the old store) and idempotency records (short-lived;
a retry after the move runs as a new request). After the copy, both stores are read back and
compared: the number of projects, keys and audit entries, each project's spend, and the usage
totals of the whole ledger (its entry count, images, cost and tokens per project, model and day).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.stores.base import AuditEntry, LedgerEntry, Project, Store, UsageQuery
from service.stores.periods import carries

# Ledger entries per read and per write.
BATCH = 5000

# (what, done, total): called as the copy goes.
Progress = Callable[[str, int, int], None]


class CopyError(Exception):
    """The copy was refused or its result does not match the source; the message says which."""


class CopyTarget(Store, Protocol):
    """A store that can be copied into: it takes ledger entries and spend as they are."""

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None: ...
    async def add_spent(
        self,
        project_id: str,
        spent_micros: int,
        period: tuple[int, int] | None = None,
        period_micros: int = 0,
    ) -> None: ...


@dataclass(frozen=True)
class CopySummary:
    projects: int
    keys: int
    ledger_entries: int
    audit_entries: int
    spent_micros: int


async def copy_store(source: Store, target: CopyTarget, progress: Progress) -> CopySummary:
    """Copy `source` into `target`, which must hold no project and no ledger entry; then verify."""
    if await target.list_projects() or (await target.ledger_batch("", 1)).entries:
        raise CopyError(
            "the target store is not empty (it has projects or ledger entries): copy into a new database"
        )
    projects = await source.list_projects()
    for done, project in enumerate(projects, 1):
        await target.create_project(project)
        progress("projects", done, len(projects))
    keys = await source.list_keys()
    for done, key in enumerate(keys, 1):
        await target.create_key(key)
        progress("keys", done, len(keys))
    spent = {p.id: (await source.spend(p.id)).spent_micros for p in projects}
    for done, project in enumerate(projects, 1):
        await target.add_spent(project.id, spent[project.id], *await _period_spent(source, project))
        progress("spend", done, len(projects))
    entries = await _copy_ledger(source, target, progress)
    audit = await _copy_audit(source, target, progress)
    summary = CopySummary(len(projects), len(keys), entries, audit, sum(spent.values()))
    await _verify(source, target, summary, projects, spent)
    return summary


async def _period_spent(source: Store, project: Project) -> tuple[tuple[int, int], int] | tuple[()]:
    """The period in force of a cap that renews, `(anchor, start)`, and what it has spent itself (the
    spend carried into it from the period before is the project's own, copied with it)."""
    period = project.period
    if period is None:
        return ()
    spend = await source.spend(project.id, period)
    carried = period.carry_micros if carries(period, spend.period_start) else 0
    return (period.anchor, spend.period_start), spend.spent_micros - carried


async def _copy_ledger(source: Store, target: CopyTarget, progress: Progress) -> int:
    total = sum(t.requests for t in await source.usage(UsageQuery()))
    done, cursor = 0, ""
    progress("ledger", 0, total)
    while True:
        batch = await source.ledger_batch(cursor, BATCH)
        if not batch.entries:
            return done
        await target.append_ledger(batch.entries)
        done += len(batch.entries)
        progress("ledger", done, max(total, done))  # (entries written meanwhile: stop the gateway)
        cursor = batch.next_cursor


async def _copy_audit(source: Store, target: CopyTarget, progress: Progress) -> int:
    """The order written does not matter: entries sort by their id."""
    done = 0
    async for entries in _audit_batches(source):
        for entry in entries:
            await target.append_audit(entry)
        done += len(entries)
        progress("audit", done, done)
    return done


async def _audit_batches(store: Store) -> AsyncIterator[list[AuditEntry]]:
    """The audit log, newest first, a batch at a time."""
    before = ""
    while entries := await store.audit_log(BATCH, before):
        yield entries
        before = entries[-1].id


async def _verify(
    source: Store, target: CopyTarget, summary: CopySummary, projects: list[Project], spent: dict[str, int]
) -> None:
    problems = []
    if len(await target.list_projects()) != summary.projects:
        problems.append("projects")
    if len(await target.list_keys()) != summary.keys:
        problems.append("keys")
    if {p: (await target.spend(p)).spent_micros for p in spent} != spent:
        problems.append("spend")
    for project in projects:
        if project.period and await target.spend(project.id, project.period) != await source.spend(
            project.id, project.period
        ):
            problems.append(f"the spend of {project.name}'s period")
    everything = UsageQuery(by_day=True)
    if await target.usage(everything) != await source.usage(everything):
        problems.append("ledger")
    if sum([len(entries) async for entries in _audit_batches(target)]) != summary.audit_entries:
        problems.append("audit log")
    if problems:
        raise CopyError(
            f"the copy does not match the source ({', '.join(problems)} differ): was a gateway still "
            "running on the source? Stop it, and copy again into a new database"
        )
