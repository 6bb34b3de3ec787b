"""The MIME structure of a raw message as byte offsets: parse once, splice bodies back.

The message is never rebuilt with ``email``'s generator: a rewritten copy is
the original bytes with only the modified parts' bodies replaced, so headers
and every other part leave byte-identical.

>>> msg = (b"Content-Type: multipart/alternative; boundary=b\\r\\n\\r\\n"
...        b"--b\\r\\nContent-Type: text/plain\\r\\n\\r\\nhi\\r\\n"
...        b"--b\\r\\nContent-Type: text/html; charset=UTF-8\\r\\n\\r\\n<p>hi</p>\\r\\n--b--\\r\\n")
>>> tree = parse_message(msg)
>>> [(p.path, p.content_type) for p in tree.parts]
[((), 'multipart/alternative'), ((0,), 'text/plain'), ((1,), 'text/html')]
>>> html = tree.html_parts()[0]
>>> msg[html.body_span], html.charset, tree.problems
(b'<p>hi</p>', 'utf-8', [])
>>> tree.replace_bodies([(html, b"<p>bye</p>")])[-23:]
b'\\r\\n\\r\\n<p>bye</p>\\r\\n--b--\\r\\n'

Spans follow RFC 2046: the line break before a boundary line belongs to the
boundary, so a body span never ends with it.  ``header_span`` runs from the
part's first byte to the blank line (exclusive).  Parsing never raises.

Parsing is as lenient as the most lenient mail client: a multipart whose
closing boundary is missing ends at the end of the message (or of its
enclosing part), which is noted in ``notes`` and changes nothing else; an
embedded message (any ``message/*`` part: ``rfc822``, ``global``, ``news``,
``partial``, ...; see :func:`is_message`) in 7bit/8bit/binary is parsed like a
top-level message, its root a child of the ``message/*`` part, so a forwarded
newsletter is rewritten like any other.  Structure a client could read in
more than one way (a boundary that never appears, a missing blank line, a
reused boundary) and the limits are listed in ``problems`` and make the parts
they affect, and the tree, not modifiable: the caller then falls back.  Work
is linear: one ``bytes.find`` pass per boundary over its multipart's body, so
a few passes in all (at most ``max_depth``).
"""

from __future__ import annotations

import email.header
import email.message
import email.policy
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Final
from urllib.parse import unquote_to_bytes

from beacon_proxy.rewrite.charsets import browsers_read, is_supported, normalise_charset
from beacon_proxy.rewrite.transfer import ENCODINGS, encode_whole, line_ending, normalise_cte

__all__ = ["HTML_TYPES", "MAX_DEPTH", "MAX_PARTS", "OPAQUE_TYPES", "PKCS7_TYPES",
           "RENDERED_EXTENSIONS", "RENDERED_TYPES", "MimePart", "MimeTree", "Written",
           "header_fields", "is_ambiguous", "is_message", "parse_message", "reencode",
           "reparse_shifted", "respliced", "with_transfer_encoding"]

#: The parser's default limits, nesting levels and parts: past either the tree has a
#: problem and nothing in it is modified.  A result derived for a message parsed again
#: (:func:`reparse_shifted`) holds only under the same limits: one source for them.
MAX_DEPTH: Final = 100
MAX_PARTS: Final = 1000
HTML_TYPES: Final = frozenset({"text/html", "text/x-amp-html", "text/watch-html"})
"""Leaf types :meth:`MimeTree.html_parts` returns: HTML, AMP for email, and the HTML
Apple Mail shows on a watch (``text/watch-html``, an alternative of its own)."""

RENDERED_TYPES: Final = HTML_TYPES | {"application/xhtml+xml", "text/css"}
"""Leaf types a mail client may render as HTML or CSS, and so load from (fallback scope)."""

PKCS7_TYPES: Final = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
"""Opaque S/MIME: signed or encrypted content inside a DER blob."""

OPAQUE_TYPES: Final = PKCS7_TYPES | {"multipart/encrypted"}
"""Content a client decrypts (or unpacks) and renders, which no scan here can see into."""



def is_message(content_type: str) -> bool:
    """Whether a part of this type holds an embedded message: every ``message/*``.

    Python's ``email`` parses each one (``message/news``, ``message/partial``,
    ``message/external-body``, ``message/x-anything``, ...) as a message, and clients
    show what is inside; ``message/delivery-status`` (header blocks to ``email``) is
    harmless read as a message.  The parser, the engine, the fallback and the footer
    all ask this one question.

    >>> is_message("message/rfc822"), is_message("message/news"), is_message("text/html")
    (True, True, False)
    """
    return content_type.startswith("message/")


def is_ambiguous(problem: str) -> bool:
    """Whether a tree problem is one no single copy is safe for (clients read the
    message in ways that cannot all be neutralised at once: the fallback holds).

    >>> is_ambiguous("message: ambiguous Content-Type parameter 'boundary'")
    True
    >>> is_ambiguous("part 2: boundary never found")
    False
    """
    return problem.startswith("ambiguous") or ": ambiguous " in problem

_HEADERS: Final = re.compile(  # header field lines (and their folds), never a "--" line
    rb"(?:(?!--)[!-9;-~]+[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)*"
)
#: A Content-Type field at a line's start (in a message/delivery-status body).
_FIELD_CONTENT_TYPE: Final = re.compile(rb"^content-type[ \t]*:", re.I | re.M)
#: A Content-Type that makes a part more than plain text to Python's email.
_TYPED_PART: Final = re.compile(rb"^content-type[ \t]*+:[ \t]*+(?!text/plain\b)", re.I | re.M)
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
_BLANK_LINES: Final = re.compile(rb"[ \t\r\n]*")
#: Sun's attachment name field, which Thunderbird types a part by.
_SUN_NAME: Final = re.compile(rb"\nx-sun-data-name[ \t]*:([^\r\n]*)")  # in a lowered block
#: What no preamble or epilogue holds but a part: a tag (ASCII markup) or a Content- field.
_OUTSIDE_PARTS: Final = re.compile(
    # a tag, a comment, a declaration; not an autolink (<https://...>, <list@host>: no
    # blank, quote or "=" in it, so no attribute); a field that types a part
    rb"<(?![a-z][\w+.-]*:[^\s<>\"'=]*>|[^\s<>\"'=/]+@[^\s<>\"'=/]+>)[!/?a-z]"
    rb"|^[ \t]*content-(?:type|disposition|name)[ \t]*:", re.I | re.M)
_PADDING: Final = re.compile(rb"[ \t\r]*(?:\n|\Z)")  # after "--boundary" or "--boundary--"
#: A line Python's email reads as part of a header block (feedparser's headerRE): where
#: the parser's block ends at such a line, the two readers take different fields.
_PY_HEADER_LINE: Final = re.compile(rb"From |[!-9;-~]*:|[\t ]")
#: A field name with blanks before its colon (obsolete syntax): Python's email ends the
#: header block there, the parser (as other clients) reads on.  Matched from a line's
#: start up to a " :" or "\t:" found with ``bytes.find`` (_blank_before_colon).
_NAME_THEN_BLANKS: Final = re.compile(rb"[!-9;-~]++[ \t]++")
#: What Python's email decodes a body for: the field's value exactly (compat32 compares
#: it lower-cased, leading blanks stripped, trailing and folded ones kept).
_DECODED_CTE: Final = frozenset({"base64", "quoted-printable"})
_TOKEN: Final = re.compile(r'"((?:[^"\\]|\\.)*)("?)|;|[^;"]+', re.S)
_COMMENT: Final = re.compile(r"(?:^|(?<=\s))\((?:[^()\\]|\\.)*\)")
_SECTION: Final = re.compile(r"([^*]+)(?:\*(\d+))?(\*?)")
#: The parameters that change what a client renders (the split, the text's charset):
#: any form of them that readers take in different ways makes the part ambiguous.
_READ_ALIKE: Final = frozenset({"boundary", "charset"})
_SECTION_NUMBER: Final = re.compile(r"0|[1-9][0-9]?")  # RFC 2231 sections every reader takes
_ENCODED_WORD: Final = re.compile(r"=\?[^?]*\?[bq]\?", re.I)  # decoded inside quotes by some
#: An unquoted value readers cut in different places (Python's email, policy.default:
#: at a tspecial or whitespace; compat32 and the parser here: at ";").
_IRREGULAR_UNQUOTED: Final = re.compile(r'[\s\\"()]')
_TOKEN_CHARS: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]*")  # RFC 2045 token
_AMBIGUOUS: Final = "\x00ambiguous"  # in _params' mapping: _READ_ALIKE names read differently
_POLICY_BOUNDARY: Final = "\x00policy-default-boundary"  # in _params' mapping: its other one
#: One boundary parameter every reader reads alike: quoted without escapes, or a plain token.
_PLAIN_BOUNDARY: Final = re.compile(
    r'(?:^|;)[\t ]*boundary[\t ]*=[\t ]*(?:"[^"\\\r\n]*"|[A-Za-z0-9_.+-]+)[\t ]*(?:;|$)',
    re.IGNORECASE)
