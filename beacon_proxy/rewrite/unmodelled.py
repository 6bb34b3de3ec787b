"""What the precise engine knowingly does not model: such content goes to the fallback.

The scanner follows the HTML tokenizer, and the MIME parser the RFCs with
the lenient reading most clients share.  A few things are read differently
by some client, in a way no single precise reading covers; rather than guess,
the engine reports them (``Analysis.unhandled``) and refused copies take the
conservative fallback (:mod:`~beacon_proxy.rewrite.fallback`), which holds the
copy where even it cannot promise anything:

* SVG and MathML foreign content (``<svg><style>`` is not raw text, entities
  are decoded in it) and ``<select>`` (``<xmp>``, ``<title>``, ``<iframe>``
  are ignored there, so their "raw text" is markup), and ``<frameset>`` (a parser
  in its mode ignores ``<title>``, ``<style>`` and most other start tags: a
  comment the scanner reads as title text is a comment there, and an Outlook
  conditional comment in it is markup);
* a ``<meta charset>`` naming a charset that is not ASCII-compatible (UTF-7,
  UTF-16, ...) in a part labelled with an ASCII-compatible one: a client
  that honours the meta reads ``+ADw-img ...`` as ``<img ...``.  The fallback
  cannot neutralise both readings and holds the copy;
* ``Content-Base`` / ``Content-Location`` naming a remote URL (RFC 2557):
  Thunderbird makes it the ``<base href>`` of the HTML part below, so a
  relative URL loads from there;
* a uuencoded or yEnc-encoded HTML file in a plain-text part: Thunderbird
  decodes and renders it.  The fallback indents the ``begin`` line, so no
  client finds it.

* ``<noscript>`` content that a parser with scripting enabled reads otherwise:
  such a parser (a webmail inserting the message into its scripted page, parse5's
  default) takes it as raw text up to the first ``</noscript``, where the markup
  reading the scanner follows (scripting disabled, as in a mail client) may be
  inside an attribute value, a comment or a ``<style>``:
  ``<noscript><p title="</noscript><img src=//t.example/o>">`` loads the tracker
  there and nowhere else.  Content made of text and plain tags (quoted values
  without ``<``, no comment, no raw-text or foreign element) ends in the same
  place for both, as MJML's ``<noscript><xml>...</xml></noscript>`` does: only
  other content goes to the fallback (:func:`noscript_breakout`).

Newsletters hardly ever contain any of these.  Every check is a few
``memchr``-speed finds, confirmed by a bounded pattern.
"""

from __future__ import annotations

import re
from typing import Final

from beacon_proxy.rewrite.charsets import is_transcoded, normalise_charset
from beacon_proxy.rewrite.htmlattr import is_remote
from beacon_proxy.rewrite.labels import roundcube_name
from beacon_proxy.rewrite.mime import RENDERED_EXTENSIONS

__all__ = ["hide_encoded_files", "noscript_breakout", "noscript_spans", "remote_base",
           "unmodelled_markup", "unread_meta_charset"]

#: One pass over the lower-cased view (a literal "<" prefix: memchr speed): an unmodelled
#: context (the match is "<" + its name + a delimiter), or a "<meta" tag (the match is
#: "<meta"), whose charset declaration, if any, is the first _CHARSET match after it
#: within _META_GAP bytes and before any ">".  No capturing group: every alternative
#: starts with a literal, which re tests without entering it, so the "<" of an ordinary
#: tag costs one byte comparison per alternative (a group in front cost an entered
#: frame at each of the ~2 800 "<" of the benchmark newsletter: 58 us against 40).
_TAGS: Final = re.compile(
    rb"<(?:s(?:vg|elect)[\t\n\f\r />]|math[\t\n\f\r />]|frameset[\t\n\f\r />]|meta|"
    rb"noscript(?=[\t\n\f\r />]|\Z))")
_CHARSET: Final = re.compile(rb"charset[\t\n\f\r ]*=[\t\n\f\r \"']*([-\w.:]{1,40})")
_META_GAP: Final = 512
_BASE_FIELD: Final = re.compile(
    rb"^content-(?:base|location)[ \t]*:((?:[^\n]*\n?)(?:[ \t][^\n]*\n?)*)",
    re.IGNORECASE | re.MULTILINE)
# Around a base URL: blanks, quotes (double or single), angle brackets and comments
# (RFC 5322 CFWS, one level): what a lenient reader may strip before using the value.
_NOT_URL: Final = re.compile(rb"[\s\"'<>]+|\([^()]*\)")
# A uuencoded or yEnc file named like a page or a message (Thunderbird types it by its
# name, which runs to the line's end however long: every extension on the line is
# tried, one scan of it), or an SVG image.
_FILE_EXTENSIONS: Final = "|".join(
    sorted({*RENDERED_EXTENSIONS, "shtm", "ehtm", "svg"}, key=len, reverse=True)).encode()
