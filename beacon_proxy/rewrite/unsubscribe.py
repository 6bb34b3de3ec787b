"""The unsubscribe headers step: ``List-Unsubscribe`` and ``List-Unsubscribe-Post``.

Every delivered copy carries exactly one ``List-Unsubscribe`` (RFC 2369) with
the recipient's HTTPS link first and, when ``[web] unsubscribe_mailto`` is
set, a ``mailto:`` after it, and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058), as Gmail and Yahoo require of bulk
senders::

    List-Unsubscribe: <https://prefs.example.com/u/AsOK...>,
     <mailto:unsubscribe@example.com?subject=unsubscribe>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

The values are built only from validated data: the configured public URL and
mailbox (checked at start) and a base64url token.  Nothing of the message
(``List-Id``, subject, addresses) is copied into them, so nothing can be
injected through it.

A sender's own ``List-Unsubscribe`` (every occurrence, with its
``List-Unsubscribe-Post``) is removed and ours put in its place with
``sender = "replace"`` (the default; the sender's one-click URL travels in our
token and the web side forwards a recipient's one-click to it, so both lists
agree), or kept as it is with ``sender = "keep"`` (and ours is not added:
there must be exactly one).  The fields are put at the top of the header
section; the rest of the message is unchanged.  The relay's own delivery
status notifications (bounces) are not list mail: ``app.copy_steps`` wraps
this step in :class:`~beacon_proxy.rewrite.step.ListMailOnly`.

A read-receipt request is read tracking too: a client that honours one (Outlook,
Thunderbird: asking the reader, or sending at once where so configured) tells the
sender when the message was opened.  A refused recipient's copy loses every such
field (:data:`RECEIPT_FIELDS`: ``Disposition-Notification-To`` of RFC 8098 with its
``Disposition-Notification-Options``, and the older ``Return-Receipt-To`` and
``X-Confirm-Reading-To`` that clients still honour), in either ``sender`` mode;
a granted recipient's keeps them.  The report then says ``"read_receipt":
"removed"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from beacon_proxy.consent.policy import Policy
from beacon_proxy.headerfacts import header_block
from beacon_proxy.rewrite.mime import header_fields
from beacon_proxy.rewrite.step import Copy, Recipient, TraceHeader

__all__ = ["RECEIPT_FIELDS", "UnsubscribeAndTrace", "UnsubscribeHeaders", "unsubscribe_fields"]

_NAMES: Final = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
RECEIPT_FIELDS: Final = frozenset({
    "disposition-notification-to", "disposition-notification-options",
    "return-receipt-to", "x-confirm-reading-to"})
"""Fields that ask the reader's client for a read receipt (lower case): not in a
refused recipient's copy."""
#: What a lower-cased header block holds when it may have one of RECEIPT_FIELDS.
_RECEIPT_HINTS: Final = (b"notification-", b"receipt-to", b"reading-to")


@dataclass(frozen=True, slots=True)
class _Read:
    """What the step reads of one header section: of our field names, those found
    in it; the section without them; and, when it asks for a read receipt, the
    section without those fields (``None``: it asks for none), with and without ours."""

    block: bytes
    found: frozenset[str]
    rest: bytes
    no_receipt: bytes | None = None
    rest_no_receipt: bytes | None = None


def unsubscribe_fields(url: str, mailto: str = "", eol: bytes = b"\r\n") -> bytes:
    """The two header fields for one copy (``url`` and ``mailto`` already validated).

    >>> unsubscribe_fields("https://p.example/u/T", "u@example.com").decode().splitlines()
    ['List-Unsubscribe: <https://p.example/u/T>,', ' <mailto:u@example.com?subject=unsubscribe>', \
'List-Unsubscribe-Post: List-Unsubscribe=One-Click']
    """
    text = f"List-Unsubscribe: <{url}>"
    if mailto:
        text += f",{eol.decode()} <mailto:{mailto}?subject=unsubscribe>"
    text += f"{eol.decode()}List-Unsubscribe-Post: List-Unsubscribe=One-Click{eol.decode()}"
    return text.encode("ascii")


