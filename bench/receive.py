#!/usr/bin/env python3
"""CPU per message of the SMTP receive side: one connection per message, as smtp-source.

    python bench/receive.py [--messages 600] [--rounds 3] [--size 70000]
                            [--client source|thread|mta] [--newsletter] [--profile]
    python bench/receive.py --base /tmp/base-tree [--pairs 3] ...

The real :class:`~beacon_proxy.smtpd.server.SmtpServer` (aiosmtpd and our protocol
and handler) on the event loop of the main thread (uvloop when installed, as
``serve``), with an enqueue that keeps nothing (the spool is ``bench/spool.py``'s).
Each message goes on a new connection (greeting, HELO/EHLO, MAIL, RCPT, DATA, QUIT,
no pipelining), sent by

* ``--client source`` (the default when installed): Postfix's ``smtp-source`` in a
  process of its own (``-s 1``, one session at a time; ``-F`` a file of the
  message), as ``bench/relay.py`` sends;
* ``--client thread``: a Python client in a thread of this process.  It competes
  with the server for the GIL, and every hand-off lands in the server thread's
  ``thread_time``: use it only where smtp-source is missing;
* ``--client mta``: as an MTA sends to its relay host (Postfix's ``smtp``), in a
  process of its own: one connection kept for every message, EHLO once, and
  ``MAIL``, ``RCPT`` and ``DATA`` in one write when the server offers PIPELINING
  (RFC 2920), each reply read before the next command when it does not.

Shown: CPU ms per message of the server's thread (``time.thread_time``), best of
``--rounds``, and the load average.  ``--newsletter`` sends ``bench/newsletter.py``'s
~70 KB quoted-printable newsletter (``--size`` is then ignored).  ``--floor``
answers with :class:`Floor` instead of the server; ``--stub handler`` or
``--stub data`` leaves parts of the DATA work out, to price them.  ``--base TREE``
compares two builds: a child process per tree (``PYTHONPATH``), base and this tree
alternating ``--pairs`` times (:func:`_pairs.alternate`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _pairs import BRANCH, alternate, pair_parser

from beacon_proxy.config import Endpoint, SmtpConfig
from beacon_proxy.eventloop import loop_factory
from beacon_proxy.smtpd.server import SmtpServer
from beacon_proxy.spool.envelope import Envelope

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


async def _keep_nothing(envelope: Envelope, data: bytes) -> None:
    return None


def _stub(part: str) -> None:
    """Price parts of the receive side by leaving them out: ``handler`` makes
    ``handle_DATA`` answer ``250 OK`` at once (no checks, no enqueue); ``data``
    also keeps the bytes received in DATA as they are (no canonical form)."""
    from beacon_proxy.smtpd import data, handler

    async def answer(self: object, server: object, session: object, envelope: object) -> str:
        return "250 OK"

    handler.SmtpHandler.handle_DATA = answer  # type: ignore[method-assign]
    if part == "data":
        # read_data looks them up at each call: the stuffing periods stay too
        data.canonical = lambda received: received
        data._unstuffed = lambda chunks, end, dots: b"".join(chunks)[:end]


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


def _mta(port: int, count: int, body: bytes) -> bool:
    """Send ``count`` messages over one connection, pipelined when offered (``--client
    mta``; run in a child process: ``--mta-send``); whether they were pipelined."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line

        f.readline()
        sock.sendall(b"EHLO bench.example\r\n")
        lines = [f.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(f.readline())
        pipelining = any(line[4:].strip() == b"PIPELINING" for line in lines)
        group = (b"MAIL FROM:<s@example.org>\r\n", b"RCPT TO:<r@example.net>\r\n",
                 b"DATA\r\n")
        for _ in range(count):
            if pipelining:
                sock.sendall(b"".join(group))
                codes = [reply()[:3] for _ in group]
            else:
                codes = []
                for command in group:
                    sock.sendall(command)
                    codes.append(reply()[:3])
            if codes != [b"250", b"250", b"354"]:
                raise RuntimeError(f"refused: {codes}")
            sock.sendall(body + b".\r\n")
            if not reply().startswith(b"250"):
                raise RuntimeError("message refused")
        sock.sendall(b"QUIT\r\n")
        reply()
    return pipelining


async def _mta_child(port: int, count: int, body: bytes) -> str:
    """:func:`_mta` in a child process (the server's thread keeps the GIL to itself);
    how it sent: ``"pipelined"`` or ``"stepwise"``."""
    with tempfile.NamedTemporaryFile(suffix=".eml") as fh:
        fh.write(body)
        fh.flush()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--mta-send", str(port), str(count), fh.name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the mta client failed: {err.decode(errors='replace')}")
    return out.decode().strip()


