"""The footer step: a visible preference link in the HTML and the text part of every copy.

Bulk-sender rules (Gmail, Yahoo 2024) want a visible way out in the body, not
only the ``List-Unsubscribe`` header, and our promise to recipients is one
click to *stop read-tracking* or *suspend delivery*.  :class:`Footer` is the
per-recipient :data:`~beacon_proxy.rewrite.step.CopyStep` that adds one short
sentence with the recipient's preference link, in the message's language
(``Content-Language``, then the configured default; texts are data files,
:mod:`~beacon_proxy.rewrite.footertext`).

Which parts: the message's *body* text parts only -- a top-level text/plain or
text/html; every text/plain and text/html alternative of a
multipart/alternative (and the root of a multipart/related alternative); the
first part of any other multipart, recursively.  Never an attachment, a
``message/rfc822`` part or another text type (calendar, AMP).

Like the beacon engine, the step never rebuilds the message: it parses the MIME
structure (:func:`~beacon_proxy.rewrite.mime.parse_message`), inserts the
footer into the *decoded* body of each chosen part (before the last real
``</body``: :mod:`~beacon_proxy.rewrite.bodyend`; at the end of a text part)
and writes only the touched encoded lines back
(:func:`~beacon_proxy.rewrite.transfer.apply_edits`:
a 70 KB quoted-printable newsletter is not re-encoded per recipient), so every
other byte leaves as it came.  The footer is encoded in the part's own charset
and transfer encoding; HTML gets ``&#NNNN;`` for what the charset lacks, a text
part falls back to English.

The relay's own delivery status notifications get none (they are not list
mail), nor does a copy without a preference link (``link`` returned None).
A part the step cannot modify safely gets no footer and the copy is otherwise
unchanged: broken MIME structure, signed or encrypted mail (the whole message:
a footer would break the signature), unknown charsets, UTF-7, HZ and
ISO-2022-KR (UTF-16/32 parts are edited through their exact UTF-8
transcoding), bytes that do not match a multi-byte label, a 7bit/8bit line
that would pass 998 octets, an ISO-2022-JP insertion point that is not in
ASCII state.  A bug here must never lose or hold mail: any exception leaves
the copy unchanged with ``{"skipped": "error"}`` in the report, logged once
per kind of error.

The report (relay log): ``{"html": 1, "text": 1, "language": "ja"}``, plus
``"text_language": "en"`` when a text part fell back to English and
``"not_modified": ["html: charset x-unknown", ...]`` for body parts left
alone; ``{"skipped": reason}`` when no part got a footer.

Cost: about 0.3-0.45 ms per copy of the 70 KB benchmark newsletter
(``bench/footer.py``): the MIME parse, the HTML part's transfer decode and the
search for ``</body`` each take about a third; nothing is cached across copies.

>>> from beacon_proxy.spool.envelope import Envelope
>>> from beacon_proxy.consent.policy import Policy
>>> from beacon_proxy.rewrite.step import Copy, Recipient
>>> footer = Footer(lambda r: "https://prefs.example.com/u/T0k3n")
>>> rcpt = Recipient(Envelope("Q1", "a@x.org", ("b@y.org",), received_at=0), "b@y.org",
...                  Policy.REFUSED)
>>> out = footer(Copy(b"Content-Type: text/plain\\r\\n\\r\\nHello\\r\\n"), rcpt)
>>> out.data.decode().splitlines()[2:]
['Hello', '', 'You receive this newsletter because you subscribed.', \
'Stop read-tracking or suspend delivery: https://prefs.example.com/u/T0k3n']
>>> out.report["footer"]
{'html': 0, 'text': 1, 'language': 'en'}
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from beacon_proxy.rewrite.bodyend import body_end
from beacon_proxy.rewrite.charsets import (
    UNKNOWN_CHARSET,
    effective_charset,
    encode_text,
    from_utf8,
    is_transcoded,
    looks_valid,
    reading,
    scan_view,
)
from beacon_proxy.rewrite.footertext import FooterText, FooterTexts
from beacon_proxy.rewrite.mime import (
    MESSAGE_TYPES,
    OPAQUE_TYPES,
    MimePart,
    MimeTree,
    header_fields,
    parse_message,
)
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.rewrite.transfer import (
    Edit,
    LineTooLongError,
    apply_edits,
    decode_indexed,
    line_ending,
)

__all__ = ["Footer", "FooterText", "FooterTexts", "body_parts"]

log = logging.getLogger(__name__)

#: An absolute http(s) URL of RFC 3986 characters (no space, quote, "<" or ">").
_LINK: Final = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]{1,2000}")
_BODY_TYPES: Final = frozenset({"text/plain", "text/html"})
_SIGNED_TYPES: Final = OPAQUE_TYPES | {"multipart/signed"}
#: Charsets a footer is never written in: no ASCII structure to insert into (and to find
#: ``</body`` in), or no way to know how clients read the bytes.
_UNWRITABLE: Final = frozenset({UNKNOWN_CHARSET, "replacement", "x-user-defined",
                                "iso-2022-kr"})
#: Charsets in which a byte below 0x80 can belong to a multi-byte character (a trail
#: byte, or ISO-2022 shifted text): only bytes valid in them say where ASCII really is.
#: Everywhere else an ASCII byte is always that character, whatever the other bytes.
_CHECKED: Final = frozenset({"shift_jis", "iso-2022-jp", "gbk", "gb18030", "big5", "euc-kr"})
_JIS_ROMAN: Final = b"\x1b(J"
_ASCII_ESCAPE: Final = b"\x1b(B"
_MAX_LOGGED: Final = 64  # kinds of error logged with a traceback (then only counted)


class _Skip(Exception):
    """This part (or message) gets no footer; the text is the reason for the report."""


@dataclass(frozen=True, slots=True)
class _Footers:
    """One copy's footers: the language chosen and the recipient's link in each form."""

    language: str
    texts: FooterText
    english: FooterText
    url: str

    def html(self) -> str:
        return self.texts.html.replace("{url}", html.escape(self.url, quote=True))

    def text(self, english: bool = False) -> str:
        return (self.english if english else self.texts).text.replace("{url}", self.url)


class Footer:
    """The copy step that adds the preference-link footer (see the module docstring).

    ``link(recipient)`` gives the recipient's absolute preference URL;
    ``default_language`` is used when ``Content-Language`` names no language
    ``texts`` has (:meth:`FooterTexts.load`, the shipped English and Japanese,
    by default).
    """

    def __init__(self, link: Callable[[Recipient], str | None], *, default_language: str = "en",
                 texts: FooterTexts | None = None) -> None:
        self.link = link
        self.texts = FooterTexts.load() if texts is None else texts
        if default_language not in self.texts.languages:
            raise ValueError(f"default_language {default_language!r} has no footer texts "
                             f"(known: {', '.join(sorted(self.texts.languages))})")
        self.default_language = default_language
        self._logged: set[str] = set()

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        if copy.held is not None:  # nothing to add to (run_steps stops before this)
            return copy
        if recipient.envelope.bounce_of is not None:  # the relay's own DSN: not list mail
            return copy
        try:
            data, report = self._render(copy.data, recipient)
        except Exception as exc:  # a footer bug must never lose or hold mail
            self._log_once(exc)
            data, report = copy.data, {"skipped": "error"}
        return Copy(data, {**copy.report, "footer": report}, held=None)

    def _log_once(self, exc: Exception) -> None:
        kind = f"{type(exc).__name__}: {str(exc)[:200]}"
        if kind in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(kind)
        log.error("footer step failed, copy sent without footer: %s", kind, exc_info=exc)

    def _render(self, data: bytes, recipient: Recipient) -> tuple[bytes, dict[str, Any]]:
        tree = parse_message(data)
        if tree.problems:
            return data, {"skipped": "broken MIME structure"}
        if _is_signed(tree):
            return data, {"skipped": "signed or encrypted"}
        parts = body_parts(tree)
        if not parts:
            return data, {"skipped": "no text body part"}
        url = self.link(recipient)
        if url is None:
            return data, {"skipped": "no preference link"}
        if not _LINK.fullmatch(url):
            raise ValueError(f"preference link is not an absolute http(s) URL: {url[:80]!r}")
        language = self.language(tree)
        footers = _Footers(language, self.texts.get(language), self.texts.get("en"), url)
        changes: list[tuple[MimePart, bytes]] = []
        counts = {"html": 0, "text": 0}
        skipped: list[str] = []
        english_text = False
        for part in parts:
            kind = "html" if part.content_type == "text/html" else "text"
            try:
                body, english = _with_footer(tree, part, kind, footers)
            except _Skip as skip:
                skipped.append(f"{kind}: {skip}")
                continue
            changes.append((part, body))
            counts[kind] += 1
            english_text |= english
        if not changes:
            return data, {"skipped": skipped[0]}
        report: dict[str, Any] = {**counts, "language": language}
        if english_text and language != "en":
            report["text_language"] = "en"
        if skipped:
            report["not_modified"] = skipped
        return tree.replace_bodies(changes), report

    def language(self, tree: MimeTree) -> str:
        """The footer language: the top-level ``Content-Language`` (its first tag's
        primary subtag, if there are texts for it), else the default."""
        header = tree.data[tree.root.header_span]
        if b"content-language" not in header.lower():
            return self.default_language
        for name, raw in header_fields(header):
            if name == "content-language":
                value = raw.split(b":", 1)[1].decode("latin-1")
                tag = re.sub(r"\s+", "", value).split(",")[0].lower()
                primary = tag.split("-")[0]
                return primary if primary in self.texts.languages else self.default_language
        return self.default_language


def _is_signed(tree: MimeTree) -> bool:
    """Whether the message (outside embedded messages) is signed or encrypted."""
    in_message: dict[tuple[int, ...], bool] = {}  # the part is, or is inside, message/*
    for part in tree.parts:
        embedded = bool(part.path) and in_message[part.path[:-1]]
        in_message[part.path] = embedded or part.content_type in MESSAGE_TYPES
        if not embedded and (part.content_type in _SIGNED_TYPES or part.signed):
            return True
    return False


def body_parts(tree: MimeTree) -> list[MimePart]:
    """The parts that make up the message's body text (see the module docstring)."""
    children: dict[tuple[int, ...], list[MimePart]] = {}
    for part in tree.parts[1:]:
        children.setdefault(part.path[:-1], []).append(part)
    out: list[MimePart] = []
    todo = [tree.root]
    while todo:  # each part is visited at most once: bounded by the parser's part limit
        part = todo.pop()
        if part.disposition == "attachment":
            continue
        if not part.is_multipart:
            if part.content_type in _BODY_TYPES:
                out.append(part)
            continue
        if part.content_type in MESSAGE_TYPES:
            continue
        kids = children.get(part.path, [])
        if part.content_type == "multipart/alternative":
            todo.extend(reversed(kids))
        elif kids:
            todo.append(kids[0])
    return out


