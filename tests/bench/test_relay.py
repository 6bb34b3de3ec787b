"""bench/relay.py does not rot: its pieces on fixed inputs, and a tiny run of every phase.

The tiny runs send a handful of messages through every kind of phase (the
Postfix hop only where Postfix and root are available: the benchmark itself
says "skipped" otherwise) and check what the report says was delivered and
counted, never how fast: this machine is shared.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _capture
import _postfix
import _proc
import _relaysoak
import relay

needs_postfix_tools = pytest.mark.skipif(
    not (os.access(relay.SMTP_SOURCE, os.X_OK) and os.access(relay.SMTP_SINK, os.X_OK)),
    reason="smtp-source / smtp-sink not installed (Debian: postfix)")


def test_phases_parse_in_a_fixed_order() -> None:
    assert relay.parse_phases("c, postfix,a") == ["a", "postfix", "c"]
    assert relay.parse_phases("all") == list(relay.PHASES)
    assert "soak" not in relay.DEFAULT_PHASES
    with pytest.raises(ValueError, match="unknown phase"):
        relay.parse_phases("a,x")


def test_the_command_line_refuses_a_soak_without_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        relay.main(["--phases", "soak"])
    assert "--soak-rate" in capsys.readouterr().err


def test_master_cf_moves_smtpd_to_the_port_and_unchroots() -> None:
    system = ("# comment smtp inet\n"
              "smtp      inet  n       -       y       -       -       smtpd\n"
              "  -o smtpd_sasl_auth_enable=yes\n"
              "cleanup   unix  n       -       y       -       0       cleanup\n"
              "qmgr      unix  n       -       n       300     1       qmgr\n")
    lines = _postfix.master_cf(system, 2525).splitlines()
    assert lines[0] == "# comment smtp inet"
    assert lines[1].split() == ["2525", "inet", "n", "-", "n", "-", "-", "smtpd"]
    assert lines[2] == "  -o smtpd_sasl_auth_enable=yes"
    assert lines[3].split()[4] == "n"
    assert lines[4].split() == ["qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"]


def test_main_cf_keeps_the_instance_in_its_own_directory(tmp_path: Path) -> None:
    cf = _postfix.main_cf(tmp_path, 2600)
    assert f"queue_directory = {tmp_path / 'queue'}" in cf
    assert f"data_directory = {tmp_path / 'data'}" in cf
    assert f"maillog_file = {tmp_path / 'maillog'}" in cf
    assert "relayhost = [127.0.0.1]:2600" in cf
    assert "inet_interfaces = 127.0.0.1" in cf
    assert "/var/spool/postfix" not in cf


def test_capture_reads_the_bench_id_and_signatures() -> None:
    msg = (b"Received: by relay\r\nDKIM-Signature: v=1; a=rsa-sha256\r\nX-Bench-Id: 42\r\n"
           b"Subject: x\r\n\r\nX-Bench-Id: 7\r\nDKIM-Signature: not a header\r\n")
    assert _capture.parse_message(msg) == ("42", 1)
    assert _capture.parse_message(b"X-Bench-Id: 3\r\n\r\nbody\r\n") == ("3", 0)
    assert _capture.parse_message(b"Subject: none\r\n\r\n") == ("-", 0)


def test_capture_log_reads_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "arrivals"
    log = _relaysoak.CaptureLog(path)
    assert log.poll() == 0  # no file yet
    path.write_text("1 10.5 1 1\n2 11.0 1 0\n- 12.0 1 0\n3 12")
    assert log.poll() == 2
    with path.open("a") as fh:
        fh.write(".5 1 1\n")
    assert log.poll() == 3
    assert log.arrivals == {1: 10.5, 2: 11.0, 3: 12.5}
    assert (log.signed, log.other) == (2, 1)


def test_soak_latency_counts_an_undelivered_message_as_infinite() -> None:
    res = _relaysoak.SoakResult(_relaysoak.SoakSpec(seconds=60, rate=1))
    res.accepted = {1: 1.0, 2: 2.0, 3: 3.0}
    res.arrivals = {1: 1.25, 3: 3.5}
    assert res.latencies() == [0.25, 0.5, float("inf")]


def test_flat_compares_the_second_window_with_the_last() -> None:
    ten_min = [(float(t), 100 if t < 60 else 200 if t < 120 else 210, 0)
               for t in range(0, 601, 10)]
    w, second, last = _relaysoak.flat_windows(ten_min, 600) or (0, 0, 0)
    assert (w, second, last) == (60.0, 200.0, 210.0)
    short = [(float(t), 100, 0) for t in range(0, 61, 10)]
    assert _relaysoak.flat_windows(short, 60) == (20.0, 100.0, 100.0)
    assert _relaysoak.flat_windows([(0.0, 1, 1)], 60) is None


def test_tree_cpu_counts_a_child_that_has_exited() -> None:
    before = _proc.tree_cpu(os.getpid())
    burn = "import time\nwhile time.process_time() < 0.5: pass\n"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    # /proc counts clock ticks (1/100 s), and 21.4 - 21.1 < 0.3 in floating point:
    # a tick's margin below the 0.5 s the child burned.
    assert _proc.tree_cpu(os.getpid()) - before >= 0.45


def test_tree_cpu_split_separates_user_and_system_time() -> None:
    user0, system0 = _proc.tree_cpu_split(os.getpid())
    burn = "import os, time\nwhile time.process_time() < 0.5: os.stat('/')\n"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    user, system = _proc.tree_cpu_split(os.getpid())
    assert user - user0 > 0 and system - system0 > 0  # stat() is a system call
    assert (user - user0) + (system - system0) >= 0.45  # a tick's margin, as above


def test_tree_memory_covers_a_live_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert child.pid in _proc.descendants(os.getpid())
        own_rss, _ = _proc.tree_memory(child.pid)
        all_rss, all_pss = _proc.tree_memory(os.getpid())
        assert own_rss > 0
        assert all_rss >= own_rss
        assert all_pss > 0
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


@pytest.mark.skipif(_postfix.postfix_available() is not None,
                    reason=str(_postfix.postfix_available()))
def test_the_postfix_hop_relays_and_leaves_nothing_running() -> None:
    # Not tmp_path: pytest's base directory is 0700, and Postfix's daemons (user postfix)
    # must reach the queue below it.
    with tempfile.TemporaryDirectory(prefix="bench-postfix-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o711)
        hop_runs_and_stops(tmp_path)


def hop_runs_and_stops(tmp_path: Path) -> None:
    with relay.sink(tmp_path, 30) as snk:
        with _postfix.PostfixHop(tmp_path / "hop", snk.port) as hop:
            assert hop.master_pid is not None
            procs = [(p, _proc.proc_start_time(p)) for p in _proc.descendants(hop.master_pid)]
            assert len(procs) > 1  # master and its daemons
            with smtplib.SMTP("127.0.0.1", hop.port, timeout=30) as client:
                client.sendmail("a@example.com", ["b@example.net"], b"Subject: t\r\n\r\nhi\r\n")
            _proc.wait_until(lambda: snk.received() >= 1, 60, "relayed by the hop")
        assert not [p for p, t in procs if _proc.proc_alive(p, t)]
    # The instance ran from its own configuration directory, and logged there.
    assert f"configuration {tmp_path / 'hop' / 'etc'}" in (tmp_path / "hop" / "maillog").read_text()


@needs_postfix_tools
def test_a_tiny_run_of_every_throughput_phase(capsys: pytest.CaptureFixture[str]) -> None:
    rc = relay.main(["--messages", "4", "--sessions", "2", "--recipients", "3",
                     "--phases", "a,b,postfix,c,c-dkim,a-rcpt,b-rcpt,postfix-rcpt,c-dkim-rcpt",
                     "--timeout", "120"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out  # 1: a goal missed (tiny runs say nothing about speed)
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line[:1].strip() and line.split()[0] in relay.PHASES and " / " not in line}
    for name in ("a", "b", "c", "c-dkim"):
        assert rows[name][-14] == "4", out  # msgs (then 13 columns, the last runq ms/msg)
        assert rows[name][-5] != "-", out  # smtp-source's CPU
        # busy %, other %: "-" only for a phase shorter than /proc/stat's tick (10 ms;
        # phase a of 4 messages sometimes is), never anything but a number otherwise
        busy, other = rows[name][-3], rows[name][-2]
        assert (busy.isdigit() and other.isdigit()) or busy == other == "-", out
    assert rows["c"][-3].isdigit() or rows["c-dkim"][-3].isdigit(), out  # relays take longer
    assert rows["a"][-1] == "-" and float(rows["c"][-1]) >= 0, out  # runq: relays only
    # rcpts, txns, then 10 columns: ... signed, sink CPU s, sys %, busy %
    assert rows["c-dkim-rcpt"][-12:-10] == ["3", "3"], out  # 3 recipients, 3 transactions
    assert rows["c-dkim-rcpt"][-4] == "3", out  # each copy arrived signed
    assert rows["a-rcpt"][-12:-10] == ["3", "1"], out
    assert rows["b-rcpt"][-12:-10] == ["3", "1"], out  # the pass-through: one transaction on
    assert rows["a-rcpt"][-2] == "-" and rows["c-dkim-rcpt"][-2].isdigit(), out  # sys %
    assert "c-dkim-rcpt / a (one transaction per recipient" in out
    assert "c-dkim / b (aiosmtpd -> aiosmtplib)" in out
    assert "c-dkim at 4x b = " in out and "the relay may spend" in out
    if _postfix.postfix_available() is None:
        assert rows["postfix"][-14] == "4", out
        assert rows["postfix-rcpt"][-12:-10] == ["3", "1"], out  # one transaction on
        assert "c / postfix (Postfix hop)" in out
    else:
        assert "phase postfix skipped" in out


def _run(name: str, rate: float, n: int) -> relay.Result:
    """A result of ``rate`` messages/s (100 messages), round ``n``."""
    return relay.Result(name, name, 100, 1, 1.0, 100 / rate, 1.0, None, None, 0.1, round=n)


def test_rounds_are_judged_on_each_phase_s_median_run() -> None:
    runs = [_run("b", 100, 1), _run("c", 390, 1), _run("b", 110, 2), _run("c", 470, 2),
            _run("b", 90, 3), _run("c", 420, 3)]
    by = relay.medians(runs)
    assert (by["b"].rate, by["c"].rate) == pytest.approx((100, 420))
    assert relay.medians(runs[:4])["c"].rate == pytest.approx(390)  # even: the lower middle
    assert relay._round_ratios(runs, "c", "b") == "  (rounds: 3.90 4.27 4.67)"
    assert relay._round_ratios(runs[:2], "c", "a") == ""  # no base in any round
    assert relay._round_ratios([_run("c", 1, 0), _run("b", 1, 0)], "c", "b") == ""  # one run


@needs_postfix_tools
def test_a_tiny_run_of_two_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    rc = relay.main(["--messages", "3", "--sessions", "2", "--phases", "b,c", "--rounds", "2",
                     "--timeout", "120"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    names = [line.split()[:2] for line in out.splitlines() if line.startswith(("b #", "c #"))]
    assert names == [["b", "#1"], ["c", "#1"], ["b", "#2"], ["c", "#2"]], out
    assert "goals judged on each phase's median run" in out
    line = next(line for line in out.splitlines() if line.startswith("c / b"))
    assert "(rounds: " in line and len(line.split("(rounds: ")[1].split()) == 2, line


def test_the_relays_log_level_is_the_one_asked_for(tmp_path: Path) -> None:
    """``--log-level`` reaches the relay's config (the default, warning, writes no line per
    message; the relay's own default, info, writes one per message and per copy)."""
    st = relay.Settings(1, 1, tmp_path / "m.eml", tmp_path, 10, False, None, log_level="info")
    cfg = relay.proxy_config(st, "t", 2525, 8080, 2526, False).read_text()
    assert '\n[log]\nlevel = "info"\n' in cfg
    with pytest.raises(SystemExit):
        relay.main(["--log-level", "verbose"])


