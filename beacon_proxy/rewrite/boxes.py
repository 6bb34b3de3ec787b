"""The geometry of a box: whether an element is laid out tiny (0-2 px) or hidden.

Shared by the classifier (:mod:`.classify`: a tiny or hidden image) and the scanner
(:mod:`.html`: what an ``<iframe srcdoc>`` shows inside a tiny or hidden frame).

>>> from beacon_proxy.rewrite.htmlrefs import Box
>>> is_tiny(Box("1", "1")), is_hidden(Box(None, None, display="none"))
(True, True)
>>> css_px("2pt"), attr_px("600px"), attr_px("50%")
(2.6666666666666665, 600.0, None)
"""

from __future__ import annotations

import re

from beacon_proxy.rewrite.htmlrefs import Box

__all__ = ["FAINT", "at_most", "attr_px", "clips", "css_px", "css_range", "faint", "is_hidden",
           "is_tiny"]

_ATTR_LENGTH = re.compile(r"[\t\n\f\r ]*([0-9]*\.?[0-9]+)(%?)")
#: A CSS length, number or percentage (CSS Syntax 4.3.12: a sign, a fraction, an exponent;
#: possessive throughout, so a long digit run is read once), a math function's name and
#: "(", or an operator.  A unit is read whole, letters and "%" (``1px-2px`` is one bad unit).
_CSS_TOKEN = re.compile(
    r"[\t\n\f\r ]*+(?:([-+]?(?:[0-9]*+\.[0-9]++|[0-9]++)(?:e[-+]?[0-9]++)?+)([a-z%]*+)"
    r"|([-a-z]++)\(|([-+*/(),]))")
_PX_PER_UNIT = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "mm": 96 / 25.4,
                "cm": 96 / 2.54, "q": 96 / 101.6, "em": 16.0, "rem": 16.0, "ex": 8.0,
                "rex": 8.0, "ch": 8.0, "rch": 8.0, "cap": 11.0, "rcap": 11.0, "ic": 16.0,
                "ric": 16.0, "lh": 19.2, "rlh": 19.2}
#: Viewport units at the smallest screen a newsletter is read on (320 x 480 CSS px): an
#: image that is tiny there is a pixel on some screen (:func:`css_px`).
for _prefix in ("", "s", "l", "d"):
    _PX_PER_UNIT.update({_prefix + "vw": 3.2, _prefix + "vi": 3.2, _prefix + "vh": 4.8,
                         _prefix + "vb": 4.8, _prefix + "vmin": 3.2, _prefix + "vmax": 4.8})
_MATH = frozenset({"calc", "-webkit-calc", "-moz-calc", "min", "max", "clamp"})
_MAX_NESTING = 64  # math functions and brackets inside each other
_ANY = (float("-inf"), float("inf"))
_NO_CSS = (None,) * 6

#: A value as far as it is known: the least and the most it can be, and whether it has
#: a unit (a length: px; a percentage: unknown) or is a plain number.
_Range = tuple[float, float, bool]


