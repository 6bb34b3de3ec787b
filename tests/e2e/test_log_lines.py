"""End-to-end: every line ``beacon-proxy serve`` logs is one JSON object, and a refused
command is reported once, by the relay's own ``rejected`` event."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy

pytestmark = pytest.mark.e2e


def test_refused_commands_are_one_json_line_each(tmp_path: Path,
                                                 proxies: list[Proxy]) -> None:
    proxy = Proxy(tmp_path)
    proxies.append(proxy.start())
    replies = []
    with socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=30) as conn:
        reader = conn.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        for _ in range(50):  # until aiosmtpd gives up on the bogus commands
            conn.sendall(b"FOO bar\r\n")
            reply = reader.readline()
            replies.append(reply)
            if not reply.startswith(b"500 "):
                break
        assert reader.readline() == b""  # closed after the 502
    assert replies[-1].startswith(b"502 5.5.1 ")
    rejected = proxy.wait_events("rejected", len(replies))
    assert [(e["stage"], e["code"]) for e in rejected] == (
        [("COMMAND", 500)] * (len(replies) - 1) + [("COMMAND", 502)])
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGTERM)
    out, err = proxy.proc.communicate(timeout=60)
    assert proxy.proc.returncode == 0
    lines = [*proxy.log_path.read_text().splitlines(), *err.decode().splitlines()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert all(isinstance(r, dict) and "event" in r for r in records)
    assert [r for r in records if r.get("logger") == "mail.log"] == []
    assert out == b""
