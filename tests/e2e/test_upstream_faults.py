"""End-to-end: the real ``beacon-proxy serve`` relaying to a faulty upstream, then recovering.

The upstream (:mod:`tests.deliver.smtppeer`, in a thread) is down when the mail
arrives, then comes up with one fault scripted for each recipient (and a
greeting that never comes for the first connection).  Every message ends
delivered exactly once, bounced with a DSN quoting the upstream's reply, or —
only where the upstream took the message and its final reply was lost —
delivered twice, the at-least-once case ``docs/flow.md`` documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deliver.smtppeer import Upstream, threaded
from tests.deliver.test_dsn import parse, status_blocks
from tests.e2e.harness import Proxy, free_port, newsletter, wait_for

pytestmark = pytest.mark.e2e

SENDER = "news@sender.example"
FAULTS = {  # recipient: (stage, step)
    "busy@example.net": ("RCPT", "421 4.3.2 closing: too busy"),
    "full@example.net": ("RCPT", "452 4.5.3 too many recipients"),
    "cut@example.net": ("DATA", "drop"),
    "banned@example.net": ("dot", "554 5.7.1 content rejected"),
    "slow@example.net": ("dot", "hang"),
}
HEALTHY = ["ann@example.net", "bob@example.org"]


def test_faulty_upstream_then_healthy_delivers_every_message_once(
        tmp_path: Path, proxies: list[Proxy]) -> None:
    upstream = Upstream(port=free_port())  # down while the mail arrives
    # timeout: the "hang" fault waits this long once; retries come within a second.
    proxy = Proxy(tmp_path, "[delivery]\ntimeout = 3\ndata_timeout = 3", upstream=upstream.port)
    proxies.append(proxy)
    proxy.start()
    queued = {rcpt: proxy.send(SENDER, [rcpt], newsletter(n=n))
              for n, rcpt in enumerate([*FAULTS, *HEALTHY])}
    wait_for(lambda: {e["recipient"] for e in proxy.events("deferred")} == set(queued),
             60, "every recipient deferred while the upstream is down")
    assert all(e["reply"].startswith("451 4.4.1 connection to") and "refused" in e["reply"]
               for e in proxy.events("deferred"))

    for rcpt, (stage, step) in FAULTS.items():
        upstream.script(stage, step, rcpt=rcpt)
    upstream.script("greeting", "hold")
    with threaded(upstream):
        wait_for(lambda: len(upstream.to(SENDER)) == 1
                 and proxy.cli("queue", "list", "--json").stdout == "", 90,
                 "one DSN and an empty queue")
        copies = {rcpt: len(upstream.to(rcpt)) for rcpt in queued}
        assert copies == {**dict.fromkeys(queued, 1), "banned@example.net": 0,
                          "slow@example.net": 2}  # the lost final reply: sent again
        assert sorted(upstream.faults) == sorted([*FAULTS.values(), ("greeting", "hold")])

        (bounce,) = upstream.to(SENDER)
        assert bounce.mail_from == "<>"
        dsn = parse(bounce.content)
        assert dsn.get_content_type() == "multipart/report"
        _, block = status_blocks(dsn)  # the one recipient that failed
        assert (block["Final-Recipient"], block["Action"], block["Status"],
                block["Diagnostic-Code"]) == ("rfc822; banned@example.net", "failed", "5.7.1",
                                              "smtp; 554 5.7.1 content rejected")

    (bounced,) = proxy.events("bounced")
    assert (bounced["queue_id"], bounced["recipient"], bounced["status"]) == (
        queued["banned@example.net"], "banned@example.net", "5.7.1")
    replies = {e["reply"] for e in proxy.events("deferred")}
    assert {"421 4.3.2 closing: too busy", "452 4.5.3 too many recipients"} <= replies
    assert any(r.endswith("while sending DATA") and "timeout" in r for r in replies)
    assert any(r.endswith("while sending DATA") and "lost connection" in r for r in replies)
    assert any(r.endswith("failed: timed out") for r in replies)  # the silent greeting
    assert proxy.stop() == 0
