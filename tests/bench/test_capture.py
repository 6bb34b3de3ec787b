"""The soak's capture upstream (bench/_capture.py): the same log and replies however the
bytes are cut into chunks, limits, and a real run of the script."""

from __future__ import annotations

import asyncio
import io
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _capture
from _proc import free_port, smtp_ready, stop_process, wait_until

MESSAGE = (b"DKIM-Signature: v=1; a=rsa-sha256\r\nX-Bench-Id: 5\r\nSubject: t\r\n\r\n"
           b"..a line that began with a dot\r\nX-Bench-Id: 9\r\nlast\r\n")
CONVERSATION = (b"EHLO relay\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n"
                + MESSAGE + b".\r\n"
                + b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n"
                + b"NOOP\r\nQUIT\r\nMAIL FROM:<after@quit>\r\n")
REPLIES = [b"220", b"250", b"250", b"250", b"250", b"354", b"250",  # greeting .. message
           b"250", b"250", b"354", b"250", b"250", b"221"]  # the empty message, NOOP, QUIT


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def converse(chunks: list[bytes], limit: int = 1 << 20) -> tuple[FakeTransport, list[str]]:
    out = io.StringIO()
    session = _capture.Session(out, limit)
    transport = FakeTransport()
    session.connection_made(cast(asyncio.BaseTransport, transport))
    for chunk in chunks:
        session.data_received(chunk)
    return transport, out.getvalue().splitlines()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(CONVERSATION)])
def test_the_same_log_and_replies_whatever_the_chunks(size: int) -> None:
    chunks = [CONVERSATION[i:i + size] for i in range(0, len(CONVERSATION), size)]
    transport, lines = converse(chunks)
    codes = [line[:3] for line in bytes(transport.written).split(b"\r\n") if line[3:4] != b"-"]
    assert codes[:-1] == REPLIES and codes[-1] == b""  # nothing after QUIT
    assert transport.closed
    assert [line.split()[0::2] for line in lines] == [["5", "2"], ["-", "1"]]
    assert [line.split()[3] for line in lines] == ["1", "0"]  # DKIM-Signature fields
    times = [float(line.split()[1]) for line in lines]
    assert times == sorted(times)


def test_a_line_over_the_limit_closes_the_connection() -> None:
    transport, lines = converse([b"EHLO x\r\n", b"x" * 150], limit=100)
    assert bytes(transport.written).endswith(b"552 5.3.4 Too long\r\n") and transport.closed
    assert lines == []


def test_a_message_over_the_limit_closes_the_connection() -> None:
    transport, lines = converse([b"DATA\r\n", b"y\r\n" * 60], limit=100)
    assert bytes(transport.written).endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"
                                             b"552 5.3.4 Too long\r\n")
    assert transport.closed and lines == []


def test_nothing_is_read_after_the_close() -> None:
    out = io.StringIO()
    session = _capture.Session(out)
    transport = FakeTransport()
    session.connection_made(cast(asyncio.BaseTransport, transport))
    session.data_received(b"QUIT\r\n")
    session.data_received(b"DATA\r\n.\r\n")
    assert bytes(transport.written) == b"220 capture.bench ESMTP\r\n221 2.0.0 Bye\r\n"
    assert out.getvalue() == ""


def test_the_script_captures_what_smtplib_sends(tmp_path: Path) -> None:
    port, arrivals = free_port(), tmp_path / "arrivals"
    script = Path(_capture.__file__)
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--out",
                             str(arrivals)], stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: smtp_ready(port), 30, "capture start", proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo()
            assert client.has_extn("pipelining")
            client.sendmail("a@b", ["c@d", "e@f"], MESSAGE.replace(b"\r\n..", b"\r\n."))
            client.sendmail("a@b", ["c@d"], b"Subject: no id\r\n\r\nx\r\n")
    finally:
        stop_process(proc)
    lines = arrivals.read_text().splitlines()
    assert [line.split()[0::2] for line in lines] == [["5", "2"], ["-", "1"]]
    assert proc.returncode == 0
