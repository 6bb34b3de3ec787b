"""A literal CSS Syntax Level 3 tokenizer (section 4.3), slow and plain, for tests only.

It shares nothing with :mod:`beacon_proxy.rewrite.css`: one code point at a time, as the
specification's prose reads, over the bytes read as Latin-1 (one code point per byte, so
offsets are the bytes'), NUL read as U+FFFD (preprocessing), CR LF kept as two code points
but taken as one newline where that matters (a hex escape's whitespace, a string's line
continuation).  :func:`url_loads` lists the span of every ``url(x)`` token and of every
``url("x")``/``src("x")`` function whose first argument is a string (a bad string
included, as the scanner errs towards more), the function's name included, to the ``)``
that closes it as "consume a function" reads it (blocks ``()``, ``[]``, ``{}`` and other
functions nested; the end of the text closes everything): ``url("x" cross-origin(a))``
loads ``x``.
"""

from __future__ import annotations

__all__ = ["url_loads"]

_NL = "\n\r\f"
_WS = " \t\n\r\f"
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"


def _name_start(c: str) -> bool:
    return c == "_" or not c.isascii() or (c.isascii() and c.isalpha())


def _name_cp(c: str) -> bool:
    return _name_start(c) or c in _DIGITS or c == "-"


def _nonprintable(c: str) -> bool:
    return c <= "\x08" or c == "\x0b" or "\x0e" <= c <= "\x1f" or c == "\x7f"


