"""End-to-end: ``[smtp] allow_networks`` changed under a running relay (``SIGHUP``).

Round 9 keeps relay verdicts by client address, per server (``smtpd.protocol.
Connections._verdict``) and per connection.  The networks are not applied by a
reload (the ``reloaded`` event names ``smtp`` as needing a restart), so the kept
verdicts must stay those of the networks in force: the address allowed before the
reload still relays, the one refused is still refused (no verdict half of the old
networks and half of the new ones); after a restart, the new networks decide.
"""

from __future__ import annotations

import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy, Upstream, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    p = Proxy(tmp_path, '[smtp]\nallow_networks = ["127.0.0.1/32"]\n', upstream=upstream.port)
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill9()


def _rcpt(proxy: Proxy, source: str) -> int:
    """The reply code to one RCPT from the loopback address ``source`` (twice on one
    connection: the second answered by the connection's kept verdict)."""
    client = smtplib.SMTP("127.0.0.1", proxy.smtp_port, timeout=30,
                          source_address=(source, 0))
    try:
        client.ehlo("client.test")
        client.mail("news@sender.example")
        code, _ = client.rcpt("ann@example.org")
        again, _ = client.rcpt("bob@example.org")
        assert again == code
        return code
    finally:
        client.quit()


def _verdicts(proxy: Proxy) -> tuple[int, ...]:
    # several connections each: every worker process (and its kept verdicts) is met
    return tuple(_rcpt(proxy, source) for source in ("127.0.0.1", "127.0.0.2") * 4)


def test_changed_networks_apply_at_the_restart_not_half_at_the_reload(proxy: Proxy) -> None:
    proxy.start()
    assert proxy.proc is not None
    before = _verdicts(proxy)
    assert before == (250, 554) * 4
    text = proxy.config_path.read_text()
    assert '"127.0.0.1/32"' in text
    proxy.config_path.write_text(text.replace('"127.0.0.1/32"', '"127.0.0.2/32"'))
    proxy.proc.send_signal(signal.SIGHUP)
    (reloaded,) = wait_for(lambda: proxy.events("reloaded"), 30, "the reload")
    assert "smtp" in reloaded["restart_needed"]
    assert _verdicts(proxy) == before  # the networks in force, kept or not
    assert proxy.stop() == 0
    proxy.start()
    assert _verdicts(proxy) == (554, 250) * 4