_TYPE: Final = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
#: The type as the most lenient client reads it: Thunderbird stops at ";", "," or
#: whitespace ("text/html charset=utf-8" is HTML there), others allow space around "/".
_LENIENT_TYPE: Final = re.compile(r"([a-z0-9!#$&^_.+-]+)\s*/\s*([a-z0-9!#$&^_.+-]+)")
_CONFLICT: Final = "\x00conflict"  # in _params' mapping: name= and name*= disagree
#: Bytes a client may strip from the end of a delimiter line (C isspace, NUL): a line
#: "--boundary" followed only by these is a delimiter to some clients and not to others.
_LOOSE_PADDING: Final = re.compile(rb"[\x00-\x20]*(?:\n|\Z)")
_BARE_CR: Final = re.compile(rb"\r(?!\n)")
#: The same search as :data:`_BARE_CR` (with ``data.endswith(b"\r")``), without a
#: look-ahead entered at every CR of a CRLF message (35 us for 73 KB, now 27).
_CR_NOT_LF: Final = re.compile(rb"\r[^\n]")
_FOLD: Final = re.compile(r"\r?\n")
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.S)
_TYPING: Final = frozenset({"content-type", "content-transfer-encoding"})
_WANTED: Final = frozenset({"content-type", "content-transfer-encoding", "content-disposition",
                            "content-name"})
_MAX_VALUE: Final = 8192
_MAX_CONTENT_FIELDS: Final = 100  # Content-* fields looked at per header block
_NEVER: Final = 1 << 62
_IDENTITY: Final = frozenset({"7bit", "8bit", "binary"})


@dataclass(frozen=True, slots=True)
class MimePart:
    """One part; spans are ``slice`` objects into the original message bytes."""

    path: tuple[int, ...]  # child indexes from the root: () is the message itself
    header_span: slice
    body_span: slice
    content_type: str  # "text/html"; "text/plain" when absent or invalid
    charset: str  # normalised (charsets.normalise_charset): "us-ascii" when absent
    transfer_encoding: str  # normalised; an unknown name is kept (and not modifiable)
    disposition: str | None  # "inline", "attachment", ... or None when absent
    boundary: bytes | None  # multipart only
    is_multipart: bool  # a container: multipart/*, or an embedded message/*
    signed: bool  # inside multipart/signed: a change breaks the signature
    modifiable: bool  # the body may be replaced (the caller still decides for signed)
    reason: str | None  # why not modifiable, None when it is
    label: str | None = None  # the charset parameter as written (at most 100 characters)

    @property
    def depth(self) -> int:
        return len(self.path)

    @property
    def charset_label(self) -> str:
        """What clients read the text by: the charset parameter as written (browsers
        know only some spellings, :func:`~.charsets.browsers_read`), else the default."""
        return self.charset if self.label is None else self.label


@dataclass(frozen=True, slots=True)
class MimeTree:
    """All parts in document order (the root first) and what was wrong with the structure."""

    data: bytes = field(repr=False)
    parts: tuple[MimePart, ...]
    problems: list[str]
    modifiable: bool  # no structural problem at all
    notes: tuple[str, ...] = ()  # what was repaired leniently (a missing closing boundary)
    #: (start, stop) of every multipart's preamble and epilogue that was read (parts found)
    outside: tuple[tuple[int, int], ...] = ()

    @property
    def root(self) -> MimePart:
        return self.parts[0]

    def leaves(self) -> list[MimePart]:
        return [p for p in self.parts if not p.is_multipart]

    def html_parts(self) -> list[MimePart]:
        """text/html and text/x-amp-html leaves (check ``modifiable``).

        Attachments too: several clients show an HTML attachment inline, and load from it.
        """
        return [p for p in self.leaves() if p.content_type in HTML_TYPES]

    def body(self, part: MimePart) -> bytes:
        return self.data[part.body_span]

    def replace_bodies(self, changes: Iterable[tuple[MimePart, bytes]]) -> bytes:
        """The message with these parts' bodies replaced and every other byte kept."""
        return self.replace_parts((part, body, None) for part, body in changes)

    def replace_parts(self, changes: Iterable[tuple[MimePart, bytes, bytes | None]]) -> bytes:
        """Like :meth:`replace_bodies`; a header block given (not None) replaces the part's
        header fields too (the blank line after them is kept)."""
        pieces: list[bytes | memoryview] = []
        data = memoryview(self.data)  # joined without copying each unchanged stretch first
        pos = 0
        for part, body, header in sorted(changes, key=lambda change: change[0].body_span.start):
            if not part.modifiable or part.is_multipart:
                raise ValueError(f"{_where(part.path)} is not modifiable: {part.reason}")
            start = part.body_span.start if header is None else part.header_span.start
            if start < pos:
                raise ValueError("overlapping parts")
            pieces.append(data[pos:start])
            if header is not None:
                pieces += (header, data[part.header_span.stop : part.body_span.start])
            pieces.append(body)
            pos = part.body_span.stop
        pieces.append(data[pos:])
        return b"".join(pieces)


def header_fields(block: bytes) -> list[tuple[str, bytes]]:
    """A header block split into fields: (lower-cased name, the field's raw lines).

    Continuation lines stay with their field; joining the raw lines gives ``block``.

    >>> header_fields(b"A: 1\\r\\nB: 2\\r\\n  more\\r\\n")
    [('a', b'A: 1\\r\\n'), ('b', b'B: 2\\r\\n  more\\r\\n')]
    """
    fields: list[tuple[str, list[bytes]]] = []
    for line in block.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1][1].append(line)  # a continuation line (joined once, at the end)
        else:
            fields.append((line.split(b":", 1)[0].strip().lower().decode("latin-1"), [line]))
    return [(name, b"".join(lines)) for name, lines in fields]


def with_transfer_encoding(block: bytes, cte: str, eol: bytes = b"\r\n") -> bytes:
    """A header block whose Content-Transfer-Encoding is ``cte`` (replaced, or added last).

    >>> header = b"Content-Type: text/html\\r\\nContent-Transfer-Encoding: 7bit\\r\\n"
    >>> with_transfer_encoding(header, "quoted-printable")
    b'Content-Type: text/html\\r\\nContent-Transfer-Encoding: quoted-printable\\r\\n'
    """
    kept = [raw for name, raw in header_fields(block) if name != "content-transfer-encoding"]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += eol
    return b"".join(kept) + b"Content-Transfer-Encoding: " + cte.encode("ascii") + eol


def reencode(tree: MimeTree, part: MimePart, decoded: bytes, cte: str
             ) -> tuple[bytes, bytes | None]:
    """A part's new body, ``decoded`` encoded whole in ``cte`` (or in quoted-printable
    when a 7bit/8bit line would pass 998 octets), and its new header block when the
    encoding differs from the part's (None when the header stays)."""
    original = tree.body(part)
    eol = line_ending(tree.data[part.header_span] or original)
    body, used = encode_whole(decoded, cte, eol)
    if used in ("base64", "quoted-printable") and original.endswith(b"\n") and not (
            body.endswith(b"\n")):
        body += eol  # as the original: the line ending before a boundary is the boundary's
    if used == part.transfer_encoding:
        return body, None
    return body, with_transfer_encoding(tree.data[part.header_span], used, eol)


def parse_message(data: bytes, *, max_depth: int = MAX_DEPTH, max_parts: int = MAX_PARTS
                  ) -> MimeTree:
    """Parse the MIME structure of a raw message (CRLF or LF line ends); never raises."""
    try:
        return _Parser(data, max_depth, max(1, max_parts)).run()
    except Exception as exc:  # a parser bug must not cost a message: deliver it untouched
        span = slice(0, len(data))
        root = MimePart((), span, slice(len(data), len(data)), "text/plain", "us-ascii", "7bit",
                        None, None, False, False, False, "unparseable")
        return MimeTree(data, (root,), [f"internal parser error: {exc!r}"], False)