_ENCODED_FILE: Final = re.compile(  # after a "\n" (a literal prefix, unlike "^")
    rb"\n(?:[bB][eE][gG][iI][nN][ \t]+[0-7]{3,4}[ \t]|=[yY][bB][eE][gG][iI][nN][ \t])"
    rb"[^\n]*?\.(?i:" + _FILE_EXTENSIONS + rb")\b")
_NOSCRIPT: Final = re.compile(rb"<noscript(?=[\t\n\f\r />]|\Z)")
_NOSCRIPT_END: Final = re.compile(rb"</noscript(?=[\t\n\f\r />]|\Z)")
_ELEMENTS_APART = (rb"(?:script|style|textarea|title|xmp|iframe|noembed|noframes|plaintext|"
                   rb"noscript|svg|math)(?![^\t\n\f\r />])")
_NAME = rb"[^\t\n\f\r />\"'<=`]++"
#: Content after which the markup reading is in the data state, as the raw-text one is:
#: text ("<" not followed by a letter, "/", "!" or "?" is text), and tags whose names
#: hold no quote, "<", "=" or backtick and whose quotes open values right after
#: "name =" (where the tokenizer opens them) and hold no "<".  No comment, bogus
#: comment, CDATA, raw-text or foreign element.  Deterministic: each alternative
#: starts with its own byte (the optional "= value" gives back one run of blanks).
_ATTRIBUTES = (rb"(?:[\t\n\f\r /]++|" + _NAME + rb"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+"
               rb"(?:\"[^\"<]*+\"|'[^'<]*+'|[^\t\n\f\r >\"'<=`]++))?)*+>")
_PLAIN_CONTENT: Final = re.compile(
    rb"(?:[^<]++|<(?![a-z/!?])|<(?!" + _ELEMENTS_APART + rb")/?[a-z][^\t\n\f\r />\"'<=`]*+"
    + _ATTRIBUTES + rb")*+")
#: A ``<noscript>`` start tag whose end both readings find at the same ">" (the same
#: attribute grammar: anything else is not trusted).
_NOSCRIPT_TAG: Final = re.compile(rb"<noscript" + _ATTRIBUTES)
_BEGIN_LINE: Final = re.compile(rb"^(?=begin[ \t]+[0-7]|=ybegin[ \t])",
                                re.IGNORECASE | re.MULTILINE)


def _first(low: bytes, contexts: bool) -> str | None:
    """The first unmodelled context (if ``contexts``) or ``<meta>`` charset that is not
    ASCII-compatible, in document order; None when there is none.

    A ``<meta``'s declaration used to be read forward from each ``<meta`` up to
    512 bytes, in the one regex call: ``<meta`` repeated cost 12 s per 16 MB.  Now
    no byte is searched for a declaration twice: one found serves every ``<meta``
    before it, and where none starts is remembered (``searched``).
    """
    pos = searched = 0
    declaration = -1  # where the next declaration found starts (-1: none known)
    found: re.Match[bytes] | None = None
    ends = _Ends(low)
    while (tag := _TAGS.search(low, pos)) is not None:
        if low.startswith(b"<noscript", tag.start()):
            if not contexts:
                pos = tag.end()
                continue
            if _noscript_end(low, tag.start(), ends) < 0:
                return _NOSCRIPT_REASON
            pos = tag.end()  # plain content holds no <noscript: each byte is read once
            continue
        if not low.startswith(b"<meta", tag.start()):  # an unmodelled context
            if contexts:
                return f"{low[tag.start() + 1 : tag.end() - 1].decode()} content"
            pos = tag.end()
            continue
        start = tag.end()
        if declaration < start:
            stop = start + _META_GAP + len(b"charset")  # a declaration starts in the gap
            declaration = low.find(b"charset", max(start, searched), stop)
            while declaration >= 0 and (found := _CHARSET.match(low, declaration)) is None:
                declaration = low.find(b"charset", declaration + 1, stop)
            if declaration < 0:  # none starts before stop - 7, from anywhere after start
                searched = stop - len(b"charset") + 1
        if declaration < start or low.find(b">", start, declaration) >= 0:
            pos = tag.start() + 1  # this <meta> declares nothing
            continue
        assert found is not None  # set with declaration
        label = found.group(1).decode("ascii", "replace")
        webmail = roundcube_name(label)  # Roundcube's name for it: x-utf-7 is UTF-7 there
        if is_transcoded(normalise_charset(label)) or (
                webmail is not None and is_transcoded(normalise_charset(webmail))):
            return f"a <meta> charset ({label}) that is not ascii-compatible"
        pos = found.end()
    return None


def unmodelled_markup(low: bytes) -> str | None:
    """Why the scanner cannot read this lower-cased HTML precisely, or None.

    >>> unmodelled_markup(b"<p><svg><style><img src=x></style></svg>")
    'svg content'
    >>> unmodelled_markup(b'<meta charset="utf-7"><p>+adw-img src=x+ad4-')
    'a <meta> charset (utf-7) that is not ascii-compatible'
    >>> unmodelled_markup(b"<meta charset=utf-8><p>hi")
    >>> unmodelled_markup(b"<noscript><select><option>x</select></noscript>")
    'select content'
    """
    return _first(low, contexts=True)


