"""The conservative fallback: neutralise every remote load a client could make.

The precise engine (:mod:`~beacon_proxy.rewrite.engine`) finds each beacon and
changes only what it must.  When it cannot decide - a limit was hit, the MIME
structure can be read in more than one way, an internal error, the CPU budget
ran out - a refused recipient's copy goes through this module instead: a
simple, linear pass that needs no HTML or CSS parser and so cannot be
misled by one.  It trades the layout's remote images for the certainty that
nothing is loaded:

* every attribute that makes an element load something (``src``, ``srcset``,
  ``background``, ``poster``, ``data``, ``href`` on anything but a plain
  ``<a href`` / ``<area href``, ``xlink:href``, ``http-equiv``, ``srcdoc``,
  AMP's ``config``, SMIL's ``attributeName``, ...) is renamed to
  ``x-bp-<name>``, wherever it appears: in tags, in conditional comments, in
  text (where it is harmless).  ``src``/``background`` whose value is a
  ``cid:`` reference keep working;
* in CSS, wherever it is (``<style>``, ``style=""``, ``text/css`` parts, and
  text), a ``(`` that is not preceded by a harmless function name (``rgb``,
  ``calc``, ...) gets a space before it, so no ``url(``, ``image-set(``,
  ``src(`` or escaped variant is a function any more; an ``@import`` (also
  escaped, also as ``&#64;``) becomes ``@_import``, an unknown at-rule that
  is skipped;
* an AMP part (``text/x-amp-html``) is emptied: clients then show the HTML
  alternative, which is neutralised like any other.

"Anywhere" is the point: the pass does not need to know where a tag starts
or whether a quote is open, so no markup can hide a load from it.  Only the
``<a href`` exception looks at context, and only at the few bytes before the
attribute: ``<a`` must directly follow a ``>`` or the start of the text (with
whitespace between), and ``href`` must be its first attribute, which no
attribute value can imitate (see :func:`_plain_anchor`).

Work is linear: a handful of compiled patterns with bounded look-arounds, one
``finditer`` each.  Multi-byte charsets are matched on the same-length scan
view (:func:`~beacon_proxy.rewrite.charsets.scan_view`), so no insertion lands
inside a character; UTF-16, UTF-32 and UTF-7 parts are transcoded to UTF-8
and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite.charsets import opens_tags, reading
from beacon_proxy.rewrite.mime import (
    OPAQUE_TYPES,
    RENDERED_TYPES,
    MimePart,
    MimeTree,
    is_ambiguous,
    is_message,
    parse_message,
    reencode,
)
from beacon_proxy.rewrite.transfer import (
    ENCODINGS,
    decode,
    line_ending,
    normalise_cte,
    padded_soft_breaks,
    shown_raw,
    strip_padded_breaks,
)
from beacon_proxy.rewrite.unmodelled import hide_encoded_files, unread_meta_charset

__all__ = ["FallbackResult", "neutralise_markup", "neutralise_message", "xml_document"]

#: Limits of the fallback's own MIME parse: far above what the precise path allows,
#: still linear enough (work grows with parts x depth).
MAX_DEPTH: Final = 200  # each level may search the rest of the message once
MAX_PARTS: Final = 20_000
MAX_EMBEDDED: Final = 8  # base64/QP-encoded message/rfc822 inside each other

_WS = rb"[\t\n\f\r ]"
_LOADING_ATTRS = (
    rb"srcset|src|lowsrc|dynsrc|background|poster|data|imagesrcset|srcdoc|config|manifest|"
    rb"codebase|archive|code|classid|href|ping|longdesc|profile|icon|action|formaction|"
    rb"http-equiv|attributename|attributionsrc|[a-z][-a-z0-9._]*:(?:href|src|base)"
)
#: An attribute-like name that loads, anywhere: after a character that can end the
#: previous attribute or tag name, before "=" (spaces allowed).
_ATTR = re.compile(rb"(?<=[\t\n\f\r /\"'])(?:" + _LOADING_ATTRS + rb")(?=" + _WS + rb"*+=)",
                   re.IGNORECASE)
_RENAME: Final = b"x-bp-"
_KEEP_CID = frozenset({b"src", b"background"})
#: "(" in any spelling an HTML attribute value decodes.
_PAREN = re.compile(rb"\(|&#0*40;?|&#[xX]0*28;?|&lpar;", re.IGNORECASE)
_HARMLESS_FUNCTIONS = frozenset({
    b"rgb", b"rgba", b"hsl", b"hsla", b"hwb", b"lab", b"lch", b"calc", b"min", b"max", b"clamp",
    b"var", b"linear-gradient", b"radial-gradient", b"repeating-linear-gradient",
    b"repeating-radial-gradient", b"translate", b"translatex", b"translatey", b"rotate",
    b"scale", b"matrix", b"cubic-bezier", b"steps", b"not", b"nth-child", b"nth-of-type",
    b"if", b"lang",
})
_IDENT_BYTES = frozenset(b"-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_IDENT_MAX = 40
#: "@" in any spelling, then the at-keyword's name (escapes included).
_AT = re.compile(rb"(?:@|&#0*64;?|&#[xX]0*40;?|&commat;)([-\w\\]{0,40})", re.IGNORECASE)
#: What may split an at-keyword's name where markup inside CSS is decoded (an SVG
#: ``<style>`` in HTML, any style sheet of an XML document): a character reference,
#: a comment, CDATA, a processing instruction or an element, which the style sheet's
#: text leaves out (``@imp<!---->ort``, ``@&#105;mport``, ``<![CDATA[@]]>import``).
_NAME_SPLITS: Final = frozenset(b"<&]")
_VALUE_MAX: Final = 8192
#: The bytes of an unquoted value (it is one when at most _VALUE_MAX of them end at
#: whitespace, ">" or the end).
_UNQUOTED = re.compile(rb"[^\t\n\f\r >\"'`]*+")
#: A plain url() argument: quoted without quotes, "<" or ">" inside, or unquoted.
_PLAIN_ARG = re.compile(rb"[\t\n\f\r ]*(?:\"[^\"<>\n]{0,4096}\"|'[^'<>\n]{0,4096}'|"
                        rb"[^\"'()<>\s]{1,4096})[\t\n\f\r ]*(?=\))")
_XML_TYPES: Final = frozenset({"text/xml", "application/xml", "text/xsl"})
_AMP_BODY: Final = b"<!-- AMP part removed by beacon-proxy: the HTML alternative is shown -->"
_BARE_CR: Final = re.compile(rb"\r(?!\n)")
#: The encoding name as Thunderbird reads it: up to ";", "," or whitespace.
_CTE_TOKEN: Final = re.compile(r"[^;,\s]*")


@dataclass(frozen=True, slots=True)
class FallbackResult:
    """A neutralised copy, or why none could be made (``data`` is None: hold the copy)."""

    data: bytes | None
    neutralised: int  # loads and parts neutralised
    reason: str | None = None


def _plain_anchor(view: bytes, at: int) -> bool:
    """Whether the ``href`` at ``at`` is the first attribute of ``<a`` or ``<area`` that
    follows ``>`` or the start of the text (whitespace between allowed).

    No attribute value can pass for that: a value cannot end with whitespace alone
    (quoted values end at their quote, unquoted ones at whitespace or ``>``, and a
    ``>`` ends an unquoted value), so when the real tokenizer is inside a value at
    that ``>``, it still is at ``href``, which is then no attribute at all.
    """
    pos = at - _ws_before(view, at)
    if pos == at:
        return False
    tail = view[max(0, pos - 5):pos].lower()
    if tail.endswith(b"<area"):
        pos -= 5
    elif tail.endswith(b"<a"):
        pos -= 2
    else:
        return False
    pos -= _ws_before(view, pos)
    return pos == 0 or view[pos - 1] == 0x3E  # ">"


def _ws_before(view: bytes, pos: int) -> int:
    """How many HTML whitespace bytes end at ``pos``."""
    start = pos
    while start > 0 and view[start - 1] in b"\t\n\f\r ":
        start -= 1
    return pos - start


def _ident_before(view: bytes, pos: int) -> bytes | None:
    """The plain identifier ending at ``pos`` (lower-case), or None when it is not plain."""
    start = pos
    while start > 0 and pos - start <= _IDENT_MAX and view[start - 1] in _IDENT_BYTES:
        start -= 1
    if pos - start > _IDENT_MAX or start == pos:
        return None
    if start > 0 and (view[start - 1] == 0x5C or view[start - 1] >= 0x80   # "\": an escape
                      or view[start - 1] in b";&#"):  # the end of an entity
        return None
    return view[start:pos].lower()


def neutralise_markup(text: bytes, view: bytes | None = None) -> tuple[bytes, int]:
    """``text`` (HTML and/or CSS, ASCII-compatible) with every remote load neutralised.

    ``view``: a same-length view whose ASCII bytes are exactly the text's ASCII
    characters (multi-byte characters masked); ``text`` itself by default.
    Returns the new text and how many constructs were neutralised.  The values of
    renamed attributes and plain ``url()`` arguments are emptied as well, so the
    tracker's address does not even stay as text (cosmetic: the rename and the
    space before ``(`` are what stop the load).

    >>> neutralise_markup(b'<img src="https://t.example/p.gif"><a href="https://x.example">')
    (b'<img x-bp-src=""><a href="https://x.example">', 1)
    >>> neutralise_markup(b'<p style="background:url(//t.example/p)">')[0]
    b'<p style="background:url ()">'
    """
    view = text if view is None else view
    edits: list[tuple[int, int, bytes]] = []
    run = [0]  # where the last unquoted run measured ends (see _attribute_value)
    for m in _ATTR.finditer(view):
        name = m.group().lower()
        if name == b"href" and _plain_anchor(view, m.start()):
            continue
        value = _attribute_value(view, m.end(), run)
        if name in _KEEP_CID and view[value[0]:value[0] + 4].lower() == b"cid:":
            continue
        edits.append((m.start(), m.start(), _RENAME))
        if value[1] > value[0]:
            edits.append((*value, b""))
    for m in _PAREN.finditer(view):
        at = m.start()
        ident = _ident_before(view, at)
        if m.group() == b"(" and ident in _HARMLESS_FUNCTIONS:
            continue
        edits.append((at, at, b" "))
        if m.group() == b"(":
            arg = _PLAIN_ARG.match(view, m.end())
            if arg is not None and arg.end() > m.end():
                edits.append((m.end(), arg.end(), b""))
    for m in _AT.finditer(view):
        name = m.group(1).lower()
        if name.startswith(b"import") or b"\\" in name or (  # also split by markup
                m.end() < len(view) and view[m.end()] in _NAME_SPLITS
                and b"import".startswith(name)):
            edits.append((m.start(1), m.start(1), b"_"))
    if not edits:
        return text, 0
    edits.sort()
    pieces: list[bytes] = []
    pos = 0
    count = 0
    for start, end, replacement in edits:
        if start < pos:  # inside a value already emptied
            continue
        pieces += (text[pos:start], replacement)
        pos = end
        count += start == end
    pieces.append(text[pos:])
    return b"".join(pieces), count


def _attribute_value(view: bytes, pos: int, run: list[int]) -> tuple[int, int]:
    """The span of the value after ``pos`` (at the spaces before ``=``), without quotes.

    Only used to empty the value: a wrong guess changes text, never what loads.
    ``run[0]``: where the unquoted run measured last ends.  Calls come at increasing
    offsets, and one run can hold many names ("src=/src=/..."): from any of them it
    ends at the same place, so it is read once (read from each, up to _VALUE_MAX
    bytes and back, it cost 16 000 steps per name: 15 s for 500 KB of "src=/").
    """
    pos += _ws_run(view, pos) + 1  # the "="
    pos += _ws_run(view, pos)
    if pos < len(view) and view[pos] in b"\"'":
        close = view.find(view[pos:pos + 1], pos + 1, pos + 1 + _VALUE_MAX)
        return (pos + 1, close) if close > 0 else (pos + 1, pos + 1)
    end = run[0]
    if end <= pos:
        end = run[0] = _UNQUOTED.match(view, pos).end()  # type: ignore[union-attr]  # ""
    if end == pos or end - pos > _VALUE_MAX or (end < len(view)
                                                and view[end] not in b"\t\n\f\r >"):
        return pos, pos
    return pos, end


def _ws_run(view: bytes, pos: int) -> int:
    end = pos
    while end < len(view) and view[end] in b"\t\n\f\r ":
        end += 1
    return end - pos


# --- whole messages ---------------------------------------------------------------------------

def _part_body(tree: MimeTree, part: MimePart) -> tuple[bytes, str]:
    """The transfer-decoded body and the encoding to write it back with.

    An unknown encoding is read as its first token (``base64 x`` is base64 to
    Thunderbird), else as the bytes themselves; either way the part is then
    written back under a known encoding (see :func:`_neutralise_part`), so no
    client decodes it some other way (Thunderbird decodes ``x-uuencode``).
    Quoted-printable with blanks after a soft break's ``=`` is read as RFC 2045 says
    (:func:`~beacon_proxy.rewrite.transfer.padded_soft_breaks`) and written back.
    """
    body = tree.body(part)
    cte = part.transfer_encoding
    if cte not in ENCODINGS:
        cte = normalise_cte(_CTE_TOKEN.match(cte)[0])  # type: ignore[index]
        cte = cte if cte in ENCODINGS else "8bit"
    if cte == "quoted-printable" and padded_soft_breaks(body):
        body = strip_padded_breaks(body)  # RFC 2045's reading; written back canonically
    return decode(body, cte), cte


def _neutralise_text(decoded: bytes, label: str, content_type: str) -> tuple[bytes, int] | str:
    """The neutralised text and the count; or why no copy is safe (hold it).

    Text that clients read in several ways (``Reading.others``: another charset, a
    ``<meta>``, a label browsers do not know) is neutralised only when every reading's
    view gives the same result, which then is safe for each of them.  An XML document
    that declares entities of its own (``<!ENTITY``, in its DOCTYPE's internal subset)
    is held: a reference to one expands to text no pattern here sees (``url&p;`` with
    ``p`` a ``(``; ``@&i;`` with ``i`` the word ``import``).
    """
    differently = (f"{content_type} part that clients decode differently ({label}, "
                   "or a <meta> charset)")
    read = reading(decoded, label)
    if read is None:
        return differently
    if read.transcoded is None and unread_meta_charset(decoded.lower()) is not None:
        return differently  # a client honouring the <meta> reads other markup than we change
    if xml_document(content_type) and b"<!entity" in read.view.lower():
        return f"{content_type} part that declares its own entities (<!ENTITY)"
    text, count = neutralise_markup(read.text, read.view)
    for other in read.others:
        if neutralise_markup(read.text, other)[0] != text:
            return differently
    if not count:
        return decoded, 0
    new = read.back(text)
    return differently if read.foreign and opens_tags(new) else (new, count)


def xml_document(content_type: str) -> bool:
    """Whether a browser renders a part of this type as an XML document, which loads what
    it names, when a frame, ``<object>`` or ``<embed>`` loads it by its ``cid:``: XHTML,
    SVG (an image that loads nothing only when an ``<img>`` shows it), any XML.

    >>> xml_document("image/svg+xml"), xml_document("text/xml"), xml_document("image/png")
    (True, True, False)
    """
    return content_type.endswith("+xml") or content_type in _XML_TYPES


def _changed_part(tree: MimeTree, part: MimePart, new: bytes, cte: str
                  ) -> tuple[slice, bytes]:
    """(span to replace, bytes): the body re-encoded; the header too when the encoding changes."""
    body, header = reencode(tree, part, new, cte)
    if header is None:
        return part.body_span, body
    sep = tree.data[part.header_span.stop:part.body_span.start]
    eol = line_ending(tree.data[part.header_span] or tree.body(part))
    return slice(part.header_span.start, part.body_span.stop), header + (sep or eol) + body


def neutralise_message(data: bytes, _depth: int = 0) -> FallbackResult:
    """Neutralise every remote load in every part a client could render as HTML or CSS.

    Parts of other types leave byte-identical.  ``data`` is None in the result when
    that cannot be promised (the message is beyond even the fallback's limits, it
    holds encrypted or opaque S/MIME content that a client would decrypt and render,
    or a delimiter line that clients split differently).  A bare CR, a line end
    to some clients only, becomes CRLF first, so every client reads the structure
    that was neutralised.
    """
    fixed = 0
    if b"\r" in data:
        data, fixed = _BARE_CR.subn(b"\r\n", data)
    tree = parse_message(data, max_depth=MAX_DEPTH, max_parts=MAX_PARTS)
    for problem in tree.problems:
        if is_ambiguous(problem):  # no one copy is safe for every reading
            return FallbackResult(None, 0, problem)
        if problem.startswith(("more than", "too many", "internal")):
            return FallbackResult(None, 0, f"beyond the fallback's limits: {problem}")
    changes: list[tuple[slice, bytes]] = []
    count = 0
    parents = {p.path[:-1] for p in tree.parts if p.path}
    for part in tree.parts:
        if part.content_type in OPAQUE_TYPES:
            return FallbackResult(None, 0, f"opaque {part.content_type} content")
        broken = part.reason == "broken MIME structure" or (
            part.is_multipart and not part.boundary)
        if part.is_multipart:
            if broken and part.path not in parents:  # no parts found: a client shows the body
                new, n = neutralise_markup(tree.body(part))
                if n:
                    changes.append((part.body_span, new))
                    count += n
            continue
        if is_message(part.content_type):  # encoded: the parser left it opaque
            if _depth >= MAX_EMBEDDED:
                return FallbackResult(None, 0, "embedded messages nested too deep")
            decoded, _ = _part_body(tree, part)
            inner = neutralise_message(decoded, _depth + 1)
            if inner.data is None:
                return inner
            # Always written back, in base64: Python's email parses the encoded text
            # itself as a message (it ignores the encoding here), and base64 text has no
            # header field, no markup; so every reading is the neutralised message.
            changes.append(_changed_part(tree, part, inner.data, "base64"))
            count += max(inner.neutralised, 1)
            continue
        if part.content_type == "text/plain" and not broken:
            decoded, cte = _part_body(tree, part)
            new, n = hide_encoded_files(decoded)
            if n:
                changes.append(_changed_part(tree, part, new, cte))
                count += n
            continue
        if (part.content_type not in RENDERED_TYPES and not xml_document(part.content_type)
                and not broken):
            continue
        decoded, cte = _part_body(tree, part)
        if part.content_type == "text/x-amp-html" and not broken:
            new, n = _AMP_BODY, 1
        else:
            neutralised = _neutralise_text(decoded, part.charset_label, part.content_type)
            if isinstance(neutralised, str):
                return FallbackResult(None, 0, neutralised)
            new, n = neutralised
        if (n or part.transfer_encoding not in ENCODINGS or shown_raw(tree.body(part), cte)
                or (cte == "quoted-printable" and padded_soft_breaks(tree.body(part)))):
            # The header too for an unknown encoding: a known one.  Base64 that some
            # clients cannot decode (and show as it is), quoted-printable that decoders
            # join in two ways: re-encoded, one reading left.
            changes.append(_changed_part(tree, part, new, cte))
            count += max(n, 1)
    if not changes:
        return FallbackResult(data, fixed)
    return FallbackResult(_splice(data, changes), count + fixed)


def _splice(data: bytes, changes: list[tuple[slice, bytes]]) -> bytes:
    pieces: list[bytes] = []
    pos = 0
    for span, new in sorted(changes, key=lambda change: change[0].start):
        pieces += (data[pos:span.start], new)
        pos = span.stop
    pieces.append(data[pos:])
    return b"".join(pieces)