async def _source(port: int, count: int, message_file: Path) -> None:
    """``count`` messages from smtp-source in a process of its own, one session."""
    proc = await asyncio.create_subprocess_exec(
        SMTP_SOURCE, "-s", "1", "-m", str(count), "-M", "source.bench",
        "-f", "s@example.org", "-t", "r@example.net", "-F", str(message_file),
        f"127.0.0.1:{port}", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {err.decode(errors='replace')}")


def _message(size: int) -> bytes:
    head = (b"From: s@example.org\r\nTo: r@example.net\r\nSubject: bench\r\n"
            b"Message-ID: <1@example.org>\r\n\r\n")
    line = b"x" * 74 + b"\r\n"
    return head + line * (size // len(line))


def _body(size: int, newsletter: bool) -> bytes:
    """The message, CRLF line ends, not dot-stuffed."""
    if not newsletter:
        return _message(size)
    from newsletter import newsletter as make
    return make().replace(b"\n", b"\r\n")


def _stuffed(body: bytes) -> bytes:
    """``body`` as the thread client sends it in DATA (before the final ``.``)."""
    return (b"." if body.startswith(b".") else b"") + body.replace(b"\r\n.", b"\r\n..")


class Floor(asyncio.Protocol):
    """The floor: the same dialogue answered by a bare ``asyncio.Protocol``.

    No checks at all (no line limits, no command parsing beyond the verb, no
    unstuffing but one ``replace``, no size limit, no header checks, nothing
    queued): what any Python SMTP server on this event loop pays at least for
    the connection, the reads and the seven replies.  Not a server to use.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.data: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self.transport: Any = transport
        self.transport.write(b"220 bench.example ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        if self.data is not None:
            self.data.append(data)
            if b"".join(self.data[-2:]).endswith(b"\r\n.\r\n"):
                body = b"".join(self.data)[:-3].replace(b"\r\n..", b"\r\n.")
                self.data = None
                assert body
                self.transport.write(b"250 queued\r\n")
            return
        self.buf += data
        while (end := self.buf.find(b"\r\n")) >= 0:
            verb = bytes(self.buf[:4]).upper()
            del self.buf[:end + 2]
            if verb == b"DATA":
                self.transport.write(b"354 go\r\n")
                self.data = []
                return
            if verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            self.transport.write(b"250 ok\r\n")


async def _round(count: int, body: bytes, message_file: Path | None, floor: bool,
                 mta: bool = False) -> tuple[float, str]:
    """CPU ms a message of the server's thread, and how the mta client sent ("" for
    the other clients)."""
    if floor:
        listener = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", 0)
        port = int(listener.sockets[0].getsockname()[1])
    else:
        server = SmtpServer(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), _keep_nothing,
                            hostname="bench.example")
        await server.start()
        port = server.port
    start = time.thread_time()
    mode = ""
    if mta:
        mode = await _mta_child(port, count, _stuffed(body))
    elif message_file is not None:
        await _source(port, count, message_file)
    else:
        await asyncio.to_thread(_client, port, count, _stuffed(body))
    used = time.thread_time() - start
    if floor:
        listener.close()
    else:
        await server.stop(1.0)
    return used * 1000 / count, mode


async def measure(messages: int, rounds: int, body: bytes, message_file: Path | None,
                  profile: bool, floor: bool = False,
                  mta: bool = False) -> tuple[list[float], str]:
    """CPU ms per message of each round (after a warm-up round), and how the mta client
    sent in the last one."""
    await _round(50, body, message_file, floor, mta)
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        await _round(messages, body, message_file, floor, mta)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        return [], ""
    rounds_run = [await _round(messages, body, message_file, floor, mta)
                  for _ in range(rounds)]
    return [used for used, _ in rounds_run], rounds_run[-1][1]


def _compare(args: argparse.Namespace) -> None:
    """Children of the base tree and of this one, alternating: one line per pair."""
    passed = ["--messages", str(args.messages), "--rounds", str(args.rounds),
              "--size", str(args.size), "--client", args.client]
    passed += ["--newsletter"] if args.newsletter else []
    passed += ["--floor"] if args.floor else []
    passed += ["--stub", args.stub] if args.stub else []
    print(f"receive CPU ms/msg (server thread), best of {args.rounds} x {args.messages}, "
          f"client {args.client}; base {args.base}, branch {BRANCH}")
    for pair, load, old, new in alternate(__file__, args.base, passed, args.pairs):
        print(f"pair {pair} (load {load:.1f}): base {old['best']:.3f} "
              f"(median {old['median']:.3f}), branch {new['best']:.3f} "
              f"(median {new['median']:.3f}), {new['best'] / old['best']:.2f}x")


def _listed(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def main() -> None:
    parser = pair_parser(__doc__, default=600)
    parser.add_argument("--size", type=int, default=70000)
    if sys.argv[1:2] == ["--mta-send"]:  # the child of --client mta
        piped = _mta(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]).read_bytes())
        print("pipelined" if piped else "stepwise")
        return
    parser.add_argument("--client", choices=("source", "thread", "mta"),
                        default="source" if os.path.exists(SMTP_SOURCE) else "thread")
    parser.add_argument("--newsletter", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--stub", choices=("handler", "data"),
                        help="leave out handle_DATA (handler), and the canonical form (data)")
    parser.add_argument("--floor", action="store_true",
                        help="the bare asyncio.Protocol responder (Floor) instead of the server")
    args = parser.parse_args()
    if args.base is not None:
        _compare(args)
        return
    if args.stub:
        _stub(args.stub)
    body = _body(args.size, args.newsletter)
    factory, name = loop_factory("auto")  # the loop serve runs on
    with tempfile.TemporaryDirectory() as tmp:
        message_file = None
        if args.client == "source":
            message_file = Path(tmp) / "message.eml"
            message_file.write_bytes(body.replace(b"\r\n", b"\n"))  # smtp-source adds CR
        with asyncio.Runner(loop_factory=factory) as runner:
            results, mode = runner.run(measure(args.messages, args.rounds, body, message_file,
                                         args.profile, args.floor, args.client == "mta"))
    if args.json:
        print(json.dumps({"best": min(results), "median": statistics.median(results)}))
    elif results:
        sent = f" ({mode})" if mode else ""
        print(f"event loop: {name}; client: {args.client}{sent}; "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"receive CPU ms/msg (server thread): {_listed(results)} best {min(results):.3f}")


if __name__ == "__main__":
    main()