def reparse_shifted(old: MimeTree, data: bytes, split: int, *, max_depth: int = MAX_DEPTH,
                    max_parts: int = MAX_PARTS) -> MimeTree | None:
    """The tree of ``data`` when it is ``old``'s tree shifted by the change in the header's
    length: ``data`` has ``old``'s body (``data[split:]``) under another header.  None
    unless proven (then parse ``data`` and do the work afresh).

    The proof behind every "a known body under another header" derivation
    (:meth:`Engine.rebase <beacon_proxy.rewrite.engine.Engine.rebase>`,
    :func:`~beacon_proxy.rewrite.footerplan.rebase_plan`):

    * the bodies are compared byte for byte (not a digest), and ``old``'s body starts
      at its root's body (``len(data) - split`` bytes from the end);
    * ``data`` is parsed again by :func:`parse_message` with the limits ``old`` was
      parsed with (the caller's to keep equal), and its tree must be ``old``'s shifted
      by ``delta`` (the difference of the headers' lengths): every :class:`MimePart`
      field equal but the spans, which are the old ones plus ``delta`` (the root's
      header span excepted: it is the header), the root's body starting at ``split``,
      every other part's spans inside the body, and the same problems, notes and
      ``modifiable``.  So every part reads the same bytes with the same type, charset,
      transfer encoding, disposition, boundary and signed-ness.

    What a caller reads from the header *bytes* beyond the parse (a part's
    ``Content-Base``, ``Content-Language``, the line ending of the root's header) is
    its own to read again and compare.
    """
    old_data = old.data
    body = len(data) - split
    old_split = len(old_data) - body
    if not (0 < split < len(data) and 0 < old_split < len(old_data)) \
            or old.root.body_span.start != old_split \
            or not old_data.endswith(memoryview(data)[split:]):  # equal bodies, compared
        return None
    tree = parse_message(data, max_depth=max_depth, max_parts=max_parts)
    delta = split - old_split
    if (len(tree.parts) != len(old.parts) or tree.problems != old.problems
            or tree.notes != old.notes or tree.modifiable != old.modifiable
            or tree.root.body_span != slice(split, len(data))
            or tree.root.header_span.stop > split):
        return None
    for was, now in zip(old.parts, tree.parts, strict=True):
        header = (now.header_span if not was.path
                  else slice(was.header_span.start + delta, was.header_span.stop + delta))
        body_span = slice(was.body_span.start + delta, was.body_span.stop + delta)
        if now != replace(was, header_span=header, body_span=body_span):
            return None
        if was.path and header.start < split:  # a part in the header: not the body
            return None
    return tree


Written = Mapping[tuple[int, ...], tuple[tuple[int, int], ...]]
"""By part path, stretches of the part's body (offsets into it) written anew."""


def respliced(old: MimeTree, data: bytes, old_written: Written, written: Written,
              ) -> MimeTree | None:
    """The tree of ``data`` when it is ``old``'s message with the same leaves' bodies
    rewritten in other stretches: ``old``'s tree with its spans moved.  None unless
    proven (then parse ``data``).

    Why: a granted copy differs from another copy of its shape only in the lines that
    hold its open-pixel tokens (``step.Spliced``); parsing it again to find that out
    was a quarter of its footer's work (the bare-CR search alone reads the whole copy).

    ``old_written`` are the stretches ``old``'s own message was written in,
    ``written`` those of ``data``, both by part path (the same paths, as many
    stretches each).  The proof:

    * each rewritten part is a modifiable leaf of ``old`` with a blank line after its
      header; each stretch lies inside its body, starts after an LF and ends after
      one or at the body's end, and does not end with CR, in both messages;
    * everything outside the stretches is the same bytes (compared), so ``data`` is
      ``old``'s message with each stretch replaced, and its length follows;
    * no stretch, with the ``L`` bytes before it and 2 after it (``L`` the longest
      ``"\\n--" + boundary`` of ``old``'s multiparts), holds ``"\\n--"``, and every
      CR in a stretch is followed by an LF, in both messages.

    Then :func:`parse_message` reads ``data`` as it read ``old``'s, moved: it looks
    at bytes only through the delimiter search (``"\\n--" + boundary``: no occurrence
    can touch a stretch, as it would put ``"\\n--"`` in the window; each one
    elsewhere is the same bytes), the padding after a delimiter (it ends at the LF
    before a stretch at the latest), the header fields at each part's start and the
    blank line after them (never in a body), an mbox ``From `` line at 0, and the
    bare-CR search (a CR in a stretch is followed by LF; the byte before a stretch is
    an LF).  So every part keeps its fields, problems and notes, and each span
    boundary moves by the length change of the stretches before it; a boundary
    inside a stretch (impossible for a leaf's own body) is not proven.  Held to the
    parser by ``tests/rewrite/test_footerplan_granted.py`` and ``tests/rewrite/test_mime.py``.
    """
    if set(old_written) != set(written) or any(
            part.content_type == "message/delivery-status" for part in old.parts):
        return None  # (its blocks are read for fields: _Parser._status_blocks)
    by_path = {part.path: part for part in old.parts}
    rewritten: list[tuple[MimePart, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]] = []
    for path, stretches in old_written.items():
        part = by_path.get(path)
        if part is None or part.is_multipart or not part.modifiable \
                or part.body_span.start <= part.header_span.stop \
                or len(stretches) != len(written[path]):
            return None
        rewritten.append((part, stretches, written[path]))
    rewritten.sort(key=lambda change: change[0].body_span.start)
    old_data = old.data
    view = memoryview(old_data)
    needle = 3 + max((len(p.boundary) for p in old.parts if p.boundary), default=0)
    pieces: list[tuple[int, int, int, int]] = []  # (old start, old stop, new start, new stop)
    previous = moved = 0  # old offset after the last stretch; new minus old offset there
    for part, stretches, others in rewritten:
        body, end = part.body_span.start, part.body_span.stop
        if body < previous:
            return None
        new_body = body + moved  # the part's body in ``data``: nothing moved since
        for (start, stop), (new_start, new_stop) in zip(stretches, others, strict=True):
            old_start, old_stop = body + start, body + stop
            if not previous <= old_start <= old_stop <= end or new_start > new_stop \
                    or new_body + new_start != old_start + moved \
                    or not data.startswith(view[previous:old_start], previous + moved):
                return None
            pieces.append((old_start, old_stop, old_start + moved, new_body + new_stop))
            moved = new_body + new_stop - old_stop
            previous = old_stop
        for a, b, c, d in pieces[len(pieces) - len(stretches):]:
            for text, x, y, stop in ((old_data, a, b, end), (data, c, d, end + moved)):
                stretch = text[x:y]  # x > 0: after the part's header and blank line
                if text[x - 1] != 0x0A or (y != stop and text[y - 1] != 0x0A) \
                        or stretch.endswith(b"\r") \
                        or stretch.count(b"\r") != stretch.count(b"\r\n") \
                        or b"\n--" in text[max(0, x - needle) : y + 2]:
                    return None
    if len(data) - len(old_data) != moved \
            or not data.startswith(view[previous:], previous + moved):
        return None
    moves = [(a, b, d - b) for a, b, c, d in pieces if d - c != b - a]
    if any(start == stop for start, stop, _ in moves):
        return None  # an empty stretch that grew: where its edges go is not proven
    stops = [stop for _, stop, _ in moves]  # increasing: the stretches are disjoint, in order

    def move(at: int) -> int | None:
        """``at`` moved by the last stretch ending at or before it; a bisection, not a
        loop over every stretch per span end (parts x stretches: 1000 x thousands)."""
        n = bisect_right(stops, at)
        if n < len(moves) and moves[n][0] < at:
            return None  # inside a stretch
        return at + (moves[n - 1][2] if n else 0)

    parts = []
    for part in old.parts:
        spans = [move(x) for x in (part.header_span.start, part.header_span.stop,
                                   part.body_span.start, part.body_span.stop)]
        if None in spans:
            return None
        a, b, c, d = (x for x in spans if x is not None)
        parts.append(replace(part, header_span=slice(a, b), body_span=slice(c, d)))
    outside = [(move(a), move(b)) for a, b in old.outside]
    if any(a is None or b is None for a, b in outside):
        return None
    return MimeTree(data, tuple(parts), list(old.problems), old.modifiable, old.notes,
                    tuple((a, b) for a, b in outside if a is not None and b is not None))


# --- header values ----------------------------------------------------------------------------

