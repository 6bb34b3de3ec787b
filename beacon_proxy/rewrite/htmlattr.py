"""HTML attribute values for the scanner: entities with offsets, URLs, srcset, refresh.

Everything works on the raw bytes of one attribute value and returns spans
into those bytes, so :mod:`beacon_proxy.rewrite.html` can hand out exact
offsets while classifying the decoded text.

>>> d = Decoded(b'x="a&amp;b"', 3, 10)
>>> d.data, d.span(1, 2), d.span(0, 3)
(b'a&b', (4, 9), (3, 10))
>>> srcset_candidates(b"a.png 1x, b.png 2x")
[(0, 5, 8), (10, 15, 18)]
"""

from __future__ import annotations

import html
import re
from html.entities import html5

__all__ = [
    "Decoded",
    "Span",
    "clean_url",
    "code_point",
    "decode_text",
    "html_unescape",
    "is_remote",
    "refresh_url",
    "srcset_candidates",
    "strip_span",
    "unescape",
]

Span = tuple[int, int]

# Numeric references take every digit, as HTML does ("&#x0000000068;" is "h").
_ENTITY = r"&(?:#[xX]([0-9a-fA-F]++);?|#([0-9]++);?|([a-zA-Z][a-zA-Z0-9]{0,31});?)"
_ENTITY_BYTES = re.compile(_ENTITY.encode())
_ENTITY_STR = re.compile(_ENTITY)
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
_URL_STRIP = "".join(map(chr, range(0x21)))
#: Schemes that load over the network.  ``smb``/``cifs``: a Windows share, as a UNC
#: path (``file://host/share``, below) is.
_REMOTE_SCHEMES = frozenset({"http", "https", "ftp", "ws", "wss", "smb", "cifs"})
_LOCAL_HOSTS = frozenset({"", "localhost"})
_REFRESH = re.compile(
    rb"[\t\n\f\r ]*+[0-9.]*+[\t\n\f\r ]*+[;,]?[\t\n\f\r ]*+"
    rb"(?:[uU][rR][lL][\t\n\f\r ]*+=[\t\n\f\r ]*+)?([\"']?)"
)
#: A refresh's delay and the separators after it.
_REFRESH_DELAY = re.compile(rb"[\t\n\f\r ]*+[0-9.]*+[\t\n\f\r ;,]*+")
_SRCSET_SKIP = re.compile(rb"[\t\n\f\r ,]*+")
_SRCSET_URL = re.compile(rb"[^\t\n\f\r ]++")
_SRCSET_DESC = re.compile(rb"(?:[^,()]++|\([^)]*+\)?)*+")


def code_point(digits: str, base: int) -> int:
    """The value of a numeric character reference's ``digits``, or 0x110000 (past the last
    code point) when more than 8 of them are significant: what ``int()`` gives where it
    can (Python refuses more than 4300 decimal digits: ``&#000...065;`` is "A").

    >>> code_point("0" * 5000 + "65", 10), code_point("12345678901", 10), code_point("1F600", 16)
    (65, 1114112, 128512)
    """
    significant = digits.lstrip("0")
    return 0x110000 if len(significant) > 8 else int(significant or "0", base)


def html_unescape(text: str) -> str:
    """``html.unescape``, also where it raises: a decimal reference too long for Python's
    ``int()`` is read at its value (its leading zeros dropped; one still longer is past the
    last code point, U+FFFD), as every shorter one is.

    >>> html_unescape("&#" + "0" * 5000 + "65;&#" + "9" * 5000 + ";&amp;")
    'A\ufffd&'
    """
    try:
        return html.unescape(text)
    except ValueError:
        return html.unescape(_DECIMAL.sub(_shortened, text))


_DECIMAL = re.compile(r"&#0*([0-9]+)")


def _shortened(match: re.Match[str]) -> str:
    return "&#" + (match[1] if len(match[1]) <= 8 else "1114112")


