from __future__ import annotations

import re
import sqlite3

from beacon_proxy.consent.queries import (
    DIALECTS,
    load_migrations,
    load_queries,
    split_sqlite_script,
)


def test_both_dialects_define_the_same_queries_with_the_same_parameters() -> None:
    sqlite, pg = load_queries("sqlite"), load_queries("postgresql")
    assert sorted(sqlite) == sorted(pg)
    for name in sqlite:
        lite = {int(n) for n in re.findall(r"\?(\d+)", sqlite[name])}
        post = {int(n) for n in re.findall(r"\$(\d+)", pg[name])}
        assert lite == post, name
        assert lite == set(range(1, len(lite) + 1)), name


def test_migrations_are_numbered_and_parallel() -> None:
    versions = {d: [(m.version, m.name) for m in load_migrations(d)] for d in DIALECTS}
    assert versions["sqlite"] == versions["postgresql"]
    assert versions["sqlite"][0] == (1, "initial")


def test_sqlite_migration_runs_statement_by_statement() -> None:
    statements = split_sqlite_script(load_migrations("sqlite")[0].sql)
    assert any(s.startswith("CREATE TRIGGER") and s.endswith("END;") for s in statements)
    db = sqlite3.connect(":memory:")
    try:
        for s in statements:
            db.execute(s)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"recipients", "suppressions", "audit", "opens", "store_meta"} <= tables
    finally:
        db.close()