class _Reader:
    """A CSS length or number read into the range of values it may take (CSS Values 4:
    ``calc()``, ``min()``, ``max()``, ``clamp()``, ``+ - * /``): linear, one token each."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.depth = text, 0, 0

    def token(self) -> re.Match[str] | None:
        m = _CSS_TOKEN.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def peek(self) -> str | None:
        m = _CSS_TOKEN.match(self.text, self.pos)
        return None if m is None else m.group(4)

    def skip(self) -> _Range:
        """Past the ``)`` that closes a function whose value is not known here."""
        depth, text = 1, self.text
        for i in range(self.pos, len(text)):
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
                if not depth:
                    self.pos = i + 1
                    return (*_ANY, True)
        self.pos = len(text)  # the end of the value closes what is open
        return (*_ANY, True)

    def sum(self) -> _Range | None:
        left = self.product()
        while left is not None and self.peek() in ("+", "-"):
            op = self.token()
            right = self.product()
            if op is None or right is None or right[2] != left[2]:
                return None
            if op.group(4) == "+":
                left = (left[0] + right[0], left[1] + right[1], left[2])
            else:
                left = (left[0] - right[1], left[1] - right[0], left[2])
        return left

    def product(self) -> _Range | None:
        left = self.unary()
        while left is not None and self.peek() in ("*", "/"):
            op = self.token()
            right = self.unary()
            if op is None or right is None or (left[2] and right[2]):
                return None
            if op.group(4) == "/":
                if right[2] or right[0] <= 0 <= right[1]:
                    return None if right[2] else (*_ANY, left[2])
                right = (1 / right[1], 1 / right[0], False)
            ends = [_times(a, b) for a in left[:2] for b in right[:2]]
            left = (min(ends), max(ends), left[2] or right[2])
        return left

    def unary(self) -> _Range | None:
        m = self.token()
        if m is None:
            return None
        if m.group(1) is not None:
            number, unit = float(m.group(1)), m.group(2)
            if unit == "%":
                return (0.0, 0.0, True) if number == 0 else (*_ANY, True)
            scale = _PX_PER_UNIT.get(unit)
            if scale is None:
                return (0.0, 0.0, True) if number == 0 else (*_ANY, True)
            return number * scale, number * scale, bool(unit)
        if m.group(4) != "(" and m.group(3) is None:
            return None
        name = "calc" if m.group(4) == "(" else m.group(3)
        if name not in _MATH:
            return self.skip()  # var(), env(), attr() ...: anything
        if self.depth >= _MAX_NESTING:
            self.skip()  # deeper than any sender writes: an attack, read as tiny
            return 0.0, 0.0, True
        self.depth += 1
        args = [self.sum()]
        while args[-1] is not None and self.peek() == ",":
            self.token()
            args.append(self.sum())
        close = self.token()
        self.depth -= 1
        if None in args or (close.group(4) != ")" if close is not None else
                            self.text[self.pos:].strip()):
            return None  # (the end of the value closes what is open, as in CSS)
        known = [a for a in args if a is not None]
        if {a[2] for a in known} == {True, False} or (name == "clamp" and len(known) != 3) or (
                name.endswith("calc") and len(known) != 1):
            return None
        unit = known[0][2]
        if name == "min":
            return min(a[0] for a in known), min(a[1] for a in known), unit
        if name == "max":
            return max(a[0] for a in known), max(a[1] for a in known), unit
        if name == "clamp":  # max(MIN, min(VAL, MAX))
            low, val, high = known
            return max(low[0], min(val[0], high[0])), max(low[1], min(val[1], high[1])), unit
        return known[0]


def _times(a: float, b: float) -> float:
    """A product of two ends of ranges, where nothing times an unbounded end is nothing."""
    return 0.0 if a == 0 or b == 0 else a * b


def css_range(value: str | None) -> tuple[float, float] | None:
    """The least and the most px a CSS length may be (a number without a unit counts as
    px, as in quirks mode; a percentage or an unknown unit may be anything but zero, a
    viewport unit is read on a 320 x 480 screen): None when it is no length (``auto``).

    >>> css_range("calc(2px + 0.5em)"), css_range("min(1px, 100%)")
    ((10.0, 10.0), (-inf, 1.0))
    """
    if not value:
        return None
    reader = _Reader(value.strip())
    got = reader.sum()
    if got is None or reader.pos != len(reader.text):
        return None
    return got[0], got[1]


def css_px(value: str | None) -> float | None:
    """A CSS length in px, when it has one value (None when not a length, e.g. ``auto``,
    or when it depends on the layout: ``50%``)."""
    got = css_range(value)
    if got is None or got[0] != got[1]:
        return None
    return 0.0 if got[0] == 0 else got[0]


def at_most(value: str | None, limit: float) -> bool:
    """Whether a CSS length is at most ``limit`` px whatever the layout."""
    got = css_range(value)
    return got is not None and got[1] <= limit


def attr_px(value: str | None) -> float | None:
    """An HTML dimension attribute in px, parsed as browsers do (``"1px"`` -> 1)."""
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit() is also true for "²"
        return float(value)
    m = _ATTR_LENGTH.match(value)
    if m is None:
        return None
    number = float(m.group(1))
    return number if not m.group(2) or number == 0 else None


def is_tiny(box: Box) -> bool:
    """Width or height of 0-2 px by attribute, CSS size or CSS maximum size."""
    width, height, css_width, css_height, max_width, max_height = box[:6]
    for px in (attr_px(width), attr_px(height)):
        if px is not None and px <= 2:
            return True
    if css_width is None and css_height is None and max_width is None and max_height is None:
        return False
    return any(at_most(v, 2) for v in (css_width, css_height, max_width, max_height))


def is_hidden(box: Box) -> bool:
    """Hidden by ``display``, ``visibility``, ``opacity``, a zero maximum size or mso-hide."""
    if box[4:] == _NO_CSS:
        return False
    if box.display in ("none", "contents") or box.visibility in ("hidden", "collapse") or (
            box.mso_hide == "all"):
        return True
    if box.opacity is not None and faint(box.opacity):
        return True
    return any(at_most(v, 0) for v in (box.css_max_height, box.css_max_width))


def clips(d: dict[str, str]) -> bool:
    """Whether a box shows none of its content but 0-2 px of it: its overflow is not
    ``visible`` (``hidden``, ``clip``, ``auto``, ``scroll``) along a side whose size or
    maximum size is 0-2 px (the preheader idiom: ``max-height:0;overflow:hidden``)."""
    both = d.get("overflow", "").split()
    across = d.get("overflow-x") or (both[0] if both else "visible")
    down = d.get("overflow-y") or (both[-1] if both else "visible")
    return (across != "visible" and any(at_most(d.get(k), 2) for k in _WIDTHS)) or (
        down != "visible" and any(at_most(d.get(k), 2) for k in _HEIGHTS))


_WIDTHS = ("width", "max-width")
_HEIGHTS = ("height", "max-height")


#: An opacity below this shows nothing a reader sees (a pixel at 5 % on white is #f2f2f2
#: at its darkest): such an element is hidden.
FAINT = 0.1


def faint(opacity: str) -> bool:
    """Whether an ``opacity`` value (a number or a percentage, ``calc()`` too) is below
    :data:`FAINT` whatever the layout.

    >>> faint("0"), faint("5%"), faint("0.5"), faint("calc(0.2 / 4)")
    (True, True, False, True)
    """
    value = opacity.strip().replace("%", "e-2")  # (a percentage of 1, calc() too)
    got = css_range(value)
    return got is not None and got[1] < FAINT
