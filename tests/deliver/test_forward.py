"""One-click and open forwarding against a real HTTP server on 127.0.0.1 (and over TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from beacon_proxy.consent.model import ForwardJob, ForwardState
from beacon_proxy.consent.store import Store, open_store
from beacon_proxy.deliver.forward import (
    OneClickForwarder,
    OpenForwarder,
    Verdict,
    one_click_body,
    verdict,
)
from beacon_proxy.metrics import REGISTRY
from beacon_proxy.tokens import Claims, Purpose
from tests.consent.pg import fresh_schema, temporary_database
from tests.deliver.httppeer import HttpPeer, http_peer

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
UA_ONE_CLICK = "beacon-proxy/0.1.0 (one-click forwarder)"
CLIENT_HEADERS = ("Cookie", "Referer", "X-Forwarded-For", "Forwarded", "X-Real-IP", "Via",
                  "Authorization")


class Clock:
    """The forwarder's time, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def unsubscribe(url: str, recipient: str = "ann@example.org",
                list_id: str | None = "news.example.org") -> Claims:
    return Claims(Purpose.UNSUBSCRIBE, recipient, list_id, "Q1", forward=url)


def opened(url: str) -> Claims:
    return Claims(Purpose.OPEN, "ann@example.org", "news.example.org", "Q1", forward=url)


def count(kind: str, result: str) -> float:
    value = REGISTRY.get_sample_value("beacon_proxy_forwards_total",
                                      {"kind": kind, "result": result})
    return value or 0.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path / 'consent.db'}") as s:
        yield s


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    async with http_peer() as p:
        yield p


def local(store: Store, clock: Clock | None = None, **kw: object) -> OneClickForwarder:
    """A forwarder allowed to reach the plain-HTTP peer on the loopback."""
    opts: dict[str, object] = {"allow_http": True, "allow_private": True, "timeout": 5.0}
    opts.update(kw)
    if clock is not None:
        opts["clock"] = clock
    return OneClickForwarder(store, **opts)  # type: ignore[arg-type]


async def only_job(store: Store) -> ForwardJob:
    (job,) = (await store.list_forwards()).items
    return job


async def wait_state(store: Store, job_id: int, state: ForwardState) -> ForwardJob:
    """Wait (bounded) until the worker has recorded the outcome the peer already saw."""
    for _ in range(400):
        job = next(j for j in (await store.list_forwards()).items if j.id == job_id)
        if job.state is state:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {state}")


def test_verdicts() -> None:
    assert [verdict(s) for s in (200, 204, 302, 404, 410, 408, 429, 500, 503, 101)] == [
        Verdict.DONE, Verdict.DONE, Verdict.DONE, Verdict.FAILED, Verdict.FAILED,
        Verdict.RETRY, Verdict.RETRY, Verdict.RETRY, Verdict.RETRY, Verdict.RETRY]