def _reference(hex_digits: str | None, digits: str | None, name: str | None, terminated: bool,
               following: str) -> str | None:
    """One character reference as HTML decodes it in an attribute; None keeps it as text."""
    if hex_digits or digits:
        cp = code_point(hex_digits or digits or "", 16 if hex_digits else 10)
        if cp > 0x10FFFF:  # (many digits: past the last code point either way)
            return "\ufffd"
        if 0x80 <= cp <= 0x9F:  # the C1 range means windows-1252, as in HTML
            return bytes([cp]).decode("cp1252", "ignore") or chr(cp)
        return chr(cp) if 0 < cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF else "\ufffd"
    assert name is not None
    if terminated:
        return html5.get(name + ";")
    # A legacy reference without ";" is kept when "=" follows (as in "?a=1&copy=2").
    return html5[name] if name in html5 and following != "=" else None


def unescape(text: str) -> str:
    """Decode the character references of an attribute value.

    >>> unescape("https://x.test/?a=1&amp;copy=2&copy=3&#x41;")
    'https://x.test/?a=1&copy=2&copy=3A'
    """
    if "&" not in text:
        return text
    if text.count("&") == text.count("&amp;"):  # the usual "?a=1&amp;b=2": no callbacks
        return text.replace("&amp;", "&")

    def one(m: re.Match[str]) -> str:
        found = _reference(m.group(1), m.group(2), m.group(3), m.group().endswith(";"),
                           text[m.end() : m.end() + 1])
        return m.group() if found is None else found

    return _ENTITY_STR.sub(one, text)


class Decoded:
    """``view[start:end]`` with entities decoded to UTF-8 and a map back to raw offsets."""

    __slots__ = ("data", "ends", "offset", "starts")

    def __init__(self, view: bytes, start: int, end: int) -> None:
        raw = view[start:end]
        self.offset = start
        self.starts: list[int] | None = None
        self.ends: list[int] = []
        if b"&" not in raw:
            self.data = raw
            return
        out = bytearray()
        starts: list[int] = []
        ends = self.ends
        pos = 0
        for m in _ENTITY_BYTES.finditer(raw):
            hex_digits, digits, name = (g.decode("ascii") if g else None for g in m.groups())
            text = _reference(hex_digits, digits, name, m.group().endswith(b";"),
                              raw[m.end() : m.end() + 1].decode("latin-1"))
            if text is None:
                continue
            out += raw[pos : m.start()]
            starts.extend(range(start + pos, start + m.start()))
            ends.extend(range(start + pos + 1, start + m.start() + 1))
            enc = text.encode("utf-8")
            out += enc
            starts.extend([start + m.start()] * len(enc))
            ends.extend([start + m.end()] * len(enc))
            pos = m.end()
        out += raw[pos:]
        starts.extend(range(start + pos, end))
        ends.extend(range(start + pos + 1, end + 1))
        self.data, self.starts = bytes(out), starts

    def span(self, a: int, b: int) -> Span:
        """The raw span of decoded bytes ``a:b`` (whole entities when they are cut)."""
        starts = self.starts
        if starts is None:
            return self.offset + a, self.offset + b
        if a >= len(starts):
            last = self.ends[-1] if self.ends else self.offset
            return last, last
        return starts[a], (self.ends[b - 1] if b > a else starts[a])


