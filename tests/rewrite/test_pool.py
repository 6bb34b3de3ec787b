"""The analysis pool: same results as local analysis, budgets, crashes, cancellation, shutdown.

Misbehaviour is injected with the analysers of :mod:`tests.rewrite.poolhooks`.
No test races the wall clock: a job that must time out sleeps ten minutes
against a budget of one second, and the tests wait for events (a file the
worker creates, a pid leaving the pool) rather than for fixed times.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite import pool as pool_module
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.html import PendingImg
from beacon_proxy.rewrite.pool import (
    AnalysisCrashed,
    AnalysisError,
    AnalysisFailed,
    AnalysisPool,
    AnalysisTimeout,
    PoolClosed,
)
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite import poolhooks

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
ENGINE = Engine(load_rules())
RCPT = "Ann.Reader@example.org"
GENEROUS = 120.0  # the budget of jobs that must succeed, even on a loaded machine


def _bench_newsletter() -> Any:
    spec = importlib.util.spec_from_file_location("newsletter", ROOT / "bench" / "newsletter.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NEWSLETTER = _bench_newsletter()
PERSONAL = (
    b"From: News <news@shop.example>\r\nTo: ann@example.org\r\nSubject: Deals\r\n"
    b"List-Id: Shop news <news.shop.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b'<p>Hi</p><img src="https://img.shop.example/banner?who=ann.reader@example.org" '
    b'width="600" alt="Deals for you"><img src="https://t.shop.example/open.gif?u=42" '
    b'width="1" height="1"><img src="https://cdn.shop.example/logo.png" width="200">\r\n'
)


def _messages() -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in sorted((FIXTURES / "mime").glob("*.eml"))}
    out["newsletter"] = NEWSLETTER.newsletter().replace(b"\n", b"\r\n")
    out["personal"] = PERSONAL
    return out


MESSAGES = _messages()


def _link(url: str) -> str:
    return "https://open.example/o/" + hashlib.sha256(url.encode()).hexdigest()[:20]


def _copies(analysis: Analysis) -> list[tuple[object, ...]]:
    """Everything a relay takes from the analysis: each copy's bytes, findings and actions."""
    out: list[tuple[object, ...]] = []
    for recipient in (RCPT, "rcpt@example.net", None):
        for policy, link in ((Policy.REFUSED, None), (Policy.GRANTED, _link)):
            copy = ENGINE.render(analysis, recipient, policy, link)
            out.append((copy.data, copy.changed, copy.problems, copy.trackers, copy.items,
                        copy.report(policy)))
    return out


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for ``condition`` (polling; the timeout only bounds a failing test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
async def pool() -> AsyncIterator[AnalysisPool]:
    pool = AnalysisPool(2, engine_factory=poolhooks.hooked_engine)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def _pid(pool: AnalysisPool) -> int:
    analysis = await pool.analyse(b"HOOK pid", budget=GENEROUS)
    return int(analysis.problems[0].removeprefix("pid "))


# -- results ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_an_unpickled_analysis_renders_the_same_copies(name: str) -> None:
    message = MESSAGES[name]
    local = ENGINE.analyse(message)
    fresh = pickle.loads(pickle.dumps(local, pickle.HIGHEST_PROTOCOL))
    assert fresh == local
    expected = _copies(local)  # fills HtmlPart._cache: pickle it filled too
    warm = pickle.loads(pickle.dumps(local, pickle.HIGHEST_PROTOCOL))
    assert _copies(fresh) == expected
    assert _copies(warm) == expected


async def test_pool_results_equal_local_analysis(pool: AnalysisPool) -> None:
    for name, message in MESSAGES.items():
        local = ENGINE.analyse(message)
        remote = await pool.analyse(message, budget=GENEROUS)
        assert remote == local, name
        assert remote.data is message and remote.tree.data is message  # not a copy
        assert _copies(remote) == _copies(local), name


async def test_shared_bytes_stay_shared(pool: AnalysisPool) -> None:
    """Pickle keeps one copy of the scan view that every pending image points into."""
    remote = await pool.analyse(MESSAGES["newsletter"], budget=GENEROUS)
    (part,) = remote.parts
    views = {id(e.view) for e in part.entries if isinstance(e, PendingImg)}
    assert len(views) == 1


async def test_concurrent_jobs_each_get_their_own_result(pool: AnalysisPool) -> None:
    names = sorted(MESSAGES) * 3
    results = await asyncio.gather(*(pool.analyse(MESSAGES[n], budget=GENEROUS)
                                      for n in names))
    for name, result in zip(names, results, strict=True):
        assert result == ENGINE.analyse(MESSAGES[name]), name


async def test_a_large_message_round_trips(pool: AnalysisPool) -> None:
    message = NEWSLETTER.newsletter(products=3000).replace(b"\n", b"\r\n")
    assert len(message) > 1_500_000
    remote = await pool.analyse(message, budget=GENEROUS)
    local = ENGINE.analyse(message)
    assert remote == local
    assert _copies(remote)[:2] == _copies(local)[:2]


async def test_a_result_holding_other_bytes_is_sent_whole(pool: AnalysisPool) -> None:
    message = b"HOOK copy \r\n\r\n<p>hello</p>"
    remote = await pool.analyse(message, budget=GENEROUS)
    assert remote.data == message and remote.data is not message
    assert remote == ENGINE.analyse(message)


# -- failures ---------------------------------------------------------------------


async def test_an_exception_in_analyse_is_reraised_and_the_worker_stays(
        pool: AnalysisPool) -> None:
    pids = pool.pids
    with pytest.raises(AnalysisFailed, match=r"^ValueError\('boom \u2603'\)$"):
        await pool.analyse(b"HOOK raise", budget=GENEROUS)
    with pytest.raises(AnalysisFailed, match="cannot pickle"):
        await pool.analyse(b"HOOK unpicklable", budget=GENEROUS)
    assert pool.pids == pids
    assert await pool.analyse(MESSAGES["personal"], budget=GENEROUS) == ENGINE.analyse(
        MESSAGES["personal"])


async def _sleeping(pool: AnalysisPool, flag: Path,
                    budget: float = GENEROUS) -> tuple[asyncio.Task[Analysis], int]:
    """A job that sleeps in its worker, once it has started there; and that worker's pid."""
    job = asyncio.create_task(pool.analyse(f"HOOK sleep {flag}".encode(), budget=budget))
    await _until(lambda: flag.exists() or job.done())
    assert not job.done(), job
    return job, int(flag.read_text())


async def _replaced(pool: AnalysisPool, pid: int) -> None:
    """Wait until ``pid`` has left the pool, reaped, and the pool is whole again."""
    await _until(lambda: pid not in pool.pids and len(pool.pids) == pool.size)
    assert not _exists(pid)


async def test_a_job_over_budget_is_killed_and_the_next_one_works(
        pool: AnalysisPool, tmp_path: Path) -> None:
    """A job that uses no CPU (here: sleeps) is ended after WALL_FACTOR budgets."""
    job, pid = await _sleeping(pool, tmp_path / "started", budget=0.25)
    with pytest.raises(AnalysisTimeout, match=r"ran \d+\.\d s with 0\.\d\d CPU s "
                       r"\(budget 0\.25 CPU s\); worker \d+ killed"):
        await job
    await _replaced(pool, pid)
    message = MESSAGES["newsletter"]
    assert await pool.analyse(message, budget=GENEROUS) == ENGINE.analyse(message)


async def test_a_job_that_uses_its_cpu_budget_is_killed(tmp_path: Path) -> None:
    flag = tmp_path / "burning"
    async with AnalysisPool(1, engine_factory=poolhooks.hooked_engine,
                            wall_factor=1000) as pool:
        job = asyncio.create_task(pool.analyse(f"HOOK burn {flag}".encode(), budget=0.3))
        await _until(lambda: flag.exists() or job.done())
        with pytest.raises(AnalysisTimeout, match=r"used \d\.\d\d CPU s "
                           r"\(budget 0\.3 CPU s\); worker \d+ killed"):
            await job
        await _replaced(pool, int(flag.read_text()))


async def test_a_job_starved_of_cpu_is_not_killed_at_its_budget() -> None:
    """The budget counts the worker's CPU: a job that waits (a busy machine, here a
    sleep) longer than its budget, using next to no CPU, still answers."""
    async with AnalysisPool(1, engine_factory=poolhooks.hooked_engine,
                            wall_factor=1000) as pool:
        analysis = await pool.analyse(b"HOOK nap 0.6", budget=0.2)
    assert analysis == ENGINE.analyse(b"HOOK nap 0.6")


async def test_a_job_over_the_memory_limit_ends_its_worker_and_the_next_one_works() -> None:
    async with AnalysisPool(1, engine_factory=poolhooks.hooked_engine,
                            memory_limit=256 << 20) as pool:
        assert await pool.analyse(b"HOOK hog 16", budget=GENEROUS) == ENGINE.analyse(
            b"HOOK hog 16")
        (pid,) = pool.pids
        with pytest.raises(AnalysisCrashed, match="out of memory"):
            await pool.analyse(b"HOOK hog 512", budget=GENEROUS)
        await _replaced(pool, pid)
        message = MESSAGES["newsletter"]
        assert await pool.analyse(message, budget=GENEROUS) == ENGINE.analyse(message)


def test_a_memory_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        AnalysisPool(1, memory_limit=0)


def test_the_cpu_of_a_process_is_read_from_proc() -> None:
    before = pool_module._cpu_seconds(os.getpid())
    assert before is not None
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    after = pool_module._cpu_seconds(os.getpid())
    assert after is not None and after >= before
    assert pool_module._cpu_seconds(2**22 + 7) is None  # beyond pid_max: no such process


async def test_the_event_loop_keeps_running_while_a_worker_spins(pool: AnalysisPool) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        start = time.monotonic()
        await pool.analyse(b"HOOK spin 2", budget=GENEROUS)
        elapsed = time.monotonic() - start
    finally:
        ticking.cancel()
    assert elapsed >= 2.0
    # 200 ticks if the loop were idle; a loop blocked by the job would tick once or twice.
    assert len(ticks) >= 20
    assert max(b - a for a, b in itertools.pairwise(ticks)) < elapsed / 2


@pytest.mark.parametrize(("hook", "why"), [
    (b"HOOK kill", "killed by SIGKILL"),
    (b"HOOK exit 7", "exit status 7"),
    (b"HOOK memory", r"out of memory \(MemoryError: its memory limit, or the machine.s\)"),
])
async def test_a_dying_worker_is_reported_and_replaced(pool: AnalysisPool, hook: bytes,
                                                       why: str) -> None:
    before = set(pool.pids)
    with pytest.raises(AnalysisCrashed, match=why):
        await pool.analyse(hook, budget=GENEROUS)
    (dead,) = before - set(pool.pids)  # reaped before the error is raised
    await _replaced(pool, dead)
    for name in ("newsletter", "personal", "alternative_qp.eml"):
        assert await pool.analyse(MESSAGES[name], budget=GENEROUS) == ENGINE.analyse(
            MESSAGES[name])


async def test_cancelling_the_caller_kills_the_job(pool: AnalysisPool, tmp_path: Path) -> None:
    job, pid = await _sleeping(pool, tmp_path / "started")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await _replaced(pool, pid)
    assert (await pool.analyse(PERSONAL, budget=GENEROUS)).parts


async def test_at_most_n_jobs_run_and_the_others_wait(pool: AnalysisPool,
                                                      tmp_path: Path) -> None:
    first, pid1 = await _sleeping(pool, tmp_path / "one")
    second, pid2 = await _sleeping(pool, tmp_path / "two")
    assert {pid1, pid2} == set(pool.pids)
    third = asyncio.create_task(pool.analyse(PERSONAL, budget=GENEROUS))
    fourth = asyncio.create_task(pool.analyse(MESSAGES["newsletter"], budget=GENEROUS))
    await _until(lambda: pool.waiting == 2)
    assert pool.busy == 2 and not third.done() and not fourth.done()
    first.cancel()  # frees a worker (a fresh one): the waiters go in order
    assert (await third) == ENGINE.analyse(PERSONAL)
    assert (await fourth) == ENGINE.analyse(MESSAGES["newsletter"])
    assert not second.done()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    await _replaced(pool, pid2)
    assert pid1 not in pool.pids


async def test_a_waiting_caller_that_gives_up_takes_no_worker(pool: AnalysisPool,
                                                               tmp_path: Path) -> None:
    first, _ = await _sleeping(pool, tmp_path / "one")
    second, _ = await _sleeping(pool, tmp_path / "two")
    waiting = asyncio.create_task(pool.analyse(PERSONAL, budget=GENEROUS))
    await _until(lambda: pool.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.waiting == 0 and pool.busy == 2
    first.cancel()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    await _until(lambda: len(pool.pids) == 2)
    assert (await pool.analyse(PERSONAL, budget=GENEROUS)).parts


async def test_workers_ignore_sigint_and_sigterm() -> None:
    async with AnalysisPool(1, engine_factory=poolhooks.hooked_engine) as pool:
        (pid,) = pool.pids
        status = Path(f"/proc/{pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines()
                           if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1))
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        assert await _pid(pool) == pid
        assert pool.pids == [pid]


# -- life cycle -------------------------------------------------------------------


def _children() -> set[int]:
    """Pids of this process's child processes that are not the fork server's."""
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


async def test_close_leaves_no_process(tmp_path: Path) -> None:
    pool = AnalysisPool(2, engine_factory=poolhooks.hooked_engine)
    await pool.start()
    pids = set(pool.pids)
    assert len(pids) == 2 and pids <= _children()
    busy, busy_pid = await _sleeping(pool, tmp_path / "busy")
    await pool.close()
    with pytest.raises(PoolClosed):
        await busy
    assert pool.pids == [] and pool.busy == 0
    assert not _children() & pids
    assert not any(_exists(pid) for pid in pids | {busy_pid})
    with pytest.raises(PoolClosed):
        await pool.analyse(PERSONAL, budget=GENEROUS)
    await pool.close()  # twice is fine


async def test_close_fails_waiting_callers(tmp_path: Path) -> None:
    pool = AnalysisPool(1, engine_factory=poolhooks.hooked_engine)
    await pool.start()
    busy, _ = await _sleeping(pool, tmp_path / "busy")
    waiting = asyncio.create_task(pool.analyse(PERSONAL, budget=GENEROUS))
    await _until(lambda: pool.waiting == 1)
    await pool.close()
    for job in (busy, waiting):
        with pytest.raises(PoolClosed):
            await job
    assert pool.pids == []


async def test_close_right_after_a_crash_leaves_no_process() -> None:
    pool = AnalysisPool(1, engine_factory=poolhooks.hooked_engine)
    await pool.start()
    with pytest.raises(AnalysisCrashed):
        await pool.analyse(b"HOOK kill", budget=GENEROUS)
    await pool.close()  # while the replacement starts
    assert pool.pids == []
    assert not _children()


async def test_a_job_submitted_during_start_waits_for_it() -> None:
    pool = AnalysisPool(1, engine_factory=poolhooks.hooked_engine)
    starting = asyncio.create_task(pool.start())
    await asyncio.sleep(0)
    try:
        job = asyncio.create_task(pool.analyse(PERSONAL, budget=GENEROUS))
        await starting
        assert (await job) == ENGINE.analyse(PERSONAL)
    finally:
        await pool.close()


async def test_a_worker_that_cannot_build_its_engine_fails_start() -> None:
    pool = AnalysisPool(2, engine_factory=poolhooks.broken_engine)
    with pytest.raises(AnalysisError, match=r"RuntimeError\('no engine today'\)"):
        await pool.start()
    assert pool.pids == [] and not _children()


async def test_the_rules_file_is_the_workers(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"vendors": {"Only Shop": ["t\\\\.shop\\\\.example/open"]}}')
    async with AnalysisPool(1, rules=rules) as pool:
        analysis = await pool.analyse(PERSONAL, budget=GENEROUS)
    (part,) = analysis.parts
    vendors = {part.finding(i).vendor for i in part.trackers}
    assert "Only Shop" in vendors
    with pytest.raises(AnalysisError, match="RulesError"):
        await AnalysisPool(1, rules=tmp_path / "missing.json").start()


async def test_spawn_works_too() -> None:
    async with AnalysisPool(1, start_method="spawn") as pool:
        assert await pool.analyse(PERSONAL, budget=GENEROUS) == ENGINE.analyse(PERSONAL)


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="forkserver"):
        AnalysisPool(1, start_method="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        AnalysisPool(0)
    with pytest.raises(ValueError, match="not both"):
        AnalysisPool(1, rules="x.json", engine_factory=poolhooks.hooked_engine)
    assert AnalysisPool().size == min(2, os.cpu_count() or 1)
    pool = AnalysisPool(1)
    with pytest.raises(RuntimeError, match="not started"):
        await pool.analyse(PERSONAL, budget=1)
    async with pool:
        for budget in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="budget"):
                await pool.analyse(PERSONAL, budget=budget)


