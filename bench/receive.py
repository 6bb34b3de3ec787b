#!/usr/bin/env python3
"""CPU per message of the SMTP receive side: one connection per message, as smtp-source.

    python bench/receive.py [--messages 600] [--rounds 3] [--size 70000] [--profile]

The real :class:`~beacon_proxy.smtpd.server.SmtpServer` (aiosmtpd and our protocol
and handler) on the event loop of the main thread (uvloop when installed, as
``serve``), with an enqueue that keeps nothing (the spool is ``bench/spool.py``'s);
a client in another thread sends each message on a new connection (greeting, HELO,
MAIL, RCPT, DATA, QUIT, no pipelining).  Shown: CPU ms per message of the server's
thread (``time.thread_time``), best of ``--rounds``.  To compare two builds, run
it with ``PYTHONPATH`` at each in turn, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.eventloop import loop_factory
from beacon_proxy.smtpd.server import SmtpServer
from beacon_proxy.spool.envelope import Envelope


async def _keep_nothing(envelope: Envelope, data: bytes) -> None:
    return None


def _client(port: int, count: int, body: bytes) -> None:
    """Send ``count`` messages, one connection each, waiting for every reply."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            f = sock.makefile("rb")
            f.readline()
            for cmd in (b"HELO bench.example\r\n", b"MAIL FROM:<s@example.org>\r\n",
                        b"RCPT TO:<r@example.net>\r\n", b"DATA\r\n"):
                sock.sendall(cmd)
                f.readline()
            sock.sendall(body + b".\r\n")
            if not f.readline().startswith(b"250"):
                raise RuntimeError("message refused")
            sock.sendall(b"QUIT\r\n")
            f.readline()


def _message(size: int) -> bytes:
    head = (b"From: s@example.org\r\nTo: r@example.net\r\nSubject: bench\r\n"
            b"Message-ID: <1@example.org>\r\n\r\n")
    line = b"x" * 74 + b"\r\n"
    return head + line * (size // len(line))


async def _round(count: int, body: bytes) -> float:
    server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), _keep_nothing,
                        hostname="bench.example")
    await server.start()
    start = time.thread_time()
    await asyncio.to_thread(_client, server.port, count, body)
    used = time.thread_time() - start
    await server.stop(1.0)
    return used * 1000 / count


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=70000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    body = _message(args.size)
    await _round(50, body)  # warm-up
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        await _round(args.messages, body)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        return
    results = [await _round(args.messages, body) for _ in range(args.rounds)]
    print("receive CPU ms/msg (server thread):", " ".join(f"{r:.3f}" for r in results),
          f"best {min(results):.3f}")


if __name__ == "__main__":
    factory, name = loop_factory("auto")  # the loop serve runs on
    print("event loop:", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
