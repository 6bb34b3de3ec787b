from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from beacon_proxy.consent.policy import Decision, DefaultConsent, Policy
from beacon_proxy.deliver.courier import Courier, Outcome, Result
from beacon_proxy.deliver.retry import RetryPolicy
from beacon_proxy.deliver.scheduler import Scheduler
from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey
from beacon_proxy.rewrite.lineends import CrlfProof, line_dots
from beacon_proxy.rewrite.step import Copy, PreparedMessage, RewriteStep, TraceStep, Wait
from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import QueueEntry, Spool

DATA = b"From: a@example.org\r\nSubject: t\r\n\r\nhello\r\n"


@dataclass
class FakeCourier:
    """In-memory courier: answers per recipient from a script, records deliveries."""

    script: dict[str, list[Result]]
    sent: list[tuple[str, str, bytes]]
    closed: list[bool] = field(default_factory=list)

    async def deliver(self, sender: str, recipient: str, data: bytes, *,
                      smtputf8: bool = False, body_type: str | None = None,
                      crlf: bool = False, dots: tuple[int, ...] | None = None) -> Result:
        answers = self.script.get(recipient)
        result = answers.pop(0) if answers else OK
        if result.ok:
            self.sent.append((sender, recipient, data))
        self.calls.append(recipient)
        self.crlf.append(crlf)
        self.dots.append(dots)
        return result

    async def close(self) -> None:
        self.closed.append(True)

    calls: list[str] = field(default_factory=list)
    crlf: list[bool] = field(default_factory=list)  # the proof given with each copy
    dots: list[tuple[int, ...] | None] = field(default_factory=list)  # and its periods


OK = Result(Outcome.DELIVERED, 250, "250 2.0.0 ok", "2.0.0", "fake")
TEMP = Result(Outcome.TEMPORARY, 451, "451 4.3.0 later", "4.3.0", "fake")
DOWN = Result(Outcome.TEMPORARY, 451, "451 4.4.1 connection refused", "4.4.1", "fake")
PERM = Result(Outcome.PERMANENT, 550, "550 5.1.1 no such user", "5.1.1", "fake")
TOO_MANY = Result(Outcome.TEMPORARY, 421, "421 4.7.0 too many connections", "4.7.0", "fake",
                  session=True)


@dataclass
class Rig:
    spool: Spool
    courier: FakeCourier
    make: Callable[..., Scheduler]


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """``log`` (indirect parameter, default True): the spool's log of new messages."""
    spool = Spool(tmp_path / "spool", log=getattr(request, "param", {}).get("log", True))
    spool.open()
    courier = FakeCourier({}, [])
    schedulers: list[Scheduler] = []

    def make(retry: RetryPolicy | None = None, concurrency: int = 2) -> Scheduler:
        def factory() -> Courier:
            return courier

        s = Scheduler(spool, factory, TraceStep("relay.test"), DefaultConsent(Policy.REFUSED),
                      retry or RetryPolicy(0.1, 0.2, 60), concurrency=concurrency,
                      hostname="relay.test")
        schedulers.append(s)
        return s

    yield Rig(spool, courier, make)
    for s in schedulers:
        await s.stop(1)
    spool.close()


def _env(*rcpts: str, sender: str = "s@example.org") -> Envelope:
    return Envelope(new_queue_id(), sender, rcpts, client_address="127.0.0.1", size=len(DATA))


async def _until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def _drained(rig: Rig, s: Scheduler) -> None:
    """Every message delivered, and the removals (done by the spool's journal thread,
    not waited for by the scheduler) done on disk."""
    await _until(lambda: s.queue_size() == 0)
    await rig.spool.settled()


async def test_each_recipient_gets_its_own_rendered_copy(rig: Rig) -> None:
    s = rig.make()
    await s.start()
    await s.enqueue(_env("a@x.org", "b@x.org"), DATA)
    await _drained(rig, s)
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org", "b@x.org"]
    for _, rcpt, data in rig.courier.sent:
        assert data.startswith(b"Received: ") and data.endswith(DATA)
        assert f"for <{rcpt}>".encode() in data
    assert await rig.spool.recover() == []


async def test_the_courier_is_told_crlf_only_when_a_step_proved_it(rig: Rig) -> None:
    """A DKIM-signed copy is CRLF-only by the DKIM step's proof (Copy.crlf) and the
    courier is told so; any other copy goes without it, and the courier checks."""
    s = rig.make()
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA.replace(b"\r\n", b"\n"))
    await _drained(rig, s)
    await s.stop(1)
    assert rig.courier.crlf == [False]
    signing = TraceStep("relay.test")
    signing.steps = (*signing.steps, DkimSigner([SigningKey(
        "example.org", "s", ed25519.Ed25519PrivateKey.generate())]))
    signed = Scheduler(rig.spool, lambda: rig.courier, signing, DefaultConsent(Policy.REFUSED),
                       RetryPolicy(0.1, 0.2, 60), concurrency=1, hostname="relay.test")
    await signed.start()
    try:
        await signed.enqueue(_env("b@x.org"), DATA.replace(b"\r\n", b"\n"))
        await _drained(rig, signed)
    finally:
        await signed.stop(1)
    assert rig.courier.crlf == [False, True]
    data = rig.courier.sent[-1][2]
    assert data.startswith(b"DKIM-Signature: ") and b"\n" not in data.replace(b"\r\n", b"")


async def test_the_courier_is_told_the_proven_line_start_periods(rig: Rig) -> None:
    """Without DKIM the line-end proof is the last step (CrlfProof): the courier gets
    its ``crlf`` and the offsets of the copy's line-start periods."""
    proving = TraceStep("relay.test")
    proving.steps = (*proving.steps, CrlfProof())
    s = Scheduler(rig.spool, lambda: rig.courier, proving, DefaultConsent(Policy.REFUSED),
                  RetryPolicy(0.1, 0.2, 60), concurrency=1, hostname="relay.test")
    await s.start()
    try:
        await s.enqueue(_env("a@x.org", "b@x.org"), DATA + b".dot\r\n..two\n")
        await _until(lambda: s.queue_size() == 0)
    finally:
        await s.stop(1)
    assert rig.courier.crlf == [True, True]
    for (_, _, data), dots in zip(rig.courier.sent, rig.courier.dots, strict=True):
        assert data.endswith(b".dot\r\n..two\r\n")
        assert dots == tuple(line_dots(data)) and len(dots) == 2


