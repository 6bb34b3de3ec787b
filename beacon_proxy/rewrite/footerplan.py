"""The footer of one message, split into a recipient-independent plan and a cheap apply.

Why: a newsletter goes to thousands of recipients and only the link in its
footer differs between their copies, but finding where the footer goes is most
of the work -- the MIME parse, the transfer decode of each body part and the
search for ``</body`` took about 0.45 ms of the 0.5 ms per copy of the 70 KB
benchmark newsletter (``bench/footer.py``).  :func:`plan_footer` does all that
once per message: which parts, their charset, line ending and insertion point,
and every reason to leave a part or the whole message alone.
:meth:`FooterPlan.apply` then does only what depends on the link: the footer's
bytes for this URL (escaped, in the part's charset), spliced in with
:func:`~beacon_proxy.rewrite.transfer.apply_edits` (only the touched encoded
lines are rewritten) and :meth:`~beacon_proxy.rewrite.mime.MimeTree.replace_bodies`.
:class:`~beacon_proxy.rewrite.footer.Footer` keeps the last plans, so the
second and later identical copies of a message skip the plan.

The split is exact, not an approximation: the plan runs the same checks in the
same order as a single pass would, and whatever depends on the link -- the
footer's bytes, a text footer's fallback to English, the 998-octet line limit --
is decided by ``apply``.  An unexpected exception while planning is kept in the
plan (:attr:`FooterPlan.failure`) and raised by ``apply`` at the point where a
single pass would have met it, after the link has been asked for and checked.
A plan is immutable, so threads may share one.

>>> from beacon_proxy.rewrite.footertext import FooterTexts
>>> texts = FooterTexts.load()
>>> plan = plan_footer(b"Content-Type: text/plain\\r\\n\\r\\nHello\\r\\n", texts, "en")
>>> data, report = plan.apply("https://p.example/u/T", texts)
>>> data.decode().splitlines()[-1], report
('Stop read-tracking or suspend delivery: https://p.example/u/T', \
{'html': 0, 'text': 1, 'language': 'en'})
"""

from __future__ import annotations

import binascii
import html
import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from beacon_proxy.rewrite.bodyend import body_end
from beacon_proxy.rewrite.charsets import (
    UNKNOWN_CHARSET,
    effective_charset,
    encode_text,
    encodes_in_pieces,
    from_utf8,
    is_transcoded,
    looks_valid,
    reading,
    scan_view,
)
from beacon_proxy.rewrite.footertext import FooterText, FooterTexts
from beacon_proxy.rewrite.mime import (
    MAX_DEPTH,
    MAX_PARTS,
    OPAQUE_TYPES,
    MimePart,
    MimeTree,
    Written,
    header_fields,
    is_message,
    parse_message,
    reparse_shifted,
    respliced,
)
from beacon_proxy.rewrite.transfer import (
    Edit,
    LineTooLongError,
    QpIndex,
    QpSlotted,
    apply_edits,
    decode_indexed,
    line_ending,
    qp_slotted,
)

__all__ = ["FooterPlan", "GrantedBase", "PartPlan", "body_parts", "derive_granted",
           "footer_language", "plan_footer", "rebase_plan"]

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
#: Every printable ASCII character: what a link (escaped or not) is checked to be made of.
_PROBE: Final = "".join(map(chr, range(0x20, 0x7F)))
_SLOT_KEYS: Final = 4  # (language, English) pairs whose slotted footer a part plan keeps
_ONCE: Final = "once"
_UNPROVEN: Final = "unproven"


class _Skip(Exception):
    """This part gets no footer; the text is the reason for the report."""


class _Unproven(Exception):
    """A derived part plan (:func:`derive_granted`) is not proven: the part is planned."""


