"""End-to-end: the real ``beacon-proxy serve`` between a real client and a real upstream."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
from pathlib import Path

import pytest

from tests.e2e.harness import (
    ConnectionLimit,
    Proxy,
    Upstream,
    free_ports,
    newsletter,
    strip_trace,
    wait_for,
    with_footer,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("store_backend")]


def _proxy(proxies: list[Proxy], tmp_path: Path, config: str = "",
           upstream: int | None = None) -> Proxy:
    p = Proxy(tmp_path, config, upstream=upstream)
    proxies.append(p)
    return p.start()


def test_a_list_server_s_message_goes_out_over_several_connections(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    """One message to 150 recipients (a list server sends hundreds per message): each
    gets one copy of their own, and the copies go over more than one connection at
    once ([delivery] lanes, default 4), all closed afterwards."""
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    rcpts = [f"member{i:03d}@example.net" for i in range(150)]
    msg = newsletter(pixel=False)
    proxy.send("list@sender.example", rcpts, msg)
    wait_for(lambda: len(upstream.messages) == 150, what="150 copies")
    for rcpt in rcpts:
        (copy,) = upstream.to(rcpt)
        assert copy.rcpt_tos == [rcpt] and f"for <{rcpt}>".encode() in copy.data
        assert strip_trace(copy.data) == with_footer(msg, copy.data)
    assert len({c.data for c in upstream.messages}) == 150  # their own links
    assert len(set(upstream.handler.peers)) > 1
    wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")
    delivered = proxy.events("delivered")
    assert sorted(e["recipient"] for e in delivered) == rcpts
    assert proxy.stop() == 0


def test_lanes_behind_an_upstream_s_connection_limit_deliver_everything_at_once(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    """The upstream takes two connections from the relay and greets a third with 421:
    the lanes that get no session drop out and leave their copies to the two that work,
    and every copy goes in the first attempt (nothing deferred)."""
    limit = ConnectionLimit(upstream.port, 2).start()
    try:
        proxy = _proxy(proxies, tmp_path, upstream=limit.port)
        rcpts = [f"member{i:03d}@example.net" for i in range(100)]
        proxy.send("list@sender.example", rcpts, newsletter(pixel=False))
        wait_for(lambda: len(upstream.messages) == 100, what="100 copies")
        wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")
        assert sorted(r for m in upstream.messages for r in m.rcpt_tos) == rcpts
        assert limit.refused >= 1 and limit.widest == 2
        assert proxy.events("deferred") == []
        assert all(e["attempt"] == 1 for e in proxy.events("delivered"))
        assert proxy.stop() == 0
    finally:
        limit.stop()


def test_newsletter_arrives_once_per_recipient_byte_identical(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    rcpts = ["ann@example.net", "bob@example.net", "cid@example.org"]
    msg = newsletter(pixel=False)  # nothing to rewrite: only the trace header differs
    queue_id = proxy.send("news@sender.example", rcpts, msg)
    wait_for(lambda: len(upstream.messages) == 3, what="three copies")
    for rcpt in rcpts:
        (copy,) = upstream.to(rcpt)
        assert copy.rcpt_tos == [rcpt]
        assert copy.mail_from == "news@sender.example"
        assert strip_trace(copy.data) == with_footer(msg, copy.data)  # and nothing else
        trace = copy.data[: copy.data.index(b"List-Unsubscribe:")].decode()
        assert f"id {queue_id}" in trace and f"for <{rcpt}>" in trace
        assert "by relay.test (beacon-proxy)" in trace
    received = proxy.events("received")
    assert received[0]["queue_id"] == queue_id
    assert received[0]["recipients"] == 3
    assert received[0]["size"] == len(msg)
    wait_for(lambda: len(proxy.events("delivered")) == 3, what="delivered log lines")
    delivered = proxy.events("delivered")
    assert {e["recipient"] for e in delivered} == set(rcpts)
    assert all(e["reply"].startswith("250") and e["attempt"] == 1 for e in delivered)
    wait_for(lambda: proxy.cli("queue", "list", "--json").stdout == "", what="empty queue")
    assert proxy.stop() == 0


def test_without_upstream_mail_lands_in_the_maildir_outbox(
    tmp_path: Path, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path)
    notices = [e for e in proxy.events("notice") if "Maildir" in e["message"]]
    assert notices, proxy.events()
    msg = newsletter(pixel=False)
    proxy.send("news@sender.example", ["ann@example.net", "bob@example.net"], msg)
    outbox = tmp_path / "var" / "outbox" / "new"
    files = wait_for(lambda: sorted(outbox.glob("*")) if outbox.is_dir() else [],
                     what="outbox files")
    wait_for(lambda: len(list(outbox.glob("*"))) == 2, what="two outbox files")
    recipients = []
    for f in outbox.glob("*"):
        # The envelope on top, as a local delivery adds it.
        return_path, delivered_to, copy = f.read_bytes().split(b"\r\n", 2)
        assert return_path == b"Return-Path: <news@sender.example>"
        recipients.append(delivered_to.removeprefix(b"Delivered-To: "))
        assert strip_trace(copy) == with_footer(msg, copy)
    assert sorted(recipients) == [b"ann@example.net", b"bob@example.net"]
    assert files
    assert proxy.stop() == 0


def test_queue_survives_kill9_and_delivers_exactly_once(
    tmp_path: Path, proxies: list[Proxy]
) -> None:
    upstream = Upstream()  # not started yet: the upstream is down
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    sent: dict[str, list[str]] = {}
    for n in range(40):
        rcpts = [f"user{n}a@example.net", f"user{n}b@example.org"]
        qid = proxy.send("news@sender.example", rcpts, newsletter(n=n))
        sent[qid] = rcpts
    proxy.kill9()
    upstream.start()
    try:
        restarted = _proxy(proxies, tmp_path, upstream=upstream.port)
        wait_for(lambda: len(upstream.messages) >= 80, timeout=60, what="80 deliveries")
        wait_for(lambda: restarted.cli("queue", "list", "--json").stdout == "",
                 what="empty queue")
        got = sorted(r for m in upstream.messages for r in m.rcpt_tos)
        assert got == sorted(r for rs in sent.values() for r in rs)  # each exactly once
        assert restarted.events("started")[-1]["recovered"] == 40
        assert restarted.stop() == 0
    finally:
        upstream.stop()


def test_recipient_delivered_before_a_crash_is_not_sent_again(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, "[delivery]\nretry_min = 3\nretry_max = 3",
                   upstream=upstream.port)
    qid = proxy.send("news@sender.example", ["ann@example.net", "flaky1@example.net"],
                     newsletter())
    wait_for(lambda: proxy.events("deferred"), what="a deferral")
    assert len(upstream.to("ann@example.net")) == 1
    proxy.kill9()
    # After the restart the deferred recipient goes (at its journaled retry time),
    # the delivered one does not.
    restarted = _proxy(proxies, tmp_path, upstream=upstream.port)
    wait_for(lambda: upstream.to("flaky1@example.net"), what="the retried recipient")
    wait_for(lambda: restarted.cli("queue", "show", qid).returncode != 0, what="message done")
    assert len(upstream.to("ann@example.net")) == 1
    assert len(upstream.to("flaky1@example.net")) == 1
    assert restarted.stop() == 0


def _dsns(upstream: Upstream, to: str) -> list[email.message.EmailMessage]:
    out = []
    for m in upstream.messages:
        if m.mail_from == "" and m.rcpt_tos == [to]:
            msg = email.message_from_bytes(m.data, policy=email.policy.default)
            assert isinstance(msg, email.message.EmailMessage)
            out.append(msg)
    return out


def _status_fields(dsn: email.message.EmailMessage) -> str:
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    part = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    return part.as_string()


def test_partial_refusal_is_handled_per_recipient(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    qid = proxy.send("sender@example.com",
                     ["ok@example.net", "reject@example.net", "flaky2@example.net"],
                     newsletter())
    wait_for(lambda: upstream.to("flaky2@example.net"), what="retry succeeds")
    wait_for(lambda: _dsns(upstream, "sender@example.com"), what="the DSN")
    assert len(upstream.to("ok@example.net")) == 1
    assert len(upstream.to("flaky2@example.net")) == 1
    assert upstream.handler.attempts["flaky2@example.net"] == 3
    assert upstream.to("reject@example.net") == []
    (dsn,) = _dsns(upstream, "sender@example.com")
    fields = _status_fields(dsn)
    assert "reject@example.net" in fields and "Action: failed" in fields
    assert "Status: 5.1.1" in fields
    assert "ok@example.net" not in fields and "flaky2@example.net" not in fields
    bounced = proxy.events("bounced")
    assert [e["recipient"] for e in bounced] == ["reject@example.net"]
    assert bounced[0]["queue_id"] == qid and bounced[0]["reply"].startswith("550")
    deferred = proxy.events("deferred")
    assert {e["recipient"] for e in deferred} == {"flaky2@example.net"}
    assert [e["attempt"] for e in deferred] == [1, 2]


def test_queue_lifetime_expiry_bounces_to_the_sender(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, "[delivery]\nqueue_lifetime = 3\nretry_min = 0.5",
                   upstream=upstream.port)
    proxy.send("sender@example.com", ["tempfail@example.net"], newsletter())
    (dsn,) = wait_for(lambda: _dsns(upstream, "sender@example.com"), what="expiry DSN")
    fields = _status_fields(dsn)
    assert "tempfail@example.net" in fields and "Status: 4.4.7" in fields
    assert upstream.handler.attempts["tempfail@example.net"] >= 2
    bounced = proxy.events("bounced")
    assert bounced[0]["expired"] is True


def test_bounce_of_a_bounce_is_dropped_not_sent_to_the_null_sender(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    proxy.send("", ["reject@example.net"], newsletter())
    wait_for(lambda: proxy.events("bounce_dropped"), what="bounce dropped")
    assert all(m.rcpt_tos != [""] for m in upstream.messages)
    assert upstream.messages == []


def test_client_outside_allow_networks_cannot_relay(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, '[smtp]\nallow_networks = ["192.0.2.0/24"]',
                   upstream=upstream.port)
    with proxy.smtp() as client:
        client.ehlo("client.test")
        assert client.mail("spammer@example.com")[0] == 250
        code, msg = client.rcpt("victim@example.net")
        assert 500 <= code < 600, (code, msg)
        assert client.docmd("DATA")[0] == 503  # no valid recipient
    rejected = proxy.events("rejected")
    assert rejected and rejected[0]["stage"] == "RCPT"
    assert upstream.messages == []


def test_oversize_message_gets_552(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, "[smtp]\nmax_message_size = 4096",
                   upstream=upstream.port)
    with proxy.smtp() as client:
        client.ehlo("client.test")
        assert client.has_extn("size") and client.esmtp_features["size"] == "4096"
        client.mail("news@sender.example")
        client.rcpt("ann@example.net")
        code, _ = client.data(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 100 +
                              (b"y" * 998 + b"\r\n") * 10)
        assert code == 552


def test_injected_internal_error_answers_451_without_details(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    tmp_dir = tmp_path / "var" / "spool" / "log"  # where a new message goes
    tmp_dir.rmdir()
    tmp_dir.write_bytes(b"a file where the spool expects a directory")
    with proxy.smtp() as client:
        client.ehlo("client.test")
        client.mail("news@sender.example")
        client.rcpt("ann@example.net")
        code, msg = client.data(newsletter())
    assert code == 451, (code, msg)
    assert b"Error" not in msg and b"Traceback" not in msg and b"log" not in msg
    tmp_dir.unlink()
    tmp_dir.mkdir()
    proxy.send("news@sender.example", ["ann@example.net"], newsletter())  # recovers
    wait_for(lambda: upstream.to("ann@example.net"), what="delivery after recovery")


def test_bad_configuration_fails_startup_with_the_key(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, "[delivery]\nretry_min = -5")
    proxy.start(wait=False)
    assert proxy.proc is not None
    code = proxy.proc.wait(30)
    _, err = proxy.proc.communicate()
    assert code == 2
    assert b"delivery.retry_min" in err
    assert b"Traceback" not in err


def test_sigterm_stops_cleanly_and_leaves_mail_queued(
    tmp_path: Path, proxies: list[Proxy]
) -> None:
    down = Upstream()  # never started
    proxy = _proxy(proxies, tmp_path, upstream=down.port)
    qid = proxy.send("news@sender.example", ["ann@example.net"], newsletter())
    wait_for(lambda: proxy.events("deferred"), what="a deferral")
    assert proxy.stop() == 0
    assert proxy.events("stopped")
    listed = [json.loads(line) for line in proxy.cli("queue", "list", "--json").stdout.splitlines()]
    assert [m["queue_id"] for m in listed] == [qid]
    shown = proxy.cli("queue", "show", qid)
    assert shown.returncode == 0
    assert "ann@example.net" in shown.stdout and "deferred" in shown.stdout
    with pytest.raises((ConnectionRefusedError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP("127.0.0.1", proxy.smtp_port, timeout=5)


def test_operator_can_retry_now_and_delete(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    proxy = _proxy(proxies, tmp_path, "[delivery]\nretry_min = 600\nretry_max = 600",
                   upstream=upstream.port)
    kept = proxy.send("news@sender.example", ["flaky1@example.net"], newsletter())
    dropped = proxy.send("news@sender.example", ["tempfail@example.net"], newsletter())
    wait_for(lambda: len(proxy.events("deferred")) == 2, what="both deferred")
    assert proxy.cli("queue", "retry", kept).returncode == 0
    wait_for(lambda: upstream.to("flaky1@example.net"), timeout=10, what="retry now")
    deleted = proxy.cli("queue", "delete", dropped)
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: any(e.get("reason") == "deleted by an operator"
                         for e in proxy.events("removed")), what="the relay forgets it")
    assert proxy.cli("queue", "list", "--json").stdout == ""
    assert proxy.cli("queue", "retry", "--all").returncode == 0


def test_a_newsletter_personalised_in_its_header_is_analysed_once(
    tmp_path: Path, upstream: Upstream, proxies: list[Proxy]
) -> None:
    """Two messages that differ only in ``To`` and ``Message-ID``: the first is analysed,
    the second's analysis is derived from it (rewrite/known.py, source="header"), and both
    refused copies lose the pixel."""
    proxy = _proxy(proxies, tmp_path, upstream=upstream.port)
    first = newsletter()
    second = newsletter().replace(b"To: subscribers@", b"To: ann.personal@")
    assert first != second and first.split(b"\r\n\r\n", 1)[1] == second.split(b"\r\n\r\n", 1)[1]
    proxy.send("news@sender.example", ["ann@example.net"], first)
    wait_for(lambda: len(upstream.messages) == 1, what="the first copy")
    proxy.send("news@sender.example", ["bob@example.net"], second)
    wait_for(lambda: len(upstream.messages) == 2, what="the second copy")
    for rcpt, sent in (("ann@example.net", first), ("bob@example.net", second)):
        (copy,) = upstream.to(rcpt)
        assert b"t.example.com" not in copy.data  # refused by default: the pixel is gone
        assert strip_trace(copy.data).startswith(sent.split(b"\r\n\r\n", 1)[0])
    analysed = sum(proxy.metric(f'beacon_proxy_analyses_total{{source="{s}"}}')
                   for s in ("inline", "pool"))
    assert analysed == 1
    assert proxy.metric('beacon_proxy_analyses_total{source="header"}') == 1
    assert proxy.stop() == 0


def test_the_harness_gives_a_relay_distinct_ports_apart_from_its_upstream() -> None:
    """``free_ports`` holds every port it chose until all are chosen: a relay's SMTP and web
    listeners never get one port twice (which no move could cure), nor its upstream's."""
    for _ in range(50):
        upstream = free_ports(1)[0]
        ports = free_ports(3, besides={upstream})
        assert len(set(ports)) == 3 and upstream not in ports
