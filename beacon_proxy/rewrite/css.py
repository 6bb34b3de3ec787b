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

Neutralising a reference means replacing ``removal_span`` with ``neutral``:
``none`` for a ``url()`` token or a whole ``image-set()`` (the declaration
stays valid), nothing for a whole ``@import`` rule.

:func:`declarations` reads the few properties that hide or shrink an image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CssRef", "css_unescape", "declarations", "scan_css"]

Span = tuple[int, int]

_WS = rb"[ \t\n\r\f]"
_NEXT = re.compile(rb"[/\"'\\@(]")
_NEXT_IN_SET = re.compile(rb"[/\"'\\()]")
_NEXT_IN_BLOCK = re.compile(rb"[/\"'\\{}]")
_STRING = {
    # A backslash at the very end escapes nothing (CSS Syntax 4.3.5): the string ends there.
    q: re.compile(rb"%c(?:[^%c\\\n\r\f]++|\\(?:\r\n|[\s\S])?+)*+(%c|(?=[\n\r\f])|\Z)" % (q, q, q))
    for q in b"\"'"
}
_FUNC_NAME = re.compile(rb"(?<![-\w\x80-\xff\\])(?:-webkit-)?(?:image-set|url|src)\Z", re.I)
_ESCAPE = rb"\\(?:[0-9a-fA-F]{1,6}" + _WS + rb"?|[^\n\r\f0-9a-fA-F])"
_IDENT_RUN = re.compile(rb"(?:[-\w\x80-\xff]|" + _ESCAPE + rb")++")
_IDENT_BACK = re.compile(rb"[-\w\x80-\xff]*+\Z")
_URL_UNQUOTED = re.compile(
    _WS + rb"*+((?:[^)\"'(\\ \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]++|" + _ESCAPE + rb")*+)"
    + _WS + rb"*+(?:\)|\Z)"
)
_URL_QUOTE = re.compile(_WS + rb"*+([\"'])")
_CLOSE = re.compile(_WS + rb"*+(?:\)|\Z)")
_AT = re.compile(rb"@(import|font-face)(?![-\w\x80-\xff\\])", re.I)
# Whitespace and comments: "@import/**/'x'" imports x.
_GAP = rb"(?:" + _WS + rb"++|/\*[^*]*+\*++(?:[^/*][^*]*+\*++)*+/)*+"
_IMPORT_URL = re.compile(_GAP + rb"(?:([\"'])|(url\())", re.I)
_IMPORT_TAIL = re.compile(rb"(?:[^;\"'{}]++|\"[^\"\n]*+\"?|'[^'\n]*+'?)*+;?")
_PRELUDE = re.compile(rb"[^{;}]*+")  # an at-rule's prelude: its block opens with "{"
_HEX_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\r\f]?|(\r\n|[\n\r\f])|(.))", re.S)
_DECL_NAMES = rb"(width|height|max-width|max-height|display|visibility|opacity|mso-hide)"
_DECL = re.compile(rb"(?<![-\w])" + _DECL_NAMES + _WS + rb"*+:" + _WS + rb"*+([^;}!]*)", re.I)
# The same on lower-case text: a first-byte class before the lookbehind lets re skip to
# the few places where a name can start (with re.I it tries every position).
_DECL_LOWER = re.compile(rb"(?=[wmhdvo])(?<![-\w])" + _DECL_NAMES + _WS + rb"*+:" + _WS
                         + rb"*+([^;}!]*)")


@dataclass(frozen=True, slots=True)
class CssRef:
    """One URL a stylesheet makes the client fetch."""

    kind: str  # "url", "import", "font"
    url: str  # CSS-unescaped, whitespace-stripped
    url_span: Span  # the URL text, inside quotes or url( )
    token_span: Span  # the url(...) function or the string token
    removal_span: Span  # url(...), a whole image-set(...), or a whole @import rule
    neutral: bytes  # what replaces removal_span: b"none" or b""
    in_image_set: bool = False


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
    return css_unescape(data[span[0] : span[1]].decode("utf-8", "replace")).strip()