def _where(path: tuple[int, ...]) -> str:
    """IMAP-style section numbers: "message", "part 2.1"; deep paths are shortened."""
    if not path:
        return "message"
    numbers = [str(i + 1) for i in path]
    if len(numbers) <= 8:
        return "part " + ".".join(numbers)
    return f"part {'.'.join(numbers[:3])}...{'.'.join(numbers[-3:])} (depth {len(path)})"


_ASCII_BLANKS: Final = " \t\r\n\f\v"


def _fields(block: bytes) -> dict[str, str]:
    """Content-* fields of a header block, unfolded (first occurrence wins).

    A field given twice with different values (clients differ in which one they take)
    is reported under the key ``"conflict"``.
    """
    lower = b"\n" + block.lower()
    found: dict[str, str] = {}
    at = lower.find(b"\ncontent-")
    wanted = 0
    while at >= 0:
        line_end = lower.find(b"\n", at + 1)
        line_end = len(lower) if line_end < 0 else line_end
        colon = lower.find(b":", at, line_end)
        name = lower[at + 1 : colon].rstrip(b" \t").decode("latin-1") if colon > 0 else ""
        if name in _WANTED:
            wanted += 1
            if wanted > _MAX_CONTENT_FIELDS:  # which one a client takes is anyone's guess
                found.setdefault("conflict", name)
                break
            end = line_end
            while end < len(lower) - 1 and lower[end + 1] in b" \t":
                end = lower.find(b"\n", end + 1)
                end = len(lower) if end < 0 else end
            # ASCII blanks only: a byte 0xA0 or 0x85 is no blank to Python's email
            value = _FOLD.sub("", block[colon : end - 1].decode("latin-1")).strip(
                _ASCII_BLANKS)[:_MAX_VALUE]
            if name == "content-transfer-encoding" and (
                    block[colon : end - 1].decode("latin-1").lstrip(" \t").rstrip("\r\n")
                    .lower() not in _DECODED_CTE
                    and normalise_cte(value.split("(")[0]) in _DECODED_CTE):
                # Python's email decodes only the bare name: it shows the body raw
                found.setdefault("raw-cte", value)
            if "=?" in value and name in _TYPING and _ENCODED_WORD.search(
                    value if name != "content-type" else value.partition(";")[0]):
                # Python's email (policy.default) decodes encoded words in the type
                # ("=?utf-8?q?text/html?=" is HTML to it, no type here); in a parameter's
                # value only after the split (a file's name, as mailers write non-ASCII
                # names: the charset and boundary are checked on their own)
                found.setdefault("ambiguous", name)
            first = found.setdefault(name, value)
            if first is not value and _differ(name, first, value):
                found.setdefault("conflict", name)
                if _ambiguous_fields(name, first, value):
                    found.setdefault("ambiguous", name)
        at = lower.find(b"\ncontent-", line_end)
    sun = lower.find(b"\nx-sun-data-name")  # Sun's name field, which Thunderbird types by
    if sun >= 0 and (sun_name := _SUN_NAME.match(lower, sun)) is not None:
        found.setdefault("x-sun-data-name", block[sun_name.start(1) - 1:sun_name.end(1) - 1]
                         .decode("latin-1").strip())
    return found


def _blank_before_colon(data: bytes, start: int, end: int) -> bool:
    """Whether a header field line in ``data[start:end]`` has blanks before its colon
    (``X-A : 1``).  Two ``find`` s at memchr speed; each hit checked from its line's start.

    >>> _blank_before_colon(b"A: 1\\r\\nX-A : 2\\r\\n", 0, 16)
    True
    >>> _blank_before_colon(b"A: b : c", 0, 8)
    False
    """
    for needle in (b" :", b"\t:"):
        at = data.find(needle, start, end)
        while at >= 0:
            line = max(start, data.rfind(b"\n", start, at) + 1)
            if _NAME_THEN_BLANKS.fullmatch(data, line, at + 1) is not None:
                return True
            # Not this line's name: no later hit on the line is either (searched once).
            line_end = data.find(b"\n", at, end)
            at = -1 if line_end < 0 else data.find(needle, line_end, end)
    return False


def _differ(name: str, first: str, value: str) -> bool:
    """Whether two values of one Content-* field can be read differently (clients differ
    in which one they take): the type and, for Content-Type, every parameter."""
    if name == "content-type":
        return _params(first) != _params(value)
    return first.split(";")[0].strip().lower() != value.split(";")[0].strip().lower()


def _ambiguous_fields(name: str, first: str, value: str) -> bool:
    """Whether two different values of one Content-* field make readings that no single
    copy neutralises: two transfer encodings (two decodings of one body), a container
    type (one reader's preamble or embedded header is another's body), two charsets."""
    if name == "content-transfer-encoding":
        return True
    (one, params), (other, others) = _params(first), _params(value)
    if any(t.startswith(("multipart", "message")) for t in (one, other)):
        return True
    return normalise_charset(params.get("charset")) != normalise_charset(others.get("charset"))


def _delimiter_end(data: bytes, pos: int) -> tuple[bool, int] | None:
    """After ``--boundary`` at ``pos``: (is it the close delimiter, end of the line) or None."""
    close = data.startswith(b"--", pos)
    padding = _PADDING.match(data, pos + 2 if close else pos)
    return (close, padding.end()) if padding else None


def _unescape(text: str) -> str:
    return _QUOTED_PAIR.sub(r"\1", text)


def _split_param(tokens: list[tuple[str, int]]) -> tuple[str, str, bool]:
    """(lower-cased name, value, regular) of one ``name=value`` segment; quotes removed.

    Token kinds: 0 unquoted, 1 unquoted with a comment, "(" or "\\" in it, 2 a quoted
    string, 3 a quoted string without its closing quote or with a quoted pair.
    ``regular``: every reader takes the value as it is returned here (one quoted
    string, or one unquoted run without whitespace, quotes or comments; no encoded
    word, ASCII only).
    """
    for index, (text, kind) in enumerate(tokens):
        if kind < 2 and "=" in text:
            before = "".join(t for t, _ in tokens[:index]) + text.split("=", 1)[0]
            rest = [(text.split("=", 1)[1], kind), *tokens[index + 1 :]]
            regular = all(k in (0, 2) for _, k in tokens)
            quoted = [t for t, k in rest if k >= 2]
            if quoted and not "".join(t for t, k in rest if k < 2).strip():
                value = "".join(quoted)
                regular = regular and len(quoted) == 1
            else:
                value = "".join(t for t, _ in rest).strip()
                regular = regular and not quoted and not _IRREGULAR_UNQUOTED.search(value)
            regular = regular and value.isascii() and not _ENCODED_WORD.search(value)
            return before.strip().lower(), value, regular
    return "", "", True


def _same_value(name: str, first: str, other: str) -> bool:
    """Whether two values of parameter ``name`` read the same (charsets: the same charset)."""
    if name == "charset":
        return normalise_charset(first) == normalise_charset(other)
    return first == other


