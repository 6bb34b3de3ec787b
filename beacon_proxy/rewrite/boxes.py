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

__all__ = ["attr_px", "css_px", "is_hidden", "is_tiny"]

_ATTR_LENGTH = re.compile(r"[\t\n\f\r ]*([0-9]*\.?[0-9]+)(%?)")
# The number is "digits, a dot, digits" or "digits", read possessively: "[0-9]*\.?[0-9]+"
# split a digit run every way before failing at the end ("1" * 20000 + " x": quadratic).
_CSS_LENGTH = re.compile(r"(-?(?:[0-9]*+\.[0-9]++|[0-9]++))([a-z%]*+)\s*+$")
_PX_PER_UNIT = {"": 1.0, "px": 1.0, "pt": 4 / 3, "em": 16.0, "rem": 16.0, "pc": 16.0,
                "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_NO_CSS = (None,) * 6


def css_px(value: str | None) -> float | None:
    """A CSS length in px (None when not an absolute length, e.g. ``auto`` or ``50%``)."""
    if not value:
        return None
    m = _CSS_LENGTH.match(value.strip())
    if m is None:
        return None
    number, unit = float(m.group(1)), m.group(2)
    if number == 0:
        return 0.0
    scale = _PX_PER_UNIT.get(unit)
    return None if scale is None else number * scale


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
    return any(px is not None and px <= 2 for px in map(css_px, (css_width, css_height,
                                                                  max_width, max_height)))


def is_hidden(box: Box) -> bool:
    """Hidden by ``display``, ``visibility``, ``opacity``, a zero maximum size or mso-hide."""
    if box[4:] == _NO_CSS:
        return False
    if box.display == "none" or box.visibility in ("hidden", "collapse") or box.mso_hide == "all":
        return True
    if box.opacity is not None:
        m = _CSS_LENGTH.match(box.opacity.strip())
        if m is not None and float(m.group(1)) <= 0:
            return True
    return any(css_px(v) == 0 for v in (box.css_max_height, box.css_max_width))