async def test_temporary_failure_is_retried(rig: Rig) -> None:
    rig.courier.script["a@x.org"] = [TEMP, TEMP]
    s = rig.make()
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA)
    await _drained(rig, s)
    assert rig.courier.calls == ["a@x.org"] * 3
    assert len(rig.courier.sent) == 1


async def test_permanent_failure_bounces_to_the_sender(rig: Rig) -> None:
    rig.courier.script["bad@x.org"] = [PERM]
    s = rig.make()
    await s.start()
    env = _env("good@x.org", "bad@x.org")
    await s.enqueue(env, DATA)
    await _drained(rig, s)
    senders = [(snd, rcpt) for snd, rcpt, _ in rig.courier.sent]
    assert ("s@example.org", "good@x.org") in senders
    assert ("", "s@example.org") in senders  # the DSN, from the null sender
    dsn = next(d for snd, _, d in rig.courier.sent if snd == "")
    assert b"multipart/report" in dsn and b"bad@x.org" in dsn and b"good@x.org" not in dsn


async def test_site_failure_defers_the_rest_without_trying(rig: Rig) -> None:
    rig.courier.script["a@x.org"] = [DOWN]
    s = rig.make(RetryPolicy(30, 30, 600))
    await s.start()
    env = _env("a@x.org", "b@x.org", "c@x.org")
    await s.enqueue(env, DATA)
    await _until(lambda: rig.courier.calls)
    await asyncio.sleep(0.1)
    assert rig.courier.calls == ["a@x.org"]
    (entry,) = await rig.spool.recover()
    assert [r.state for r in entry.recipients] == ["deferred"] * 3
    assert entry.attempts == 1 and entry.state == "deferred"


async def test_expired_recipients_bounce_with_4_4_7(rig: Rig) -> None:
    rig.courier.script["a@x.org"] = [TEMP] * 100
    s = rig.make(RetryPolicy(0.1, 0.1, 0.3))
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA)
    await _drained(rig, s)
    dsn = next(d for snd, _, d in rig.courier.sent if snd == "")
    assert b"4.4.7" in dsn and b"451 4.3.0 later" in dsn


async def test_no_bounce_to_the_null_sender(rig: Rig) -> None:
    rig.courier.script["a@x.org"] = [PERM]
    s = rig.make()
    await s.start()
    await s.enqueue(_env("a@x.org", sender=""), DATA)
    await _drained(rig, s)
    assert rig.courier.sent == []


async def test_recovered_entries_are_delivered_and_final_ones_skipped(rig: Rig) -> None:
    env = _env("done@x.org", "todo@x.org")
    await rig.spool.put(env, DATA)
    await rig.spool.record(env.queue_id, 0, "delivered", "250 before the crash")
    s = rig.make()
    assert await s.start() == 1
    await _drained(rig, s)
    assert rig.courier.calls == ["todo@x.org"]


async def test_stop_leaves_undelivered_mail_queued(rig: Rig) -> None:
    rig.courier.script["a@x.org"] = [TEMP]
    s = rig.make(RetryPolicy(60, 60, 600))
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA)
    await _until(lambda: rig.courier.calls)
    await s.stop(1)
    (entry,) = await rig.spool.recover()
    assert entry.pending() == [0]
    assert rig.courier.closed


@pytest.mark.parametrize("rig", [{"log": False}], indirect=True)  # damaged queue files
async def test_corrupt_queue_file_is_quarantined(rig: Rig) -> None:
    env = _env("a@x.org")
    await rig.spool.put(env, DATA)
    s = rig.make()
    path = rig.spool.root / "active" / env.queue_id
    raw = path.read_bytes()
    await s.start()
    await _drained(rig, s)
    assert raw  # delivered normally; now a damaged one:
    env2 = _env("b@x.org")
    await rig.spool.put(env2, DATA)
    path2 = rig.spool.root / "active" / env2.queue_id
    path2.write_bytes(path2.read_bytes()[:-2])
    s2 = rig.make()
    assert await s2.start() == 0
    assert (rig.spool.corrupt / env2.queue_id).exists()


class _Consent:
    """A consent lookup that answers from a table, or fails when told to."""

    def __init__(self, table: dict[str, Decision], fail: bool = False) -> None:
        self.table, self.fail = table, fail
        self.calls: list[tuple[list[str], str | None]] = []

    async def decisions(self, recipients: Sequence[str],
                        list_id: str | None) -> Mapping[str, Decision]:
        self.calls.append((list(recipients), list_id))
        if self.fail:
            raise ConnectionError("database is down")
        return {r: self.table.get(r, Decision.REFUSED) for r in recipients}


def _with_consent(rig: Rig, consent: _Consent, retry: RetryPolicy | None = None) -> Scheduler:
    def factory() -> Courier:
        return rig.courier

    return Scheduler(rig.spool, factory, TraceStep("relay.test"), consent,
                     retry or RetryPolicy(0.1, 0.2, 60), concurrency=1, hostname="relay.test")


async def test_suppressed_recipients_get_nothing_and_stay_final(rig: Rig) -> None:
    consent = _Consent({"gone@x.org": Decision.SUPPRESSED, "in@x.org": Decision.GRANTED})
    s = _with_consent(rig, consent)
    await s.start()
    env = Envelope(new_queue_id(), "s@example.org", ("gone@x.org", "in@x.org"),
                   list_id="news.x.org", size=len(DATA))
    await s.enqueue(env, DATA)
    await _drained(rig, s)
    await s.stop(1)
    assert [r for _, r, _ in rig.courier.sent] == ["in@x.org"]
    assert consent.calls == [(["gone@x.org", "in@x.org"], "news.x.org")]


async def test_a_failed_consent_lookup_defers_everyone(rig: Rig) -> None:
    consent = _Consent({}, fail=True)
    s = _with_consent(rig, consent, RetryPolicy(30, 30, 600))
    await s.start()
    await s.enqueue(_env("a@x.org", "b@x.org"), DATA)
    await _until(lambda: consent.calls)
    await asyncio.sleep(0.05)
    await s.stop(1)
    assert rig.courier.calls == []
    (entry,) = await rig.spool.recover()
    assert [r.state for r in entry.recipients] == ["deferred", "deferred"]
    assert "consent lookup failed" in entry.recipients[0].reply


