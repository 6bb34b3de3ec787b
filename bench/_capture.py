"""The soak's upstream for ``bench/relay.py``: a minimal SMTP sink that timestamps arrivals.

    python bench/_capture.py --port 2527 --out arrivals.txt

smtp-sink cannot say when a given message arrived; this can.  For every
message received it appends one line to ``--out`` (flushed at once)::

    <X-Bench-Id> <CLOCK_MONOTONIC seconds at the end of DATA> <RCPTs> <DKIM-Signature fields>

``X-Bench-Id`` is the header the soak's sender puts in each message ("-" if
absent).  ``CLOCK_MONOTONIC`` is one clock for all processes on Linux, so the
sender compares it with its own accept times.  The protocol is the least an
SMTP client needs (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; PIPELINING,
8BITMIME and SMTPUTF8 offered; every command accepted), written on asyncio
streams so that the capture costs far less CPU than the relay it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import IO

__all__ = ["parse_message", "serve"]

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


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   out: IO[str]) -> None:
    writer.write(b"220 capture.bench ESMTP\r\n")
    rcpts = 0
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(_EHLO)
            elif verb == b"DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                first = await reader.readline()
                data = b"" if first == b".\r\n" else first + await reader.readuntil(b"\r\n.\r\n")
                arrived = time.monotonic()
                bench_id, dkim = parse_message(data)
                out.write(f"{bench_id} {arrived:.6f} {rcpts} {dkim}\n")
                out.flush()
                rcpts = 0
                writer.write(b"250 2.0.0 Ok: captured\r\n")
            elif verb == b"RCPT":
                rcpts += 1
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb in (b"MAIL", b"RSET"):
                rcpts = 0
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:  # HELO, NOOP and anything else
                writer.write(b"250 Ok\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(port: int, out: IO[str]) -> None:
    """Capture on 127.0.0.1:port until SIGTERM or SIGINT, one line per message to out."""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(lambda r, w: _session(r, w, out), "127.0.0.1", port,
                                        limit=_LIMIT)
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
    with open(a.out, "a", encoding="ascii") as out:
        asyncio.run(serve(a.port, out))


if __name__ == "__main__":
    main()