def test_an_unclosed_pool_does_not_hold_up_interpreter_exit(tmp_path: Path) -> None:
    """At exit its workers (which ignore SIGTERM) are killed, not waited for forever."""
    flag = tmp_path / "started"
    script = f"""
import asyncio, pathlib
from beacon_proxy.rewrite.pool import AnalysisPool
from tests.rewrite import poolhooks

async def main():
    pool = AnalysisPool(2, engine_factory=poolhooks.hooked_engine)
    await pool.start()
    pathlib.Path({str(tmp_path / "pids")!r}).write_text(" ".join(map(str, pool.pids)))
    job = asyncio.ensure_future(pool.analyse(b"HOOK sleep {flag}", budget=600))
    while not pathlib.Path({str(flag)!r}).exists():
        await asyncio.sleep(0.01)
    # returns with the pool open and one job running

if __name__ == "__main__":
    asyncio.run(main())
"""
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 60
    while any(_exists(pid) for pid in pids):
        assert time.monotonic() < deadline
        time.sleep(0.01)


async def test_an_infinite_budget_means_no_limit(pool: AnalysisPool) -> None:
    assert (await pool.analyse(PERSONAL, budget=float("inf"))).parts


async def test_the_next_job_is_sent_before_the_last_result_is_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker, two jobs: the second is sent to the worker as soon as the first's
    reply is in, before the first's caller goes on with its result (a relay renders its
    copies then, which the worker would otherwise wait through)."""
    events: list[str] = []
    real = AnalysisPool._sent_now

    def sent_now(worker: Any, data: bytes) -> list[bytes]:
        rest = real(worker, data)
        events.append(f"sent {len(data)}" if not rest else "not sent")
        return rest

    monkeypatch.setattr(AnalysisPool, "_sent_now", staticmethod(sent_now))
    async with AnalysisPool(1, engine_factory=poolhooks.hooked_engine) as pool:

        async def first() -> None:
            await pool.analyse(PERSONAL, budget=GENEROUS)
            events.append("first used")

        one = asyncio.create_task(first())  # (takes the worker: it runs first)
        two = asyncio.create_task(pool.analyse(MESSAGES["newsletter"], budget=GENEROUS))
        await asyncio.gather(one, two)
    assert events == [f"sent {len(PERSONAL)}", f"sent {len(MESSAGES['newsletter'])}",
                      "first used"]