def _with_footer(tree: MimeTree, part: MimePart, kind: str, footers: _Footers
                 ) -> tuple[bytes, bool]:
    """The part's new (encoded) body, and whether its text footer fell back to English."""
    if not part.modifiable:
        raise _Skip(part.reason or "not modifiable")
    if part.body_span.start == part.header_span.stop:  # a header, then the end
        raise _Skip("no body after the header")
    cte = part.transfer_encoding
    body = tree.body(part)
    decoded, index = decode_indexed(body, cte)
    charset = effective_charset(decoded, part.charset)
    if charset in _UNWRITABLE:
        raise _Skip(f"charset {charset}")
    if is_transcoded(charset):
        at, insert, english = _transcoded(tree, part, kind, footers, decoded, charset)
    else:
        if charset in _CHECKED and not looks_valid(decoded, charset):
            raise _Skip(f"bytes do not match charset {charset}")
        eol = _eol(tree, part, decoded)
        view = scan_view(decoded, charset) if kind == "html" else decoded
        at, insert, english = _insertion(decoded, view, kind, footers, charset, eol,
                                         seven_bit=cte == "7bit")
        insert = _in_ascii_state(decoded, at, charset, insert)
    try:
        new = apply_edits(body, "8bit" if cte == "binary" else cte, [Edit(at, at, insert)],
                          decoded=decoded, qp_index=index)
    except LineTooLongError as exc:
        raise _Skip("a line would pass 998 octets") from exc
    return new, english


