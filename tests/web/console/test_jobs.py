"""Console import jobs: a revoked token's import applies nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon_proxy.consent.csvio import BATCH
from beacon_proxy.consent.store import Store
from beacon_proxy.web.console.jobs import ImportJobs


def _csv(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "in.csv"
    lines = ["address,beacons,source"] + [f"u{i}@example.org,granted,crm" for i in range(rows)]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


@pytest.mark.parametrize("rows", [3, 2 * BATCH + 5])
@pytest.mark.parametrize("revoked_after", [0, 1, None])
async def test_an_import_whose_token_is_revoked_applies_nothing(
        store: Store, tmp_path: Path, rows: int, revoked_after: int | None) -> None:
    """Asked after every batch, the last one included (before the commit): a token
    removed while its import runs leaves the store as it was."""
    asked = 0

    def allowed() -> bool:
        nonlocal asked
        asked += 1
        return revoked_after is None or asked <= revoked_after

    jobs = ImportJobs(store)
    path = _csv(tmp_path, rows)
    job = jobs.start(path, "consent", dry_run=False, user="ops", actor="console:ops",
                     source="console", allowed=allowed)
    await job.finished.wait()
    imported = await store.get_consent("u0@example.org")
    batches = -(-rows // BATCH)  # asked once after each
    if revoked_after is None or revoked_after >= batches:
        assert job.state == "done" and job.changed == rows and imported is not None
    else:
        assert (job.state, job.error) == ("failed", "revoked")
        assert imported is None and (await store.list_consent()).items == []
    assert not path.exists()
