"""Box geometry: tiny and hidden, as the classifier and the scanner read a box."""

from __future__ import annotations

import pytest

from beacon_proxy.rewrite.boxes import attr_px, css_px, is_hidden, is_tiny
from beacon_proxy.rewrite.html import scan_html
from beacon_proxy.rewrite.htmlrefs import Box


@pytest.mark.parametrize(("value", "px"), [
    ("1", 1.0), ("2px", 2.0), ("0", 0.0), ("0%", 0.0), (" 600", 600.0), ("50%", None),
    ("", None), (None, None), ("²", None), ("x", None),
])
def test_attribute_lengths(value: str | None, px: float | None) -> None:
    assert attr_px(value) == px


@pytest.mark.parametrize(("value", "px"), [
    ("1px", 1.0), ("1.5pt", 2.0), ("0em", 0.0), ("-0", 0.0), ("0.1rem", 1.6), ("auto", None),
    ("50%", None), ("1" * 20000 + " x", None), (None, None),
])
def test_css_lengths(value: str | None, px: float | None) -> None:
    assert css_px(value) == px


def test_tiny_and_hidden() -> None:
    assert is_tiny(Box("1", "600")) and is_tiny(Box(None, None, "2px"))
    assert not is_tiny(Box("600", "300")) and not is_tiny(Box(None, None))
    assert is_hidden(Box(None, None, display="none"))
    assert is_hidden(Box(None, None, opacity="0.0")) and is_hidden(Box(None, None, None, None,
                                                                       None, "0"))
    assert not is_hidden(Box(None, None, opacity="0.5")) and not is_hidden(Box("1", "1"))


_T = "https://t.example/o/8f3a2b1c9d.gif"


@pytest.mark.parametrize(("frame", "hidden"), [
    ('width="1" height="1"', True), ('style="display:none"', True), ("hidden", True),
    ('style="max-height:0"', True), ('width="600" height="400"', False), ("", False),
])
def test_a_tiny_or_hidden_frame_hides_its_srcdoc(frame: str, hidden: bool) -> None:
    """A frame that shows nothing loads its document all the same: its loads are hidden."""
    html = (f'<iframe {frame} srcdoc="<img src=&quot;{_T}&quot; width=600 height=300>'
            f'<p style=&quot;background:url({_T}?b)&quot;>x</p>"></iframe>')
    img, css = scan_html(html.encode()).references
    assert (img.box is not None and img.box.display == "none") == hidden
    if frame.startswith(("width", "style")):  # a box of its own: the CSS load's too
        assert (css.box is not None and css.box.display == "none") == hidden
