"""Named SQL queries and numbered schema migrations, read from package data.

Each backend has a folder under ``beacon_proxy/consent/sql/``:

* ``queries.sql`` holds every query the store runs, each introduced by a
  ``-- name: NAME`` line (the listmonk convention);
* ``NNNN_description.sql`` are the schema migrations, applied in order in one
  transaction, and recorded in ``schema_migrations``.

    >>> q = load_queries("sqlite")
    >>> q["get-consent"].split()[0]
    'SELECT'
    >>> [m.version for m in load_migrations("sqlite")][:1]
    [1]
"""

from __future__ import annotations

import functools
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

__all__ = ["DIALECTS", "Migration", "load_migrations", "load_queries", "split_sqlite_script"]

DIALECTS = ("sqlite", "postgresql")
_NAME = re.compile(r"^-- name: ([a-z0-9-]+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _folder(dialect: str) -> resources.abc.Traversable:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    return resources.files("beacon_proxy.consent").joinpath("sql", dialect)


@functools.cache
def load_queries(dialect: str) -> dict[str, str]:
    """Query name -> SQL text (comments and the trailing semicolon removed)."""
    text = _folder(dialect).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{dialect}/queries.sql: query {name!r} defined twice")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";").strip()
    return queries


@functools.cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The migrations in version order; versions must be 1, 2, 3, ... without gaps."""
    found: list[Migration] = []
    for entry in _folder(dialect).iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    if [mig.version for mig in found] != list(range(1, len(found) + 1)):
        raise ValueError(f"{dialect} migrations are not numbered 1..n: "
                         f"{[mig.version for mig in found]}")
    return tuple(found)


def split_sqlite_script(script: str) -> list[str]:
    """Complete statements of a script (``CREATE TRIGGER ... END;`` stays whole)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement at the end of a script: {buf.strip()[:60]!r}")
    return statements
