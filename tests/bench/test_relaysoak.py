"""The soak's sender accounts for every scheduled message exactly once, and its report says
which count each one is in (refused, failed, not sent by the deadline)."""

from __future__ import annotations

import doctest
import math
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _relaysoak
from _relaysoak import CaptureLog, SoakResult, SoakSpec, report_soak
from _smtpload import SoakTemplate, wire
from newsletter import newsletter

from tests.bench.fakesmtp import Server, run

BODY = newsletter().replace(b"\n", b"\r\n")


def rcpt(n: int) -> bytes:
    return b"RCPT TO:<s%d@example.org>\r\n" % n


def test_every_scheduled_message_ends_in_exactly_one_count() -> None:
    """10 messages over 2 connections: 3 refused, 5 cut by the server, 7 and 8 never
    answered (cut off when the drain ends), so 9 is never started."""
    # The drain ends while 7 and 8 wait for ever; 3 s leaves the rest ample time to finish.
    spec = SoakSpec(seconds=0.05, rate=200, connections=2, rss_every=60, send_drain=3)
    res = SoakResult(spec)

    async def scenario() -> None:
        async with Server() as srv:
            srv.on_rcpt[rcpt(3)] = b"550 5.1.1 no such user\r\n"
            srv.on_rcpt[rcpt(5)] = b""  # the server closes the connection
            srv.hang_on.update({rcpt(7), rcpt(8), rcpt(9)})
            await _relaysoak._send(spec, srv.port, SoakTemplate(BODY), res, os.getpid())
        assert sorted(srv.data) == sorted(wire(n, BODY) for n in (0, 1, 2, 4, 6))

    run(scenario())
    assert res.scheduled == 10
    assert sorted(res.accepted) == [0, 1, 2, 4, 6]
    assert res.refused == Counter({"RCPT 550": 1})
    assert res.failed == Counter({"connection closed": 1})
    assert (res.cut_off, res.never_started, res.not_sent) == (2, 1, 3)
    assert res.unaccounted() == 0
    assert res.overrun_s >= spec.send_drain
    assert sorted(res.dues) == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # 9 never started
    assert res.samples  # the relay's (here: this process's) memory was sampled


def test_a_sender_that_keeps_up_finishes_within_the_drain() -> None:
    spec = SoakSpec(seconds=0.1, rate=50, connections=2, rss_every=60, send_drain=30)
    res = SoakResult(spec)

    async def scenario() -> None:
        async with Server() as srv:
            await _relaysoak._send(spec, srv.port, SoakTemplate(BODY), res, os.getpid())
            assert srv.lines.count(b"QUIT\r\n") == 2  # each connection ended politely

    run(scenario())
    assert sorted(res.accepted) == [0, 1, 2, 3, 4]
    assert (res.not_sent, res.unaccounted(), sum(res.refused.values())) == (0, 0, 0)
    assert res.overrun_s < spec.send_drain


def finished(spec: SoakSpec) -> SoakResult:
    """A result of 10 scheduled: 6 accepted (5 delivered, 4 signed), 1 refused, 1 failed,
    1 never started, 1 cut off."""
    res = SoakResult(spec, scheduled=10)
    res.accepted = {n: float(n) for n in range(6)}
    res.dues = dict(res.accepted)
    res.lags = [0.001] * 8
    res.arrivals = {n: n + 0.01 for n in range(5)}
    res.signed = 4
    res.refused = Counter({"RCPT 550": 1})
    res.failed = Counter({"timeout": 1})
    res.never_started, res.cut_off = 1, 1
    res.samples = [(float(t), 1000, 800) for t in range(0, 61, 10)]
    res.send_s, res.cpu_s, res.sender_cpu_s = 6.0, 0.06, 0.003
    return res


def test_the_report_names_each_count(capsys: pytest.CaptureFixture[str]) -> None:
    spec = SoakSpec(seconds=60, rate=1, dkim=True, send_drain=120)
    assert not report_soak(finished(spec))
    out = capsys.readouterr().out
    assert ("scheduled 10: accepted 6, refused 1 (RCPT 550: 1), failed 1 (timeout: 1), "
            "not sent by the deadline 2 (never started 1, cut off mid-transaction 1)\n") in out
    assert "UNACCOUNTED" not in out
    assert "delivered 5 of the accepted, DKIM-signed on arrival 4" in out
    verdicts = {line.split(" (")[0]: line.split()[-1] for line in out.splitlines()
                if line.endswith(("PASS", "FAIL"))}
    assert verdicts == {"rate held": "PASS", "p99 accept-to-deliver < 1 s": "FAIL",
                        "RSS flat within 10%": "PASS",
                        "every message accepted and delivered": "FAIL",
                        "every delivered message DKIM-signed on arrival": "FAIL"}
    assert "every message accepted and delivered (5/10)" in out
    assert "DKIM-signed on arrival (4/5)" in out
    assert "sender 0.50 ms/msg" in out


def test_the_report_without_dkim_has_no_signature_verdict(
        capsys: pytest.CaptureFixture[str]) -> None:
    res = finished(SoakSpec(seconds=60, rate=1))
    res.never_started += 1  # one message in no count: the report must say so
    report_soak(res)
    out = capsys.readouterr().out
    assert "UNACCOUNTED -1" in out
    assert "DKIM-signed on arrival (" not in out


def test_a_clean_run_passes(capsys: pytest.CaptureFixture[str]) -> None:
    res = SoakResult(SoakSpec(seconds=60, rate=1, dkim=True), scheduled=6)
    res.accepted = res.dues = {n: float(n) for n in range(6)}
    res.arrivals = {n: n + 0.01 for n in range(6)}
    res.lags, res.signed, res.send_s = [0.0] * 6, 6, 6.0
    res.samples = [(float(t), 1000, 800) for t in range(0, 61, 10)]
    assert report_soak(res), capsys.readouterr().out
    assert math.isclose(max(res.latencies()), 0.01)


def test_capture_log_keeps_which_ids_arrived_signed(tmp_path: Path) -> None:
    path = tmp_path / "arrivals"
    path.write_text("1 10.5 1 1\n2 11.0 1 0\n- 12.0 1 1\n1 13.0 1 0\n")
    log = CaptureLog(path)
    assert log.poll() == 2
    assert log.signed_ids == {1}
    assert (log.signed, log.other) == (2, 1)


def test_the_doctests_hold() -> None:
    assert doctest.testmod(_relaysoak).failed == 0