@lru_cache(maxsize=512)
def _params(value: str) -> tuple[str, Mapping[str, str]]:
    """Split ``type/subtype; name=value; ...``; RFC 2231 sections and extended values joined.

    Values keep their bytes as latin-1 characters (a boundary must match exactly).
    A ``boundary`` or ``charset`` that readers take in different ways (Python's
    ``email`` in both policies, Thunderbird, this parser: given twice with different
    values, a quote or comment out of place, an encoded word, RFC 2231 sections with
    a gap or an odd number, ticks a reader splits elsewhere) is listed under
    :data:`_AMBIGUOUS`; another parameter given twice under :data:`_CONFLICT`.

    >>> _params('text/html; charset=utf-8(x)')[1][_AMBIGUOUS]
    'charset'
    >>> _params('multipart/mixed; boundary*0="a"; boundary*1*=b%41')[1]
    {'boundary': 'abA'}
    """
    header = value  # "value" is each parameter's further down
    segments: list[list[tuple[str, int]]] = [[]]
    for match in _TOKEN.finditer(header):
        if match[0] == ";":
            segments.append([])
        elif match[1] is not None:
            closed = match[2] and "\\" not in match[1]
            segments[-1].append((_unescape(match[1]), 2 if closed else 3))
        else:
            text = match[0]
            odd = "(" in text or ")" in text or "\\" in text
            segments[-1].append((_COMMENT.sub("", text) if odd else text, int(odd)))
    head = "".join(text for text, _ in segments[0]).strip().lower()
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    ambiguous: set[str] = set()
    conflict: list[str] = []

    def differs(base: str) -> None:
        if base in _READ_ALIKE:
            ambiguous.add(base)
        else:
            conflict.append(base)

    if len(segments) > 64:  # read by others, not here: whatever they say may differ
        ambiguous.update(_READ_ALIKE)
    for segment in segments[1:64]:
        name, raw, regular = _split_param(segment)
        parts = _SECTION.fullmatch(name)
        if not parts:
            continue
        base, number, extended = parts[1], parts[2], bool(parts[3])
        if base in _READ_ALIKE and (not regular or (
                number is not None and not _SECTION_NUMBER.fullmatch(number))):
            ambiguous.add(base)
        if number is None and not extended:
            # A repeated name: the first, as Thunderbird and email take it; given twice with
            # different values it is a conflict (a client taking the last sees other parts).
            if not _same_value(base, plain.setdefault(base, raw), raw) and base in _READ_ALIKE:
                ambiguous.add(base)
        else:
            pieces = sections.setdefault(base, {})
            if pieces.setdefault(int(number or 0), (raw, extended)) != (raw, extended):
                differs(base)
    for base, pieces in sections.items():
        joined = []
        for index in range(len(pieces)):
            if index not in pieces:
                break
            raw, extended = pieces[index]
            if extended:
                if index == 0 and raw.count("'") >= 2:
                    raw = raw.split("'", 2)[2]  # charset'language'value
                raw = unquote_to_bytes(raw.encode("latin-1")).decode("latin-1")
            joined.append(raw)
        if base in _READ_ALIKE and _compat32_sections(pieces) != "".join(joined):
            ambiguous.add(base)  # a gap, or ticks that Python's email splits elsewhere
        if joined:
            value = "".join(joined)
            if not _same_value(base, plain.setdefault(base, value), value):
                differs(base)  # name= and name*= disagree
            plain[base] = value
    if conflict:
        plain[_CONFLICT] = conflict[0]
    ambiguous.update(name for name in _READ_ALIKE if not plain.get(name, "").isascii())
    if "charset" in plain and not _TOKEN_CHARS.fullmatch(plain["charset"]):
        ambiguous.add("charset")  # policy.default cuts an unquoted one at a tspecial
    if "charset" not in ambiguous and not _PLAIN_CHARSET.fullmatch(header) and (
            "charset" in header.lower()) and not _reads_alike(plain.get("charset"),
                                                              _compat32_charset(header)):
        ambiguous.add("charset")  # what Python's email hands a mail client's HTML engine
    if "boundary" not in ambiguous and not _PLAIN_PARAMS.fullmatch(header) and (
            "boundary" in header.lower()) and _compat32_boundary(header) != (
                None if "boundary" not in plain else plain["boundary"].rstrip()):
        ambiguous.add("boundary")  # a bare "boundary;" is "" to Python's email: it splits at "--"
    low = header.lower()
    if "boundary" not in ambiguous and "boundary" in low and not (
            low.count("boundary") == 1 and _PLAIN_BOUNDARY.search(header)):
        # policy.default ends an unquoted value at a tspecial, "'", "*" or "%" and reads
        # RFC 2231 sections its own way: where it reads another boundary, the parser
        # looks for its delimiter lines (_Parser._describe)
        cut = _policy_default(header)[0]
        if cut != plain.get("boundary", "").rstrip() and cut is not None:
            plain[_POLICY_BOUNDARY] = cut
    if "charset" not in ambiguous and not _PLAIN_CHARSET.fullmatch(header) and (
            "charset" in low) and _policy_default_differs(plain.get("charset"), header):
        # policy.default decodes the text itself (get_content()): "utf-8''utf-7" is UTF-7
        ambiguous.add("charset")
    if ambiguous:
        plain[_AMBIGUOUS] = " ".join(sorted(ambiguous))
    return head, plain


#: A Content-Type every reader splits alike: a type, then at most a plain ``charset`` (the
#: header of nearly every text part: no second reading needed).
_PLAIN_CHARSET: Final = re.compile(
    r"[\t ]*[\w.+-]+/[\w.+-]+[\t ]*(?:;[\t ]*charset=(?:\"[\w.:-]+\"|[\w.:-]+)[\t ]*;?[\t ]*)?",
    re.IGNORECASE)


#: A Content-Type whose every parameter is a plain ``name=value`` (a quoted string without
#: escapes, or a token): Python's ``email`` reads its parameters as the parser here does.
_PLAIN_PARAMS: Final = re.compile(
    r'[\t ]*[\w.+-]+/[\w.+-]+[\t ]*'
    r'(?:;[\t ]*[\w.-]+=(?:"[^"\\\r\n]*"|[^;"\s\\()]+)[\t ]*)*;?[\t ]*')


def _starts_typed_part(data: bytes, shorter: str, *, digest: bool = False) -> bool:
    """Whether ``data`` has a delimiter line of the boundary ``shorter`` (what Python's
    email, policy.default, reads of an unquoted boundary holding a tspecial) that starts
    a part with a ``Content-Type`` other than plain text (without one a part is plain
    text, in a digest a message typed by its own header; a close line ends the multipart
    early: less shown).  The usual unquoted ``----=_NextPart_...`` is ``----`` there, and
    a ``------`` line in a text part starts no typed part.
    """
    if not shorter:
        return False  # a value that starts with a tspecial: no boundary, no parts to it
    needle = re.compile(rb"(?:^|\n)--" + re.escape(shorter.encode("latin-1", "replace"))
                        + rb"[ \t]*\r?\n")
    for line in needle.finditer(data):  # its parts: HTML only with a type other than text
        end = line.end() - 1
        # in a digest a part without a type is a message, typed by its own header block:
        # the next two blocks then
        for _ in range(2 if digest else 1):
            block = _BLANK_LINE.search(data, end)
            end = len(data) if block is None else block.end() - 1
        if _TYPED_PART.search(data, line.end(), end):
            return True
    return False


#: Types whose part Thunderbird types by its name's extension (as with no type at all).
_NAMED_TYPES: Final = frozenset({"application/octet-stream",
                                 "application/x-unknown-content-type"})
#: Extensions Gecko maps to a type Thunderbird renders inline: its own table, and the
#: system's, which it asks too (Debian's ``/etc/mime.types`` makes ``mail`` and ``art``
#: messages and ``xhtm`` XHTML; Windows' registry makes ``mht`` and ``mhtml`` messages).
#: ``unmodelled`` reads the names of uuencoded and yEnc files with them as well.
RENDERED_EXTENSIONS: Final = {
    "html": "text/html", "htm": "text/html", "shtml": "text/html", "ehtml": "text/html",
    "xhtml": "application/xhtml+xml", "xhtm": "application/xhtml+xml",
    "xht": "application/xhtml+xml", "eml": "message/rfc822", "mail": "message/rfc822",
    "art": "message/rfc822", "mht": "message/rfc822", "mhtml": "message/rfc822"}
#: A name ending in one of them (at a blank, a parameter separator, a quote or the end).
_RENDERED_NAME: Final = re.compile(
    r"\.(" + "|".join(sorted(RENDERED_EXTENSIONS, key=len, reverse=True))
    + r")(?=$|[\s;,\"'])", re.IGNORECASE)
_ANY_COMMENT: Final = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _type_by_name(fields: Mapping[str, str]) -> str | None:
    """The type Thunderbird gives a part without one, or of ``application/octet-stream``,
    by its name (``Content-Disposition`` filename, ``Content-Type`` name,
    ``Content-Name``, ``X-Sun-Data-Name``): ``news.html`` is shown inline as HTML.
    Gecko splits parameters at ``;`` or ``,``, ends an unquoted value at a blank,
    joins RFC 2231 sections, decodes an extended value's ``%`` escapes and a quoted
    string's ``\\`` escapes, and decodes encoded words anywhere in a name
    (``a.=?utf-8?q?html?=``), so any name in those fields, as written or read in any of
    these ways (:func:`_name_readings`), that ends in such an extension counts.

    >>> _type_by_name({"content-type": "application/octet-stream; name*0=news.; name*1=htm"})
    'text/html'
    >>> _type_by_name({"content-disposition": "inline; filename*=utf-8''a%2Email"})
    'message/rfc822'
    """
    for key in ("content-disposition", "content-type", "content-name", "x-sun-data-name"):
        text = fields.get(key)
        if text:
            for reading in _name_readings(text):
                if (found := _RENDERED_NAME.search(reading)) is not None:
                    return RENDERED_EXTENSIONS[found[1].lower()]
    return None