class _Scanner:
    def __init__(self, data: bytes, end: int) -> None:
        self.data = data
        self.end = end
        self.refs: list[CssRef] = []
        # Where the last @font-face prelude without a block ended (at ";", "}" or the end):
        # every later @font-face before it ends there too, so it is not read again (one
        # read per "@font-face " to the same far end made that quadratic).
        self.no_block = -1

    def skip_comment(self, pos: int) -> int:
        close = self.data.find(b"*/", pos + 2, self.end)
        return self.end if close < 0 else close + 2

    def string(self, pos: int) -> tuple[int, Span]:
        """End of the string token at ``pos`` and the span of its contents."""
        m = _STRING[self.data[pos]].match(self.data, pos, self.end)
        assert m is not None  # the pattern matches any opening quote
        inner_end = m.end() - (1 if m.group(1) else 0)
        return m.end(), (pos + 1, inner_end)

    def function_at(self, paren: int) -> tuple[str, int] | None:
        """(lower-cased name, start) of url/src/image-set ending just before ``paren``."""
        m = _FUNC_NAME.search(self.data, max(0, paren - 18), paren)
        if m is None:
            return None
        return m.group().decode("ascii").lower(), m.start()

    def url_function(self, name: str, start: int, paren: int, kind: str) -> int:
        """Read url( or src( whose ``(`` is at ``paren``; record it; return the end."""
        data, after = self.data, paren + 1
        q = _URL_QUOTE.match(data, after, self.end)
        if q is not None:
            pos, inner = self.string(q.start(1))
            close = _CLOSE.match(data, pos, self.end)
            if close is None:
                return pos
            self.add(kind, inner, (start, close.end()))
            return close.end()
        if name != "url":
            return after
        m = _URL_UNQUOTED.match(data, after, self.end)
        if m is None:  # a bad url: nothing is fetched; skip to its ")"
            close_at = data.find(b")", after, self.end)
            return self.end if close_at < 0 else close_at + 1
        self.add(kind, m.span(1), (start, m.end()))
        return m.end()

    def add(self, kind: str, inner: Span, token: Span, removal: Span | None = None) -> None:
        url = _text(self.data, inner)
        if not url:
            return
        removal = removal or token
        neutral = b"" if kind == "import" else b"none"
        self.refs.append(CssRef(kind, url, _strip(self.data, inner), token, removal, neutral))

    def image_set(self, start: int, paren: int, kind: str) -> int:
        """Scan ``image-set(`` arguments; every URL in it shares the whole set as removal."""
        first = len(self.refs)
        depth, pos, data = 1, paren + 1, self.data
        while depth and pos < self.end:
            m = _NEXT_IN_SET.search(data, pos, self.end)
            if m is None:
                pos = self.end
                break
            pos, c = m.start(), data[m.start()]
            if c == 0x2F:  # "/"
                pos = self.skip_comment(pos) if data.startswith(b"/*", pos) else pos + 1
            elif c in b"\"'":
                end, inner = self.string(pos)
                if depth == 1:
                    self.add(kind, inner, (pos, end))
                pos = end
            elif c == 0x5C:  # backslash
                pos += 2
            elif c == 0x28:  # "("
                func = self.function_at(pos)
                if func and func[0] in ("url", "src"):
                    pos = self.url_function(func[0], func[1], pos, kind)
                else:
                    depth, pos = depth + 1, pos + 1
            else:  # ")"
                depth, pos = depth - 1, pos + 1
        whole = (start, pos)
        self.refs[first:] = [
            CssRef(r.kind, r.url, r.url_span, r.token_span, whole, b"none", True)
            for r in self.refs[first:]
        ]
        return pos

    def scan(self, pos: int, kind: str = "url") -> None:
        data, end = self.data, self.end
        while pos < end:
            m = _NEXT.search(data, pos, end)
            if m is None:
                return
            pos, c = m.start(), data[m.start()]
            if c == 0x2F:  # "/"
                pos = self.skip_comment(pos) if data.startswith(b"/*", pos) else pos + 1
            elif c in b"\"'":
                pos = self.string(pos)[0]
            elif c == 0x28:  # "("
                pos = self.paren(pos, kind)
            elif c == 0x40:  # "@"
                pos = self.at_rule(pos, kind)
            else:
                pos = self.escape(pos, kind)

    def paren(self, pos: int, kind: str) -> int:
        func = self.function_at(pos)
        if func is None:
            return pos + 1
        name, start = func
        if name.endswith("image-set"):
            return self.image_set(start, pos, kind)
        return self.url_function(name, start, pos, kind)

    def escape(self, pos: int, kind: str) -> int:
        """A backslash outside strings: maybe an escaped function name like ``u\\72 l(``."""
        back = _IDENT_BACK.search(self.data, max(0, pos - 64), pos)
        start = back.start() if back else pos
        m = _IDENT_RUN.match(self.data, start, self.end)
        if m is None:  # a backslash before a newline: not an escape
            return pos + 1
        paren = m.end()
        if not self.data.startswith(b"(", paren):
            return max(paren, pos + 1)
        name = css_unescape(self.data[start:paren].decode("latin-1")).lower()
        if name in ("url", "src"):
            return self.url_function(name, start, paren, kind)
        if name in ("image-set", "-webkit-image-set"):
            return self.image_set(start, paren, kind)
        return paren + 1

    def at_rule(self, pos: int, kind: str) -> int:
        m = _AT.match(self.data, pos, self.end)
        if m is not None:
            name, name_end = m.group(1).lower(), m.end()
        else:  # an escaped name: "@\69mport" is "@import"
            m = _IDENT_RUN.match(self.data, pos + 1, self.end)
            if m is None or b"\\" not in m.group():
                return pos + 1
            name = css_unescape(m.group().decode("latin-1")).lower().encode("latin-1", "replace")
            name_end = m.end()
            if name not in (b"import", b"font-face"):
                return pos + 1
        if name == b"import":
            return self.import_rule(pos, name_end)
        if kind == "font":  # @font-face does not nest: no second pass over the rest
            return name_end
        start = name_end
        if start <= self.no_block:  # at_rule() is called at increasing offsets
            return start
        prelude = _PRELUDE.match(self.data, start, self.end)
        assert prelude is not None  # matches ""
        brace = prelude.end()
        if brace >= self.end or self.data[brace] != 0x7B:  # "{"
            self.no_block = brace
            return start
        body_end = self.block_end(brace + 1)
        inner = _Scanner(self.data, body_end)
        inner.scan(brace + 1, "font")
        self.refs.extend(inner.refs)
        return body_end

    def import_rule(self, at: int, pos: int) -> int:
        data, end = self.data, self.end
        m = _IMPORT_URL.match(data, pos, end)
        if m is None:
            return pos
        if m.group(1):
            after, inner = self.string(m.start(1))
            token: Span = (m.start(1), after)
        else:
            before = len(self.refs)
            after = self.url_function("url", m.start(2), m.end(2) - 1, "import")
            if len(self.refs) == before:
                return after
            ref = self.refs.pop()
            inner, token = ref.url_span, ref.token_span
        tail = _IMPORT_TAIL.match(data, after, end)
        rule_end = tail.end() if tail else after
        self.add("import", inner, token, (at, rule_end))
        return rule_end

    def block_end(self, pos: int) -> int:
        """Offset just past the ``}`` closing the block whose body starts at ``pos``."""
        depth, data = 1, self.data
        while pos < self.end:
            m = _NEXT_IN_BLOCK.search(data, pos, self.end)
            if m is None:
                break
            pos, c = m.start(), data[m.start()]
            if c == 0x2F:
                pos = self.skip_comment(pos) if data.startswith(b"/*", pos) else pos + 1
            elif c in b"\"'":
                pos = self.string(pos)[0]
            elif c == 0x5C:
                pos += 2
            elif c == 0x7B:
                depth, pos = depth + 1, pos + 1
            else:
                depth, pos = depth - 1, pos + 1
                if depth == 0:
                    return pos
        return self.end


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
    """The sizing and visibility declarations of an inline style, last one winning.

    ``lower``: ``data`` is already lower-case (faster).

    >>> declarations(b"display:block; WIDTH: 1PX !important; max-height:0")
    {'display': 'block', 'width': '1px', 'max-height': '0'}
    """
    stop = len(data) if end is None else end
    if lower:
        return {name.decode("ascii"): value.decode("latin-1").strip()
                for name, value in _DECL_LOWER.findall(data, start, stop)}
    return {
        name.decode("ascii").lower(): value.decode("latin-1").strip().lower()
        for name, value in _DECL.findall(data, start, stop)
    }
