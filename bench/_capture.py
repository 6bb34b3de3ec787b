"""The soak's upstream for ``bench/relay.py``: a minimal SMTP sink that timestamps arrivals.

    python bench/_capture.py --port 2527 --out arrivals.txt

smtp-sink cannot say when a given message arrived; this can.  For every
message received it appends one line to ``--out`` (flushed at once)::

    <X-Bench-Id> <CLOCK_MONOTONIC seconds at the end of DATA> <RCPTs> <DKIM-Signature fields>

``X-Bench-Id`` is the header the soak's sender puts in each message ("-" if
absent).  ``CLOCK_MONOTONIC`` is one clock for all processes on Linux, so the
sender compares it with its own accept times.  The protocol is the least an
SMTP client needs (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; PIPELINING,
8BITMIME and SMTPUTF8 offered; every command accepted), written as an asyncio
protocol (on uvloop when installed) so that the capture costs far less CPU
than the relay it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import time
from collections.abc import Callable
from typing import IO, cast

__all__ = ["Session", "parse_message", "serve"]

_LIMIT = 64 * 1024 * 1024  # the longest message (and line) read: far above the benchmark's
_EHLO = (b"250-capture.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 67108864\r\n"
         b"250 SMTPUTF8\r\n")


def parse_message(data: bytes) -> tuple[str, int]:
    """(X-Bench-Id or "-", number of DKIM-Signature fields) from a message's header."""
    end = data.find(b"\r\n\r\n")
    header = b"\r\n" + (data[:end] if end >= 0 else data)
    dkim = header.count(b"\r\nDKIM-Signature:")
    at = header.find(b"\r\nX-Bench-Id:")
    if at < 0:
        return "-", dkim
    stop = header.find(b"\r\n", at + 2)
    value = header[at + len(b"\r\nX-Bench-Id:"):stop if stop > 0 else len(header)]
    return value.strip().decode("ascii", "replace") or "-", dkim


class Session(asyncio.Protocol):
    """One SMTP connection, parsed from the bytes as they arrive (no stream reader, no task).

    Commands are lines; the replies to the commands of one chunk (a pipelined
    MAIL, RCPT, DATA) go out in one write.  After ``DATA`` the message runs to
    the first ``CRLF . CRLF`` (or is empty when ``.`` CRLF comes first); it is
    searched for from where the last search stopped, so a message that comes in
    many chunks costs one pass.  A line or message over ``limit`` closes the
    connection.
    """

    def __init__(self, out: IO[str], limit: int = _LIMIT) -> None:
        self._out = out
        self._limit = limit
        self._buf = bytearray()
        self._in_data = False
        self._scan = 0  # where the search for the end of DATA goes on
        self._rcpts = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(b"220 capture.bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._buf += data
        replies: list[bytes] = []
        while self._buf:  # every pass consumes a line or a message, or waits for more
            if self._in_data:
                if not self._message():
                    break
                replies.append(b"250 2.0.0 Ok: captured\r\n")
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[:end + 1])
            del self._buf[:end + 1]
            reply = self._command(line)
            replies.append(reply)
            if line[:4].upper() == b"QUIT":
                transport.write(b"".join(replies))
                transport.close()
                return
        if len(self._buf) > self._limit:
            replies.append(b"552 5.3.4 Too long\r\n")
            transport.write(b"".join(replies))
            transport.close()
            return
        if replies:
            transport.write(b"".join(replies))

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return _EHLO
        if verb == b"DATA":
            self._in_data, self._scan = True, 0
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"RCPT":
            self._rcpts += 1
            return b"250 2.1.5 Ok\r\n"
        if verb in (b"MAIL", b"RSET"):
            self._rcpts = 0
            return b"250 2.0.0 Ok\r\n"
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n"
        return b"250 Ok\r\n"  # HELO, NOOP and anything else

    def _message(self) -> bool:
        """Take one whole message off the buffer and log it; False if it is not all here."""
        buf = self._buf
        if buf[:3] == b".\r\n":
            data, used = b"", 3
        else:
            end = buf.find(b"\r\n.\r\n", self._scan)
            if end < 0:
                self._scan = max(0, len(buf) - 4)
                return False
            head = buf.find(b"\r\n\r\n", 0, end + 2)  # only the header is parsed: copy it alone
            data, used = bytes(buf[:head if head >= 0 else end + 2]), end + 5
        del buf[:used]
        arrived = time.monotonic()
        bench_id, dkim = parse_message(data)
        self._out.write(f"{bench_id} {arrived:.6f} {self._rcpts} {dkim}\n")
        self._out.flush()
        self._in_data, self._rcpts = False, 0
        return True


async def serve(port: int, out: IO[str]) -> None:
    """Capture on 127.0.0.1:port until SIGTERM or SIGINT, one line per message to out."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Session(out), "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    try:  # uvloop when installed (the relay's extra): the cheaper loop
        factory: Callable[[], asyncio.AbstractEventLoop] | None = (
            importlib.import_module("uvloop").new_event_loop)
    except ImportError:
        factory = None
    with open(a.out, "a", encoding="ascii") as out, asyncio.Runner(loop_factory=factory) as run:
        run.run(serve(a.port, out))


if __name__ == "__main__":
    main()