def _eol(tree: MimeTree, part: MimePart, text: bytes) -> bytes:
    """The line ending of the part's text (of the message when the text has none)."""
    return line_ending(text) if b"\n" in text else line_ending(tree.data[part.header_span])


def _insertion(text: bytes, view: bytes, kind: str, footers: _Footers, charset: str,
               eol: bytes, *, seven_bit: bool) -> tuple[int, bytes, bool]:
    """Where the footer goes in ``text`` (an ASCII-compatible ``charset``), its bytes, and
    whether a text footer fell back to English."""
    if kind == "html":
        at = body_end(view)
        footer = encode_text(footers.html(), charset)
        if seven_bit and not footer.isascii():
            footer = encode_text(footers.html(), "us-ascii")  # the rest as &#NNNN;
        if at is None:  # no </body>: at the end, before the trailing line breaks
            return _text_end(text), eol + _lines(footer, eol), False
        # On a line of its own, unless the text before it on its line starts with "--":
        # cut off there, it could become a MIME boundary delimiter line.
        line = text.rfind(b"\n", 0, at) + 1
        lead = b"" if line == at or text.startswith(b"--", line) else eol
        return at, lead + _lines(footer, eol) + eol, False
    at = _text_end(text)
    english = False
    footer_bytes = _encoded_text(footers.text(), charset, seven_bit)
    if footer_bytes is None:
        english = True
        footer_bytes = _encoded_text(footers.text(english=True), charset, seven_bit)
        if footer_bytes is None:
            raise _Skip(f"charset {charset} cannot hold the footer")
    return at, (eol + eol if at else b"") + _lines(footer_bytes, eol), english


