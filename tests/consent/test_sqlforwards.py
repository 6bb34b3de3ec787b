"""The forward queue's contract, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from beacon_proxy.consent.model import ForwardState, InvalidValue
from beacon_proxy.consent.store import Store, open_store

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
URL = "https://lists.example.com/unsub/s3cr3t-subscriber-id"


async def test_a_queued_forward_is_claimed_once_per_lease(store: Store) -> None:
    job_id = await store.queue_forward(URL, address="Ann@Example.org", list_id="News.Example.org",
                                       at=T0)
    assert await store.queue_forward(URL, address="ann@example.org", list_id="news.example.org",
                                     at=T0 + timedelta(seconds=5)) == job_id  # idempotent
    assert await store.claim_forwards(10, 60, now=T0 - timedelta(seconds=1)) == []  # not yet due
    (job,) = await store.claim_forwards(10, 60, now=T0)
    assert (job.id, job.url, job.address, job.list_id) == (
        job_id, URL, "Ann@example.org", "news.example.org")
    assert (job.attempts, job.state, job.last_error) == (1, ForwardState.PENDING, None)
    assert job.created_at == T0 and job.next_at == T0 + timedelta(seconds=60)
    assert await store.claim_forwards(10, 60, now=T0 + timedelta(seconds=59)) == []  # leased
    (again,) = await store.claim_forwards(10, 60, now=T0 + timedelta(seconds=60))  # lease ended
    assert (again.id, again.attempts) == (job_id, 2)
    assert await store.forward_done(job_id, at=T0 + timedelta(seconds=61))
    assert not await store.forward_done(job_id)  # only a pending job changes
    assert await store.claim_forwards(10, 60, now=T0 + timedelta(days=9)) == []
    (done,) = (await store.list_forwards()).items
    assert (done.state, done.attempts, done.next_at) == (
        ForwardState.DONE, 2, T0 + timedelta(seconds=61))
    # once done, a new one-click queues a new forward
    assert await store.queue_forward(URL, address="ann@example.org",
                                     list_id="news.example.org") != job_id


async def test_one_pending_forward_per_recipient_list_and_url(store: Store) -> None:
    ids = {await store.queue_forward(URL, address="a@example.org", list_id=None, at=T0),
           await store.queue_forward(URL, address="a@example.org", list_id="", at=T0),
           await store.queue_forward(URL, address="b@example.org", list_id=None, at=T0),
           await store.queue_forward(URL, address="a@example.org", list_id="x.example.org",
                                     at=T0),
           await store.queue_forward(URL + "2", address="a@example.org", list_id=None, at=T0)}
    assert len(ids) == 4
    claimed = await store.claim_forwards(2, 30, now=T0)
    assert [j.id for j in claimed] == sorted(ids)[:2]  # oldest due first, at most the limit
    assert len(await store.claim_forwards(10, 30, now=T0)) == 2


async def test_retry_and_give_up_keep_the_last_error(store: Store) -> None:
    job_id = await store.queue_forward(URL, address="a@example.org", list_id=None, at=T0)
    await store.claim_forwards(1, 30, now=T0)
    later = T0 + timedelta(minutes=5)
    assert await store.forward_retry(job_id, error="HTTP 503\r\nInjected: yes", next_at=later)
    assert await store.claim_forwards(1, 30, now=later - timedelta(seconds=1)) == []
    (job,) = await store.claim_forwards(1, 30, now=later)
    assert (job.attempts, job.last_error) == (2, "HTTP 503 Injected: yes")
    assert await store.forward_failed(job_id, error="x" * 2000, at=later)
    assert not await store.forward_retry(job_id, error="late", next_at=later)
    (failed,) = (await store.list_forwards(state="failed")).items
    assert failed.state is ForwardState.FAILED and failed.last_error is not None
    assert len(failed.last_error) == 500 and failed.last_error.endswith("...")
    assert (await store.list_forwards(state=ForwardState.PENDING)).items == []
    assert await store.claim_forwards(1, 30, now=later + timedelta(days=30)) == []


async def test_list_forwards_pages_and_prune_removes_finished_ones(store: Store) -> None:
    ids = [await store.queue_forward(f"{URL}/{i}", address="a@example.org", list_id=None, at=T0)
           for i in range(5)]
    await store.claim_forwards(10, 30, now=T0)
    await store.forward_done(ids[0], at=T0)
    await store.forward_failed(ids[1], error="HTTP 404", at=T0 + timedelta(days=2))
    seen: list[int] = []
    after: str | None = None
    for _ in range(10):
        page = await store.list_forwards(after=after, limit=2)
        seen += [j.id for j in page.items]
        if page.next is None:
            break
        after = page.next
    assert seen == ids
    assert await store.prune_forwards(T0 + timedelta(days=1)) == 1  # the done one
    assert [j.id for j in (await store.list_forwards()).items] == ids[1:]
    assert await store.prune_forwards(T0 + timedelta(days=3)) == 1  # the failed one
    assert [j.state for j in (await store.list_forwards()).items] == [ForwardState.PENDING] * 3


async def test_forget_deletes_the_recipients_forwards(store: Store) -> None:
    await store.queue_forward(URL, address="zoe@example.org", list_id="news.example.org")
    await store.queue_forward(URL, address="other@example.org", list_id="news.example.org")
    assert (await store.forget("ZOE@example.org")).forwards == 1
    assert [j.address for j in (await store.list_forwards()).items] == ["other@example.org"]


async def test_bad_forward_input_is_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="url"):
        await store.queue_forward("https://x.example/\r\nX: y", address="a@example.org",
                                  list_id=None)
    with pytest.raises(InvalidValue, match="url"):
        await store.queue_forward("", address="a@example.org", list_id=None)
    with pytest.raises(InvalidValue, match="url"):
        await store.queue_forward("https://x.example/" + "a" * 3000, address="a@example.org",
                                  list_id=None)
    with pytest.raises(InvalidValue, match="list"):
        await store.queue_forward(URL, address="a@example.org", list_id="not a list")
    with pytest.raises(InvalidValue, match="limit"):
        await store.claim_forwards(0, 30)
    with pytest.raises(InvalidValue, match="lease"):
        await store.claim_forwards(1, 0)
    with pytest.raises(InvalidValue, match="state"):
        await store.list_forwards(state="stuck")
    with pytest.raises(InvalidValue, match="id"):
        await store.forward_done(0)
    assert (await store.list_forwards()).items == []


async def test_pending_forwards_survive_a_reopened_store(url: str) -> None:
    async with open_store(url) as first:
        job_id = await first.queue_forward(URL, address="a@example.org", list_id=None, at=T0)
        await first.claim_forwards(1, 30, now=T0)  # then the node dies mid-send
    async with open_store(url) as second:
        (job,) = await second.claim_forwards(1, 30, now=T0 + timedelta(seconds=30))
        assert (job.id, job.attempts) == (job_id, 2)


async def test_two_nodes_claiming_at_once_never_get_the_same_job(url: str) -> None:
    """Two stores (separate pools or connections) claim concurrently from one database."""
    async with open_store(url) as a, open_store(url) as b:
        queued = {await a.queue_forward(f"{URL}/{i}", address="a@example.org", list_id=None,
                                        at=T0) for i in range(60)}

        async def drain(node: Store) -> list[int]:
            got: list[int] = []
            for _ in range(100):  # bounded: 60 jobs in batches of 3 need at most 20 rounds each
                batch = await node.claim_forwards(3, 3600, now=T0)
                if not batch:
                    break
                got += [j.id for j in batch]
            return got

        results = await asyncio.gather(drain(a), drain(b), drain(a), drain(b))
        claimed = [i for r in results for i in r]
        assert sorted(claimed) == sorted(queued)  # every job once, none twice
        assert sum(1 for r in results if r) >= 2  # both nodes took part