def _planned(s: Scheduler, queue_id: str, attempts: int) -> Callable[[], bool]:
    """The message's ``attempts``-th attempt has ended: counted, journaled and its next
    attempt planned (after its start)."""
    def done() -> bool:
        entry = s._entries.get(queue_id)
        last = None if entry is None else entry.last_attempt
        return (entry is not None and entry.attempts == attempts and last is not None
                and entry.next_attempt > last and queue_id not in s._attempting)
    return done


def _fields(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == name]


async def test_a_failed_consent_lookup_counts_as_an_attempt_and_backs_off(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A store that stays down: each failed lookup is an attempt, so the retries space
    out as a 4xx's do (they came back every retry_min for the whole queue lifetime),
    and the outage is logged once, not once a message."""
    consent = _Consent({}, fail=True)
    s = _with_consent(rig, consent, RetryPolicy(100, 100_000, 10**7))
    await s.start()
    env = _env("a@x.org")
    await s.enqueue(env, DATA)
    entry = s._entries[env.queue_id]
    for attempts in (1, 2, 3):
        await _until(_planned(s, env.queue_id, attempts))
        assert entry.last_attempt is not None
        wait = entry.next_attempt - entry.last_attempt
        assert wait >= 100 * 2 ** (attempts - 1) * 0.8 - 1  # 100, then ~200, ~400 s
        if attempts < 3:
            assert s.retry_now(env.queue_id) == 1
    await s.stop(1)
    assert rig.courier.calls == [] and len(consent.calls) == 3
    assert s.waiting_keys() == []  # no campaign's: the campaign poll leaves it alone
    (down,) = _fields(caplog, "consent_store_down")
    assert down["queue_id"] == env.queue_id and "database is down" in down["error"]
    assert _fields(caplog, "consent_store_back") == []


async def test_the_store_s_recovery_brings_back_what_its_outage_deferred(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """The first lookup that succeeds again (here a new message's) makes the messages a
    failed lookup deferred due at once, not at their backoff (an hour here); a second
    outage within retry_min of that wake leaves its messages to their backoff, so a
    flapping store does not bring the whole queue back on every answer."""
    caplog.set_level(logging.INFO, logger="beacon_proxy.relay")
    consent = _Consent({}, fail=True)
    s = _with_consent(rig, consent, RetryPolicy(3600, 3600, 10**6))
    await s.start()
    first = _env("a@x.org")
    await s.enqueue(first, DATA)
    await _until(_planned(s, first.queue_id, 1))
    assert s._entries[first.queue_id].next_attempt > time.time() + 2000
    consent.fail = False
    await s.enqueue(_env("b@x.org"), DATA)  # its lookup succeeds: the store is back
    await _drained(rig, s)
    assert sorted(r for _, r, _ in rig.courier.sent) == ["a@x.org", "b@x.org"]
    (back,) = _fields(caplog, "consent_store_back")
    assert back["woken"] == 1 and back["down_seconds"] >= 0
    # A second outage at once: its message keeps its hour.
    consent.fail = True
    third = _env("c@x.org")
    await s.enqueue(third, DATA)
    await _until(_planned(s, third.queue_id, 1))
    consent.fail = False
    await s.enqueue(_env("d@x.org"), DATA)
    await _until(lambda: len(_fields(caplog, "consent_store_back")) == 2)
    await _until(lambda: s.queue_size() == 1)
    await s.stop(1)
    assert s._entries[third.queue_id].next_attempt > time.time() + 2000
    assert _fields(caplog, "consent_store_back")[1]["woken"] == 0
    assert len(_fields(caplog, "consent_store_down")) == 2
    assert "c@x.org" not in [r for _, r, _ in rig.courier.sent]


async def test_operator_requests_retry_and_delete(rig: Rig) -> None:
    rig.courier.script["a@x.org"] = [TEMP]
    rig.courier.script["b@x.org"] = [TEMP]
    s = rig.make(RetryPolicy(600, 600, 6000))
    await s.start()
    a, b = _env("a@x.org"), _env("b@x.org")
    await s.enqueue(a, DATA)
    await s.enqueue(b, DATA)
    await _until(lambda: len(rig.courier.calls) == 2)
    await asyncio.sleep(0.05)
    rig.spool.request_sync("retry", a.queue_id)
    assert rig.spool.delete_sync(b.queue_id)
    rig.spool.request_sync("delete", b.queue_id)
    await _until(lambda: s.queue_size() == 0, timeout=5)
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org"]
    assert rig.courier.calls.count("b@x.org") == 1


class _Step:
    """A rewrite step that holds some copies, or raises while preparing."""

    def __init__(self, hold: set[str] | None = None, raise_times: int = 0) -> None:
        self.hold, self.raise_times, self.prepared = hold or set(), raise_times, 0

    async def prepare(self, envelope: Envelope, data: bytes) -> _Step:
        if envelope.sender:  # DSNs (null sender) always pass
            self.prepared += 1
            if self.prepared <= self.raise_times:
                raise RuntimeError("a rewrite bug")
        self.data = data
        return self

    @property
    def size(self) -> int:
        return len(self.data)

    def render(self, recipient: str, policy: Policy) -> Copy:
        if recipient in self.hold:
            return Copy(b"", {"outcome": "held"}, held="fallback impossible: test")
        return Copy(self.data, {"outcome": "stripped"})


def _with_step(rig: Rig, step: RewriteStep, retry: RetryPolicy, **kw: int) -> Scheduler:
    def factory() -> Courier:
        return rig.courier

    return Scheduler(rig.spool, factory, step, DefaultConsent(Policy.REFUSED), retry,
                     concurrency=1, hostname="relay.test", **kw)


async def test_a_held_copy_is_deferred_then_bounced_at_the_lifetime(rig: Rig) -> None:
    step = _Step(hold={"held@x.org"})
    s = _with_step(rig, step, RetryPolicy(0.05, 0.05, 0.3))
    await s.start()
    env = _env("held@x.org", "ok@x.org")
    await s.enqueue(env, DATA)
    await _drained(rig, s)  # only the DSN is left, then nothing
    assert [r for _, r, _ in rig.courier.sent] == ["ok@x.org", "s@example.org"]
    dsn = rig.courier.sent[-1][2]
    assert b"held@x.org" in dsn and b"copy held: fallback impossible" in dsn
    assert b"4.4.7" in dsn  # expired


async def test_a_held_copy_is_retried_with_the_backoff_of_a_4xx(rig: Rig) -> None:
    """Each attempt that held a copy counts: the retries space out as a 4xx's do, and
    the deferred lines number the attempts (they said 1 every time, retried every
    retry_min until the lifetime ran out)."""
    step = _Step(hold={"held@x.org"})
    retry = RetryPolicy(100, 100_000, 10**7)
    s = _with_step(rig, step, retry)
    await s.start()
    env = _env("held@x.org")
    await s.enqueue(env, DATA)
    entry = s._entries[env.queue_id]
    for attempts in (1, 2, 3):
        def attempted(n: int = attempts) -> bool:
            # the attempt's end: its next attempt planned (an attempt counts itself,
            # then journals its recipients, then plans; the retry below had set
            # next_attempt to before this attempt's start)
            last = entry.last_attempt
            return (entry.attempts == n and s._deferred() == 1 and last is not None
                    and entry.next_attempt > last)

        await _until(attempted)
        assert entry.last_attempt is not None
        wait = entry.next_attempt - entry.last_attempt
        assert wait >= 100 * 2 ** (attempts - 1) * 0.8 - 1  # 100, then ~200, ~400 s
        if attempts < 3:
            assert s.retry_now(env.queue_id) == 1
    assert rig.courier.sent == [] and step.prepared == 3


async def test_a_retry_asked_for_as_an_attempt_ends_is_one_more_attempt(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry asked for while an attempt journals its end (its next attempt already
    planned) runs one attempt more, not two: the request and the attempt's own plan
    both queued the message, so the second came at once after the first."""
    step = _Step(hold={"held@x.org"})
    s = _with_step(rig, step, RetryPolicy(100, 100_000, 10**7))
    real = rig.spool.finish_attempt
    asked: list[int] = []

    async def finish_attempt(entry: QueueEntry) -> None:
        await real(entry)
        if not asked:
            asked.append(s.retry_now(entry.queue_id))

    monkeypatch.setattr(rig.spool, "finish_attempt", finish_attempt)
    await s.start()
    env = _env("held@x.org")
    await s.enqueue(env, DATA)
    await _until(_planned(s, env.queue_id, 2))
    entry = s._entries[env.queue_id]
    now = time.time()
    assert asked == [1] and entry.next_attempt > now + 100
    assert not [due for due, _, e in s._heap if e is entry and due == e.next_attempt <= now]
    assert s._ready.empty() and not s._again and step.prepared == 2


class _WaitingStep:
    """A rewrite step whose copies wait for the key ``"campaign"`` until ``released``;
    ``on_prepare`` runs in the middle of an attempt (after its copies are decided)."""

    def __init__(self, until: float) -> None:
        self.until, self.released, self.attempts = until, False, 0
        self.on_render: Callable[[], object] | None = None

    async def prepare(self, envelope: Envelope, data: bytes) -> _WaitingStep:
        self.data = data
        if envelope.sender:
            self.attempts += 1
        return self

    @property
    def size(self) -> int:
        return len(self.data)

    def render(self, recipient: str, policy: Policy) -> Copy:
        if self.released or recipient == "s@example.org":
            return Copy(self.data, {"outcome": "stripped"})
        if self.on_render is not None:
            self.on_render()
        return Copy(b"", {"outcome": "waiting"}, held="waits for a second copy",
                    wait=Wait(self.until, "campaign"))


async def test_a_waiting_copy_goes_when_its_key_is_woken(rig: Rig) -> None:
    step = _WaitingStep(until=time.time() + 3600)
    s = _with_step(rig, step, RetryPolicy(600, 600, 6000))  # a retry would take 10 min
    await s.start()
    env = _env("a@x.org")
    await s.enqueue(env, DATA)
    await _until(lambda: step.attempts == 1 and s._deferred() == 1)
    assert rig.courier.sent == [] and s.wake("other") == 0
    step.released = True
    assert s.wake("campaign") == 1
    await _drained(rig, s)
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org"] and step.attempts == 2
    assert s.wake("campaign") == 0  # nothing waits any more


async def test_a_waiting_copy_goes_at_the_end_of_its_wait(rig: Rig) -> None:
    step = _WaitingStep(until=time.time() - 1)  # already over: due at once, not in 10 min
    s = _with_step(rig, step, RetryPolicy(600, 600, 6000))
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA)
    await _until(lambda: step.attempts >= 1 and s._deferred() == 1)
    step.released = True
    await _drained(rig, s)
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org"]


async def test_a_wake_during_the_waiting_attempt_is_not_lost(rig: Rig) -> None:
    step = _WaitingStep(until=time.time() + 3600)
    s = _with_step(rig, step, RetryPolicy(600, 600, 6000))

    def second_copy_arrives() -> None:  # as campaign diffing's on_learned would
        step.on_render = None
        step.released = True
        s.wake("campaign")

    step.on_render = second_copy_arrives
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA)
    await _drained(rig, s)
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org"] and step.attempts == 2


