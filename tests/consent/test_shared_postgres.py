"""Several processes on one PostgreSQL database see each other's changes on the next lookup.

The processes are real: ``beacon-proxy`` command-line subprocesses, each with its own
connection pool, next to a store in this process standing for a running node.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from beacon_proxy.consent.policy import Decision
from beacon_proxy.consent.store import open_store
from tests.consent.pg import fresh_schema

ROOT = Path(__file__).resolve().parents[2]


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_PROXY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "beacon_proxy", *args, "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


async def test_two_processes_share_one_postgres_database(pg_database: str,
                                                         tmp_path: Path) -> None:
    url = await fresh_schema(pg_database)
    config = tmp_path / "beacon-proxy.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = await asyncio.to_thread(_cli, config, *args)
        assert done.returncode == 0, done.stderr
        return done

    async with open_store(url) as node:
        assert (await node.decisions(["x@example.org"], None))["x@example.org"] is Decision.REFUSED
        await cli("consent", "set", "X@example.org", "--beacons", "granted")
        assert (await node.decisions(["x@example.org"], None))["x@example.org"] is Decision.GRANTED
        await cli("suppress", "add", "x@example.org", "--list", "news.example.org")
        got = await node.decisions(["x@example.org"], "news.example.org")
        assert got["x@example.org"] is Decision.SUPPRESSED_LIST
        await node.set_consent("y@example.org", "refused", actor="node")
        shown = json.loads((await cli("consent", "get", "y@example.org", "--json")).stdout)
        assert (shown["beacons"], shown["actor"]) == ("refused", "node")
        # one process changes, another reads
        await cli("consent", "set", "z@example.org", "--beacons", "granted")
        shown = json.loads((await cli("consent", "get", "Z@EXAMPLE.org", "--json")).stdout)
        assert shown["beacons"] == "granted"
        await cli("consent", "forget", "x@example.org")
        assert await node.get_consent("x@example.org") is None
        got = await node.decisions(["x@example.org"], "news.example.org")
        assert got["x@example.org"] is Decision.SUPPRESSED_LIST  # still, as a keyed hash
