"""bench/receive.py runs end to end on a tiny load (a smoke test: no timing is judged)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.bench.script import ROOT, run_script


def _receive(*args: str) -> str:
    done = run_script("receive.py", "--messages", "5", "--rounds", "1", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("floor", [False, True], ids=["server", "floor"])
def test_the_thread_client(floor: bool) -> None:
    out = _receive("--client", "thread", "--size", "2000", *(["--floor"] if floor else []))
    assert "client: thread" in out and "receive CPU ms/msg (server thread):" in out, out


@pytest.mark.skipif(shutil.which("smtp-source") is None
                    and not Path("/usr/sbin/smtp-source").exists(),
                    reason="needs Postfix's smtp-source")
def test_smtp_source_with_the_newsletter() -> None:
    out = _receive("--client", "source", "--newsletter")
    assert "client: source" in out and "best" in out, out


def test_two_trees_alternate() -> None:
    out = _receive("--client", "thread", "--size", "2000", "--base", str(ROOT), "--pairs", "1")
    assert "pair 1 (load" in out and "branch" in out, out


def test_the_mta_client_pipelines_over_one_connection() -> None:
    out = _receive("--client", "mta", "--newsletter")
    assert "client: mta (pipelined)" in out and "best" in out, out


def test_the_mta_client_sends_each_command_apart_where_not_offered() -> None:
    """Against a server that does not offer PIPELINING (a stub here), the client waits
    for each reply before the next command: each arrives alone."""
    import socket
    import threading

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import receive
    finally:
        sys.path.remove(str(ROOT / "bench"))

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)  # a client that never connects fails the test, not hangs it
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(30)
        with conn:
            conn.sendall(b"220 stub\r\n")
            conn.recv(4096)  # EHLO
            conn.sendall(b"250-stub\r\n250 8BITMIME\r\n")
            for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
                seen.append(conn.recv(4096))  # the next command is sent once answered
                conn.sendall(reply)
            data = b""
            while not data.endswith(b"\r\n.\r\n"):
                data += conn.recv(65536)
            conn.sendall(b"250 queued\r\n")
            seen.append(conn.recv(4096))
            conn.sendall(b"221 bye\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    socket.setdefaulttimeout(30)  # the client's socket: a stuck exchange fails, not hangs
    try:
        assert not receive._mta(listener.getsockname()[1], 1, b"Subject: x\r\n\r\nbody\r\n")
    finally:
        socket.setdefaulttimeout(None)
    thread.join(timeout=30)
    listener.close()
    assert seen == [b"MAIL FROM:<s@example.org>\r\n", b"RCPT TO:<r@example.net>\r\n",
                    b"DATA\r\n", b"QUIT\r\n"]