async def test_a_wake_while_the_waiting_attempt_is_journaled_runs_one_attempt(
        rig: Rig) -> None:
    """The second copy is learned while the first one's attempt journals its end (its
    queue file moves to deferred/): the message is due again, but never attempted twice
    at once (a second worker read it from the wrong place and dropped it: "queue file
    gone", delivered only after a restart)."""
    step = _WaitingStep(until=time.time() + 3600)
    s = Scheduler(rig.spool, lambda: rig.courier, step, DefaultConsent(Policy.REFUSED),
                  RetryPolicy(600, 600, 6000), concurrency=2, hostname="relay.test")
    journal = rig.spool.finish_attempt

    async def finish_attempt(entry: QueueEntry) -> None:
        if not step.released:  # as campaign diffing's on_learned, from another worker
            step.released = True
            s.wake("campaign")
            await asyncio.sleep(0.05)  # the other worker takes the message meanwhile
        await journal(entry)

    rig.spool.finish_attempt = finish_attempt  # type: ignore[method-assign]
    await s.start()
    await s.enqueue(_env("a@x.org"), DATA)
    await _drained(rig, s)
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org"] and step.attempts == 2
    assert await rig.spool.recover() == []


async def test_a_failing_attempt_is_counted_and_set_aside(rig: Rig) -> None:
    step = _Step(raise_times=100)
    s = _with_step(rig, step, RetryPolicy(0.01, 0.02, 600), max_failures=3)
    await s.start()
    env = _env("a@x.org")
    await s.enqueue(env, DATA)
    await _until(lambda: s.queue_size() == 0 and len(rig.courier.sent) == 1)
    assert step.prepared >= 3
    assert [r for _, r, _ in rig.courier.sent] == ["s@example.org"]  # the bounce
    assert b"5.3.0" in rig.courier.sent[0][2] and b"3 failed attempts" in rig.courier.sent[0][2]
    assert env.queue_id in {p.name.split(".")[0] for p in rig.spool.corrupt.iterdir()}


