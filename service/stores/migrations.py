"""Versioned schema migrations, as the SQL stores (SQLite and PostgreSQL) keep them.

Each store has a directory of files `NNNN_what.sql` in this package; a file's number is the schema
version it brings the database to, and the version this mg expects is the number of files. A
store records its version in the database and applies the missing files in order, in one
transaction under the database's own lock, so two workers or replicas starting (or two operators
migrating) at once apply each file exactly once. A database newer than this mg is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files

PACKAGE = "service.stores"
_FILE = re.compile(r"(\d{4})_(\w+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer mg than this one."""


def load(directory: str) -> list[Migration]:
    """The migrations shipped in `directory`, in version order; numbered 1, 2, ... without gaps."""
    found = []
    for entry in files(PACKAGE).joinpath(directory).iterdir():
        if match := _FILE.fullmatch(entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(
            f"{directory} files are not numbered 1..{len(found)}: {[m.version for m in found]}"
        )
    return found


@dataclass(frozen=True)
class Schema:
    """One store's migrations, and how its messages name it and the way to migrate it."""

    store: str  # "PostgreSQL", "SQLite"
    migrations: list[Migration]
    how_to_migrate: str

    @property
    def expected(self) -> int:
        return len(self.migrations)

    def mismatch(self, version: int) -> str:
        """What to do about a database at `version`, or "" when this mg runs on it."""
        if version < self.expected:
            return (
                f"The {self.store} store's schema is at version {version}; this mg needs version "
                f"{self.expected}: {self.how_to_migrate}."
            )
        if version > self.expected:
            return (
                f"The {self.store} store's schema is at version {version}, newer than this mg knows "
                f"({self.expected}): run the mg version that migrated it, or a newer one."
            )
        return ""

    def pending(self, current: int) -> list[Migration]:
        """The migrations a database at `current` lacks; SchemaTooNew for one newer than this mg."""
        if current > self.expected:
            raise SchemaTooNew(self.mismatch(current))
        return [m for m in self.migrations if m.version > current]


def statements(sql: str) -> Iterator[str]:
    """The statements of a migration file, one by one (for drivers that run one at a time): split at
    the semicolons that end a line, outside comments. Migration files keep to that form."""
    current: list[str] = []
    for line in sql.splitlines():
        code = line.split("--", 1)[0].rstrip()
        current.append(code)
        if code.endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                yield statement
            current = []
    rest = "\n".join(current).strip()
    if rest:
        yield rest