def test_granted_recipients_are_spread_evenly() -> None:
    assert relay.granted_numbers(10, 0.5) == [2, 4, 6, 8, 10]
    assert relay.granted_numbers(1000, 0.3)[:4] == [4, 7, 10, 14]
    assert len(relay.granted_numbers(1000, 0.3)) == 300
    assert relay.granted_numbers(5, 1.0) == [1, 2, 3, 4, 5]
    assert relay.granted_numbers(5, 0.0) == []


@needs_postfix_tools
def test_a_tiny_run_with_granted_recipients(capsys: pytest.CaptureFixture[str]) -> None:
    """The seeded recipients get rewritten copies: the phase checks /metrics for
    exactly that many (and fails the run otherwise)."""
    rc = relay.main(["--messages", "4", "--sessions", "2", "--recipients", "20",
                     "--phases", "c,c-rcpt", "--granted-share", "0.5", "--timeout", "120"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    assert "0.5 of the recipients granted" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line[:1].strip() and line.split()[0] in relay.PHASES and " / " not in line}
    assert rows["c"][-14] == "4" and rows["c-rcpt"][-12:-10] == ["20", "20"], out


@needs_postfix_tools
def test_a_tiny_soak(capsys: pytest.CaptureFixture[str]) -> None:
    rc = relay.main(["--phases", "soak", "--soak-rate", "5", "--soak-seconds", "2",
                     "--rss-every", "0.5", "--soak-connections", "2"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    assert ("scheduled 10: accepted 10, refused 0, failed 0, not sent by the deadline 0 "
            "(never started 0, cut off mid-transaction 0)") in out, out
    assert "DKIM-signed on arrival 10" in out, out
    assert "every message accepted and delivered (10/10)" in out, out
    assert "every delivered message DKIM-signed on arrival (10/10)" in out, out
    assert "p99 accept-to-deliver < 1 s" in out


def test_machine_busy_counts_a_burning_child() -> None:
    """The whole machine's busy seconds grow at least by what a child burns."""
    busy0, total0 = _proc.machine_busy()
    burn = "import time\nwhile time.process_time() < 0.3: pass\n"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    busy, total = _proc.machine_busy()
    assert busy - busy0 >= 0.25
    # (equal when no core idled at all, as with both cores busy: then only the float
    # division of the tick counts tells them apart, by far less than a tick)
    assert total - total0 >= busy - busy0 - 1e-6


def test_runqueue_wait_is_read_for_a_live_tree() -> None:
    """A tree's run-queue wait is a number that never goes back (0 without schedstat)."""
    first = _proc.tree_runqueue_wait(os.getpid())
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    assert 0.0 <= first <= _proc.tree_runqueue_wait(os.getpid())