def _name_readings(text: str) -> Iterator[str]:
    """A field as written and, where it could be read otherwise, the names in it read as
    Gecko reads them (:func:`_gecko_names`), then with encoded words decoded (more
    readings than any one client's: each only ever adds a type to check)."""
    yield text
    if "=?" in text:
        yield _decoded_words(text)
    if "\x1b" in text:  # Gecko reads 7-bit text with an ESC in it as ISO-2022-JP
        yield text.encode("latin-1", "replace").decode("iso-2022-jp", "replace")
    if "*" not in text and "\\" not in text and "%" not in text:
        return
    for name in _gecko_names(text):
        yield name
        if "=?" in name:
            yield _decoded_words(name)


#: A ``name`` or ``filename`` parameter (a section of one, extended or not), wherever a
#: ``;`` or ``,`` starts a parameter: every one in the field, however many come before
#: (Gecko reads them all; :func:`_params` stops at 64).
_NAME_PARAM: Final = re.compile(
    r'(?:^|[;,])\s*((?:file)?name)\s*\*\s*(\d*)\s*(\*?)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;,]*)',
    re.IGNORECASE)


def _gecko_names(text: str) -> Iterator[str]:
    """The RFC 2231 names in a field, each as Gecko joins and decodes it: the sections
    of ``name*`` and of ``filename*`` in number order, a quoted value's ``\\`` escapes
    removed, an extended value's ``%`` escapes decoded and the whole decoded in the
    charset its first section declares (``iso-2022-jp''a.h%1B%28Btml`` is ``a.html``)
    and in latin-1; a plain ``name="a.htm\\l"`` with its escapes removed.

    >>> set(_gecko_names("inline; filename*1=ml; filename*0*=utf-8''a.%68t"))
    {'a.html'}
    """
    if "\\" in text:
        yield _QUOTED_PAIR.sub(r"\1", text)
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    for m in _NAME_PARAM.finditer(text):
        value = m[4].strip()
        if value.startswith('"'):
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1] if value.endswith('"') and len(
                value) > 1 else value[1:])
        pieces = sections.setdefault(m[1].lower(), {})
        pieces.setdefault(int(m[2][-4:] or 0), (value, bool(m[3]) or not m[2]))
    for pieces in sections.values():
        charset = "latin-1"
        joined = bytearray()
        for position, index in enumerate(sorted(pieces)):
            value, extended = pieces[index]
            if extended and position == 0 and value.count("'") >= 2:
                charset, _, value = value.split("'", 2)
            joined += (unquote_to_bytes(value) if extended
                       else value.encode("latin-1", "replace"))
        yield joined.decode("latin-1")
        try:
            declared = joined.decode(charset.strip() or "latin-1", "replace")
        except LookupError:  # a charset Python does not know: latin-1 above
            continue
        yield declared