class UnsubscribeHeaders:
    """The copy step adding the unsubscribe headers (see the module docstring).

    Every copy of a message comes with the same header section (the steps before
    this one change the body only), so what this step reads of it (which of our
    fields the sender put there, and the header without them) is kept for the last
    header section seen and reused for a copy whose header section has *equal* bytes
    (one comparison of some 2 KB instead of the split into fields, for each of 1000
    copies of a message); any other header is read afresh.  The copy is then made
    in one join instead of a slice of the body and a concatenation (two copies of
    70 KB).
    """

    def __init__(self, link: Callable[[Recipient], str | None], *, mailto: str = "",
                 sender: Literal["replace", "keep"] = "replace") -> None:
        self.link = link
        self.mailto = mailto
        self.sender = sender
        # the last header section read; replaced whole: copies may be rendered in threads
        self._last = _Read(b"", frozenset(), b"")

    def _read(self, block: bytes) -> _Read:
        """What the step needs of ``block`` (see :class:`_Read`)."""
        last = self._last
        if last.block == block:
            return last
        lower = block.lower()
        receipts = any(hint in lower for hint in _RECEIPT_HINTS)
        fields = header_fields(block) if receipts or b"list-unsubscribe" in lower else []
        found = frozenset(name for name, _ in fields if name in _NAMES)
        rest = b"".join(raw for name, raw in fields if name not in _NAMES) if found else block
        read = _Read(block, found, rest)
        if any(name in RECEIPT_FIELDS for name, _ in fields):
            read = _Read(block, found, rest,
                         b"".join(raw for name, raw in fields if name not in RECEIPT_FIELDS),
                         b"".join(raw for name, raw in fields
                                  if name not in RECEIPT_FIELDS and name not in _NAMES))
        self._last = read
        return read

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        data = copy.data
        head, tail, report = self.split(data, recipient)
        if head or tail is not data:  # else the copy's own bytes (kept, or no link)
            data = head + tail if isinstance(tail, bytes) else b"".join((head, tail))
        return Copy(data, {**copy.report, **report})

    def split(self, data: bytes, recipient: Recipient
              ) -> tuple[bytes, bytes | memoryview, dict[str, str]]:
        """What the step makes of ``data``, unjoined: the bytes it puts in front, the
        part of ``data`` that follows them (``data`` itself, or a view of it past the
        sender's header when fields of it were dropped) and the report's entries
        (``unsubscribe``'s outcome; ``read_receipt`` when a request was removed).

        So a later step that also puts something in front (the trace header:
        :class:`UnsubscribeAndTrace`) joins the copy once."""
        block = header_block(data)
        read = self._read(block)
        # a refused recipient's copy asks for no read receipt (see the module docstring)
        strip = read.no_receipt is not None and recipient.policy is Policy.REFUSED
        report = {"read_receipt": "removed"} if strip else {}
        if self.sender == "keep" and "list-unsubscribe" in read.found:
            report["unsubscribe"] = "kept"
            return self._without(read.no_receipt if strip else None, block, data, report)
        url = self.link(recipient)
        if url is None:
            report["unsubscribe"] = "none"
            return self._without(read.no_receipt if strip else None, block, data, report)
        eol = b"\n" if block.endswith(b"\n") and not block.endswith(b"\r\n") else b"\r\n"
        ours = unsubscribe_fields(url, self.mailto, eol)
        rest = read.rest_no_receipt if strip else read.rest
        if rest is block:  # none of the sender's fields dropped
            report["unsubscribe"] = "added"
            return ours, data, report
        report["unsubscribe"] = "replaced" if read.found else "added"
        assert rest is not None
        return ours + rest, memoryview(data)[len(block):], report

    @staticmethod
    def _without(header: bytes | None, block: bytes, data: bytes, report: dict[str, str]
                 ) -> tuple[bytes, bytes | memoryview, dict[str, str]]:
        """``data`` unchanged (``header`` None), or with ``header`` in place of ``block``."""
        if header is None:
            return b"", data, report
        return header, memoryview(data)[len(block):], report


class UnsubscribeAndTrace:
    """The unsubscribe headers step (for list mail only, as
    :class:`~beacon_proxy.rewrite.step.ListMailOnly` would run it), then the trace
    header step, as one step: the same copy, joined once.

    Run one after the other, each built a new copy of the whole message (some 70 KB
    each, for a few hundred bytes in front) and a new :class:`Copy`; here the
    ``Received`` field, our fields and the rest of the message are joined together.
    Like the two steps, the copy keeps the report (with ``unsubscribe`` for list mail)
    and nothing else (``crlf``, ``dots``, ``spliced``: not proven for the new bytes).
    """

    def __init__(self, unsubscribe: UnsubscribeHeaders, trace: TraceHeader) -> None:
        self.unsubscribe = unsubscribe
        self.trace = trace

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        received = self.trace.header(recipient)
        if recipient.envelope.bounce_of is not None:  # the relay's own bounce: no fields
            return Copy(received + copy.data, copy.report)
        head, tail, report = self.unsubscribe.split(copy.data, recipient)
        return Copy(b"".join((received, head, tail)), {**copy.report, **report})