def decode_text(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def clean_url(url: str) -> str:
    """Strip C0 controls and spaces at the ends, drop tabs and newlines (as URL parsers do)."""
    url = url.strip(_URL_STRIP)
    if "\t" in url or "\n" in url or "\r" in url:
        url = url.replace("\t", "").replace("\n", "").replace("\r", "")
    return url


def is_remote(url: str) -> bool | None:
    """True for remote, False for local, None for relative (depends on ``<base>``).

    A fragment alone (``#a``) is relative too: against a remote ``<base>`` a browser
    loads the base's own URL (``<img src="#a">`` under ``<base href=T>`` loads ``T``).

    >>> is_remote("HTTPS://x.test"), is_remote("//x.test"), is_remote("cid:a"), is_remote("a.png")
    (True, True, False, None)
    >>> is_remote("#a")

    A ``file:`` URL with a host other than the machine's, or a UNC path
    (``file:////host/share``, backslashes alike), names a Windows share: a desktop client
    that reads it as a path connects to that host (SMB), which then sees the open and
    may be handed the user's NTLM credentials.  It is remote; ``file:///C:/x`` is not.

    >>> is_remote("file://t.example/s/p.gif"), is_remote("file:////t.example/s")
    (True, True)
    >>> is_remote("file:///C:/p.gif"), is_remote("file://localhost/p")
    (False, False)
    """
    if url.startswith(("https:", "http:")):  # the common spelling, before lower-casing
        return True
    if url[:6].lower().startswith(("https:", "http:")) or url[:2] in ("//", "\\\\", "/\\", "\\/"):
        return True
    m = _SCHEME.match(url)
    if m is None:
        return None
    scheme = m.group(1).lower()
    if scheme == "file":
        return _file_host(url[m.end() :]) not in _LOCAL_HOSTS
    return scheme in _REMOTE_SCHEMES


def _file_host(rest: str) -> str:
    """The host a ``file:`` URL's part after the scheme names ("": this machine): the
    authority after ``//``, or a UNC path's server after ``////`` (either slash)."""
    rest = rest.replace("\\", "/").lstrip("\t\n\f\r ")
    if not rest.startswith("//"):
        return ""  # file:/path, file:path
    rest = rest[2:]
    if rest.startswith("//"):  # file:////server/share: a UNC path
        rest = rest.lstrip("/")
        return rest.split("/", 1)[0].lower() or "?"
    if rest.startswith("/"):  # file:///path
        return ""
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return host.rsplit("@", 1)[-1].lower()


def strip_span(data: bytes, a: int, b: int) -> Span:
    """``(a, b)`` without HTML whitespace at either end."""
    if a == b or (data[a] > 0x20 and data[b - 1] > 0x20):
        return a, b
    while a < b and data[a] in b"\t\n\f\r ":
        a += 1
    while b > a and data[b - 1] in b"\t\n\f\r ":
        b -= 1
    return a, b


def srcset_candidates(data: bytes) -> list[tuple[int, int, int]]:
    """(start, URL end, candidate end) of each candidate, split as the HTML standard does."""
    pos, cands = 0, list[tuple[int, int, int]]()
    while True:
        pos = _SRCSET_SKIP.match(data, pos).end()  # type: ignore[union-attr]  # matches ""
        if pos >= len(data):
            return cands
        url_end = _SRCSET_URL.match(data, pos).end()  # type: ignore[union-attr]
        if data[url_end - 1] == 0x2C:  # a URL ending in commas has no descriptors
            end = url_end
            while data[end - 1] == 0x2C:
                end -= 1
            cands.append((pos, end, end))
            pos = url_end
            continue
        desc_end = _SRCSET_DESC.match(data, url_end).end()  # type: ignore[union-attr]
        cand_end = desc_end
        while cand_end > url_end and data[cand_end - 1] in b"\t\n\f\r ":
            cand_end -= 1
        cands.append((pos, url_end, cand_end))
        pos = desc_end + 1


def refresh_url(content: bytes) -> Span:
    """The span of the URL in a ``meta refresh`` content (``0; url='x'``, ``5, x``), as
    the HTML standard reads it; when that is empty, everything after the delay (an
    empty span when nothing but separators follows it).

    Chromium reads a refresh its own way (a quoted URL ends at the *last* matching
    quote; Unicode blanks around the delay and the URL are stripped, ``0\\v;`` is a
    delay), so the span may not be the URL a browser follows: the scanner takes any
    refresh with something after its delay for a load (``classify``: ``meta-refresh``).

    >>> c = b"0; url='https://t/x'"; a, b = refresh_url(c); c[a:b]
    b'https://t/x'
    >>> c = b"0;url=''https://t/x'"; a, b = refresh_url(c); c[a:b]
    b"url=''https://t/x'"
    >>> refresh_url(b" 5 ; ")
    (5, 5)
    """
    m = _REFRESH.match(content)
    assert m is not None  # every part of the pattern is optional
    start = m.end()
    end = content.find(m.group(1), start) if m.group(1) else -1
    a, b = strip_span(content, start, len(content) if end < 0 else end)
    if a == b:
        rest = _REFRESH_DELAY.match(content)
        assert rest is not None
        a, b = strip_span(content, rest.end(), len(content))
    return a, b