def _decoded_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded words decoded (as Python's ``email`` finds them:
    anywhere); ``text`` itself when they do not decode."""
    try:
        return "".join(word.decode(charset or "ascii", "replace") if isinstance(word, bytes)
                       else word for word, charset in email.header.decode_header(text))
    except Exception:  # a charset or encoding no codec reads: the text as written
        return text


def _other_type(value: str, read: str) -> str | None:
    """Why another client reads a Content-Type ``value`` otherwise than ``read`` (None: it
    does not): Thunderbird keeps what follows the last ``?`` (``image/gif?text/html`` is
    HTML), Dovecot (behind Roundcube and other IMAP clients) skips comments between the
    type's tokens (``text(x)/html``), and Thunderbird splits ``x-sun-attachment`` at
    lines of ten dashes."""
    head = value.partition(";")[0]
    if "?" in head:
        return "what follows a '?' to Thunderbird"
    if "(" in head:
        bare = _ANY_COMMENT.sub("", head).replace(" ", "").replace("\t", "").lower()
        if bare and bare != read and _TYPE.fullmatch(bare):
            return f"{bare} to Dovecot"
    if head.strip().lower() == "x-sun-attachment":
        return "a container to Thunderbird"
    return None


def _python_main_type(value: str) -> str | None:
    """``multipart`` or ``message`` when Python's email takes a Content-Type ``value`` for
    one (the text before the first ``;``, lower-cased, with exactly one ``/``), else None."""
    head = value.partition(";")[0].strip().lower()
    if head.count("/") != 1:
        return None
    main = head.partition("/")[0]
    return main if main in ("multipart", "message") else None


@lru_cache(maxsize=256)
def _policy_default(value: str) -> tuple[str | None, str | None]:
    """(boundary, charset) as Python's ``email`` with ``policy.default`` reads a
    Content-Type ``value`` (its own header parser: about 0.35 ms, so asked only for a
    value not every reader reads alike); ``"\\x00"`` for each when it fails."""
    try:
        message = email.message_from_bytes(
            b"Content-Type: " + value.encode("latin-1", "replace") + b"\r\n\r\n",
            policy=email.policy.default)
        return message.get_boundary(), message.get_content_charset()
    except Exception:  # its parser's own failure: no reading known
        return "\x00", "\x00"


def _policy_default_differs(mine: str | None, value: str) -> bool:
    """Whether Python's ``email`` (policy.default) decodes a part with the Content-Type
    ``value`` by another charset than the label ``mine``.  Without one it decodes ASCII
    (every other byte a replacement character): a reading of the bytes themselves, which
    is scanned anyway unless browsers know the label (and read it their way only)."""
    theirs = _policy_default(value)[1]
    if theirs is None:
        return mine is not None and browsers_read(mine)
    return normalise_charset(mine) != normalise_charset(theirs)


def _compat32_message(value: str) -> email.message.Message:
    """A message with only this Content-Type, as ``email.message_from_bytes`` has it: bytes
    beyond ASCII as surrogates (never blanks)."""
    message = email.message.Message()
    message["Content-Type"] = value.encode("latin-1", "replace").decode("ascii",
                                                                        "surrogateescape")
    return message


def _compat32_boundary(value: str) -> str | None:
    """The boundary Python's ``email`` (compat32 and policy.default alike) reads in a
    Content-Type ``value`` (None: none).  A segment ``boundary`` without ``=`` is the
    empty boundary to it, so it splits at every ``--`` line where the parser here takes
    a later ``boundary="b"`` (session 17's MIME attack)."""
    try:
        found = _compat32_message(value).get_boundary()
    except Exception:  # its parser's own failure (TypeError for "boundary*1=x; boundary*=y")
        return None
    return found if isinstance(found, str) else None


def _compat32_charset(value: str) -> str | None:
    """The charset Python's ``email`` (compat32) reads in a Content-Type ``value``, what it
    hands a mail client's HTML engine (None: none).  Its own quoting (``\\"`` counted as
    an escaped quote), a bare ``charset`` without ``=``, whitespace beyond ASCII, an RFC
    2231 charset part that decodes the value again: each may read otherwise than here
    (session 16's attack: 33 holes)."""
    try:
        found = _compat32_message(value).get_content_charset()
    except Exception:  # its parser's own failure
        return None
    return found if isinstance(found, str) else None


def _reads_alike(mine: str | None, other: str | None) -> bool:
    """Whether two charset labels give browsers and mail software the same reading."""
    if not mine or not other:
        return not mine and not other
    return (normalise_charset(mine) == normalise_charset(other)
            and browsers_read(mine) == browsers_read(other))


def _compat32_sections(pieces: Mapping[int, tuple[str, bool]]) -> str:
    """RFC 2231 sections as Python's ``email`` (compat32) joins them: every section in
    number order (gaps too), extended ones %-decoded, and when any is extended
    ``charset'language'`` split off the joined value."""
    values = [unquote_to_bytes(raw.encode("latin-1")).decode("latin-1") if extended else raw
              for _, (raw, extended) in sorted(pieces.items())]
    joined = "".join(values)
    if any(extended for _, extended in pieces.values()) and joined.count("'") >= 2:
        return joined.split("'", 2)[2]
    return joined


# --- the parser -------------------------------------------------------------------------------

@dataclass(slots=True)
class _Node:
    path: tuple[int, ...]
    start: int
    header_end: int
    body_start: int
    end: int = -1
    content_type: str = "text/plain"
    charset: str = "us-ascii"
    label: str | None = None
    cte: str = "7bit"
    disposition: str | None = None
    boundary: bytes | None = None
    multipart: bool = False
    signed: bool = False
    broken: bool = False
    reason: str | None = None
    children: int = 0
    embedded: bool = False  # message/* whose content is parsed as a message (one child)
    #: a multipart's text outside its parts: before the first delimiter, after the close one
    outside: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class _Context:
    """An open multipart: its boundary and the child currently being read."""

    node: _Node
    needle: bytes  # b"\n--" + boundary
    next_at: int = -1  # the LF before the next delimiter line (cached), or _NEVER
    close: bool = False
    after: int = 0  # first byte after that delimiter line
    current: _Node | None = None
    seen: bool = False


class _Parser:
    def __init__(self, data: bytes, max_depth: int, max_parts: int) -> None:
        self.data, self.max_depth, self.max_parts = data, max_depth, max_parts
        self.nodes: list[_Node] = []
        self.stack: list[_Context] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.pos = 0
        self.stopped = False
        self.false_hits = max(10_000, 10 * max_parts)
        self.prefix_lines: list[int] = []  # lines that start with "--" and a boundary
        self.outside: list[tuple[int, int]] = []  # every multipart's preamble and epilogue

    def run(self) -> MimeTree:
        root = self._open(0, (), None)
        data = self.data
        if root is not None and b"\r" in data and (
                data.endswith(b"\r") or _CR_NOT_LF.search(data) is not None):
            # Thunderbird and Python's email end a line at a bare CR; others do not.
            self._problem(root, "bare CR (a line end to some clients)")
        while self.stack and not self.stopped:
            ctx = self._next_event()
            if ctx is None:
                break
            self._delimiter(ctx)
        for ctx in reversed(self.stack):
            self._end_child(ctx, len(self.data))
            if not self.stopped:
                self._unclosed(ctx)
        if self.prefix_lines and not self.stopped:
            self._prefix_lines()
        ends: dict[tuple[int, ...], int] = {}
        for node in self.nodes:  # parents first
            end = node.end
            if end < 0:  # the end of the data, or of the message it is the root of
                end = ends.get(node.path[:-1], len(data)) if node.path else len(data)
            ends[node.path] = end
            if node.content_type == "message/delivery-status":
                self._status_blocks(node, end)
            elif node.outside and node.children and not self.stopped:
                self._outside(node, end)  # (without a part, its whole body is neutralised)
        return self._tree()

    def _prefix_lines(self) -> None:
        """A line that starts with ``--`` and an open multipart's boundary is a delimiter
        to Dovecot (its parser matches a boundary at the start of a line, the longest
        one wins; Roundcube and other IMAP clients show its split): where it delimits no
        multipart here, the readers split otherwise."""
        data = self.data
        boundaries = {node.boundary for node in self.nodes if node.boundary}
        for start in self.prefix_lines:
            end = data.find(b"\n", start)
            core = data[start:len(data) if end < 0 else end].rstrip(b" \t\r")[2:]
            if core not in boundaries and not (core.endswith(b"--") and core[:-2] in boundaries):
                self._problem(self.nodes[0], "ambiguous boundary line: a boundary and more "
                                             "(a delimiter to some readers)")
                return

    def _outside(self, node: _Node, end: int) -> None:
        """A multipart's preamble or epilogue holds markup or a field that types a part:
        text no client shows where readers agree on the split, and an HTML part where
        one of them splits otherwise (each split Python's email, Thunderbird, Dovecot and
        this parser read differently so far hid its HTML there).  A field: no one copy
        is safe for every reader (the part may be encoded).  Markup alone: not read
        precisely; the fallback neutralises it where it is (:attr:`MimeTree.outside`)."""
        data = self.data
        markup = False
        for start, stop in node.outside:
            stop = end if stop < 0 else stop
            self.outside.append((start, stop))
            for found in _OUTSIDE_PARTS.finditer(data, start, stop):
                if found[0].startswith(b"<"):
                    markup = True
                    continue
                self._problem(node, "ambiguous multipart: a Content- field in its preamble "
                                    "or epilogue (a part to some readers)")
                return
        if markup:
            self._problem(node, "markup in its preamble or epilogue (a part to some readers)")

    def _status_blocks(self, node: _Node, end: int) -> None:
        """Python's email reads each block of a delivery status as a message of its own,
        with its own Content-Type and a body from its first line that is no field; the
        parser reads the first block as the header of one embedded message, the rest as
        its body.  A later block with a Content-Type is HTML to one reading only."""
        data = self.data
        first = _BLANK_LINE.search(data, max(node.body_start - 1, 0), end)  # may be empty
        if first is not None and _FIELD_CONTENT_TYPE.search(data, first.end(), end):
            self._problem(node, "ambiguous message/delivery-status: a block with a "
                                "Content-Type field (a message of its own to some clients)")

    def _unclosed(self, ctx: _Context) -> None:
        """A multipart that ends without its close delimiter: its last part runs to the end."""
        if ctx.seen:
            self.notes.append(f"{_where(ctx.node.path)}: missing closing boundary")
        else:
            self._problem(ctx.node, "boundary never found")

    def _problem(self, node: _Node, text: str) -> None:
        node.broken = True
        self.problems.append(f"{_where(node.path)}: {text}")

    def _stop(self, text: str) -> None:
        self.problems.append(text)
        self.stopped = True
        for node in self.nodes:
            node.broken = True

    def _scan(self, ctx: _Context, limit: int) -> None:
        """Cache the next real delimiter line of ``ctx`` in ``[self.pos, limit)``.

        ``limit`` is the enclosing multipart's next delimiter: one of ``ctx``'s after it
        does not matter, as ``ctx`` is closed there.  So sibling multiparts whose
        boundary never appears each search their own stretch, not the whole message.
        """
        data, frm = self.data, self.pos
        while True:
            at = data.find(ctx.needle, frm, limit + len(ctx.needle))
            if at > limit:
                at = -1
            if at < 0:
                ctx.next_at = _NEVER
                return
            found = _delimiter_end(data, at + len(ctx.needle))
            if found and at == limit:  # the enclosing one's delimiter line is ours too
                # (boundaries "a" and "a--": "--a--" closes one and separates the other);
                # Python's email gives it to the outer one, Thunderbird to the inner one
                self._stop("ambiguous boundary line (a delimiter of two nested multiparts)")
                ctx.next_at = _NEVER
                return
            if found:
                ctx.next_at, (ctx.close, ctx.after) = at, found
                return
            if at == limit:
                ctx.next_at = _NEVER
                return
            if _LOOSE_PADDING.match(data, at + len(ctx.needle) + (
                    2 if data.startswith(b"--", at + len(ctx.needle)) else 0)):
                self._stop("ambiguous boundary line (control characters after the boundary)")
                ctx.next_at = _NEVER
                return
            self.prefix_lines.append(at + 1)  # "--boundary" and more: a delimiter to Dovecot
            self.false_hits -= 1
            if self.false_hits < 0:
                self._stop("too many lines that look like boundaries")
                ctx.next_at = _NEVER
                return
            frm = at + 1

    def _next_event(self) -> _Context | None:
        """The open multipart whose delimiter comes next (the innermost wins a tie).

        Outermost first: each inner search stops at its enclosing one's next delimiter
        (an inner delimiter found before it is always the next event).
        """
        best: _Context | None = None
        limit = len(self.data)
        for ctx in self.stack:
            if ctx.next_at < self.pos:
                self._scan(ctx, limit)
            if ctx.next_at <= limit:
                best, limit = ctx, ctx.next_at
        return best

    def _end_child(self, ctx: _Context, end: int) -> None:
        if ctx.current is not None:
            ctx.current.end = end
            ctx.current = None

    def _delimiter(self, ctx: _Context) -> None:
        at = ctx.next_at
        end = at - 1 if at > 0 and self.data[at - 1] == 0x0D else at
        while self.stack[-1] is not ctx:  # inner multiparts left open
            inner = self.stack.pop()
            self._end_child(inner, end)
            self._unclosed(inner)
        self._end_child(ctx, end)
        if not ctx.seen and end > ctx.node.body_start:  # the preamble
            ctx.node.outside.append((ctx.node.body_start, end))
        ctx.seen = True
        self.pos = at + 1
        if ctx.close:
            self.stack.pop()
            ctx.node.outside.append((ctx.after, -1))  # the epilogue, to the multipart's end
            if not ctx.node.children:  # a client may show its body: nothing else is there
                self._problem(ctx.node, "multipart without a body part")
            return
        data = self.data
        if data.startswith(ctx.needle[1:], ctx.after) and (
                following := _delimiter_end(data, ctx.after + len(ctx.needle) - 1)) and (
                following[0]) and not self._blank_to_outer(following[1]):
            # Python's email skips every delimiter line after one, the close one too, and
            # reads the next part; other readers close the multipart there
            self._problem(ctx.node, "ambiguous boundary lines: a delimiter right before "
                                    "the close delimiter (clients close or read on)")
        path = (*ctx.node.path, ctx.node.children)
        ctx.node.children += 1
        ctx.current = self._open(ctx.after, path, ctx.node)

    def _blank_to_outer(self, pos: int) -> bool:
        """Whether only blank lines follow ``pos`` up to the end or to a delimiter line of
        an enclosing multipart (a writer's loop that put a delimiter after every part
        before the close one: Python's email reads on into nothing)."""
        data = self.data
        text = _BLANK_LINES.match(data, pos)
        at = pos if text is None else text.end()
        return at >= len(data) or any(
            data.startswith(ctx.needle[1:], at) and _delimiter_end(
                data, at + len(ctx.needle) - 1) is not None for ctx in self.stack[:-1])

    def _open(self, start: int, path: tuple[int, ...], parent: _Node | None) -> _Node | None:
        if len(self.nodes) >= self.max_parts:
            self._stop(f"more than {self.max_parts} MIME parts")
            return None
        data = self.data
        first = start
        if parent is None and data.startswith(b"From "):  # an mbox separator line
            first = data.find(b"\n") + 1 or len(data)
        fields = _HEADERS.match(data, first)
        header_end = fields.end() if fields else first
        body_start = header_end + (2 if data.startswith(b"\r\n", header_end) else
                                   1 if data.startswith(b"\n", header_end) else 0)
        node = _Node(path, start, header_end, body_start)
        self.nodes.append(node)
        self.pos = max(self.pos, header_end - 1)
        if body_start == header_end < len(data) and not self._at_delimiter(header_end):
            if _PY_HEADER_LINE.match(data, header_end):  # Python's email reads on
                self._problem(node, "ambiguous header block: no blank line after the "
                                    "header fields (clients end it in different places)")
            else:
                self._problem(node, "no blank line after the header fields")
        if _blank_before_colon(data, first, header_end):
            self._problem(node, "ambiguous header block: a field name with blanks before "
                                "its colon (clients end the block there or read on)")
        self._describe(node, _fields(data[first:header_end]), parent)
        if node.embedded and self._open(body_start, (*path, 0), node) is not None:
            node.children = 1
        return node

    def _at_delimiter(self, pos: int) -> bool:
        return any(self.data.startswith(ctx.needle[1:], pos) and
                   _delimiter_end(self.data, pos + len(ctx.needle) - 1) is not None
                   for ctx in self.stack)

    def _describe(self, node: _Node, fields: dict[str, str], parent: _Node | None) -> None:
        if "ambiguous" in fields:  # no one copy is safe for every reading: held
            self._problem(node, f"ambiguous {fields['ambiguous'].title()} fields "
                                "(clients take different ones)")
        elif "conflict" in fields:
            self._problem(node, f"conflicting {fields['conflict'].title()} fields")
        if "raw-cte" in fields:
            self._problem(node, f"ambiguous Content-Transfer-Encoding {fields['raw-cte']!r} "
                                "(some clients decode it, Python's email shows the body raw)")
        digest = parent is not None and parent.content_type == "multipart/digest"
        ctype, params = _params(fields.get("content-type", ""))
        if _CONFLICT in params:
            self._problem(node, f"Content-Type parameter {params[_CONFLICT]!r} given twice")
        read_alike = params.get(_AMBIGUOUS, "").split()
        # a type every reader reads alike (nearly all): no other reading to look for
        plain = _TYPE.fullmatch(ctype) is not None
        lenient = None if plain else _LENIENT_TYPE.match(ctype)
        if lenient is not None:
            ctype = f"{lenient[1]}/{lenient[2]}"
        node.content_type = ctype if _TYPE.fullmatch(ctype) else (
            "message/rfc822" if digest else "text/plain")
        declared = fields.get("content-type", "")
        python = None if plain else _python_main_type(declared)
        if python is not None and not node.content_type.startswith(python + "/"):
            # Python's email splits what it takes for a multipart, parses what it takes
            # for a message: "multipart/(x)mixed", "multipart/", "message/" are to it
            self._problem(node, f"ambiguous Content-Type {fields['content-type'][:60]!r} "
                                f"({python} to some clients)")
        elif not plain and (other := _other_type(declared, node.content_type)):
            self._problem(node, f"ambiguous Content-Type {fields['content-type'][:60]!r} "
                                f"({other})")
        if ("content-type" not in fields and not digest) or node.content_type in _NAMED_TYPES:
            named = _type_by_name(fields)
            if named is not None and not (named == "message/rfc822" and normalise_cte(
                    fields.get("content-transfer-encoding")) == "base64"):
                node.content_type = named  # what Thunderbird shows it as: scanned as that
        node.charset = normalise_charset(params.get("charset"))
        container = node.content_type.startswith("multipart/") or is_message(node.content_type)
        for name in read_alike:
            if (name == "boundary" and node.content_type.startswith("multipart/")) or (
                    name == "charset" and not container):
                self._problem(node, f"ambiguous Content-Type parameter {name!r} "
                                    "(clients read it differently)")
        node.label = None if params.get("charset") is None else params["charset"][:100]
        cte = fields.get("content-transfer-encoding", "")
        node.cte = normalise_cte(_COMMENT.sub("", cte) if "(" in cte else cte)
        disposition = _params(fields["content-disposition"])[0] if (
            "content-disposition" in fields) else ""
        node.disposition = disposition or None
        node.signed = parent is not None and (parent.signed or
                                              parent.content_type == "multipart/signed")
        if node.content_type.startswith("multipart/"):
            node.multipart, node.reason = True, "a multipart container"
            written = params.get("boundary", "")
            boundary = written.rstrip(" ").encode("latin-1")
            if written.rstrip() != written.rstrip(" ") or (
                    written.startswith("<") and written.endswith(">")):
                # Python's email strips every blank (str.rstrip) and <...> (unquote)
                self._problem(node, "ambiguous Content-Type parameter 'boundary' "
                                    "(clients read it differently)")
            other = params.get(_POLICY_BOUNDARY)
            if other is not None and _starts_typed_part(
                    self.data, other, digest=node.content_type == "multipart/digest"):
                # policy.default reads another boundary ("a/b" is "a") and here a line is
                # a delimiter of that one only
                self._problem(node, "ambiguous Content-Type parameter 'boundary' "
                                    "(clients read it differently)")
            if not boundary:
                self._problem(node, "multipart without a boundary")
            elif len(node.path) >= self.max_depth:
                self._problem(node, f"nested deeper than {self.max_depth} levels")
            elif any(ctx.node.boundary == boundary for ctx in self.stack):
                self._problem(node, "boundary reused by a nested multipart")
            else:
                node.boundary = boundary
                self.stack.append(_Context(node, b"\n--" + boundary))
        elif is_message(node.content_type) and node.cte in _IDENTITY:
            if len(node.path) >= self.max_depth:
                self._problem(node, f"nested deeper than {self.max_depth} levels")
            else:
                node.multipart = node.embedded = True
                node.reason = "an embedded message"
        elif is_message(node.content_type):  # encoded: the fallback decodes it
            node.reason = "message/* parts are left untouched"
        elif node.cte not in ENCODINGS:
            node.reason = f"unknown transfer encoding {node.cte!r}"
        elif node.content_type.startswith("text/") and not is_supported(node.charset):
            node.reason = f"unsupported charset {node.charset!r}"

    def _tree(self) -> MimeTree:
        size = len(self.data)
        parts: list[MimePart] = []
        broken: dict[tuple[int, ...], bool] = {}
        ends: dict[tuple[int, ...], int] = {}
        embedded = {node.path for node in self.nodes if node.embedded}
        for node in self.nodes:
            if node.end < 0 and node.path and node.path[:-1] in embedded:
                end = ends[node.path[:-1]]  # an embedded message ends with its container
            else:
                end = size if node.end < 0 else max(node.end, node.start)
            ends[node.path] = end
            # Clamped into the part: an embedded message opens where its container's body
            # would start, which is past the container's end when that body is empty.
            start = min(node.start, end)
            header_end = min(max(node.header_end, start), end)
            body_start = min(max(node.body_start, header_end), end)
            bad = node.broken or broken.get(node.path[:-1], False)
            broken[node.path] = bad
            reason = "broken MIME structure" if bad else node.reason
            parts.append(MimePart(
                node.path, slice(start, header_end), slice(body_start, end),
                node.content_type, node.charset, node.cte, node.disposition, node.boundary,
                node.multipart, node.signed, reason is None, reason, node.label))
        return MimeTree(self.data, tuple(parts), self.problems, not self.problems,
                        tuple(self.notes), tuple(self.outside))