async def test_failures_survive_a_restart(rig: Rig) -> None:
    step = _Step(raise_times=1)
    s = _with_step(rig, step, RetryPolicy(600, 600, 6000))
    await s.start()
    env = _env("a@x.org")
    await s.enqueue(env, DATA)
    await _until(lambda: step.prepared == 1)
    await asyncio.sleep(0.05)
    await s.stop(1)
    (entry,) = await rig.spool.recover()
    assert entry.failures == 1 and entry.state == "deferred" and entry.next_attempt > 0


async def test_no_analysis_when_no_copy_is_needed(rig: Rig) -> None:
    step = _Step()

    def factory() -> Courier:
        return rig.courier

    consent = _Consent({"gone@x.org": Decision.SUPPRESSED}, fail=False)
    s = Scheduler(rig.spool, factory, step, consent, RetryPolicy(30, 30, 600), concurrency=1,
                  hostname="relay.test")
    await s.start()
    await s.enqueue(_env("gone@x.org"), DATA)
    await _drained(rig, s)
    await s.stop(1)
    assert step.prepared == 0 and rig.courier.calls == []


async def test_the_delivery_that_ends_a_message_is_not_journaled_before_the_removal(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only outcomes that leave a recipient pending are journaled one by one: the
    last one is protected by the removal itself (no journal hop, no journal file)."""
    records: list[tuple[str, int, str]] = []
    real_soon = rig.spool.record_soon

    def record_soon(queue_id: str, index: int, state: Any, reply: str) -> None:
        records.append((queue_id, index, state))  # Spool.record too hands its line over here
        real_soon(queue_id, index, state, reply)

    monkeypatch.setattr(rig.spool, "record_soon", record_soon)
    s = rig.make()
    await s.start()
    one, two = _env("a@x.org"), _env("b@x.org", "c@x.org")
    await s.enqueue(one, DATA)
    await s.enqueue(two, DATA)
    await _drained(rig, s)
    assert records == [(two.queue_id, 0, "delivered")]
    assert await rig.spool.recover() == []
    assert not any(rig.spool.journal.iterdir())


async def test_a_last_delivery_is_journaled_while_an_earlier_recipient_is_pending(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attempt counts the recipients left instead of scanning them after every copy:
    a deferred or refused recipient before the last delivery keeps the message, so that
    delivery is journaled; a suppressed one is final and does not."""
    records: list[tuple[int, str]] = []
    real_soon = rig.spool.record_soon

    def record_soon(queue_id: str, index: int, state: Any, reply: str) -> None:
        records.append((index, state))  # Spool.record too hands its line over here
        real_soon(queue_id, index, state, reply)

    monkeypatch.setattr(rig.spool, "record_soon", record_soon)
    rig.courier.script["later@x.org"] = [TEMP]
    rig.courier.script["no@x.org"] = [PERM]
    s = _with_consent(rig, _Consent({"gone@x.org": Decision.SUPPRESSED}),
                      RetryPolicy(60, 60, 3600))
    await s.start()
    deferred = _env("later@x.org", "a@x.org", "b@x.org")
    await s.enqueue(deferred, DATA)
    await _until(lambda: (deferred.queue_id, "deferred") in
                 [(e.queue_id, e.state) for e in rig.spool.list_sync()])
    assert records == [(1, "delivered"), (2, "delivered"), (0, "deferred")], records
    records.clear()
    bounced, suppressed = _env("no@x.org", "a@x.org"), _env("gone@x.org", "c@x.org")
    await s.enqueue(bounced, DATA)
    await _until(lambda: bounced.queue_id not in [e.queue_id for e in rig.spool.list_sync()])
    assert records[:2] == [(1, "delivered"), (0, "bounced")]
    records.clear()
    await s.enqueue(suppressed, DATA)
    await _until(lambda: suppressed.queue_id not in [e.queue_id for e in rig.spool.list_sync()])
    await s.stop(1)
    assert records == [(0, "suppressed")]  # c@x.org ended the message: not journaled
    sent = [r for _, r, _ in rig.courier.sent if r != "s@example.org"]  # not the DSN
    assert sent == ["a@x.org", "b@x.org", "a@x.org", "c@x.org"]


async def test_a_failed_removal_journals_the_last_delivery_first(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The removal is done by the spool's journal thread, not waited for: when its
    unlink fails, that thread journals the delivery the removal stood for and logs
    ``remove_failed``; the message stays on disk, finished, and the next start
    (recovery) neither loses it nor sends it again."""
    fail = [True]
    real_remove_sync = rig.spool._remove_sync

    def remove_sync(queue_id: str) -> None:
        if fail.pop(0) if fail else False:
            raise OSError(5, "Input/output error")
        real_remove_sync(queue_id)

    monkeypatch.setattr(rig.spool, "_remove_sync", remove_sync)
    s = rig.make(retry=RetryPolicy(60, 60, 3600))
    await s.start()
    env = _env("a@x.org")
    await s.enqueue(env, DATA)
    await _drained(rig, s)
    await s.stop(1)
    (failed,) = [r for r in caplog.records if r.getMessage() == "remove_failed"]
    fields = getattr(failed, "fields", {})
    assert fields["queue_id"] == env.queue_id and "Input/output" in fields["error"]
    (entry,) = await rig.spool.recover()  # a restart: the recipient is done
    assert entry.recipients[0].state == "delivered" and entry.pending() == []
    again = rig.make()
    assert await again.start() == 1
    await _drained(rig, again)  # ... and the restarted relay removes the message
    assert await rig.spool.recover() == []
    assert [r for _, r, _ in rig.courier.sent] == ["a@x.org"]


@dataclass
class _SwallowingCourier(FakeCourier):
    """A courier whose idle close loses a cancellation, as aiosmtplib's QUIT can on
    Python 3.11 (its ``asyncio.wait_for`` returns a reply that meets the cancellation)."""

    closing: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        self.closed.append(True)
        if len(self.closed) > 1:
            return  # the worker's last close, on its way out
        self.closing.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost, as in the library
            await self.release.wait()


async def test_stop_ends_a_worker_whose_idle_close_loses_the_cancellation(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    courier = _SwallowingCourier({}, [])
    s = Scheduler(spool, lambda: courier, TraceStep("relay.test"),
                  DefaultConsent(Policy.REFUSED), RetryPolicy(0.1, 0.2, 60), concurrency=1,
                  hostname="relay.test", idle_timeout=0.01)
    await s.start()
    try:
        await s.enqueue(_env("a@x.org"), DATA)
        await asyncio.wait_for(courier.closing.wait(), 30)  # delivered, then idle: QUIT
        await asyncio.wait_for(s.stop(5), 30)  # hung for good before the fix
    finally:
        spool.close()
    assert [r for _, r, _ in courier.sent] == ["a@x.org"]
    assert len(courier.closed) == 2


async def test_delivered_event_when_listened_and_not_built_otherwise(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivered copy's event reaches a tap with every field, as before; with no tap
    and the relay log above info, its fields are not even gathered."""
    from beacon_proxy.log import add_event_tap, remove_event_tap

    seen: list[tuple[str, dict[str, Any]]] = []

    def tap(name: str, fields: dict[str, Any]) -> None:
        seen.append((name, fields))

    s = rig.make()
    await s.start()
    add_event_tap(tap)
    try:
        env = _env("r1@example.net")
        await s.enqueue(env, DATA)
        await _drained(rig, s)
    finally:
        remove_event_tap(tap)
    [fields] = [f for n, f in seen if n == "delivered"]
    assert fields["queue_id"] == env.queue_id and fields["recipient"] == "r1@example.net"
    assert (fields["relay"], fields["reply"], fields["attempt"]) == ("fake", OK.reply, 1)
    assert fields["policy"] == "refused" and fields["size"] > len(DATA)
    assert set(fields) >= {"message_id", "sender", "delay"}

    built: list[str] = []
    monkeypatch.setattr(Scheduler, "_log_recipient",
                        lambda self, name, *a, **kw: built.append(name))
    relay = logging.getLogger("beacon_proxy.relay")
    old = relay.level
    relay.setLevel(logging.WARNING)
    try:
        await s.enqueue(_env("r2@example.net"), DATA)
        await _drained(rig, s)
    finally:
        relay.setLevel(old)
    assert built == [] and rig.courier.calls[-1] == "r2@example.net"


@dataclass
class _LaneCourier:
    """One of several couriers: records which copies it sent; ``gate`` (when set) holds
    every delivery until ``width`` of them are in flight at once."""

    lanes: _Lanes
    name: int
    closed: bool = False
    delivered: int = 0  # deliveries asked of this courier

    async def deliver(self, sender: str, recipient: str, data: bytes, *,
                      smtputf8: bool = False, body_type: str | None = None,
                      crlf: bool = False, dots: tuple[int, ...] | None = None) -> Result:
        lanes = self.lanes
        self.delivered += 1
        await asyncio.sleep(0)  # a network's turn: the other lanes go on meanwhile
        if self.name in lanes.refuse:  # its connection is refused (a 421 greeting)
            return TOO_MANY
        if lanes.down == (self.name, self.delivered):
            return DOWN
        lanes.in_flight += 1
        lanes.widest = max(lanes.widest, lanes.in_flight)
        try:
            if lanes.in_flight >= lanes.width:
                lanes.gate.set()
            await lanes.gate.wait()
            answers = lanes.script.get(recipient)
            result = answers.pop(0) if answers else OK
            if lanes.fail_on == recipient:
                lanes.release.set()
                raise RuntimeError("a courier bug")
            if result.ok:
                lanes.sent.append((self.name, recipient))
            if recipient == lanes.hold:  # the upstream has it; its 250 comes later
                await lanes.release.wait()
                for _ in range(3):
                    await asyncio.sleep(0)
            return result
        finally:
            lanes.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


@dataclass
class _Lanes:
    width: int  # deliveries held until this many are in flight
    couriers: list[_LaneCourier] = field(default_factory=list)
    sent: list[tuple[int, str]] = field(default_factory=list)
    script: dict[str, list[Result]] = field(default_factory=dict)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    widest: int = 0
    fail_on: str | None = None
    refuse: set[int] = field(default_factory=set)  # couriers (by number) refused
    hold: str | None = None  # the copy whose 250 waits for ``release`` (fail_on sets it)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    down: tuple[int, int] | None = None  # (courier, its n-th delivery): a DOWN

    def __call__(self) -> Courier:
        courier = _LaneCourier(self, len(self.couriers))
        self.couriers.append(courier)
        return courier


def _laned(rig: Rig, lanes: _Lanes, spare: int, retry: RetryPolicy | None = None
           ) -> Scheduler:
    return Scheduler(rig.spool, lanes, TraceStep("relay.test"), DefaultConsent(Policy.REFUSED),
                     retry or RetryPolicy(600, 600, 6000), concurrency=1,
                     hostname="relay.test", lanes=spare)


def _many(n: int) -> list[str]:
    return [f"r{i:04d}@x.org" for i in range(n)]


async def test_a_message_with_many_recipients_goes_out_over_several_connections(
        rig: Rig) -> None:
    """200 copies to send, 3 spare connections: 4 lanes at once (one per 32 copies, as
    far as the spare ones reach; the gate lets no copy go until 4 are in flight), each
    copy sent once, the extra connections closed and given back."""
    lanes = _Lanes(width=4)
    s = _laned(rig, lanes, spare=3)
    await s.start()
    rcpts = _many(200)
    await s.enqueue(_env(*rcpts), DATA)
    await _drained(rig, s)
    await s.stop(1)
    assert sorted(r for _, r in lanes.sent) == rcpts
    assert lanes.widest == 4 and len(lanes.couriers) == 4
    assert {name for name, _ in lanes.sent} == {0, 1, 2, 3}
    assert [c.closed for c in lanes.couriers[1:]] == [True] * 3
    assert s._spare == 3
    assert await rig.spool.recover() == []


async def test_few_recipients_or_no_spare_connections_keep_one_connection(rig: Rig) -> None:
    few = _Lanes(width=1)
    s = _laned(rig, few, spare=3)
    await s.start()
    await s.enqueue(_env(*_many(63)), DATA)  # lanes from 64 copies on
    await _drained(rig, s)
    await s.stop(1)
    assert len(few.couriers) == 1 and len(few.sent) == 63 and few.widest == 1
    none = _Lanes(width=1)
    s2 = _laned(rig, none, spare=0)
    await s2.start()
    await s2.enqueue(_env(*_many(200)), DATA)
    await _drained(rig, s2)
    await s2.stop(1)
    assert len(none.couriers) == 1 and len(none.sent) == 200 and none.widest == 1


async def _delivered(rig: Rig, lanes: _Lanes, spare: int, rcpts: list[str]) -> Scheduler:
    """A laned scheduler that delivered one message to ``rcpts`` and stopped."""
    s = _laned(rig, lanes, spare=spare)
    await s.start()
    await s.enqueue(_env(*rcpts), DATA)
    await _drained(rig, s)
    await s.stop(1)
    return s


async def _first_attempt(rig: Rig, lanes: _Lanes, spare: int, rcpts: list[str]
                         ) -> tuple[Scheduler, Envelope]:
    """A laned scheduler's first attempt at one message to ``rcpts``, ended and
    journaled (a retry is planned)."""
    s = _laned(rig, lanes, spare=spare)
    await s.start()
    env = _env(*rcpts)
    await s.enqueue(env, DATA)
    await _until(_planned(s, env.queue_id, 1))
    await rig.spool.settled()
    return s, env


async def test_a_site_failure_on_the_worker_s_lane_defers_what_no_lane_has_sent(
        rig: Rig) -> None:
    """The worker's own connection fails (a 4.4.1 for its third copy): the copies no
    lane has sent yet are deferred, the ones delivered are journaled as delivered (each
    as it went: a crash now would not send them again), and the retry sends the rest
    once."""
    lanes = _Lanes(width=1, down=(0, 3))
    rcpts = _many(128)
    s, env = await _first_attempt(rig, lanes, 3, rcpts)
    first = [r for _, r in lanes.sent]
    assert len(first) == len(set(first)) < 127
    (entry,) = await rig.spool.recover()  # what a restart would find
    states = {r.address: r.state for r in entry.recipients}
    assert {a for a, st in states.items() if st == "delivered"} == set(first)
    assert all(st == "deferred" for a, st in states.items() if a not in first)
    assert s.retry_now(env.queue_id) == 1
    await _drained(rig, s)
    await s.stop(1)
    assert sorted(r for _, r in lanes.sent) == rcpts  # each once
    assert s._spare == 3


async def test_an_extra_lane_refused_drops_out_and_the_others_send_its_copies(
        rig: Rig) -> None:
    """An upstream that takes fewer connections than the lanes would open (a 421 at the
    greeting of the third and fourth): those lanes drop out, their copies go over the
    others, and the message is delivered in its first attempt as with one connection."""
    lanes = _Lanes(width=1, refuse={2, 3})
    rcpts = _many(200)
    s = await _delivered(rig, lanes, 3, rcpts)
    assert sorted(r for _, r in lanes.sent) == rcpts
    assert {name for name, _ in lanes.sent} == {0, 1}
    assert [c.delivered for c in lanes.couriers[2:]] == [1, 1]
    assert all(c.closed for c in lanes.couriers[1:]) and s._spare == 3


async def test_the_worker_s_own_connection_refused_leaves_its_copies_to_the_lanes(
        rig: Rig) -> None:
    """An upstream's limit may refuse the worker's connection rather than an extra one
    (the worker's reconnected last): its lane drops out the same way, and a connection
    that works sends what is left."""
    lanes = _Lanes(width=1, refuse={0})
    rcpts = _many(200)
    s = await _delivered(rig, lanes, 2, rcpts)
    assert sorted(r for _, r in lanes.sent) == rcpts
    assert {name for name, _ in lanes.sent} == {1, 2} and s._spare == 2


async def test_every_lane_refused_is_the_upstream_s_failure(rig: Rig) -> None:
    lanes = _Lanes(width=1, refuse={0, 1, 2})
    s, _ = await _first_attempt(rig, lanes, 2, _many(100))
    await s.stop(1)
    assert lanes.sent == [] and [c.delivered for c in lanes.couriers] == [1, 1, 1]
    (entry,) = await rig.spool.recover()
    assert {r.state for r in entry.recipients} == {"deferred"}
    assert "too many connections" in entry.recipients[0].reply and s._spare == 2


async def test_a_lane_that_raises_lets_the_copies_in_flight_end(rig: Rig) -> None:
    """One lane raises while another's copy is with the upstream: that copy's answer is
    awaited and journaled (cancelled, it would go again at the retry), then the attempt
    fails; the retry sends every other copy once."""
    lanes = _Lanes(width=1)
    rcpts = _many(100)
    lanes.hold, lanes.fail_on = rcpts[0], rcpts[1]  # the first held until the second fails
    s = _laned(rig, lanes, spare=1, retry=RetryPolicy(0.1, 0.1, 60))
    await s.start()
    env = _env(*rcpts)
    await s.enqueue(env, DATA)
    await _until(lambda: s._entries[env.queue_id].failures == 1)
    lanes.fail_on = None
    await _drained(rig, s)
    await s.stop(1)
    assert sorted(r for _, r in lanes.sent) == rcpts  # rcpts[0] once


async def test_a_lane_that_raises_fails_the_attempt_and_gives_its_connections_back(
        rig: Rig) -> None:
    lanes = _Lanes(width=1)
    rcpts = _many(100)
    lanes.fail_on = rcpts[40]
    s = _laned(rig, lanes, spare=2)
    await s.start()
    env = _env(*rcpts)
    await s.enqueue(env, DATA)
    entry = s._entries[env.queue_id]
    await _until(lambda: entry.failures == 1 and env.queue_id not in s._attempting)
    assert s._spare == 2 and [c.closed for c in lanes.couriers[1:]] == [True, True]
    lanes.fail_on = None
    assert s.retry_now(env.queue_id) == 1
    await _drained(rig, s)
    await s.stop(1)
    assert sorted(r for _, r in lanes.sent) == rcpts


class _GatedStep(TraceStep):
    """A rewrite step whose prepare waits for ``gate`` (the analysis pool, campaign
    diffing: a real prepare awaits)."""

    def __init__(self) -> None:
        super().__init__("relay.test")
        self.gate = asyncio.Event()
        self.waiting = 0

    async def prepare(self, envelope: Envelope, data: bytes) -> PreparedMessage:
        self.waiting += 1
        await self.gate.wait()
        return await super().prepare(envelope, data)


async def test_two_big_messages_never_open_more_than_concurrency_plus_lanes(
        rig: Rig) -> None:
    """The spare connections are reserved before the message is prepared (which awaits),
    and counted spare again only once closed: two workers preparing big messages at once
    do not both take them."""
    lanes = _Lanes(width=1)
    step = _GatedStep()
    opened: list[int] = []

    def factory() -> Courier:
        courier = lanes()
        opened.append(sum(not c.closed for c in lanes.couriers))
        return courier

    s = Scheduler(rig.spool, factory, step, DefaultConsent(Policy.REFUSED),
                  RetryPolicy(600, 600, 6000), concurrency=2, hostname="relay.test", lanes=2)
    await s.start()
    await s.enqueue(_env(*_many(100)), DATA)
    await s.enqueue(_env(*_many(100)), DATA)
    await _until(lambda: step.waiting == 2)
    step.gate.set()
    await _drained(rig, s)
    await s.stop(1)
    assert len(lanes.sent) == 200 and max(opened) <= 2 + 2 and s._spare == 2


def _retried_while_prepared(rig: Rig, step: _Step) -> tuple[Scheduler, list[int]]:
    """A scheduler (retries 10 minutes apart) whose first attempt asks for a retry of
    its message while it prepares; the list gets what ``retry_now`` answered."""
    s = _with_step(rig, step, RetryPolicy(600, 600, 6000))
    real = step.prepare
    asked: list[int] = []

    async def prepare(envelope: Envelope, data: bytes) -> _Step:
        if not asked:
            asked.append(s.retry_now(envelope.queue_id))  # while the attempt runs
        return await real(envelope, data)

    step.prepare = prepare  # type: ignore[method-assign]
    return s, asked


async def test_a_retry_asked_for_during_an_attempt_that_raises_is_one_more_attempt(
        rig: Rig) -> None:
    step = _Step(raise_times=2)
    s, asked = _retried_while_prepared(rig, step)
    await s.start()
    env = _env("a@x.org")
    await s.enqueue(env, DATA)
    entry = s._entries[env.queue_id]
    await _until(lambda: entry.failures == 2 and env.queue_id not in s._attempting)
    await s.stop(1)
    assert asked == [1] and step.prepared == 2  # the second at once, not in 10 minutes
    assert entry.next_attempt > time.time() + 300  # the second failure's backoff


async def test_a_retry_asked_for_during_an_attempt_is_journaled(rig: Rig) -> None:
    """The journal's next attempt is the one asked for, not the backoff: a restart right
    after the attempt takes the message at once (it waited out the backoff)."""
    s, asked = _retried_while_prepared(rig, _Step(hold={"held@x.org"}))
    real_finish = rig.spool.finish_attempt
    journaled: list[float] = []

    async def finish_attempt(entry: QueueEntry) -> None:
        journaled.append(entry.next_attempt)
        await real_finish(entry)

    rig.spool.finish_attempt = finish_attempt  # type: ignore[method-assign]
    await s.start()
    env = _env("held@x.org")
    started = time.time()
    await s.enqueue(env, DATA)
    await _until(lambda: len(journaled) == 2)
    await s.stop(1)
    assert asked == [1] and journaled[0] <= time.time() and journaled[0] >= started
    assert journaled[1] > time.time() + 300  # the second attempt's own backoff


class _SlowConsent(_Consent):
    """A lookup of ``slow@x.org`` waits for ``release`` (it began before an outage)."""

    def __init__(self) -> None:
        super().__init__({})
        self.release = asyncio.Event()

    async def decisions(self, recipients: Sequence[str],
                        list_id: str | None) -> Mapping[str, Decision]:
        if "slow@x.org" in recipients:
            self.calls.append((list(recipients), list_id))
            await self.release.wait()
            return dict.fromkeys(recipients, Decision.REFUSED)
        return await super().decisions(recipients, list_id)


async def test_a_lookup_that_began_before_the_outage_does_not_end_it(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A lookup that was under way when another failed proves nothing about the store
    now: its success neither logs consent_store_back nor wakes what the outage deferred;
    the next lookup that begins and ends without a failure does."""
    caplog.set_level(logging.INFO, logger="beacon_proxy.relay")
    consent = _SlowConsent()
    s = Scheduler(rig.spool, lambda: rig.courier, TraceStep("relay.test"), consent,
                  RetryPolicy(3600, 3600, 10**6), concurrency=2, hostname="relay.test")
    await s.start()
    await s.enqueue(_env("slow@x.org"), DATA)
    await _until(lambda: consent.calls)  # under way
    consent.fail = True
    failed = _env("a@x.org")
    await s.enqueue(failed, DATA)
    await _until(_planned(s, failed.queue_id, 1))
    consent.fail = False
    consent.release.set()  # the slow lookup succeeds after the failure
    await _until(lambda: "slow@x.org" in [r for _, r, _ in rig.courier.sent])
    assert _fields(caplog, "consent_store_back") == []
    assert s._entries[failed.queue_id].next_attempt > time.time() + 2000
    await s.enqueue(_env("b@x.org"), DATA)  # begins after the failure: the store is back
    await _drained(rig, s)
    await s.stop(1)
    assert [f["woken"] for f in _fields(caplog, "consent_store_back")] == [1]
    assert "a@x.org" in [r for _, r, _ in rig.courier.sent]
