"""Remote loads in CSS, found at the tokenizer level over bytes.

>>> css = b'p{background:url("https://t.example/o.gif")}'
>>> [(r.kind, r.url, css[slice(*r.removal_span)]) for r in scan_css(css)]
[('url', 'https://t.example/o.gif', b'url("https://t.example/o.gif")')]

:func:`scan_css` understands comments, strings with escapes, ``url()`` quoted
and unquoted (also as an escaped identifier, ``u\\72 l(``), ``src()``,
``image-set()`` / ``-webkit-image-set()`` (bare strings inside are URLs),
``@import "x"`` / ``@import url(x)`` and ``url()`` inside ``@font-face``.
Strings elsewhere (``content: "url(x)"``) are text.  Every span is an absolute
``(start, end)`` offset into the buffer passed in.  A region without ``(``,
``@`` and ``\\`` cannot load anything and is skipped at ``memchr`` speed.

Tokens are read as the CSS Syntax Level 3 tokenizer reads them, in one pass that
never resumes inside a token: a url token and the remnants of a bad one (which
honour escapes: ``url(a"\\)'`` runs on to the next ``)``), strings (a hex escape
takes the newline after it), escapes, comments, and a name before ``(`` read whole
(``#url(`` is a hash, ``@url(`` an at-keyword, ``\\41 url(`` one name, but
``<!--url(`` a CDO and a function).  NUL is U+FFFD, a valid url code point, as
the HTML parser and CSS preprocessing make it.  ``{}``, ``()`` and ``;`` are
counted only to end an ``@font-face`` block (its URLs are ``font``), an
``image-set()`` and an ``@import`` rule (removals), never inside another token.

Neutralising a reference means replacing ``removal_span`` with ``neutral``:
``none`` for a ``url()`` token or a whole ``image-set()`` (the declaration
stays valid), nothing for a whole ``@import`` rule.

:func:`declarations` reads the few properties that hide or shrink an image.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Final

__all__ = ["SEPARATOR", "SUBSTITUTED", "CssRef", "css_unescape", "declarations", "plain_css",
           "preload_imports", "scan_css", "weighted_declarations"]

Span = tuple[int, int]

#: What keeps two CSS tokens apart where a removal or an insertion could join them
#: (``u`` and ``rl(``, ``url`` and ``(``): two blanks, as a hex escape just before takes
#: one as its own end (CSS Syntax 4.3.7): ``ur\\6c (`` is ``url(``, ``ur\\6c  (`` is not.
SEPARATOR: Final = b"  "

_WS = rb"[ \t\n\r\f]"
# Name code points as bytes: a NUL is U+FFFD to every client (the HTML parser and CSS
# preprocessing replace it), a non-ASCII code point like any byte of a multi-byte one.
_NAME = rb"-\w\x00\x80-\xff"
_NEXT = re.compile(rb"[/\"'\\@(]")
_NEXT_IN_BLOCK = re.compile(rb"[/\"'\\@({}]")
_NEXT_IN_ARGUMENTS = re.compile(rb"[/\"'\\()[\]{}]")
_NEXT_IN_PRELUDE = re.compile(rb"[/\"'\\(){};]")
# A function name ends a name token started just there: not after a name code point, an
# escape, "#" (a hash token: "#url(" is a hash and a "(") or "@" (an at-keyword); after
# "<!--" when that is a CDO token (see _Scanner.cdo_before).
# (The first-byte class lets re skip the positions where no name can start.)
_FUNC_NAME = re.compile(rb"(?=[-ius])(?:(?<![" + _NAME + rb"\\#@])|(?<=<!--))"
                        rb"(?:-webkit-)?(?:image-set|url|src)\Z", re.I)
# A valid escape (CSS Syntax 4.3.7; a hex escape takes one whitespace, CRLF being one; a
# backslash at the very end is U+FFFD).
_ESCAPE = (rb"\\(?:[0-9a-fA-F]{1,6}(?:\r\n|" + _WS + rb")?|[^\n\r\f0-9a-fA-F]|\Z)")
_STRING = {
    # A backslash at the very end escapes nothing (CSS Syntax 4.3.5): the string ends there.
    # A hex escape takes the whitespace after it, a newline too: "\\41<LF>" goes on.
    q: re.compile(rb"%c(?:[^%c\\\n\r\f]++|\\(?:[0-9a-fA-F]{1,6}(?:\r\n|[ \t\n\r\f])?|\r\n"
                  rb"|[\s\S]))*+(%c|(?=[\n\r\f])|\\?\Z)" % (q, q, q))
    for q in b"\"'"
}
_IDENT_RUN = re.compile(rb"(?:[" + _NAME + rb"]|" + _ESCAPE + rb")++")
_IDENT_BACK = re.compile(rb"[" + _NAME + rb"]*+\Z")
# Consume a url token (CSS Syntax 4.3.6): NUL is U+FFFD there, a valid code point.
_URL_UNQUOTED = re.compile(
    _WS + rb"*+((?:[^)\"'(\\ \t\n\r\f\x01-\x08\x0b\x0e-\x1f\x7f]++|" + _ESCAPE + rb")*+)"
    + _WS + rb"*+(?:\)|\Z)"
)
# Consume the remnants of a bad url (4.3.14): to the first ")" that no valid escape takes.
_BAD_URL_REST = re.compile(rb"(?:[^)\\]++|\\[^\n\r\f]?+)*+(?:\)|\Z)")
_URL_QUOTE = re.compile(_WS + rb"*+([\"'])")
_CLOSE = re.compile(_WS + rb"*+(?:\)|\Z)")
#: The name before a "(" (none: a bare block).
_FUNCTION_BEFORE = re.compile(rb"[" + _NAME + rb"]*+\Z")
#: Functions inside image-set() that cannot bring a string in from elsewhere: its own
#: url() and type(), numbers (a resolution), gradients (an image of their own).  A
#: backslash (an escaped name) or any other function (var, env, if, attr, --custom)
#: may; "" is a bare "(" block.
_PLAIN_IN_SET: Final = frozenset({
    "url", "src", "type", "calc", "min", "max", "clamp", "linear-gradient",
    "radial-gradient", "conic-gradient", "repeating-linear-gradient",
    "repeating-radial-gradient", "repeating-conic-gradient", "-webkit-linear-gradient",
    "-webkit-radial-gradient", "-webkit-repeating-linear-gradient",
    "-webkit-repeating-radial-gradient", "-webkit-gradient"})
#: The kind of a reference whose URL comes from a substitution: no scan can know it.
SUBSTITUTED: Final = "substituted"
_AT = re.compile(rb"@(import|font-face)(?![" + _NAME + rb"\\])", re.I)
# Whitespace and comments: "@import/**/'x'" imports x.
_GAP = re.compile(rb"(?:" + _WS + rb"++|/\*[^*]*+\*++(?:[^/*][^*]*+\*++)*+/)*+")
_HEX_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\n\r\f])?|(\r\n|[\n\r\f])|(.))", re.S)
_DECL_NAMES = (rb"(width|height|max-width|max-height|display|visibility|opacity|mso-hide"
               rb"|overflow(?:-[xy])?|content-visibility|(?:max-)?(?:inline|block)-size)"
               rb"(?![-\w])")
#: A declaration list's names read here, anywhere (a list without one is passed over).
_ANY_NAME = re.compile(_DECL_NAMES, re.I)
#: A declaration list's declarations: up to each ";" outside a string or brackets (two
#: deep: ``calc(min(1px, 2px))``).
_DECLARATION = re.compile(
    rb'(?:[^;"\'(]++|"(?:[^"\\\n]++|\\[\s\S])*+"?|\'(?:[^\'\\\n]++|\\[\s\S])*+\'?'
    rb"|\((?:[^()]++|\([^()]*+\)?)*+\)?)++")
_NAMES: Final = frozenset({"width", "height", "max-width", "max-height", "display",
                           "visibility", "opacity", "mso-hide", "overflow", "overflow-x",
                           "overflow-y", "content-visibility"})
_IMPORTANT = re.compile(rb"![\t\n\f\r ]*+important[\t\n\f\r ]*+\Z", re.I)
#: Logical sizes in a horizontal writing mode (a mail's): the physical ones.
_LOGICAL: Final = {"inline-size": "width", "block-size": "height",
                   "max-inline-size": "max-width", "max-block-size": "max-height"}
#: What a CSS tokenizer reads otherwise than the bytes say, in a declaration list: a
#: comment (a gap between two tokens) and an escape (a code point of a name).
_OBSCURED = re.compile(rb"/\*|\\")
#: The pieces of a declaration list as :func:`plain_css` reads them: a string (kept as it
#: is: a "/*" in it is no comment; to its quote or the line's end), a comment (to its
#: "*/" or the end), a valid escape, a run of anything else, one other byte.
_PLAIN_PIECE = re.compile(
    rb'"(?:[^"\\\n\r\f]++|\\[\s\S])*+"?|\'(?:[^\'\\\n\r\f]++|\\[\s\S])*+\'?'
    rb"|(/\*[^*]*+(?:\*++[^*/][^*]*+)*+(?:\*++/|\*++\Z|\Z))"
    rb"|\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\n\r\f])?|([^\n\r\f0-9a-fA-F]))"
    rb"|[^\"'/\\]++|[\s\S]")
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def plain_css(data: bytes, escapes: bool = False) -> bytes:
    r"""A declaration list as CSS tokenizes it, for the patterns of :func:`declarations`:
    each comment a blank (it parts two tokens: ``display:/**/none`` is ``display: none``,
    ``disp/**/lay`` two names), each escape the letter, digit, ``-`` or ``_`` it stands
    for (``disp\lay``, ``\6e one``), anything else escaped an ``_`` (a name's code point
    that ends no name: ``x\3b display:block`` holds no declaration of ``display``).
    Strings are kept whole.  ``escapes``: comments only (a selector's escapes stand for
    any character: ``.md\:hidden``).  Linear: one pass of one pattern.

    >>> plain_css(rb"disp\lay:/* x */\6e one; content:'/*'; a:b\3b c")
    b"display: none; content:'/*'; a:b_c"
    """
    out = []
    for m in _PLAIN_PIECE.finditer(data):
        if m.group(1) is not None:
            out.append(b" ")
        elif escapes and m.group()[:1] == b"\\":
            out.append(m.group())
        elif m.group(2) is not None:
            cp = int(m.group(2), 16)
            out.append(bytes((cp,)) if cp < 0x80 and cp in _NAME_BYTES else b"_")
        elif m.group(3) is not None:
            out.append(m.group(3) if m.group(3)[0] in _NAME_BYTES else b"_")
        else:
            out.append(m.group())
    return b"".join(out)


#: The values a browser accepts for ``display`` (each keyword of a multi-keyword value)
#: and ``visibility``; any other value is dropped, and an earlier declaration stays.
_CSS_WIDE = frozenset({"inherit", "initial", "unset", "revert", "revert-layer"})
_DISPLAY_WORDS = _CSS_WIDE | frozenset({
    "none", "block", "inline", "inline-block", "flex", "inline-flex", "grid", "inline-grid",
    "table", "inline-table", "table-row", "table-cell", "table-column", "table-column-group",
    "table-header-group", "table-footer-group", "table-row-group", "table-caption",
    "list-item", "contents", "flow", "flow-root", "run-in", "ruby", "ruby-base", "ruby-text",
    "ruby-base-container", "ruby-text-container", "math", "-webkit-box", "-webkit-inline-box",
    "-moz-box", "-moz-inline-box", "-ms-flexbox", "-ms-inline-flexbox", "-webkit-flex",
    "-webkit-inline-flex", "-ms-grid", "-ms-inline-grid"})
_VISIBILITY_WORDS = _CSS_WIDE | frozenset({"visible", "hidden", "collapse"})
_OVERFLOW_WORDS = frozenset({"visible", "hidden", "clip", "scroll", "auto", "overlay"})
#: A number, a percentage or a dimension (CSS Syntax: sign, fraction, exponent); the
#: keywords of a size; the math functions.
_NUMBER = re.compile(r"[-+]?(?:[0-9]*\.[0-9]+|[0-9]+)(?:e[-+]?[0-9]+)?%?")
_LENGTH = re.compile(r"[-+]?(?:[0-9]*\.[0-9]+|[0-9]+)(?:e[-+]?[0-9]+)?(?:[a-z]+|%)?")
_SIZE_WORDS = frozenset({"auto", "min-content", "max-content", "fit-content", "stretch",
                         "-webkit-fill-available", "-moz-available", "-webkit-min-content",
                         "-webkit-max-content", "-moz-min-content", "-moz-max-content",
                         "intrinsic", "min-intrinsic"})
_MATH = ("calc(", "min(", "max(", "clamp(", "-webkit-calc(", "-moz-calc(", "fit-content(")


@dataclass(frozen=True, slots=True)
class CssRef:
    """One URL a stylesheet makes the client fetch."""

    kind: str  # "url", "import", "font"; SUBSTITUTED: a URL no scan can know (url "")
    url: str  # CSS-unescaped (not stripped: a blank URL loads the base), never ""
    url_span: Span  # the URL text, inside quotes or url( )
    token_span: Span  # the url(...) function or the string token
    removal_span: Span  # url(...), a whole image-set(...), or a whole @import rule
    neutral: bytes  # what replaces removal_span: b"none" or b""
    in_image_set: bool = False


_HTML_SPACE: Final = frozenset(b" \t\n\f\r")
_RULE_NAME: Final = re.compile(rb"[^ \t\n\f\r;]*+")  # a rule name or value: to a blank or ";"
#: "@import", then blanks: where the preload scanner reads an import rule's value.
_PRELOAD_IMPORT: Final = re.compile(rb"@[iI][mM][pP][oO][rR][tT][ \t\n\f\r]++")


def preload_imports(data: bytes, start: int = 0, end: int | None = None,
                    known: frozenset[tuple[int, str]] = frozenset()) -> list[CssRef]:
    """The ``@import`` rules Chromium's CSS preload scanner may fetch from a ``<style>``'s
    text ``data[start:end]`` that CSS does not read.

    The preload scanner (``css_preload_scanner.cc``) reads the leading ``@`` rules with a
    small state machine of its own, not as CSS: no strings, no escapes; a rule's name and
    value end at a blank or ``;``, and ``@charset``, ``@layer`` and ``@import`` rules go
    on.  So ``@charset "x;@import 'T';"`` fetches ``T``, which CSS reads as a string.
    Where it stops depends on every byte before, and a refused copy's own removals change
    those bytes; so every ``@import`` followed by a blank is taken here, wherever it is
    (the scanner can fetch from no other place), with its value read as the scanner reads
    it (escapes not decoded: ``@import "\\\\t.example/x"`` is ``//t.example/x`` to it, the
    path ``\\t.example/x`` to CSS).  ``known``: the imports the CSS scan already reported,
    as (offset of the ``@``, URL): one read the same way is not reported again.
    Each is neutralised by a ``_`` after its ``@`` (``removal_span`` empty, ``neutral``
    ``_``): no reader then sees an ``@import`` there.

    >>> text = b'@charset "x;@import t.css;";'
    >>> [(r.kind, r.url, r.removal_span) for r in preload_imports(text)]
    [('import', 't.css', (13, 13))]
    """
    end = len(data) if end is None else end
    out: list[CssRef] = []
    for m in _PRELOAD_IMPORT.finditer(data, start, end):
        at = m.start()
        value = _RULE_NAME.match(data, m.end(), end)
        assert value is not None  # matches ""
        url_span = _preload_url(data, value.start(), value.end())
        url = data[url_span[0]:url_span[1]].decode("utf-8", "replace").replace("\0", "\ufffd")
        if url and (at, url) not in known:
            out.append(CssRef("import", url, url_span, value.span(), (at + 1, at + 1), b"_"))
    return out


def _preload_url(data: bytes, a: int, b: int) -> Span:
    """The URL of an ``@import`` value as Chromium's ``ParseCSSStringOrURL`` cuts it:
    blanks, a ``url(...)`` around it, blanks, matching quotes."""
    while a < b and data[a] in _HTML_SPACE:
        a += 1
    while b > a and data[b - 1] in _HTML_SPACE:
        b -= 1
    if b - a >= 5 and data[a:a + 4].lower() == b"url(" and data[b - 1] == 0x29:
        a, b = a + 4, b - 1
        while a < b and data[a] in _HTML_SPACE:
            a += 1
        while b > a and data[b - 1] in _HTML_SPACE:
            b -= 1
    if b - a >= 2 and data[a] == data[b - 1] and data[a] in b"\"'":
        a, b = a + 1, b - 1
    return a, b


def css_unescape(text: str) -> str:
    r"""Resolve CSS escapes.

    >>> css_unescape(r"u\72 l and \"q\" and line\
    ... break")
    'url and "q" and linebreak'
    """
    if "\\" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            cp = int(m.group(1), 16)
            return chr(cp) if 0 < cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF else "\ufffd"
        return "" if m.group(2) else m.group(3)

    return _HEX_ESCAPE.sub(one, text)


def _text(data: bytes, span: Span) -> str:
    """A URL's text, CSS-unescaped, as the URL parser gets it: not stripped here (it trims
    C0 controls and spaces only - ``htmlattr.clean_url`` -, never an NBSP or U+3000,
    and what it trims to nothing is the base URL: ``url(' ')`` loads the ``<base>``)."""
    # NUL is U+FFFD to a client (HTML parser, CSS preprocessing): url(x\0) loads x%EF%BF%BD
    text = data[span[0] : span[1]].decode("utf-8", "replace").replace("\0", "\ufffd")
    return css_unescape(text)


class _Scanner:
    """One forward pass over the tokens of ``data[:end]``, as CSS Syntax tokenizes them.

    Every loop here hands a token to the same readers (:meth:`string`,
    :meth:`skip_comment`, :meth:`call`), so no structure (a block's ``}``, an
    ``image-set(``'s ``)``, an ``@import``'s ``;``) is ever looked for inside a string, a
    comment, an escape or a url token, and every position a loop resumes at is a token
    boundary.  Blocks are counted only to label a reference (``font``) and to bound a
    removal (a whole ``image-set()``, a whole ``@import`` rule).
    """

    def __init__(self, data: bytes, end: int) -> None:
        self.data = data
        self.end = end
        self.refs: list[CssRef] = []

    def skip_comment(self, pos: int) -> int:
        close = self.data.find(b"*/", pos + 2, self.end)
        return self.end if close < 0 else close + 2

    def string(self, pos: int) -> tuple[int, Span]:
        """End of the string token at ``pos`` and the span of its contents."""
        m = _STRING[self.data[pos]].match(self.data, pos, self.end)
        assert m is not None  # the pattern matches any opening quote
        inner_end = m.end() - len(m.group(1))  # less its quote, or a backslash at the end
        return m.end(), (pos + 1, inner_end)

    def cdo_before(self, at: int) -> bool:
        """Whether ``data[at - 4:at]`` is a CDO token ``<!--`` (its "<" not escaped)."""
        data = self.data
        if at < 4 or data[at - 4 : at] != b"<!--":
            return False
        i = at - 5
        while i >= 0 and data[i] == 0x5C:  # a backslash run, each read once per "<!--"
            i -= 1
        return (at - 5 - i) % 2 == 0

    def call(self, pos: int, kind: str, nested: bool = False) -> tuple[int, bool]:
        """Read the ``(`` or the backslash at ``pos``: a url token, a ``url(``/``src(``
        function, an ``image-set(`` (whole, unless ``nested``), another function or block,
        or a name with escapes.  Returns where the next token starts and whether a block
        (a function or a ``(``) is left open, its ``)`` still to come."""
        data = self.data
        if data[pos] == 0x28:  # "("
            paren = pos
            m = _FUNC_NAME.search(data, max(0, paren - 18), paren)
            if m is None or (m.start() and data[m.start() - 1] == 0x2D
                              and not self.cdo_before(m.start())):
                return paren + 1, True
            name, start = m.group().decode("ascii").lower(), m.start()
        else:  # a backslash: maybe an escaped function name like u\72 l(
            back = _IDENT_BACK.search(data, max(0, pos - 64), pos)
            start = back.start() if back else pos
            run = _IDENT_RUN.match(data, start, self.end)
            if run is None:  # a backslash before a newline: a delimiter
                return pos + 1, False
            paren = run.end()
            if paren >= self.end or data[paren] != 0x28:
                return max(paren, pos + 1), False
            if start > 0 and data[start - 1] in b"#@":  # a hash or an at-keyword, then "("
                return paren + 1, True
            if start >= 2 and data[start - 2] == 0x3C and self.cdo_before(start + 2):
                start += 2  # "<!--" is a CDO token, the name starts after it
            name = css_unescape(data[start:paren].decode("latin-1")).lower()
        if name in ("url", "src"):
            return self.url_function(name, start, paren, kind, nested)
        if name in ("image-set", "-webkit-image-set") and not nested:
            return self.image_set(start, paren, kind), False
        return paren + 1, True

    def url_function(self, name: str, start: int, paren: int, kind: str, nested: bool = False
                     ) -> tuple[int, bool]:
        """Read url( or src( whose ``(`` is at ``paren``; record it; return the end and
        whether the function is still open.  ``nested`` (inside the arguments of another
        function, whose reader counts the blocks): its arguments after a string are left
        to that reader, and its token ends after the string."""
        data, after = self.data, paren + 1
        q = _URL_QUOTE.match(data, after, self.end)
        if q is not None:
            pos, inner = self.string(q.start(1))
            close = _CLOSE.match(data, pos, self.end)
            if close is not None:
                self.add(kind, inner, (start, close.end()))
                return close.end(), False
            # url("x" cross-origin(anonymous)): request modifiers (CSS Values 4) after
            # the string, and the URL loads all the same: the function ends at its ")"
            end = pos if nested else self.arguments(pos, kind)[0]
            self.add(kind, inner, (start, end))
            return end, nested
        if name != "url":  # src(var(--x)): a URL this scan cannot know
            end = after if nested else self.arguments(after, kind)[0]
            self.substituted(start, end)
            return end, nested
        m = _URL_UNQUOTED.match(data, after, self.end)
        if m is None:  # a bad url: nothing is fetched; its remnants honour escapes ("\)")
            bad = _BAD_URL_REST.match(data, after, self.end)
            assert bad is not None  # matches ""
            return bad.end(), False
        self.add(kind, m.span(1), (start, m.end()))
        return m.end(), False

    def add(self, kind: str, inner: Span, token: Span, removal: Span | None = None) -> None:
        url = _text(self.data, inner)
        if not url:
            return
        removal = removal or token
        # a removed @import leaves two blanks: the tokens around it stay apart
        # ("u@import 'T1';rl(T2)" is no url(), "<@import 'T1';/style>" no end tag), also
        # after a hex escape, which takes one blank as its end ("u\\72  l(" is "ur l(")
        neutral = SEPARATOR if kind == "import" else b"none"
        url_span = _strip(self.data, inner)
        self.refs.append(CssRef(kind, url, url_span, token, removal, neutral))

    def image_set(self, start: int, paren: int, kind: str) -> int:
        """Scan ``image-set(`` arguments; every URL in it shares the whole set as removal."""
        first = len(self.refs)
        pos, strings, functions = self.arguments(paren + 1, kind)
        for inner, token in strings:
            self.add(kind, inner, token)
        whole = (start, pos)
        self.refs[first:] = sorted([  # in the order of the text, strings and url()s mixed
            CssRef(r.kind, r.url, r.url_span, r.token_span, whole, b"none", True)
            for r in self.refs[first:]
        ], key=lambda r: r.token_span)
        if functions - _PLAIN_IN_SET:
            # image-set(var(--x)), env(), if(), attr(), --f(): a string substituted from
            # anywhere (a custom property, @property, @function) is a URL here
            self.substituted(start, pos)
        return pos

    def arguments(self, pos: int, kind: str) -> tuple[int, list[tuple[Span, Span]], set[str]]:
        """Read a function's arguments from ``pos`` to just past its ``)`` (CSS Syntax's
        "consume a function": a ``)`` inside a ``[]`` or ``{}`` block is no end): that
        end, the strings directly inside it (contents and token spans) and the names of
        the functions directly inside it (lower-case; ``\\`` for a name with escapes).
        URLs in nested ``url()`` and ``src()`` are recorded as anywhere."""
        data = self.data
        closers = [0x29]  # the closing byte of each block open, innermost last
        strings: list[tuple[Span, Span]] = []
        functions: set[str] = set()
        while closers and pos < self.end:
            m = _NEXT_IN_ARGUMENTS.search(data, pos, self.end)
            if m is None:
                return self.end, strings, functions
            pos, c = m.start(), data[m.start()]
            if c == 0x2F:  # "/"
                pos = self.skip_comment(pos) if data.startswith(b"/*", pos) else pos + 1
            elif c in b"\"'":
                end, inner = self.string(pos)
                if len(closers) == 1:
                    strings.append((inner, (pos, end)))
                pos = end
            elif c in b")]}":
                if c == closers[-1]:
                    closers.pop()
                pos += 1
            elif c in b"[{":
                closers.append(0x5D if c == 0x5B else 0x7D)
                pos += 1
            else:  # "(" or a backslash
                if len(closers) == 1:
                    name = _FUNCTION_BEFORE.search(data, max(0, pos - 64), pos)
                    functions.add("\\" if c == 0x5C else
                                  name.group().decode("latin-1").lower() if name else "")
                pos, opened = self.call(pos, kind, nested=True)
                if opened:
                    closers.append(0x29)
        return pos, strings, functions

    def substituted(self, start: int, end: int) -> None:
        """A function whose URL comes from a substitution (``var()`` and the like)."""
        self.refs.append(CssRef(SUBSTITUTED, "", (start, start), (start, end), (start, end),
                                b"none"))

    def scan(self, pos: int, kind: str = "url", block: bool = False) -> int:
        """Scan to the end, or (``block``) to just past the ``}`` closing a block."""
        data, end = self.data, self.end
        search = (_NEXT_IN_BLOCK if block else _NEXT).search
        depth = 1
        while pos < end:
            m = search(data, pos, end)
            if m is None:
                return end
            pos, c = m.start(), data[m.start()]
            if c == 0x2F:  # "/"
                pos = self.skip_comment(pos) if data.startswith(b"/*", pos) else pos + 1
            elif c in b"\"'":
                pos = self.string(pos)[0]
            elif c == 0x40:  # "@"
                pos = self.at_rule(pos, kind)
            elif c == 0x7B:  # "{" (only in a block)
                depth, pos = depth + 1, pos + 1
            elif c == 0x7D:  # "}"
                depth, pos = depth - 1, pos + 1
                if depth == 0:
                    return pos
            else:  # "(" or a backslash
                pos = self.call(pos, kind)[0]
        return end

    def prelude(self, pos: int, kind: str) -> tuple[int, int]:
        """Read an at-rule's prelude from ``pos``: the position of its ``{`` or a ``}``,
        or just past its ``;`` (outside ``()``), or the end; and that byte (0 at the end)."""
        data, end, depth = self.data, self.end, 0
        while pos < end:
            m = _NEXT_IN_PRELUDE.search(data, pos, end)
            if m is None:
                break
            pos, c = m.start(), data[m.start()]
            if c == 0x2F:  # "/"
                pos = self.skip_comment(pos) if data.startswith(b"/*", pos) else pos + 1
            elif c in b"\"'":
                pos = self.string(pos)[0]
            elif c in b"{}":
                return pos, c
            elif c == 0x3B:  # ";"
                pos += 1
                if depth == 0:
                    return pos, c
            elif c == 0x29:  # ")"
                depth, pos = max(0, depth - 1), pos + 1
            else:  # "(" or a backslash
                pos, opened = self.call(pos, kind)
                depth += opened
        return end, 0

    def at_rule(self, pos: int, kind: str) -> int:
        m = _AT.match(self.data, pos, self.end)
        if m is not None:
            name, name_end = m.group(1).lower(), m.end()
        else:  # another at-keyword (read whole: "@url(" is no function) or an escaped name
            m = _IDENT_RUN.match(self.data, pos + 1, self.end)
            if m is None:
                return pos + 1
            name_end = m.end()
            name = b""
            if b"\\" in m.group():  # "@\69mport" is "@import"
                name = css_unescape(m.group().decode("latin-1")).lower().encode("latin-1",
                                                                               "replace")
            if name not in (b"import", b"font-face"):
                # a "(" after it opens a block: "@a\41 url(" is no url( (the lookbehind of
                # a "(" cannot tell an escape's whitespace from a space)
                return name_end + self.data.startswith(b"(", name_end, self.end)
        if name == b"import":
            return self.import_rule(pos, name_end)
        if kind == "font":  # @font-face does not nest
            return name_end
        brace, c = self.prelude(name_end, kind)
        if c != 0x7B:  # "{"
            return brace
        return self.scan(brace + 1, "font", block=True)

    def import_rule(self, at: int, pos: int) -> int:
        data, end = self.data, self.end
        gap = _GAP.match(data, pos, end)
        assert gap is not None  # matches ""
        pos = gap.end()
        if pos >= end:
            return pos
        if data[pos] in b"\"'":
            after, inner = self.string(pos)
            token: Span = (pos, after)
            if not _text(data, inner):  # imports nothing: the rest is read as any CSS
                return after
        else:  # url(x), url("x"), src("x") (CSS Values 4's <url>), also with an escaped
            # name: u\72l(x)
            run = _IDENT_RUN.match(data, pos, end)
            name = css_unescape(run.group().decode("latin-1")).lower() if run else ""
            if run is None or not data.startswith(b"(", run.end(), end) or name not in (
                    "url", "src"):
                return pos
            before = len(self.refs)
            after = self.url_function(name, pos, run.end(), "import")[0]
            if len(self.refs) == before:  # a bad url, an empty one, or url("x" and more
                return after
            ref = self.refs.pop()
            if ref.kind == SUBSTITUTED:  # src(var(--x)): a URL this scan cannot know
                self.refs.append(ref)
                return after
            inner, token = ref.url_span, ref.token_span
        first = len(self.refs)
        rule_end = self.prelude(after, "import")[0]
        del self.refs[first:]  # the rest of the rule (media, supports) goes with it
        self.add("import", inner, token, (at, rule_end))
        return rule_end


def _strip(data: bytes, span: Span) -> Span:
    start, end = span
    while start < end and data[start] in b" \t\n\r\f":
        start += 1
    while end > start and data[end - 1] in b" \t\n\r\f":
        end -= 1
    return start, end


def scan_css(data: bytes, start: int = 0, end: int | None = None) -> list[CssRef]:
    """Every remote reference in ``data[start:end]``, spans absolute in ``data``."""
    stop = len(data) if end is None else end
    if (
        data.find(b"(", start, stop) < 0
        and data.find(b"@", start, stop) < 0
        and data.find(b"\\", start, stop) < 0
    ):
        return []
    scanner = _Scanner(data, stop)
    scanner.scan(start)
    return scanner.refs


def declarations(data: bytes, start: int = 0, end: int | None = None, *,
                 lower: bool = False) -> dict[str, str]:
    r"""The sizing, visibility and overflow declarations of an inline style, read as CSS
    tokenizes it (comments, escapes: :func:`plain_css`), as a browser's cascade picks
    them: the last valid one, an ``!important`` one over any later one that is not.  A
    value a browser drops (empty; for ``display`` and ``visibility`` a word they do not
    accept: ``display:none;display:blok`` stays hidden) does not count.

    ``lower``: ``data`` is already lower-case (faster).

    >>> declarations(b"display:block; WIDTH: 1PX !important; max-height:0")
    {'display': 'block', 'width': '1px', 'max-height': '0'}
    >>> declarations(b"display:none !important;display:block;visibility:x", lower=True)
    {'display': 'none'}
    >>> declarations(rb"DISP\LAY : /* hide */ \6E one")  # as CSS tokenizes it
    {'display': 'none'}
    """
    out: dict[str, str] = {}
    strong: set[str] = set()
    _read_declarations(data, start, end, lower, out, strong)
    return out


def weighted_declarations(data: bytes, *, lower: bool = False
                          ) -> tuple[dict[str, str], set[str]]:
    """:func:`declarations` and the names among them that are ``!important`` (a style
    block's rule, which an element's own style beats unless it is)."""
    out: dict[str, str] = {}
    strong: set[str] = set()
    _read_declarations(data, 0, None, lower, out, strong)
    return out, strong


def _read_declarations(data: bytes, start: int, end: int | None, lower: bool,
                       out: dict[str, str], strong: set[str]) -> None:
    """Each declaration of ``data[start:end]`` whose name is read here, as CSS parses a
    declaration list: up to a ";" outside strings and brackets, a name (blanks around
    it), a ":", a value; ``!important`` only at the end (any other "!" drops it)."""
    stop = len(data) if end is None else end
    if _OBSCURED.search(data, start, stop) is not None:  # a comment or an escape
        data, start, stop, lower = plain_css(data[start:stop]).lower(), 0, sys.maxsize, True
    if _ANY_NAME.search(data, start, stop) is None:
        return
    for m in _DECLARATION.finditer(data, start, stop):
        raw_name, colon, raw_value = m.group().partition(b":")
        if not colon:
            continue
        name = raw_name.strip(b"\t\n\f\r ").decode("latin-1")
        if not lower:
            name = name.lower()
        name = _LOGICAL.get(name, name)
        if name not in _NAMES:
            continue
        important = False
        bang = raw_value.find(b"!")
        if bang >= 0:
            if _IMPORTANT.match(raw_value, bang) is None:
                continue  # "display:block !ie": dropped
            raw_value, important = raw_value[:bang], True
        value = raw_value.decode("latin-1").strip()
        if not lower:
            value = value.lower()
        if (name in strong and not important) or not _accepted(name, value):
            continue
        out[name] = value
        if important:
            strong.add(name)


def _accepted(name: str, value: str) -> bool:
    """Whether a browser keeps this declaration (``var()`` is kept: decided later): a
    declaration a browser drops must neither hide nor show."""
    if not value:
        return False
    if "var(" in value or value in _CSS_WIDE:
        return True
    if name == "display":
        return _display(value.split())
    if name == "visibility":
        return value in _VISIBILITY_WORDS
    if name == "content-visibility":
        return value in ("visible", "auto", "hidden")
    if name.startswith("overflow"):
        words = value.split()
        return 0 < len(words) <= (2 if name == "overflow" else 1) and all(
            w in _OVERFLOW_WORDS for w in words)
    if name == "opacity":
        return _NUMBER.fullmatch(value) is not None or value.startswith(_MATH)
    if name in ("width", "height", "max-width", "max-height"):
        return (_LENGTH.fullmatch(value) is not None or value.startswith(_MATH)
                or value in _SIZE_WORDS or (value == "none" and name.startswith("max-")))
    return True  # mso-hide: Outlook's own


def _display(words: list[str]) -> bool:
    """CSS Display's grammar: one keyword, or an outer and an inner display with
    ``list-item`` (``inline flow-root``, ``block flex``; not ``inline block``)."""
    if len(words) == 1:
        return words[0] in _DISPLAY_WORDS
    if len(words) > 3 or len(set(words)) != len(words):
        return False
    outer = [w for w in words if w in ("block", "inline", "run-in")]
    inner = [w for w in words if w in ("flow", "flow-root", "table", "flex", "grid", "ruby",
                                       "math")]
    item = [w for w in words if w == "list-item"]
    return len(outer) <= 1 and len(inner) <= 1 and len(outer) + len(inner) + len(item) == len(
        words) and (not item or not inner or inner[0] in ("flow", "flow-root"))
