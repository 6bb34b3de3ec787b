"""A raw SMTP client over asyncio streams, for protocol-level tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

__all__ = ["RawClient", "Reply"]

WAIT = 5.0


class Reply:
    """A possibly multi-line reply: ``code`` and the text of each line."""

    def __init__(self, code: int, lines: list[str]) -> None:
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        """The whole reply as sent, lines joined by newlines (without CRLF)."""
        return "\n".join(f"{self.code}{'-' if i < len(self.lines) - 1 else ' '}{line}"
                         for i, line in enumerate(self.lines))

    def __repr__(self) -> str:
        return f"Reply({self.text!r})"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, greet: bool = True, source: str = "127.0.0.1",
                      ) -> RawClient:
        """Connect to 127.0.0.1 from ``source`` (another loopback address: another client)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), WAIT)
        client = cls(reader, writer)
        if greet:
            banner = await client.reply()
            assert banner.code == 220, banner
        return client

    async def reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), WAIT)
            if not raw:
                raise ConnectionError(f"connection closed after {lines!r}")
            line = raw.decode("utf-8").rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), WAIT)

    async def cmd(self, line: str | bytes) -> Reply:
        raw = line.encode("utf-8") if isinstance(line, str) else line
        await self.send(raw + b"\r\n")
        return await self.reply()

    async def starttls(self, context: ssl.SSLContext) -> None:
        reply = await self.cmd("STARTTLS")
        assert reply.code == 220, reply
        await asyncio.wait_for(
            self.writer.start_tls(context, server_hostname="127.0.0.1"), WAIT)

    async def at_eof(self) -> bool:
        """True once the server has closed the connection (reads what is left)."""
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self.reader.read(), WAIT)
        return self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), WAIT)

    async def transaction(self, sender: str, recipients: list[str], data: bytes,
                          *, ehlo: str = "client.test") -> Reply:
        """EHLO (when given), MAIL, RCPT..., DATA; returns the reply to the final dot.

        ``data`` is sent as is: dot-stuffing and the final ``.`` are the caller's.
        """
        if ehlo:
            assert (await self.cmd(f"EHLO {ehlo}")).code == 250
        reply = await self.cmd(f"MAIL FROM:<{sender}>")
        assert reply.code == 250, reply
        for rcpt in recipients:
            reply = await self.cmd(f"RCPT TO:<{rcpt}>")
            assert reply.code == 250, reply
        reply = await self.cmd("DATA")
        assert reply.code == 354, reply
        await self.send(data)
        return await self.reply()