def _transcoded(tree: MimeTree, part: MimePart, kind: str, footers: _Footers, decoded: bytes,
                charset: str) -> tuple[int, bytes, bool]:
    """UTF-16/32: the insertion is found and built in the part's UTF-8 transcoding
    (:class:`~beacon_proxy.rewrite.charsets.Reading`) and turned back into the part's
    encoding, which for UTF-16/32 gives the original bytes around it exactly.  UTF-7
    and HZ have more than one encoding of a text: not modified."""
    if not charset.startswith(("utf-16", "utf-32")):
        raise _Skip(f"charset {charset}")
    read = reading(decoded, part.charset)
    if read is None or read.transcoded is None:
        raise _Skip(f"charset {charset}: clients read the bytes differently")
    if part.transfer_encoding == "7bit":
        raise _Skip(f"charset {charset} in 7bit")
    eol = _eol(tree, part, read.text)
    at, insert, english = _insertion(read.text, read.view, kind, footers, "utf-8", eol,
                                     seven_bit=False)
    offset = len(from_utf8(read.text[:at], read.transcoded, bom=read.bom))
    return offset, from_utf8(insert, read.transcoded, bom=False), english


def _text_end(decoded: bytes) -> int:
    """The end of the text, before its trailing line breaks."""
    return len(decoded.rstrip(b"\r\n"))


def _encoded_text(text: str, charset: str, seven_bit: bool) -> bytes | None:
    try:
        out = encode_text(text, charset, errors="strict")
    except UnicodeEncodeError:
        return None
    return None if seven_bit and not out.isascii() else out


def _lines(footer: bytes, eol: bytes) -> bytes:
    """The footer's line breaks (LF in the templates) as the part's."""
    return footer.replace(b"\n", eol) if eol != b"\n" else footer


def _in_ascii_state(decoded: bytes, at: int, charset: str, insert: bytes) -> bytes:
    """ISO-2022-JP: the inserted bytes start and end in ASCII (the codec does that per
    call); the text before ``at`` must be in ASCII or JIS-Roman state (restored after)."""
    if charset != "iso-2022-jp":
        return insert
    escape = decoded.rfind(b"\x1b", 0, at)
    if escape < 0 or decoded.startswith(_ASCII_ESCAPE, escape):
        return insert
    if decoded.startswith(_JIS_ROMAN, escape):
        return _ASCII_ESCAPE + insert + _JIS_ROMAN
    raise _Skip("the insertion point is not in ASCII state")