class _Tokenizer:
    def __init__(self, css: bytes) -> None:
        self.s = css.decode("latin-1").replace("\0", "\ufffd")
        self.n = len(self.s)
        self.loads: set[tuple[int, int]] = set()
        self.closers: list[str] = []  # the blocks and functions open, innermost last
        self.pending: dict[int, tuple[int, str]] = {}  # len(closers) -> a function's load

    def at(self, j: int) -> str:
        return self.s[j] if j < self.n else ""

    def valid_escape(self, j: int) -> bool:  # 4.3.8; a backslash at the end is valid
        return self.at(j) == "\\" and self.at(j + 1) not in tuple(_NL)

    def starts_ident(self, j: int) -> bool:  # 4.3.9
        c = self.at(j)
        if c == "-":
            d = self.at(j + 1)
            return d != "" and (_name_start(d) or d == "-" or self.valid_escape(j + 1))
        if c != "" and _name_start(c):
            return True
        return self.valid_escape(j)

    def starts_number(self, j: int) -> bool:  # 4.3.10
        c, d, e = self.at(j), self.at(j + 1), self.at(j + 2)
        if c in ("+", "-"):
            return (d != "" and d in _DIGITS) or (d == "." and e != "" and e in _DIGITS)
        if c == ".":
            return d != "" and d in _DIGITS
        return c != "" and c in _DIGITS

    def escape(self, j: int) -> tuple[str, int]:  # 4.3.7; j is just past the backslash
        if j >= self.n:
            return "\ufffd", j
        if self.s[j] in _HEX:
            k = j
            while k < self.n and k - j < 6 and self.s[k] in _HEX:
                k += 1
            cp = int(self.s[j:k], 16)
            if self.s.startswith("\r\n", k):
                k += 2
            elif self.at(k) != "" and self.at(k) in _WS:
                k += 1
            ok = 0 < cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF
            return (chr(cp) if ok else "\ufffd"), k
        return self.s[j], j + 1

    def name(self, j: int) -> tuple[str, int]:  # 4.3.11
        out: list[str] = []
        while True:
            c = self.at(j)
            if c != "" and _name_cp(c):
                out.append(c)
                j += 1
            elif self.valid_escape(j):
                cp, j = self.escape(j + 1)
                out.append(cp)
            else:
                return "".join(out), j

    def number(self, j: int) -> int:  # 4.3.12, positions only
        if self.at(j) in ("+", "-"):
            j += 1
        while self.at(j) != "" and self.at(j) in _DIGITS:
            j += 1
        if self.at(j) == "." and self.at(j + 1) != "" and self.at(j + 1) in _DIGITS:
            j += 1
            while self.at(j) != "" and self.at(j) in _DIGITS:
                j += 1
        if self.at(j) in ("e", "E"):
            d, e = self.at(j + 1), self.at(j + 2)
            if d != "" and d in _DIGITS:
                j += 1
            elif d in ("+", "-") and e != "" and e in _DIGITS:
                j += 2
            else:
                return j
            while self.at(j) != "" and self.at(j) in _DIGITS:
                j += 1
        return j

    def numeric(self, j: int) -> int:  # 4.3.3
        j = self.number(j)
        if self.starts_ident(j):
            return self.name(j)[1]
        return j + 1 if self.at(j) == "%" else j

    def string(self, j: int, quote: str) -> tuple[str, int]:  # 4.3.5; j past the quote
        out: list[str] = []
        while j < self.n:
            c = self.s[j]
            if c == quote:
                return "".join(out), j + 1
            if c in _NL:
                return "".join(out), j  # a bad string: the newline is not consumed
            if c == "\\":
                if j + 1 >= self.n:
                    return "".join(out), j + 1
                if self.s[j + 1] in _NL:
                    j += 3 if self.s.startswith("\r\n", j + 1) else 2
                    continue
                cp, j = self.escape(j + 1)
                out.append(cp)
                continue
            out.append(c)
            j += 1
        return "".join(out), j

    def bad_url(self, j: int) -> int:  # 4.3.14
        while j < self.n:
            if self.s[j] == ")":
                return j + 1
            if self.valid_escape(j):
                j = self.escape(j + 1)[1]
            else:
                j += 1
        return j

    def url(self, start: int, j: int) -> int:  # 4.3.6
        while self.at(j) != "" and self.at(j) in _WS:
            j += 1
        value: list[str] = []
        while True:
            if j >= self.n:
                self.load(start, j, "".join(value))
                return j
            c = self.s[j]
            if c == ")":
                self.load(start, j + 1, "".join(value))
                return j + 1
            if c in _WS:
                while self.at(j) != "" and self.at(j) in _WS:
                    j += 1
                if j >= self.n or self.s[j] == ")":
                    self.load(start, min(j + 1, self.n), "".join(value))
                    return min(j + 1, self.n)
                return self.bad_url(j)
            if c in "\"'(" or _nonprintable(c):
                return self.bad_url(j + 1)
            if c == "\\":
                if not self.valid_escape(j):
                    return self.bad_url(j + 1)
                cp, j = self.escape(j + 1)
                value.append(cp)
                continue
            value.append(c)
            j += 1

    def quoted_function(self, start: int, j: int) -> None:
        """A function whose first argument is a string: a load, to the ``)`` that
        closes the function (a look ahead only; run() meets that ``)``)."""
        while self.at(j) != "" and self.at(j) in _WS:
            j += 1
        if self.at(j) not in ("'", '"'):
            return
        value = self.string(j + 1, self.s[j])[0]
        if value:
            self.pending[len(self.closers) + 1] = (start, value)  # the function's level

    def ident_like(self, j: int) -> int:  # 4.3.4
        start = j
        name, j = self.name(j)
        if self.at(j) != "(":
            return j
        j += 1
        low = name.lower()
        if low == "url":
            while self.at(j) in tuple(_WS) and self.at(j + 1) in tuple(_WS):
                j += 1
            c, d = self.at(j), self.at(j + 1)
            if c in ("'", '"') or (c in tuple(_WS) and d in ("'", '"')):
                self.quoted_function(start, j)
                self.closers.append(")")
                return j
            return self.url(start, j)
        if low == "src":
            self.quoted_function(start, j)
        self.closers.append(")")
        return j

    def close(self, c: str, j: int) -> None:
        """A ``)``, ``]`` or ``}`` at ``j``: the innermost block ends when it is its closer."""
        if self.closers and self.closers[-1] == c:
            load = self.pending.pop(len(self.closers), None)
            self.closers.pop()
            if load is not None:
                self.load(load[0], j + 1, load[1])

    def load(self, start: int, end: int, value: str) -> None:
        if value:  # only an empty URL loads nothing: " " is the base URL
            self.loads.add((start, end))

    def run(self) -> set[tuple[int, int]]:  # 4.3.1
        i = 0
        while i < self.n:
            c = self.s[i]
            if c in ('"', "'"):
                i = self.string(i + 1, c)[1]
            elif c == "#":
                d = self.at(i + 1)
                i = self.name(i + 1)[1] if (d != "" and _name_cp(d)) or self.valid_escape(
                    i + 1) else i + 1
            elif c in "+.":
                i = self.numeric(i) if self.starts_number(i) else i + 1
            elif c == "-":
                if self.starts_number(i):
                    i = self.numeric(i)
                elif self.s.startswith("-->", i):
                    i += 3
                elif self.starts_ident(i):
                    i = self.ident_like(i)
                else:
                    i += 1
            elif c == "/" and self.s.startswith("/*", i):
                close = self.s.find("*/", i + 2)
                i = self.n if close < 0 else close + 2
            elif c == "<" and self.s.startswith("<!--", i):
                i += 4
            elif c == "@":
                i = self.name(i + 1)[1] if self.starts_ident(i + 1) else i + 1
            elif c == "\\":
                i = self.ident_like(i) if self.valid_escape(i) else i + 1
            elif c in _DIGITS:
                i = self.numeric(i)
            elif _name_start(c):
                i = self.ident_like(i)
            elif c in "([{":
                self.closers.append({"(": ")", "[": "]", "{": "}"}[c])
                i += 1
            elif c in ")]}":
                self.close(c, i)
                i += 1
            else:
                i += 1
        for start, value in self.pending.values():  # the end of the text closes them
            self.load(start, self.n, value)
        return self.loads


def url_loads(css: bytes) -> set[tuple[int, int]]:
    """Spans of the ``url()``/``src()`` loads CSS Syntax Level 3 tokenizes in ``css``."""
    return _Tokenizer(css).run()
