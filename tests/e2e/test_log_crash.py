"""End-to-end: ``kill -9`` of the relay while the spool's log takes new messages.

Every message a client got ``250`` for is delivered after the restart (a duplicate
is allowed, a loss never): with the upstream up (records forgotten as they are
delivered while more are appended), down (messages written out as queue files after
their first attempt) or hanging (every accepted message still a live log record at
the kill), and with two workers killed outright, then one process that adopts their
parts with live segments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy, Upstream, wait_for
from tests.e2e.test_workers import _pids, _workers_started

pytestmark = pytest.mark.e2e

#: Long enough that no attempt to the hanging upstream ends on its own before the kill:
#: what is tested is then decided by the kill, not by a clock.
HANG = "[delivery]\ntimeout = 600\nretry_min = 0.5\nretry_max = 1\n"


class Blackhole:
    """An upstream that accepts connections and never says a word: every delivery
    attempt hangs, so each accepted message stays a live record of the log."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = self.sock.accept()
                self.conns.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self.conns:
            conn.close()
        self.sock.close()


def _message(tag: str) -> bytes:
    return (f"From: s@sender.example\r\nTo: r@example.net\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@sender.example>\r\n\r\nbody of {tag}\r\n").encode()


def _load(proxy: Proxy, *, senders: int, each: int, kill_after: int,
          kill: Callable[[], None]) -> dict[str, str]:
    """``senders`` clients send up to ``each`` messages apiece; once ``kill_after`` of
    them are acknowledged ``kill`` runs while the others are still sending.  Returns
    the acknowledged messages (tag -> queue id)."""
    acked: dict[str, str] = {}
    lock = threading.Lock()
    enough = threading.Event()

    def sender(k: int) -> None:
        for n in range(each):
            tag = f"m{k}x{n}"
            try:
                with smtplib.SMTP("127.0.0.1", proxy.smtp_port, timeout=30) as client:
                    client.ehlo("client.test")
                    client.mail("s@sender.example")
                    client.rcpt(f"r{k}x{n}@example.net")
                    code, msg = client.data(_message(tag))
            except (OSError, smtplib.SMTPException):
                return  # the relay is gone: this message was never acknowledged
            if code == 250:
                with lock:
                    acked[tag] = msg.decode().rsplit(" ", 1)[-1]
                    if len(acked) >= kill_after:
                        enough.set()
        enough.set()  # all sent before the threshold: kill anyway

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    enough.wait(120)
    kill()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    with lock:
        return dict(acked)


def _delivered_tags(upstream: Upstream) -> set[str]:
    out = set()
    for m in upstream.messages:
        for line in m.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.add(line.removeprefix(b"Subject: ").decode())
    return out


def _all_delivered(upstream: Upstream, acked: dict[str, str]) -> None:
    wait_for(lambda: set(acked) <= _delivered_tags(upstream), 120,
             f"{len(acked)} acknowledged messages delivered")


def _segments(root: Path) -> list[Path]:
    return sorted(root.rglob("log/*.seg"))


def _killed_with_a_hanging_upstream(tmp_path: Path, proxies: list[Proxy], *, senders: int,
                                    each: int, kill_after: int
                                    ) -> tuple[Proxy, int, dict[str, str]]:
    """A single-process relay whose upstream accepts and never answers, killed with
    ``kill -9`` under load: every acknowledged message is still a live record.
    Returns the relay, the upstream's port and the acknowledged messages."""
    port = Upstream().port
    hole = Blackhole(port)
    proxy = Proxy(tmp_path, HANG, upstream=port)
    proxies.append(proxy.start())
    try:
        acked = _load(proxy, senders=senders, each=each, kill_after=kill_after,
                      kill=proxy.kill9)
    finally:
        hole.stop()
    assert _segments(tmp_path / "var" / "spool"), "the acknowledged messages are in the log"
    return proxy, port, acked


def test_kill9_under_load_with_the_upstream_up_loses_no_acknowledged_message(
        tmp_path: Path, upstream: Upstream, proxies: list[Proxy]) -> None:
    proxy = Proxy(tmp_path, upstream=upstream.port)
    proxies.append(proxy.start())
    acked = _load(proxy, senders=4, each=60, kill_after=80, kill=proxy.kill9)
    assert len(acked) >= 80
    proxy.start()
    _all_delivered(upstream, acked)
    wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")
    assert proxy.stop() == 0


def test_kill9_with_the_upstream_down_loses_no_acknowledged_message(
        tmp_path: Path, proxies: list[Proxy]) -> None:
    """Deferred messages are written out as queue files while new ones are appended."""
    upstream = Upstream()  # down: every attempt is refused, so messages are deferred
    proxy = Proxy(tmp_path, upstream=upstream.port)
    proxies.append(proxy.start())
    acked = _load(proxy, senders=4, each=40, kill_after=60, kill=proxy.kill9)
    upstream.start()
    try:
        proxy.start()
        _all_delivered(upstream, acked)
        wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")
        assert proxy.stop() == 0
    finally:
        upstream.stop()


