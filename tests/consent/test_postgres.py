"""The PostgreSQL backend's sessions, whatever the server's defaults."""

from __future__ import annotations

import asyncio

import asyncpg

from beacon_proxy.consent.model import Beacons
from beacon_proxy.consent.postgres import PostgresStore
from tests.consent.pg import _admin, temporary_database


def test_sessions_are_read_committed_when_the_database_default_is_not() -> None:
    """A DBA's ``default_transaction_isolation = serializable`` on the database must not
    turn concurrent consent writes into serialization failures: every session pins it."""
    with temporary_database() as url:
        name = url.rsplit("/", 1)[1]
        asyncio.run(_admin(f'ALTER DATABASE "{name}" SET default_transaction_isolation '
                           "= 'serializable'"))

        async def run() -> tuple[str, str]:
            plain = await asyncpg.connect(url)
            try:
                default = await plain.fetchval("SHOW default_transaction_isolation")
            finally:
                await plain.close()
            store = PostgresStore(url)
            await store.open()
            try:
                await asyncio.gather(*(store.set_consent(f"u{i}@example.org", Beacons.GRANTED,
                                                         source="test", actor="test")
                                       for i in range(20)))
                async with store._require().acquire() as conn:
                    pinned: str = await conn.fetchval("SHOW default_transaction_isolation")
            finally:
                await store.close()
            return default, pinned

        assert asyncio.run(run()) == ("serializable", "read committed")
