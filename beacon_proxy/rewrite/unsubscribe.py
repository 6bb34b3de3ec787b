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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from beacon_proxy.headerfacts import header_block
from beacon_proxy.rewrite.mime import header_fields
from beacon_proxy.rewrite.step import Copy, Recipient, TraceHeader

__all__ = ["UnsubscribeAndTrace", "UnsubscribeHeaders", "unsubscribe_fields"]

_NAMES: Final = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


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
        # (header section, our field names found in it, the section without them);
        # one tuple, replaced whole: copies may be rendered in threads
        self._last: tuple[bytes, frozenset[str], bytes] = (b"", frozenset(), b"")

    def _read(self, block: bytes) -> tuple[frozenset[str], bytes]:
        """Our field names in ``block``, and ``block`` without those fields."""
        last = self._last
        if last[0] == block:
            return last[1], last[2]
        fields = header_fields(block) if b"list-unsubscribe" in block.lower() else []
        found = frozenset(name for name, _ in fields if name in _NAMES)
        rest = b"".join(raw for name, raw in fields if name not in _NAMES) if found else block
        self._last = (block, found, rest)
        return found, rest

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        data = copy.data
        head, tail, outcome = self.split(data, recipient)
        if head:  # else the copy's own bytes (kept, or no link)
            data = head + tail if isinstance(tail, bytes) else b"".join((head, tail))
        return Copy(data, {**copy.report, "unsubscribe": outcome})

    def split(self, data: bytes, recipient: Recipient) -> tuple[bytes, bytes | memoryview, str]:
        """What the step makes of ``data``, unjoined: the bytes it puts in front, the
        part of ``data`` that follows them (``data`` itself, or a view of it past the
        sender's header when fields of it were dropped) and the report's outcome.

        So a later step that also puts something in front (the trace header:
        :class:`UnsubscribeAndTrace`) joins the copy once."""
        block = header_block(data)
        found, rest = self._read(block)
        if self.sender == "keep" and "list-unsubscribe" in found:
            return b"", data, "kept"
        url = self.link(recipient)
        if url is None:
            return b"", data, "none"
        eol = b"\n" if block.endswith(b"\n") and not block.endswith(b"\r\n") else b"\r\n"
        ours = unsubscribe_fields(url, self.mailto, eol)
        if not found:
            return ours, data, "added"
        return ours + rest, memoryview(data)[len(block):], "replaced"


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
        head, tail, outcome = self.unsubscribe.split(copy.data, recipient)
        return Copy(b"".join((received, head, tail)), {**copy.report, "unsubscribe": outcome})