def test_kill9_with_every_message_a_live_record_loses_none(
        tmp_path: Path, proxies: list[Proxy]) -> None:
    """The upstream hangs: at the kill every acknowledged message is only in the log;
    the command line lists them from the segments, recovery writes them out."""
    proxy, port, acked = _killed_with_a_hanging_upstream(tmp_path, proxies, senders=3,
                                                         each=30, kill_after=40)
    spool = tmp_path / "var" / "spool"
    assert not any((spool / "deferred").iterdir())
    listed = proxy.cli("queue", "list", "--json")  # a reader of the segments, no relay
    assert listed.returncode == 0, listed.stderr
    assert set(acked.values()) <= set(listed.stdout.split('"')), listed.stdout[:500]
    upstream = Upstream(port).start()
    try:
        proxy.start()
        _all_delivered(upstream, acked)
        assert proxy.events("started")[-1]["recovered"] >= len(acked)
        assert proxy.stop() == 0
    finally:
        upstream.stop()


def test_two_workers_killed_with_live_segments_are_adopted_by_one_process(
        tmp_path: Path, proxies: list[Proxy]) -> None:
    """Two workers killed outright (the supervisor frozen first, so it starts none
    again) leave live segments in their parts; one process adopts both parts."""
    port = Upstream().port
    hole = Blackhole(port)
    proxy = Proxy(tmp_path, HANG + "[smtp]\nworkers = 2\n", upstream=port)
    proxies.append(proxy.start())
    _workers_started(proxy, 2)
    assert proxy.proc is not None
    supervisor = proxy.proc.pid

    def kill_all() -> None:
        os.kill(supervisor, signal.SIGSTOP)  # no worker is started again
        for pid in _pids(proxy).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proxy.kill9()

    try:
        acked = _load(proxy, senders=4, each=30, kill_after=40, kill=kill_all)
    finally:
        hole.stop()
    spool = tmp_path / "var" / "spool"
    parts_with_log = {p.parent.parent.name for p in _segments(spool / "parts")}
    assert parts_with_log, "the workers' logs should hold the acknowledged messages"
    single = Proxy(tmp_path, HANG, upstream=port)  # workers = 1: adopts every part
    proxies.append(single)
    upstream = Upstream(port).start()
    try:
        single.start()
        _all_delivered(upstream, acked)
        assert not _segments(spool / "parts")
        assert single.stop() == 0
    finally:
        upstream.stop()


def test_a_message_deleted_while_in_the_log_is_not_delivered_after_a_restart(
        tmp_path: Path, proxies: list[Proxy]) -> None:
    """``queue show`` and ``queue delete`` of messages that are only log records (the
    upstream hangs): the deleted one is gone for good -- not listed, and not brought
    back by a ``kill -9`` and restart -- while the others are delivered."""
    port = Upstream().port
    hole = Blackhole(port)
    proxy = Proxy(tmp_path, HANG, upstream=port)
    proxies.append(proxy.start())
    try:
        ids = [proxy.send("s@sender.example", [f"r{n}@example.net"], _message(f"d{n}"))
               for n in range(3)]
        shown = proxy.cli("queue", "show", ids[0])
        assert shown.returncode == 0 and ids[0] in shown.stdout, shown
        deleted = proxy.cli("queue", "delete", ids[0])
        assert deleted.returncode == 0, deleted
        wait_for(lambda: any(e.get("queue_id") == ids[0] for e in proxy.events("removed")),
                 what="the relay to take the delete request")
        listed = proxy.cli("queue", "list", "--json").stdout
        assert ids[0] not in listed and ids[1] in listed and ids[2] in listed
        proxy.kill9()
    finally:
        hole.stop()
    upstream = Upstream(port).start()
    try:
        proxy.start()
        wait_for(lambda: {"d1", "d2"} <= _delivered_tags(upstream), 60, "d1 and d2")
        wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")
        assert "d0" not in _delivered_tags(upstream)
        assert proxy.stop() == 0
    finally:
        upstream.stop()


def test_one_process_killed_with_a_live_segment_is_adopted_by_two_workers(
        tmp_path: Path, proxies: list[Proxy]) -> None:
    """The single-process layout's log (the spool root's) after a ``kill -9``: worker 0
    of two adopts the root, writing its live records out first."""
    _, port, acked = _killed_with_a_hanging_upstream(tmp_path, proxies, senders=2, each=15,
                                                     kill_after=20)
    spool = tmp_path / "var" / "spool"
    workers = Proxy(tmp_path, HANG + "[smtp]\nworkers = 2\n", upstream=port)
    proxies.append(workers)
    upstream = Upstream(port).start()
    try:
        workers.start()
        _all_delivered(upstream, acked)
        assert not _segments(spool)
        assert workers.stop() == 0
    finally:
        upstream.stop()
