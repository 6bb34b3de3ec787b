"""CSV imports run by the console as background jobs, their progress polled by a page.

An upload is first streamed to a temporary file; a job then counts its lines
(for the progress bar), and validates (dry run) or imports it with
:func:`~beacon_proxy.consent.csvio.import_file`, which stops at the first bad
row and then applies nothing (the store imports in one transaction).  The
page polls ``rows`` against ``total`` until ``state`` is ``done`` or
``failed``.  At most :data:`KEEP` jobs are remembered (oldest finished out)
and :data:`RUNNING` run at once, uploads still being written to their
temporary file included (:meth:`ImportJobs.uploading`; each may be 1 GiB):
one more is refused before its file is written.  The temporary file is
removed when a job ends, however it ends.

A job belongs to the token that started it: when that token is removed or
replaced while the job runs (a leaked token revoked mid-import), the job
stops at its next batch, before its transaction commits, and nothing of it
is applied (``error = "revoked"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from beacon_proxy.consent.csvio import CsvError, Kind, import_file
from beacon_proxy.consent.model import InvalidValue, StoreError
from beacon_proxy.consent.store import Store
from beacon_proxy.log import event

__all__ = ["KEEP", "RUNNING", "ImportJob", "ImportJobs", "Revoked", "TooBusy", "count_lines"]

log = logging.getLogger(__name__)
KEEP = 50  # jobs remembered
RUNNING = 2  # jobs running at once
_CHUNK = 1 << 20

JobState = Literal["running", "done", "failed"]


class TooBusy(Exception):
    """:data:`RUNNING` imports are running already."""


class Revoked(Exception):
    """The token that started an import is no longer accepted."""


@dataclass(slots=True)
class ImportJob:
    """One import: what it is, how far it got, how it ended."""

    id: str
    kind: Kind
    dry_run: bool
    user: str
    total: int = 0  # lines in the file (header included), once counted
    rows: int = 0  # data rows read so far
    state: JobState = "running"
    changed: int = 0
    error_line: int | None = None
    error: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def percent(self) -> int:
        if self.state != "running":
            return 100
        return min(99, self.rows * 100 // max(1, self.total - 1))


def count_lines(path: Path) -> int:
    """The lines of a file (a last line without a newline counts)."""
    n = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


class ImportJobs:
    """The console's import jobs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._jobs: dict[str, ImportJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._uploads = 0  # uploads being written to their temporary file

    def busy(self) -> bool:
        """Whether :data:`RUNNING` imports run or are being uploaded already."""
        return self.running() + self._uploads >= RUNNING

    @contextlib.contextmanager
    def uploading(self) -> Iterator[None]:
        """While an upload is written to its file (it counts against :data:`RUNNING`)."""
        self._uploads += 1
        try:
            yield
        finally:
            self._uploads -= 1

    def get(self, job_id: str) -> ImportJob | None:
        return self._jobs.get(job_id)

    def running(self) -> int:
        return sum(1 for j in self._jobs.values() if j.state == "running")

    def start(self, path: Path, kind: Kind, *, dry_run: bool, user: str,
              actor: str, source: str, allowed: Callable[[], bool] = lambda: True
              ) -> ImportJob:
        """Start importing ``path`` (which the job removes when it ends); ``allowed``
        says whether the token that started it is still accepted (asked after every
        batch, the last one included, so a revoked token's import applies nothing)."""
        if self.running() >= RUNNING:
            path.unlink(missing_ok=True)
            raise TooBusy()
        job = ImportJob(secrets.token_urlsafe(12), kind, dry_run, user)
        self._jobs[job.id] = job
        finished = [k for k, j in self._jobs.items() if j.state != "running"]
        for k in finished[:max(0, len(self._jobs) - KEEP)]:
            del self._jobs[k]
        task = asyncio.create_task(self._run(job, path, actor, source, allowed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: ImportJob, path: Path, actor: str, source: str,
                   allowed: Callable[[], bool]) -> None:
        def progress(rows: int) -> None:
            job.rows = rows
            if not allowed():  # raised into the store's transaction: it is rolled back
                raise Revoked()

        try:
            job.total = await asyncio.to_thread(count_lines, path)
            done = await import_file(None if job.dry_run else self.store, path, job.kind,
                                     dry_run=job.dry_run, actor=actor, source=source,
                                     progress=progress)
            job.rows, job.changed, job.state = done.rows, done.changed, "done"
        except CsvError as exc:
            job.state, job.error_line, job.error = "failed", exc.line, exc.reason
        except InvalidValue as exc:
            job.state, job.error = "failed", str(exc)
        except Revoked:
            job.state, job.error = "failed", "revoked"
        except (StoreError, OSError) as exc:
            log.warning("console import failed: %s", exc)
            job.state, job.error = "failed", "store"
        finally:
            if job.state == "running":  # cancelled (the console stops)
                job.state, job.error = "failed", "cancelled"
            await asyncio.to_thread(path.unlink, missing_ok=True)
            event("console_import", user=job.user, kind=job.kind, dry_run=job.dry_run,
                  rows=job.rows, changed=job.changed, state=job.state, line=job.error_line)
            job.finished.set()

    async def stop(self) -> None:
        """Cancel running jobs (their files are removed) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
