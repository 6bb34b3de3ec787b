"""Delivery into a local Maildir (the outbox used when no upstream is configured).

Each copy becomes one file holding the bytes given - the final message with
CRLF line endings, as it would go over the wire (line endings are not converted
to LF) - below the two fields an MTA's local delivery adds (Postfix's
``local``, RFC 5321 4.4): ``Return-Path: <sender>`` (``<>`` for a bounce) and
``Delivered-To: recipient``, so the envelope is not lost.  They go on top, after
any DKIM signature was made: a signature covers neither (they are not in its
``h=``, and fields added above it do not change what it signed), as with every
final MTA that adds them.

Durability follows the Maildir spec and the rest of the relay: write
``tmp/<unique>``, flush and fsync it, rename it to ``new/<unique>``, fsync
``new/``.  Unique names are ``<seconds>.M<usec>P<pid>Q<counter>.<host>``, the
counter shared by every courier in the process.  All file I/O runs in a
thread.  A disk error is a temporary ``451 4.3.0``, never a permanent one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from pathlib import Path

from beacon_proxy.deliver.courier import Outcome, Result
from beacon_proxy.spool.queue import fsync_dir

__all__ = ["MaildirCourier", "envelope_fields"]

_deliveries = itertools.count(1)  # Q<n>: deliveries by this process, all couriers
_SUBDIRS = ("tmp", "new", "cur")


def _sanitised_hostname() -> str:
    """The host name with ``/`` and ``:`` escaped as the Maildir spec asks."""
    name = socket.gethostname() or "localhost"
    return name.replace("/", "\\057").replace(":", "\\072")


_HOST = _sanitised_hostname()


def _unique_name(now_ns: int | None = None) -> str:
    """A Maildir file name no other delivery on this host uses.

    >>> _unique_name(1_700_000_000_250_000_000).startswith("1700000000.M250000P")
    True
    """
    sec, usec = divmod((time.time_ns() if now_ns is None else now_ns) // 1000, 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_deliveries)}.{_HOST}"


def envelope_fields(sender: str, recipient: str) -> bytes:
    """The fields a local delivery puts on top of a message (CRLF, UTF-8 for SMTPUTF8
    addresses; a line break in an address, which the SMTP side never accepts, is dropped).

    >>> envelope_fields("", "ann@example.org")
    b'Return-Path: <>\\r\\nDelivered-To: ann@example.org\\r\\n'
    """
    def one_line(text: str) -> bytes:
        return text.replace("\r", "").replace("\n", "").encode("utf-8", "surrogateescape")

    return (b"Return-Path: <" + one_line(sender) + b">\r\nDelivered-To: " + one_line(recipient)
            + b"\r\n")


class MaildirCourier:
    """Delivers each copy as one file in the Maildir at ``path``.

    ``tmp/``, ``new/`` and ``cur/`` are created on first use.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._ready = False  # the three directories exist

    @property
    def path(self) -> Path:
        return self._path

    async def deliver(self, sender: str, recipient: str, data: bytes, *,
                      smtputf8: bool = False, body_type: str | None = None,
                      crlf: bool = False, dots: tuple[int, ...] | None = None) -> Result:
        """Store ``data`` as a new message, below ``Return-Path`` and ``Delivered-To``."""
        name = _unique_name()
        try:
            await asyncio.to_thread(self._write, name, envelope_fields(sender, recipient) + data)
        except OSError as exc:
            self._ready = False  # re-check the directories next time
            reason = exc.strerror or str(exc) or type(exc).__name__
            return Result(Outcome.TEMPORARY, 451, f"451 4.3.0 maildir write failed: {reason}",
                          "4.3.0", "maildir")
        return Result(Outcome.DELIVERED, 250, "250 2.0.0 delivered to maildir", "2.0.0",
                      "maildir")

    async def close(self) -> None:
        """Nothing to release."""

    # -- in a worker thread --------------------------------------------------

    def _write(self, name: str, data: bytes) -> None:
        if not self._ready:
            self._make_dirs()
        tmp = self._path / "tmp" / name
        new_dir = self._path / "new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, new_dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        fsync_dir(new_dir)

    def _make_dirs(self) -> None:
        created = False
        for sub in _SUBDIRS:
            d = self._path / sub
            if not d.is_dir():
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                created = True
        if created:
            fsync_dir(self._path)
        self._ready = True