_NOSCRIPT_REASON: Final = "noscript content that parsers with scripting enabled read otherwise"


class _Ends:
    """The first ``</noscript`` at or after a position, asked for positions that only
    grow: one search serves every later position up to the end it found, and "none"
    every later position at all.  Without it, ``<noscript>`` repeated with no end
    searched to the text's end for each (quadratic: 1.6 MB took 36-92 s)."""

    __slots__ = ("found", "low", "none_from")

    def __init__(self, low: bytes) -> None:
        self.low = low
        self.found: re.Match[bytes] | None = None
        self.none_from = len(low) + 1  # no "</noscript" starts at or after this

    def after(self, pos: int) -> re.Match[bytes] | None:
        if pos >= self.none_from:
            return None
        found = self.found
        if found is None or found.start() < pos:
            found = self.found = _NOSCRIPT_END.search(self.low, pos)
            if found is None:
                self.none_from = pos
        return found


def _noscript_end(low: bytes, start: int, ends: _Ends) -> int:
    """Where the ``<noscript`` at ``start`` ends for a parser with scripting enabled (after
    its ``</noscript``; the end of the text when there is none), or -1 when the markup
    reading may be elsewhere there (its content is not plain).  ``ends``: the searches
    for ``</noscript`` so far (``start`` only grows from call to call)."""
    tag = _NOSCRIPT_TAG.match(low, start)
    if tag is None:
        return -1
    end = ends.after(tag.end())
    if end is None:  # raw text to the end: that reading sees less
        return len(low)
    plain = _PLAIN_CONTENT.match(low, tag.end(), end.start())
    return end.end() if plain is not None and plain.end() == end.start() else -1


def noscript_breakout(low: bytes) -> str | None:
    """Why a parser with scripting enabled reads this lower-cased HTML otherwise, or None
    (:func:`unmodelled_markup` says it too, in the same pass as the other checks).

    For each ``<noscript>``, its content up to the first ``</noscript`` (where that
    parser ends it) must be plain (:data:`_PLAIN_CONTENT`); the search goes on from
    there, so every byte is read once.

    >>> noscript_breakout(b'<noscript><p title="</noscript><img src=x>"></noscript>')
    'noscript content that parsers with scripting enabled read otherwise'
    >>> noscript_breakout(b'<noscript><img src="x" alt="a>b"></noscript><p>')
    """
    for _, end in noscript_spans(low):
        if end < 0:
            return _NOSCRIPT_REASON
    return None


def noscript_spans(low: bytes) -> list[tuple[int, int]]:
    """(start, end) of each ``<noscript>`` to the end of its ``</noscript`` as a parser
    with scripting enabled reads it (:func:`_noscript_end`: -1 when not plain; the
    list stops there).  What a copy's changed region must not touch for the verdict
    to stay (:mod:`~beacon_proxy.rewrite.rescan`)."""
    out: list[tuple[int, int]] = []
    pos = 0
    ends = _Ends(low)
    while (m := _NOSCRIPT.search(low, pos)) is not None:
        end = _noscript_end(low, m.start(), ends)
        out.append((m.start(), end))
        if end < 0:
            break
        pos = max(end, m.end())
    return out


def unread_meta_charset(low: bytes) -> str | None:
    """A ``<meta>`` charset that is not ASCII-compatible (a lower-cased view), or None.

    Looked for past any other unmodelled content (an ``<svg>`` first must not hide it).
    """
    return _first(low, contexts=False)


def remote_base(header: bytes) -> bool:
    """Whether a part's header names a remote ``Content-Base`` or ``Content-Location``.

    Fail-closed: the value counts as remote when it is a remote URL once blanks,
    quotes, angle brackets and comments are dropped (``<https://t.test/>``,
    ``(c) 'https://t.test/'``), or when ``//`` is anywhere in it (a scheme or a
    spelling no rule here knows): relative URLs in such a part could load from
    it, so the part is not trusted to the precise path.
    """
    if b"ontent-" not in header and b"ONTENT-" not in header:
        return False
    for m in _BASE_FIELD.finditer(header):
        value = _NOT_URL.sub(b"", m.group(1))
        if b"//" in value or is_remote(value.decode("latin-1")):
            return True
    return False


def hide_encoded_files(text: bytes) -> tuple[bytes, int]:
    """Plain text with every uuencode/yEnc ``begin`` line of an HTML file indented.

    Returns the text and how many lines were indented (0: none found, unchanged).

    >>> hide_encoded_files(b"hi\\nbegin 644 a.html\\n`\\nend\\n")
    (b'hi\\n begin 644 a.html\\n`\\nend\\n', 1)
    """
    first = text.find(b"\n")  # the first line has no "\n" before it: matched apart
    if _ENCODED_FILE.search(text) is None and _ENCODED_FILE.match(
            b"\n" + (text if first < 0 else text[:first])) is None:
        return text, 0
    return _BEGIN_LINE.subn(b" ", text)