@dataclass(frozen=True, slots=True)
class _Footers:
    """One copy's footers: the language chosen and the recipient's link in each form."""

    texts: FooterText
    english: FooterText
    url: str

    def html(self) -> str:
        return self.texts.html.replace("{url}", html.escape(self.url, quote=True))

    def text(self, english: bool = False) -> str:
        return (self.english if english else self.texts).text.replace("{url}", self.url)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A part's footer made once for a (language, English) pair, with the link as a slot.

    ``body.fill(link)`` is the very bytes :meth:`PartPlan.apply`'s other path gives for a
    link of printable ASCII (checked per copy), ``english`` its fallback flag.  Made only
    where that is proven:

    * quoted-printable, no transcode, no ISO-2022-JP wrap or state skip;
    * the charset encodes text in pieces (:func:`encodes_in_pieces`: ``a + b`` as
      ``a`` then ``b``) and every printable ASCII character as itself, so the footer
      with the link is the template's encoded pieces joined by the link's ASCII
      bytes (HTML-escaped for HTML, as ``_Footers.html``); checked again on the
      templates joined by every printable ASCII character;
    * a quoted-printable part is never ``seven_bit`` (that is a 7bit part's), so
      the 7bit fallback (HTML in us-ascii) does not arise; the text's fallback to
      English depends on whether the pieces encode strictly, with an ASCII link;
    * ``_lines`` turns LF into the part's line ending: a link has no LF, so it
      does that piece by piece;
    * :class:`~beacon_proxy.rewrite.transfer.QpSlotted` encodes the lines without the
      link once and the link's line per copy (its docstring has the proof).
    """

    body: QpSlotted
    english: bool


@dataclass(frozen=True, slots=True)
class PartPlan:
    """Where and how one body part gets its footer; everything but the footer's bytes.

    The footer goes into the decoded body at ``at`` as ``before + footer + after``
    (line breaks as ``eol``), in ``charset``; for a UTF-16/32 part it is built in
    UTF-8 and turned into ``transcode``; in ISO-2022-JP it is wrapped in ``wrap``
    (back to ASCII and out again), or the part is skipped for ``state_skip``.
    """

    part: MimePart
    kind: str  # "html" or "text"
    body: bytes  # transfer-encoded, as in the message
    cte: str  # as apply_edits takes it ("8bit" for binary)
    decoded: bytes
    index: QpIndex
    charset: str  # of the footer bytes: "utf-8" for a transcoded part
    eol: bytes
    seven_bit: bool
    at: int
    before: bytes
    after: bytes
    transcode: str | None = None
    wrap: tuple[bytes, bytes] = (b"", b"")
    state_skip: str | None = None
    eol_of_header: bool = False  # ``eol`` is the part header's (the text has no line break)
    #: The slotted footers made so far (:meth:`_slot`), by the texts they were made from
    #: (or ``_ONCE``: used once, ``_UNPROVEN``: not made).
    #: Shared by the plans :func:`rebase_plan` derives (``replace`` keeps it): nothing
    #: it depends on is changed there.  Threads may race to fill it with equal values.
    slots: dict[tuple[FooterText, FooterText], _Slot | str] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Bytes held beyond the message itself."""
        return len(self.body) + (0 if self.decoded is self.body else len(self.decoded))

    def apply(self, footers: _Footers) -> tuple[bytes, bool]:
        """The part's new (encoded) body, and whether its text footer fell back to English."""
        url = footers.url
        slot = self._slot(footers) if url.isascii() and url.isprintable() else None
        if slot is not None:  # the same bytes as below (see _Slot), cheaper
            link = html.escape(url, quote=True) if self.kind == "html" else url
            return slot.body.fill(link.encode("ascii")), slot.english
        footer, english = self._footer(footers)
        insert = self.before + _lines(footer, self.eol) + self.after
        if self.transcode is not None:
            insert = from_utf8(insert, self.transcode, bom=False)
        elif self.state_skip is not None:
            raise _Skip(self.state_skip)
        else:
            insert = self.wrap[0] + insert + self.wrap[1]
        try:
            new = apply_edits(self.body, self.cte, [Edit(self.at, self.at, insert)],
                              decoded=self.decoded, qp_index=self.index)
        except LineTooLongError as exc:
            raise _Skip("a line would pass 998 octets") from exc
        return new, english

    def _slot(self, footers: _Footers) -> _Slot | None:
        """The footer of these texts with the link as a slot, made on the second copy
        (None: the first copy, or not proven).

        Not on the first: a plan used once (a granted copy's, its body seen once) would
        pay for making the slot and not use it."""
        key = (footers.texts, footers.english)
        found = self.slots.get(key)
        if isinstance(found, _Slot):
            return found
        if found is None:  # the first copy
            if len(self.slots) < _SLOT_KEYS:
                self.slots[key] = _ONCE
            return None
        if found != _ONCE:  # not proven
            return None
        try:
            slot = self._make_slot(footers)
        except (UnicodeError, ValueError):  # not proven: apply's other path meets it again
            slot = None
        self.slots[key] = _UNPROVEN if slot is None else slot
        return slot

    def _make_slot(self, footers: _Footers) -> _Slot | None:
        """See :class:`_Slot`; None where its proof does not hold."""
        if (self.cte != "quoted-printable" or self.transcode is not None
                or self.state_skip is not None or self.wrap != (b"", b"")
                or not encodes_in_pieces(self.charset)
                or encode_text(_PROBE, self.charset, errors="strict") != _PROBE.encode()):
            return None
        if self.kind == "html":
            templates = footers.texts.html.split("{url}")
            charset = self.charset
            pieces = [encode_text(t, charset) for t in templates]
            probe = html.escape(_PROBE, quote=True)
            english = False
        else:
            charset, probe = self.charset, _PROBE
            for english in (False, True):
                templates = (footers.english if english else footers.texts).text.split("{url}")
                encoded = [_encoded_text(t, charset, False) for t in templates]
                if None not in encoded:
                    break
            else:
                return None
            pieces = [p for p in encoded if p is not None]
        if encode_text(probe.join(templates), charset) != probe.encode().join(pieces):
            return None
        lines = [_lines(p, self.eol) for p in pieces]
        lines[0] = self.before + lines[0]
        lines[-1] += self.after
        return _Slot(qp_slotted(self.body, self.at, lines, self.index), english)

    def _footer(self, footers: _Footers) -> tuple[bytes, bool]:
        if self.kind == "html":
            footer = encode_text(footers.html(), self.charset)
            if self.seven_bit and not footer.isascii():
                footer = encode_text(footers.html(), "us-ascii")  # the rest as &#NNNN;
            return footer, False
        encoded = _encoded_text(footers.text(), self.charset, self.seven_bit)
        if encoded is not None:
            return encoded, False
        encoded = _encoded_text(footers.text(english=True), self.charset, self.seven_bit)
        if encoded is None:
            raise _Skip(f"charset {self.charset} cannot hold the footer")
        return encoded, True


@dataclass(frozen=True, slots=True)
class FooterPlan:
    """What every copy of one message gets, up to the link.

    ``skip``: no copy gets a footer (the report's reason; the link is not asked
    for).  Otherwise ``parts`` holds a :class:`PartPlan` or the reason
    (``"html: charset x-unknown"``) for each body part, in order; ``failure`` an
    unexpected exception met while planning, raised by :meth:`apply` after them.
    """

    tree: MimeTree
    skip: str | None = None
    language: str = ""
    parts: tuple[PartPlan | str, ...] = ()
    failure: Exception | None = None

    @property
    def size(self) -> int:
        """Bytes the plan holds: the message and the part bodies it keeps."""
        return len(self.tree.data) + sum(p.size for p in self.parts if isinstance(p, PartPlan))

    def apply(self, url: str, texts: FooterTexts) -> tuple[bytes | None, dict[str, Any]]:
        """The message with the footer for ``url`` (None: unchanged) and the report.

        ``url`` must already be checked (an absolute http(s) URL), ``texts`` the texts
        the plan was made with; raises :attr:`failure` if there is one.
        """
        if self.skip is not None:
            return None, {"skipped": self.skip}
        footers = _Footers(texts.get(self.language), texts.get("en"), url)
        changes: list[tuple[MimePart, bytes]] = []
        counts = {"html": 0, "text": 0}
        skipped: list[str] = []
        english_text = False
        for plan in self.parts:
            if isinstance(plan, str):
                skipped.append(plan)
                continue
            try:
                body, english = plan.apply(footers)
            except _Skip as skip:
                skipped.append(f"{plan.kind}: {skip}")
                continue
            changes.append((plan.part, body))
            counts[plan.kind] += 1
            english_text |= english
        if self.failure is not None:
            raise self.failure
        if not changes:
            return None, {"skipped": skipped[0]}
        report: dict[str, Any] = {**counts, "language": self.language}
        if english_text and self.language != "en":
            report["text_language"] = "en"
        if skipped:
            report["not_modified"] = skipped
        return self.tree.replace_bodies(changes), report


def plan_footer(data: bytes, texts: FooterTexts, default_language: str,
                reuse: _Reuse | None = None) -> FooterPlan:
    """Plan the footer of a message (see the module docstring).

    Raises only for a bug in the MIME parse or the choice of parts (before a single
    pass would ask for the link); a later one is kept in :attr:`FooterPlan.failure`.
    ``reuse(tree, part, kind)``: a part's plan proven equal to the one
    ``_plan_part`` would make, or None (then it is made) -- :func:`derive_granted`.
    """
    return _plan_tree(parse_message(data, max_depth=MAX_DEPTH, max_parts=MAX_PARTS), texts,
                      default_language, reuse)


def _plan_tree(tree: MimeTree, texts: FooterTexts, default_language: str,
               reuse: _Reuse | None) -> FooterPlan:
    """:func:`plan_footer` of a parsed message."""
    if tree.problems:
        return FooterPlan(tree, "broken MIME structure")
    if _is_signed(tree):
        return FooterPlan(tree, "signed or encrypted")
    parts = body_parts(tree)
    if not parts:
        return FooterPlan(tree, "no text body part")
    try:
        language = footer_language(tree, texts.languages, default_language)
    except Exception as exc:  # raised by apply, after the link (as a single pass would)
        return FooterPlan(tree, failure=exc)
    planned: list[PartPlan | str] = []
    for part in parts:
        kind = "html" if part.content_type == "text/html" else "text"
        try:
            known = None if reuse is None else reuse(tree, part, kind)
            planned.append(_plan_part(tree, part, kind) if known is None else known)
        except _Skip as skip:
            planned.append(f"{kind}: {skip}")
        except Exception as exc:
            return FooterPlan(tree, None, language, tuple(planned), exc)
    return FooterPlan(tree, None, language, tuple(planned))


def rebase_plan(plan: FooterPlan, data: bytes, split: int, texts: FooterTexts,
                default_language: str) -> FooterPlan | None:
    """``plan`` made the plan of ``data``, a message with the same body (``data[split:]``)
    and another header; None unless proven (then :func:`plan_footer` it).

    Why: a personalised newsletter (its own ``To``, ``Message-ID``, ids per message)
    has a refused copy whose bytes differ from every other message's in the header
    only, so :class:`~beacon_proxy.rewrite.footer.Footer`'s kept plans (found by equal
    bytes) missed and each message planned afresh: 0.5 ms for the 70 KB newsletter, of
    which this costs the parse (~0.1 ms).

    The proof: :func:`~beacon_proxy.rewrite.mime.reparse_shifted` (the bodies equal
    byte for byte, ``data`` parsed again with the same limits, its tree ``plan``'s
    shifted: every part's fields, problems, notes and ``modifiable`` equal, every part
    but the root inside the body); then what :func:`plan_footer` reads from the header
    is read again:

    * ``footer_language`` reads the root's ``Content-Language``: computed again from
      ``data`` and *used* (no part plan depends on the language; only
      :meth:`FooterPlan.apply` does); an exception there (kept as a ``failure`` by a
      fresh plan): not rebased;
    * ``_is_signed`` (the parts' types and ``signed``, equal by the proof) computed
      again and compared;
    * a part's line ending when its text has none (``_eol``: the line ending of the
      part's header, the message's header for the root) read again and compared
      (``PartPlan.eol_of_header``);
    * the root's "no body after the header" check (``_plan_part``: the root's header
      span, which is not compared) computed again and compared.

    Audit of :func:`plan_footer` (keep it in step when it reads anything new):
    ``parse_message`` (the proof above); ``tree.problems`` (equal); ``_is_signed``
    (compared); ``body_parts`` (paths, types, dispositions, ``is_multipart``: equal
    fields); ``footer_language`` (above); ``_plan_part`` per body part: ``modifiable``,
    ``reason``, the spans' emptiness (the root's compared above; every other part's
    shifted), ``transfer_encoding``, ``tree.body(part)`` (equal bytes), ``charset``
    (equal field; the effective charset is read from the decoded body), ``_eol``
    (above), ``scan_view``/``body_end``/``_insertion``/``_ascii_state``/``_line_index``
    (the decoded and encoded body only: offsets into the part's body, not the
    message), ``_transcoded`` (``charset``, ``transfer_encoding``, the body, ``_eol``).
    A ``PartPlan`` keeps nothing else of the message but its ``MimePart``, which is
    swapped for the shifted one (``FooterPlan.apply`` splices by its spans into the
    new tree).  A plan with a ``failure`` is not rebased (``Footer`` never keeps one).
    Held to a fresh plan by ``tests/rewrite/test_known_header_fuzz.py`` (copy for copy,
    byte for byte: run it with a large ``REBASE_FUZZ`` after changing anything above).
    """
    if plan.failure is not None:
        return None
    tree = reparse_shifted(plan.tree, data, split, max_depth=MAX_DEPTH, max_parts=MAX_PARTS)
    if tree is None or _is_signed(tree) != _is_signed(plan.tree) \
            or _headless(tree.root) != _headless(plan.tree.root):
        return None
    if plan.skip is not None:
        return FooterPlan(tree, plan.skip)
    try:
        language = footer_language(tree, texts.languages, default_language)
    except Exception:  # a fresh plan keeps it as its failure: leave that to one
        return None
    by_path = {part.path: part for part in tree.parts}
    parts: list[PartPlan | str] = []
    for part in plan.parts:
        if isinstance(part, str):
            parts.append(part)
            continue
        now = by_path[part.part.path]
        if part.eol_of_header and line_ending(tree.data[now.header_span]) != part.eol:
            return None
        parts.append(replace(part, part=now))
    return FooterPlan(tree, None, language, tuple(parts))


def _headless(part: MimePart) -> bool:
    """``_plan_part``'s "no body after the header": the body starts where the header ends."""
    return bool(part.body_span.start == part.header_span.stop)


def footer_language(tree: MimeTree, languages: Collection[str], default: str) -> str:
    """The footer language: the top-level ``Content-Language`` (its first tag's
    primary subtag, if it is one of ``languages``), else ``default``."""
    header = tree.data[tree.root.header_span]
    if b"content-language" not in header.lower():
        return default
    for name, raw in header_fields(header):
        if name == "content-language":
            value = raw.split(b":", 1)[1].decode("latin-1")
            tag = re.sub(r"\s+", "", value).split(",")[0].lower()
            primary = tag.split("-")[0]
            return primary if primary in languages else default
    return default


def _is_signed(tree: MimeTree) -> bool:
    """Whether the message (outside embedded messages) is signed or encrypted."""
    in_message: dict[tuple[int, ...], bool] = {}  # the part is, or is inside, message/*
    for part in tree.parts:
        embedded = bool(part.path) and in_message[part.path[:-1]]
        in_message[part.path] = embedded or is_message(part.content_type)
        if not embedded and (part.content_type in _SIGNED_TYPES or part.signed):
            return True
    return False


def body_parts(tree: MimeTree) -> list[MimePart]:
    """The parts that make up the message's body text (see the footer module's docstring)."""
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
        if is_message(part.content_type):
            continue
        kids = children.get(part.path, [])
        if part.content_type == "multipart/alternative":
            todo.extend(reversed(kids))
        elif kids:
            todo.append(kids[0])
    return out


def _plan_part(tree: MimeTree, part: MimePart, kind: str,
               known: _Known | None = None) -> PartPlan:
    """Where the footer goes in one body part; raises :class:`_Skip` to leave it alone.

    ``known`` (:func:`derive_granted`): the decoded body, line starts and ``body_end``'s
    answer, proven instead of computed, for an HTML part in a charset whose scan view
    is the text itself; anything else raises :class:`_Unproven`."""
    if not part.modifiable:
        raise _Skip(part.reason or "not modifiable")
    if _headless(part):  # a header, then the end
        raise _Skip("no body after the header")
    cte = part.transfer_encoding
    body = tree.body(part)
    decoded, index = (decode_indexed(body, cte) if known is None
                      else (known.decoded, known.index))
    charset = effective_charset(decoded, part.charset)
    if charset in _UNWRITABLE:
        raise _Skip(f"charset {charset}")
    edit_cte = "8bit" if cte == "binary" else cte
    if known is not None and (charset != known.charset or kind != "html"
                              or is_transcoded(charset) or charset in _CHECKED):
        raise _Unproven
    if is_transcoded(charset):
        return _transcoded(tree, part, kind, body, edit_cte, decoded, index, charset)
    if charset in _CHECKED and not looks_valid(decoded, charset):
        raise _Skip(f"bytes do not match charset {charset}")
    eol = _eol(tree, part, decoded)
    view = scan_view(decoded, charset) if kind == "html" else decoded
    if known is None:
        at, before, after = _insertion(decoded, view, kind, eol)
    elif view is not decoded:
        raise _Unproven
    else:
        at, before, after = _insertion(decoded, view, kind, eol, known.end, known=True)
    wrap, state_skip = _ascii_state(decoded, at, charset)
    return PartPlan(part, kind, body, edit_cte, decoded, _line_index(body, cte, index, at),
                    charset, eol, cte == "7bit", at, before, after, wrap=wrap,
                    state_skip=state_skip, eol_of_header=b"\n" not in decoded)


def _eol(tree: MimeTree, part: MimePart, text: bytes) -> bytes:
    """The line ending of the part's text (of the message when the text has none)."""
    return line_ending(text) if b"\n" in text else line_ending(tree.data[part.header_span])


def _insertion(text: bytes, view: bytes, kind: str, eol: bytes, end: int | None = None,
               known: bool = False) -> tuple[int, bytes, bytes]:
    """Where the footer goes in ``text`` (an ASCII-compatible charset), and the line
    breaks that go before and after it; ``known``: ``end`` is ``body_end(view)``."""
    if kind == "html":
        at = end if known else body_end(view)
        if at is None:  # no </body>: at the end, before the trailing line breaks
            return _text_end(text), eol, b""
        # On a line of its own, unless the text before it on its line starts with "--":
        # cut off there, it could become a MIME boundary delimiter line.
        line = text.rfind(b"\n", 0, at) + 1
        lead = b"" if line == at or text.startswith(b"--", line) else eol
        return at, lead, eol
    at = _text_end(text)
    return at, (eol + eol if at else b""), b""


def _transcoded(tree: MimeTree, part: MimePart, kind: str, body: bytes, cte: str,
                decoded: bytes, index: QpIndex, charset: str) -> PartPlan:
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
    at, before, after = _insertion(read.text, read.view, kind, eol)
    offset = len(from_utf8(read.text[:at], read.transcoded, bom=read.bom))
    return PartPlan(part, kind, body, cte, decoded, _line_index(body, cte, index, offset),
                    "utf-8", eol, False, offset, before, after, transcode=read.transcoded,
                    eol_of_header=b"\n" not in read.text)


def _line_index(body: bytes, cte: str, index: QpIndex, at: int) -> QpIndex:
    """Quoted-printable: the start of the encoded line that holds decoded offset ``at``
    (as a :data:`~beacon_proxy.rewrite.transfer.QpIndex`), so that ``apply_edits``
    decodes that one line per copy instead of the up to 4 KB before it.

    Found from the nearest entry of ``decode_indexed``'s index, one line at a time
    (a2b_qp may be split after any LF): the first line whose text ends after ``at``,
    or the last line.
    """
    if cte != "quoted-printable" or not index:
        return index
    enc, dec = index[bisect_right(index, at, key=_decoded) - 1]
    size = len(body)
    while True:  # at most the lines between two index entries (about 4 KB)
        stop = body.find(b"\n", enc) + 1 or size
        end = dec + len(binascii.a2b_qp(body[enc:stop]))
        if end > at or stop >= size:
            return ((enc, dec),)
        enc, dec = stop, end


def _decoded(entry: tuple[int, int]) -> int:
    return entry[1]


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


def _ascii_state(decoded: bytes, at: int, charset: str) -> tuple[tuple[bytes, bytes], str | None]:
    """ISO-2022-JP: the inserted bytes start and end in ASCII (the codec does that per
    call); the text before ``at`` must be in ASCII or JIS-Roman state (restored after).
    Returns the bytes to put around the insertion, or the reason to skip the part."""
    if charset != "iso-2022-jp":
        return (b"", b""), None
    escape = decoded.rfind(b"\x1b", 0, at)
    if escape < 0 or decoded.startswith(_ASCII_ESCAPE, escape):
        return (b"", b""), None
    if decoded.startswith(_JIS_ROMAN, escape):
        return (_ASCII_ESCAPE, _JIS_ROMAN), None
    return (b"", b""), "the insertion point is not in ASCII state"


# -- granted copies: a plan derived from another copy of the same shape ----------------------

#: What an open-pixel token (base64url: :mod:`beacon_proxy.tokens`) is made of: the only
#: bytes a granted copy's HTML may differ in from another copy of its shape.
_RUN: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_RUN_AFTER: Final = re.compile(rb"[A-Za-z0-9_-]*+")
_LOOK_BACK: Final = 256  # bytes looked at for a run's start (beyond: not proven)
_AFTER_RUN_ENDING_IN_DASH: Final = b">!"  # "--" + ">" or "!>" ends a comment

_Reuse = Callable[[MimeTree, MimePart, str], "PartPlan | None"]


@dataclass(frozen=True, slots=True)
class _Known:
    """What :func:`derive_granted` proved of a part instead of computing it: the decoded
    body, quoted-printable line starts (``(encoded, decoded)``), ``body_end``'s answer
    and the charset that answer is for (the scan view is the text itself)."""

    decoded: bytes
    index: QpIndex
    end: int | None
    charset: str


@dataclass(frozen=True, slots=True)
class _Pieces:
    """A base copy's rewritten HTML part, cut where the copies of its shape may differ.

    ``written`` are the stretches of the body written for the base copy, ``decoded``
    the decoded text of each (offsets into the plan's ``decoded``), ``lines`` line
    starts of the base body in each unchanged stretch (one tuple per stretch: before
    the first written one, between, after the last), ``end`` the base's
    ``body_end``."""

    written: tuple[tuple[int, int], ...]
    decoded: tuple[tuple[int, int], ...]
    lines: tuple[QpIndex, ...]
    end: int | None


@dataclass(slots=True)
class GrantedBase:
    """A granted copy's fresh plan, kept for the further copies of its shape.

    ``written``: by part path, the stretches of the rewritten bodies written for this
    copy (``step.Spliced``).  What :func:`derive_granted` needs of each part beyond
    the plan is made on first use (a shape seen once pays nothing for it).  Threads may
    race to make it (then equal values)."""

    shape: Hashable
    plan: FooterPlan
    written: Written
    _pieces: dict[tuple[int, ...], _Pieces | None] = field(default_factory=dict)
    _parts: dict[tuple[int, ...], PartPlan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._parts.update((p.part.path, p) for p in self.plan.parts if isinstance(p, PartPlan))

    def part(self, path: tuple[int, ...]) -> PartPlan | None:
        """The base's plan of the body part at ``path`` (None: none, or skipped)."""
        return self._parts.get(path)

    def pieces(self, plan: PartPlan) -> _Pieces | None:
        """The base part ``plan`` cut at its written stretches (None: not derivable)."""
        path = plan.part.path
        try:
            return self._pieces[path]
        except KeyError:
            pass
        written = self.written.get(path)
        pieces = None if written is None else _cut(plan, written)
        self._pieces[path] = pieces
        return pieces


def derive_granted(base: GrantedBase, data: bytes, written: Written, texts: FooterTexts,
                   default_language: str) -> tuple[FooterPlan, int]:
    """The plan of ``data``, a granted copy of ``base``'s shape (``written``: its
    ``step.Spliced`` parts), and how many part plans were derived instead of made.

    Why: a granted copy's open-pixel tokens make its bytes differ from every other
    copy's, so its footer was planned afresh (0.36 ms of the 70 KB newsletter: the
    MIME parse, the QP decode, the ``</body`` search, the line index) while only a few
    encoded lines differ from the shape's first granted copy.

    ``data``'s MIME structure is the base's moved where
    :func:`~beacon_proxy.rewrite.mime.respliced` proves it (the stretches and the
    bytes around them checked against the parser's reading), else parsed; it is
    planned as :func:`plan_footer` does, but each body part's plan is taken from the
    base where proven, else made (``_plan_part``, exactly as a fresh plan):

    * a part whose fields (spans aside) and body bytes equal the base part's: the
      base's plan with the new ``MimePart`` (every input of ``_plan_part`` is equal:
      ``modifiable``, ``reason``, the transfer encoding, the charset, the body bytes,
      the emptiness of the body span, compared; the part header's line ending, read
      only when the text has no line break, compared), as :func:`rebase_plan` does;
    * a rewritten HTML part (``written`` names it): ``_plan_part`` itself runs, on the
      new body, with three results proven instead of computed (:class:`_Known`):

      - *the decoded text*: the body is cut at the written stretches; every
        unchanged stretch is compared byte for byte with the base's, and (quoted-
        printable) every cut lies after an LF or at an end, in both copies.  As
        ``a2b_qp`` may be split after any LF (what ``decode_indexed`` relies on), the
        decoded text is the base's unchanged decoded stretches joined with the written
        stretches decoded here (a few lines); 7bit/8bit: the body itself;
      - *the line starts* given to ``_line_index``: the ends of the cuts and the
        base's line starts inside unchanged stretches, moved by the lengths written
        before them (``_line_index`` answers the first line whose text ends after the
        insertion point: the same line from any earlier line start);
      - *``body_end``*: where each written stretch differs from the base's (the
        common prefix and suffix cut off), both differences must be made of token
        bytes (``[A-Za-z0-9_-]``) and lie in a non-empty maximal run of them in
        either text, one run per difference, with the same bytes around (outside the
        differences the texts are equal); then ``body_end`` gives the base's answer
        moved by the length changes before it, by :func:`_runs_are_inert`'s
        conditions (checked) and its reading of ``bodyend``.  The scan view must be
        the text itself (charsets outside ``_CHECKED``, not transcoded: ``scan_view``
        is the identity), for both copies, and the charset the base's.

    Everything else ``_plan_part`` computes (the effective charset, the line ending,
    the line breaks around the insertion, the ISO-2022-JP state, the QP line index) is
    computed on the new text as a fresh plan does.  Anything not proven makes the part
    afresh; an unexpected exception in the derivation too (never a failure of the
    plan).  Held to fresh plans byte for byte by ``tests/rewrite/test_footerplan_granted.py``.
    """
    derived = 0

    def reuse(tree: MimeTree, part: MimePart, kind: str) -> PartPlan | None:
        nonlocal derived
        old = base.part(part.path)
        if old is None or old.kind != kind or _headless(part) \
                or not _same_fields(part, old.part):
            return None
        stretches = written.get(part.path)
        try:
            if stretches is None:
                plan = _same_part(old, tree, part)
            else:
                known = _known(base, old, tree.body(part), stretches)
                plan = None if known is None else _plan_part(tree, part, kind, known)
        except _Unproven:
            return None
        except _Skip:
            raise
        except Exception:  # a bug here costs a fresh plan of the part, never a failure
            return None
        derived += plan is not None
        return plan

    tree = respliced(base.plan.tree, data, base.written, written)
    if tree is None:
        tree = parse_message(data, max_depth=MAX_DEPTH, max_parts=MAX_PARTS)
    return _plan_tree(tree, texts, default_language, reuse), derived


def _same_fields(a: MimePart, b: MimePart) -> bool:
    """Whether two parts are equal but for their spans (every field but the spans)."""
    return (a.path == b.path and a.content_type == b.content_type and a.charset == b.charset
            and a.transfer_encoding == b.transfer_encoding and a.disposition == b.disposition
            and a.boundary == b.boundary and a.is_multipart == b.is_multipart
            and a.signed == b.signed and a.modifiable == b.modifiable and a.reason == b.reason
            and a.label == b.label)


def _same_part(old: PartPlan, tree: MimeTree, part: MimePart) -> PartPlan | None:
    """``old`` for ``part``, whose body has the same bytes (see :func:`derive_granted`)."""
    body = tree.data[part.body_span]
    if body != old.body:
        return None
    if old.eol_of_header and line_ending(tree.data[part.header_span]) != old.eol:
        return None
    return replace(old, part=part)


def _after_lf(body: bytes, at: int) -> bool:
    return at == 0 or body[at - 1] == 0x0A


def _cut(plan: PartPlan, written: tuple[tuple[int, int], ...]) -> _Pieces | None:
    """The base part cut at its written stretches (None: not a part to derive)."""
    if (plan.kind != "html" or plan.transcode is not None or plan.state_skip is not None
            or plan.wrap != (b"", b"") or plan.charset in _CHECKED
            or plan.cte not in ("quoted-printable", "7bit", "8bit")
            or scan_view(plan.decoded, plan.charset) is not plan.decoded):
        return None
    body, qp = plan.body, plan.cte == "quoted-printable"
    previous = 0
    for start, stop in written:
        if not previous <= start <= stop <= len(body):
            return None
        if qp and not (_after_lf(body, start) and (_after_lf(body, stop) or stop == len(body))):
            return None
        previous = stop
    if not qp:
        return _Pieces(written, written, ((),) * (len(written) + 1), body_end(plan.decoded))
    decoded: list[tuple[int, int]] = []
    lines: list[QpIndex] = []
    texts: list[bytes] = []
    dec = previous = 0
    for start, stop in (*written, (len(body), len(body))):
        text, index = decode_indexed(body[previous:start], "quoted-printable")
        lines.append(tuple((previous + e, dec + d) for e, d in index if previous + e < start))
        texts.append(text)
        dec += len(text)
        if start == stop == len(body) and len(decoded) == len(written):
            break
        text = binascii.a2b_qp(body[start:stop])
        texts.append(text)
        decoded.append((dec, dec + len(text)))
        dec += len(text)
        previous = stop
    if b"".join(texts) != plan.decoded:  # the split decode is the plan's (a2b_qp after LF)
        return None
    # the plan's own line start (the insertion's line), where an unchanged stretch has it
    stretches = zip((0, *(stop for _, stop in written)), (*(start for start, _ in written),
                                                         len(body)), strict=True)
    for n, (begin, end) in enumerate(stretches):
        extra = [entry for entry in plan.index if begin <= entry[0] < end]
        if extra:
            lines[n] = tuple(sorted({*lines[n], *extra}))
    return _Pieces(written, tuple(decoded), tuple(lines), body_end(plan.decoded))


def _known(base: GrantedBase, old: PartPlan, body: bytes,
           written: tuple[tuple[int, int], ...]) -> _Known | None:
    """What :func:`derive_granted` proves of a rewritten HTML part (None: not proven)."""
    pieces = base.pieces(old)
    if pieces is None or len(written) != len(pieces.written):
        return None
    qp = old.cte == "quoted-printable"
    was, was_text = old.body, old.decoded
    view = memoryview(was)
    texts: list[bytes | memoryview] = []
    index: list[tuple[int, int]] = []
    shifts: list[tuple[int, int, int]] = []  # each run in the base text, its length change
    whole = memoryview(was_text)
    enc = dec = before = before_dec = 0  # the new body's and the base's current offsets
    for n, ((start, stop), (old_start, old_stop), (old_dec, old_dec_stop)) in enumerate(
            zip((*written, (len(body), len(body))),
                (*pieces.written, (len(was), len(was))),
                (*pieces.decoded, (len(was_text), len(was_text))), strict=True)):
        last = n == len(written)
        if not enc <= start <= stop <= len(body) or start - enc != old_start - before \
                or not body.startswith(view[before:old_start], enc) \
                or (qp and not last and not (_after_lf(body, start)
                                             and (_after_lf(body, stop) or stop == len(body)))):
            return None
        if qp:  # the unchanged stretch: the base's text; its line starts, moved
            moved = dec - before_dec
            if enc < len(body) or not enc:  # no line starts at the end (decode_indexed's)
                index.append((enc, dec))
            index += [(e - before + enc, d + moved) for e, d in pieces.lines[n]]
            texts.append(whole[before_dec:old_dec])
            dec += old_dec - before_dec
        if last:
            break
        new = binascii.a2b_qp(body[start:stop]) if qp else body[start:stop]
        old_text = was_text[old_dec:old_dec_stop]
        if new != old_text:
            change = _inert_change(was_text, old_dec, old_text, new)
            if change is None or (shifts and change[0] <= shifts[-1][1]):
                return None  # not inert, or in the run of the one before
            shifts.append(change)
        if qp:
            if start < len(body):
                index.append((start, dec))
            texts.append(new)
            dec += len(new)
        enc, before, before_dec = stop, old_stop, old_dec_stop
    decoded = b"".join(texts) if qp else body
    end = pieces.end
    if end is not None:
        end += sum(length for first, _, length in shifts if first < end)
    return _Known(decoded, tuple(index) if qp else (), end, old.charset)


def _inert_change(text: bytes, at: int, old: bytes, new: bytes) -> tuple[int, int, int] | None:
    """Where ``old`` (at ``at`` in ``text``) and ``new`` differ, if ``body_end`` cannot
    tell them apart (:func:`_runs_are_inert`): the run around the difference in
    ``text`` (start, stop) and the length change; None otherwise."""
    size = min(len(old), len(new))
    head = _common_prefix(old, new, size)
    tail = _common_suffix(old, new, size - head)
    was, now = old[head : len(old) - tail], new[head : len(new) - tail]
    if was.translate(None, _RUN) or now.translate(None, _RUN):
        return None
    start, stop = at + head, at + len(old) - tail  # the base's difference, in ``text``
    back = text[max(0, start - _LOOK_BACK) : start]
    lead = len(back) - len(back.rstrip(_RUN))
    if lead == len(back) and start - lead > 0:
        return None  # a run longer than looked at
    match = _RUN_AFTER.match(text, stop)  # always matches (maybe empty)
    follow = 0 if match is None else match.end() - stop
    first = start - lead
    if not _runs_are_inert(text, first, stop + follow,
                           lead + len(was) + follow, lead + len(now) + follow,
                           (was or text[first:start])[-1:] if not follow else b"",
                           (now or text[first:start])[-1:] if not follow else b""):
        return None
    return first, stop + follow, len(new) - len(old)


def _runs_are_inert(text: bytes, first: int, stop: int, old_size: int, new_size: int,
                    old_last: bytes, new_last: bytes) -> bool:
    """Whether ``body_end`` (on a lower-cased view equal to ``text``) gives the same
    answer, moved by the length change, when the maximal token run ``text[first:stop]``
    (``old_size`` bytes) becomes another (``new_size``); ``*_last``: each run's last
    byte when it differs (else empty: the same).

    The reading of :mod:`~beacon_proxy.rewrite.bodyend` behind it (keep it in step):
    every search there starts at ``<`` (``_EVENT``, the raw-text end, the ``_TAG``
    read back to a ``<``) or ends at ``>`` (``COMMENT_END``, a bogus comment, a tag),
    neither of which is a token byte; a token byte is never a tag-name delimiter,
    quote, ``]`` or ``>``, so ``_TAG``'s name and value classes, ``CONDITIONAL``'s
    condition and the ``"]>"`` search consume any run of them alike, whatever its
    length; letters are read only in the literals right after ``<`` (``<script``,
    ``</body``, ``<![if``, ``<!--[if``, ``<![endif]``), which could run into the run
    only from the byte before it: so that byte is not ``<``, ``!``, ``?`` nor ``[``,
    and ``/`` only when no ``<`` is before it (``</body``); ``-`` matters only as
    ``--`` before ``>`` or ``!>`` (``COMMENT_END``; ``<!--`` starts after ``!``): a run
    followed by ``>`` or ``!`` must not end in ``-`` in either text.  Positions found
    are ``<`` or after ``>``/a literal, never inside a run; every comparison is
    between two of them, kept in order by the move.  Both runs are non-empty (an
    empty one would join its neighbours: ``]`` + ``>``).
    """
    if old_size <= 0 or new_size <= 0 or first < 2:
        return False
    before, lead = text[first - 1], text[first - 2]
    if before in b"<!?[" or (before == 0x2F and lead == 0x3C):
        return False
    after = text[stop : stop + 1]
    if after and after in _AFTER_RUN_ENDING_IN_DASH:
        last = text[stop - 1 : stop]
        return b"-" not in (old_last or last, new_last or last)
    return True


def _common_prefix(a: bytes, b: bytes, size: int) -> int:
    """The length of the common prefix of ``a`` and ``b`` (at most ``size``): the first
    differing byte of the two read as big-endian numbers, in C (not a loop over bytes)."""
    differ = int.from_bytes(a[:size], "big") ^ int.from_bytes(b[:size], "big")
    return size - (differ.bit_length() + 7) // 8


def _common_suffix(a: bytes, b: bytes, size: int) -> int:
    """The length of the common suffix of ``a`` and ``b`` (at most ``size``)."""
    differ = (int.from_bytes(a[len(a) - size :], "little")
              ^ int.from_bytes(b[len(b) - size :], "little"))
    return size - (differ.bit_length() + 7) // 8