async def test_the_one_click_post_arrives_once_with_the_rfc8058_body(
        store: Store, peer: HttpPeer) -> None:
    clock = Clock()
    fwd = local(store, clock)
    url = peer.url("/unsub/s3cr3t?list=7&u=ann")
    before = count("one-click", "done")
    try:
        await fwd.suspended(unsubscribe(url))
        await fwd.suspended(unsubscribe(url))  # a second one-click: still one job
        assert await fwd.run_once() == 1
        assert await fwd.run_once() == 0
    finally:
        await fwd.stop()
    (seen,) = peer.seen
    assert (seen.method, seen.path, seen.query) == ("POST", "/unsub/s3cr3t", "list=7&u=ann")
    ctype = seen.headers["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    assert seen.body == one_click_body(ctype.split("boundary=", 1)[1])
    assert b'name="List-Unsubscribe"\r\n\r\nOne-Click\r\n' in seen.body
    assert seen.headers["User-Agent"] == UA_ONE_CLICK
    assert not [h for h in CLIENT_HEADERS if h in seen.headers]
    assert "ann@example.org" not in str(seen.headers) + seen.body.decode()
    job = await only_job(store)
    assert (job.state, job.attempts, job.address, job.list_id) == (
        ForwardState.DONE, 1, "ann@example.org", "news.example.org")
    assert count("one-click", "done") == before + 1


async def test_no_forward_url_queues_nothing(store: Store) -> None:
    fwd = OneClickForwarder(store)
    await fwd.suspended(unsubscribe(""))
    assert (await store.list_forwards()).items == []


async def test_a_503_is_retried_with_backoff_then_succeeds(store: Store, peer: HttpPeer) -> None:
    clock = Clock()
    fwd = local(store, clock, retry_min=60, retry_max=600)
    peer.script("/u", 503, 429, 408)
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await fwd.run_once() == 1
        job = await only_job(store)
        assert (job.state, job.last_error, job.attempts) == (ForwardState.PENDING, "HTTP 503", 1)
        assert T0 + timedelta(seconds=60) <= job.next_at <= T0 + timedelta(seconds=72)
        assert await fwd.run_once() == 0  # not due yet
        for _ in range(2):  # 429 and 408 are temporary too
            clock.advance(600)
            assert await fwd.run_once() == 1
        clock.advance(600)
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    assert [s.method for s in peer.seen] == ["POST"] * 4
    job = await only_job(store)
    assert (job.state, job.attempts, job.last_error) == (ForwardState.DONE, 4, None)


@pytest.mark.parametrize(("asked", "waited"), [("1800", 1800), ("99999", 3600), ("0", 60),
                                                ("Thu, 03 Dec 2026 12:40:00 GMT", 2400)])
async def test_retry_after_is_honoured_within_bounds(store: Store, peer: HttpPeer, asked: str,
                                                     waited: float) -> None:
    peer.script("/u", (503, {"Retry-After": asked}))
    fwd = local(store, Clock(), retry_min=60, retry_max=3600)
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    wait = ((await only_job(store)).next_at - T0).total_seconds()
    assert waited <= wait <= max(waited, 72)  # "0": the ordinary backoff (60 s + 0-20 %)


async def test_retry_after_does_not_outlive_the_lifetime(store: Store, peer: HttpPeer) -> None:
    peer.script("/u", (429, {"Retry-After": "3000"}))
    fwd = local(store, Clock(), retry_min=60, retry_max=3600, lifetime=600)
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    assert (await only_job(store)).next_at == T0 + timedelta(seconds=600)


async def test_the_worker_prunes_old_finished_jobs(store: Store, peer: HttpPeer) -> None:
    clock = Clock()
    fwd = local(store, clock, keep=86400, poll=3600)
    await fwd.suspended(unsubscribe(peer.url("/old")))
    assert await fwd.run_once() == 1  # done at T0
    clock.advance(86400 + 1)
    await store.queue_forward(peer.url("/new"), address="b@example.org", list_id=None,
                              at=clock.now + timedelta(days=1))  # pending, not yet due
    await fwd.start()
    try:
        for _ in range(400):  # bounded wait for the worker's first round
            if len((await store.list_forwards()).items) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await fwd.stop()
    (left,) = (await store.list_forwards()).items
    assert left.url.endswith("/new") and left.state is ForwardState.PENDING


async def test_the_worker_retries_on_its_own_schedule(store: Store, peer: HttpPeer) -> None:
    peer.script("/u", 503)
    fwd = local(store, retry_min=0.05, retry_max=0.1, poll=3600)  # no polling: the retry wakes it
    await fwd.start()
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert (await peer.next()).method == "POST"
        assert (await peer.next()).method == "POST"
        job = await wait_state(store, (await only_job(store)).id, ForwardState.DONE)
    finally:
        await fwd.stop()
    assert job.attempts == 2


async def test_retries_end_at_the_lifetime(store: Store, peer: HttpPeer) -> None:
    clock = Clock()
    fwd = local(store, clock, retry_min=3600, retry_max=7200, lifetime=86400)
    peer.script("/u", *([503] * 50))
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        for _ in range(50):  # bounded; 1 h, 2 h, 2 h, ... within one day
            if await fwd.run_once() == 0:
                break
            clock.advance(7200 * 1.2)
        job = await only_job(store)
    finally:
        await fwd.stop()
    assert job.state is ForwardState.FAILED
    assert job.last_error is not None and job.last_error.endswith(": HTTP 503")
    assert job.last_error.startswith(f"gave up after {job.attempts} attempts")
    assert 10 <= job.attempts <= 15 and len(peer.seen) == job.attempts


@pytest.mark.parametrize("status", [404, 400, 410, 403])
async def test_a_client_error_gives_up_at_once(store: Store, peer: HttpPeer, status: int) -> None:
    peer.script("/u", status)
    fwd = local(store, Clock())
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    job = await only_job(store)
    assert (job.state, job.attempts, job.last_error) == (
        ForwardState.FAILED, 1, f"HTTP {status}")


async def test_a_redirect_is_not_followed_and_counts_as_done(store: Store,
                                                             peer: HttpPeer) -> None:
    peer.script("/u", "redirect")
    fwd = local(store, Clock())
    before = count("one-click", "redirect")
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    assert [s.path for s in peer.seen] == ["/u"]  # never /landed
    assert (await only_job(store)).state is ForwardState.DONE
    assert count("one-click", "redirect") == before + 1


async def test_a_hanging_server_is_cut_at_the_timeout(store: Store, peer: HttpPeer) -> None:
    peer.script("/u", "hang")
    fwd = local(store, Clock(), timeout=0.5)
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await asyncio.wait_for(fwd.run_once(), 30) == 1
    finally:
        await fwd.stop()
    job = await only_job(store)
    assert (job.state, job.last_error) == (ForwardState.PENDING, "timeout")


async def test_a_huge_answer_is_not_read(store: Store, peer: HttpPeer) -> None:
    peer.script("/u", "huge")
    fwd = local(store, Clock(), timeout=30)
    try:
        await fwd.suspended(unsubscribe(peer.url("/u")))
        assert await asyncio.wait_for(fwd.run_once(), 30) == 1
    finally:
        await fwd.stop()
    assert (await only_job(store)).state is ForwardState.DONE


async def test_a_closed_port_is_retried(store: Store, peer: HttpPeer) -> None:
    fwd = local(store, Clock())
    try:
        await fwd.suspended(unsubscribe("http://127.0.0.1:9/u"))  # discard: nothing listens
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    job = await only_job(store)
    assert job.state is ForwardState.PENDING and job.last_error
    assert "ClientConnectorError" in job.last_error


@pytest.mark.parametrize("url", [
    "https://user:secret@lists.example.com/u/1",
    "ftp://lists.example.com/u/1",
    "javascript:alert(1)",
    "mailto:unsubscribe@example.com",
    "http://lists.example.com/u/1",  # https only by default
    "https://127.0.0.1/u/1",  # not a public address
    "https://[::ffff:10.0.0.1]/u/1",
    "https://169.254.169.254/latest/meta-data/",
    "https://lists.example.com/u/1\r\nX-Injected: 1",
    "//lists.example.com/u/1",
])
async def test_hostile_urls_are_refused_and_not_queued(store: Store, url: str) -> None:
    fwd = OneClickForwarder(store)
    before = count("one-click", "refused")
    await fwd.suspended(unsubscribe(url))
    assert (await store.list_forwards()).items == []
    assert count("one-click", "refused") == before + 1


@pytest.mark.parametrize(("recipient", "list_id"), [("not-an-address", "news.example.org"),
                                                    ("ann@example.org", "not a list id")])
async def test_claims_the_store_refuses_are_not_queued(store: Store, recipient: str,
                                                       list_id: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    fwd = OneClickForwarder(store)
    before = count("one-click", "refused")
    await fwd.suspended(unsubscribe("https://lists.example.com/u/1", recipient, list_id))
    assert (await store.list_forwards()).items == []
    assert count("one-click", "refused") == before + 1
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    assert [f["result"] for f in fields] == ["refused"]
    assert recipient not in str(fields) + caplog.text


async def test_a_name_resolving_to_the_loopback_is_refused(store: Store) -> None:
    async with http_peer(host="127.0.0.1") as peer:
        fwd = OneClickForwarder(store, allow_http=True, clock=Clock())  # public addresses only
        try:
            await fwd.suspended(unsubscribe(peer.url("/u", host="localhost")))
            assert await fwd.run_once() == 1
        finally:
            await fwd.stop()
        assert peer.seen == []
    job = await only_job(store)
    assert job.state is ForwardState.FAILED
    assert job.last_error == "refused: localhost resolves to no public address"


async def test_a_url_refused_by_a_later_configuration_fails_when_claimed(store: Store) -> None:
    await store.queue_forward("http://lists.example.com/u/1", address="a@example.org",
                              list_id=None, at=T0)
    fwd = OneClickForwarder(store, clock=Clock())  # https only now
    try:
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
    job = await only_job(store)
    assert job.state is ForwardState.FAILED and (job.last_error or "").startswith("refused")


_KILLED_NODE = """
import asyncio, os, signal, sys
from beacon_proxy.consent.store import open_store
from beacon_proxy.deliver.forward import OneClickForwarder
from beacon_proxy.tokens import Claims, Purpose

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.open()
    fwd = OneClickForwarder(store, allow_http=True, allow_private=True)
    await fwd.suspended(Claims(Purpose.UNSUBSCRIBE, "ann@example.org", "news.example.org",
                               "Q1", forward=sys.argv[2]))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no sending

asyncio.run(main())
"""


async def test_a_queued_forward_survives_kill_9_and_is_sent_after_restart(
        tmp_path: Path, peer: HttpPeer) -> None:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _KILLED_NODE, url,
                                                peer.url("/u"), cwd=ROOT, env=env)
    assert await asyncio.wait_for(proc.wait(), 120) == -signal.SIGKILL
    assert peer.seen == []
    async with open_store(url) as store:
        node = local(store, poll=3600)
        await node.start()  # sends what is due at once
        try:
            seen = await peer.next()
            job = await wait_state(store, 1, ForwardState.DONE)
        finally:
            await node.stop()
    assert (seen.method, seen.path, job.attempts, job.address) == (
        "POST", "/u", 1, "ann@example.org")


async def test_a_send_cut_off_by_stop_is_sent_again_after_its_lease(store: Store,
                                                                     peer: HttpPeer) -> None:
    peer.script("/u", "hang")
    clock = Clock()
    fwd = local(store, clock, timeout=600)
    await fwd.start()
    await fwd.suspended(unsubscribe(peer.url("/u")))
    await peer.next()
    await asyncio.wait_for(fwd.stop(grace=0.2), 10)  # bounded although the send hangs
    job = await only_job(store)
    assert job.state is ForwardState.PENDING and job.next_at == T0 + timedelta(seconds=fwd.lease)
    other = local(store, clock)  # another node, or this one restarted
    try:
        assert await other.run_once() == 0  # leased: nobody sends it meanwhile
        clock.advance(fwd.lease)
        assert await other.run_once() == 1
    finally:
        await other.stop()
    assert [s.path for s in peer.seen] == ["/u", "/u"]
    job = await only_job(store)
    assert (job.state, job.attempts) == (ForwardState.DONE, 2)


# -- TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_pair(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_https_one_click_verifies_the_certificate(
        store: Store, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = tls_pair
    async with http_peer(tls=server) as peer:
        fwd = OneClickForwarder(store, ssl=client, allow_private=True, clock=Clock())
        untrusting = OneClickForwarder(store, allow_private=True, clock=Clock())
        try:
            await fwd.suspended(unsubscribe(peer.url("/u")))
            assert await untrusting.run_once() == 1  # the test CA is not trusted: retried
            job = await only_job(store)
            assert job.state is ForwardState.PENDING and (job.last_error or "").startswith("TLS")
            assert peer.seen == []
            await store.forward_retry(job.id, error="again", next_at=T0)
            assert await fwd.run_once() == 1
        finally:
            await fwd.stop()
            await untrusting.stop()
        (seen,) = peer.seen
    assert seen.method == "POST" and seen.headers["User-Agent"] == UA_ONE_CLICK
    assert (await only_job(store)).state is ForwardState.DONE


# -- two nodes on one PostgreSQL database ----------------------------------------


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with temporary_database() as url:
        yield url


async def test_two_nodes_send_each_job_exactly_once(pg_database: str, peer: HttpPeer) -> None:
    url = await fresh_schema(pg_database)
    n = 40
    async with open_store(url) as a, open_store(url) as b:
        nodes = [local(a, batch=3, concurrency=2, poll=0.05),
                 local(b, batch=3, concurrency=2, poll=0.05)]
        for i in range(n):
            await nodes[i % 2].suspended(unsubscribe(peer.url(f"/u/{i}")))
        for node in nodes:
            await node.start()
        try:
            for _ in range(n):
                await peer.next()
            for job in (await a.list_forwards(limit=n)).items:
                await wait_state(a, job.id, ForwardState.DONE)
        finally:
            for node in nodes:
                await node.stop()
        jobs = (await b.list_forwards(limit=n)).items
    assert sorted(s.path for s in peer.seen) == sorted(f"/u/{i}" for i in range(n))
    assert {(j.state, j.attempts) for j in jobs} == {(ForwardState.DONE, 1)}


# -- opens -----------------------------------------------------------------------


async def test_an_open_is_forwarded_without_client_data(peer: HttpPeer) -> None:
    before = count("open", "sent")
    async with OpenForwarder(allow_private=True) as fwd:
        fwd.opened(opened(peer.url("/pixel.gif?c=1&r=ann-id")))
        fwd.opened(opened(""))  # no forward URL: nothing
        await asyncio.wait_for(fwd.join(), 30)
    (seen,) = peer.seen
    assert (seen.method, seen.path, seen.query, seen.body) == ("GET", "/pixel.gif",
                                                               "c=1&r=ann-id", b"")
    assert seen.headers["User-Agent"] == "beacon-proxy/0.1.0 (open forwarder)"
    assert not [h for h in (*CLIENT_HEADERS, "Accept-Encoding") if h in seen.headers]
    assert count("open", "sent") == before + 1


async def test_open_forwarding_follows_no_redirect_and_reads_a_bounded_body(
        peer: HttpPeer) -> None:
    peer.script("/r", "redirect")
    peer.script("/huge", "huge")
    peer.script("/slow", "slow")
    async with OpenForwarder(allow_private=True, timeout=30, max_body=1024) as fwd:
        for path in ("/r", "/huge", "/slow"):
            fwd.opened(opened(peer.url(path)))
        await asyncio.wait_for(fwd.join(), 20)  # well before the timeout
    assert sorted(s.path for s in peer.seen) == ["/huge", "/r", "/slow"]
    assert peer.bytes_sent < 1 << 30  # the endless body was cut short


async def test_open_forwarding_drops_when_full(peer: HttpPeer) -> None:
    fwd = OpenForwarder(max_pending=2, allow_private=True)
    before = count("open", "dropped")
    for i in range(5):
        fwd.opened(opened(peer.url(f"/p/{i}")))
    assert fwd.pending == 2
    assert count("open", "dropped") == before + 3
    async with fwd:
        await asyncio.wait_for(fwd.join(), 30)
    assert sorted(s.path for s in peer.seen) == ["/p/0", "/p/1"]


async def test_open_forwarding_refuses_other_schemes_and_private_hosts() -> None:
    fwd = OpenForwarder()
    before = count("open", "refused")
    for url in ("ftp://t.example/p.gif", "data:image/gif;base64,R0lGOD", "http://10.1.2.3/p",
                "https://u:p@t.example/p.gif", "file:///etc/passwd"):
        fwd.opened(opened(url))
    fwd.opened(opened("http://t.example/p.gif"))  # http is fine for trackers
    assert fwd.pending == 1
    assert count("open", "refused") == before + 5
    await fwd.stop()
    assert fwd.pending == 0


async def test_the_log_names_the_host_only(store: Store, peer: HttpPeer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    peer.script("/unsub/subscriber-4242", 503)
    fwd = local(store, Clock())
    with caplog.at_level("DEBUG", logger="beacon_proxy.relay"):
        try:
            await fwd.suspended(unsubscribe(peer.url("/unsub/subscriber-4242")))
            await fwd.run_once()
        finally:
            await fwd.stop()
    fields = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records
              if r.name == "beacon_proxy.relay"]
    assert [name for name, _ in fields] == ["forward_queued", "forward"]
    assert fields[1][1] == {"kind": "one-click", "job": 1, "host": "127.0.0.1", "attempt": 1,
                            "result": "retry", "status": 503, "error": "HTTP 503"}
    assert "subscriber-4242" not in caplog.text and "ann@example.org" not in caplog.text
    assert all("subscriber-4242" not in str(f) and "ann@" not in str(f) for _, f in fields)


async def test_a_malformed_answer_is_retried_and_the_error_hides_the_path(store: Store) -> None:
    """A server answering with a 100 kB header line (aiohttp refuses it)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fwd = local(store, Clock())
    try:
        await fwd.suspended(unsubscribe(f"http://127.0.0.1:{port}/unsub/subscriber-4242"))
        assert await fwd.run_once() == 1
    finally:
        await fwd.stop()
        server.close()
        await server.wait_closed()
    job = await only_job(store)
    assert job.state is ForwardState.PENDING and job.last_error
    assert "subscriber-4242" not in job.last_error
