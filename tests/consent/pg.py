"""The machine's PostgreSQL server, for tests: a fresh database per run, a schema per test.

The server is ``$BEACON_PROXY_TEST_POSTGRES`` (default: the local server's
``test`` database as ``postgres``).  It is used for real: when it cannot be
reached, the PostgreSQL tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SERVER = os.environ.get("BEACON_PROXY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def with_database(url: str, name: str, query: str = "") -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", query, ""))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def temporary_database() -> Iterator[str]:
    """A new database with a random name, dropped afterwards; yields its URL."""
    name = f"beacon_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(SERVER, name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def fresh_schema(database_url: str) -> str:
    """A new, empty schema in the database; the URL that puts it first on the search path."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return with_database(database_url, urlsplit(database_url).path.lstrip("/"),
                         f"search_path={schema}")
