"""A scripted SMTP server for the tests of the soak's load side (``bench/_smtpload.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

__all__ = ["Server", "run"]


class Server:
    """A scripted SMTP server on a free loopback port; records every line it reads."""

    def __init__(self, ehlo: bytes = b"250-fake\r\n250 8BITMIME\r\n") -> None:
        self.ehlo = ehlo
        self.lines: list[bytes] = []
        self.data: list[bytes] = []
        self.on_rcpt: dict[bytes, bytes] = {}  # RCPT line -> reply (b"": close the connection)
        self.hang_on: set[bytes] = set()  # RCPT lines answered never
        self.mail_seen = asyncio.Event()
        self.greeting = b"220 fake ESMTP\r\n"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0,
                                                  limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Python 3.12.1+: wait_closed waits for the connections too (a hung session's)
        for task in self._sessions:
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)
        writer.write(self.greeting)
        try:
            for _ in range(10_000):
                line = await reader.readline()
                if not line:
                    break
                self.lines.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(self.ehlo)
                elif verb == b"MAIL":
                    self.mail_seen.set()
                    if b"PIPELINING" not in self.ehlo:
                        writer.write(b"250 2.1.0 ok\r\n")
                    else:  # answer only once the whole group is in: proves the pipelining
                        group = [line, await reader.readline(), await reader.readline()]
                        self.lines += group[1:]
                        reply = self.on_rcpt.get(group[1], b"250 ok\r\n")
                        writer.write(b"250 ok\r\n" + reply
                                     + (b"354 go\r\n" if reply.startswith(b"2") else
                                        b"554 no valid recipients\r\n"))
                        if reply.startswith(b"2"):
                            self.data.append(await reader.readuntil(b"\r\n.\r\n"))
                            writer.write(b"250 2.0.0 queued\r\n")
                elif verb == b"RCPT":
                    if line in self.hang_on:
                        await asyncio.Event().wait()
                    reply = self.on_rcpt.get(line, b"250 2.1.5 ok\r\n")
                    if not reply:
                        break
                    writer.write(reply)
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    self.data.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()



def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):  # a hung test fails instead of hanging the suite
            await coro
    asyncio.run(bounded())
