"""A refused copy's removals never join the text around them into a load.

The engine removes a tracker's tag (or writes its ``alt`` text, or a space for an
``@import``) in place; what was before and after it then meet.  Text before a tag is
text, so only a ``<`` there can make markup of what follows: a tag, a comment that
hides a ``<style>`` start tag (its style sheet then is markup), an end tag of the raw
text a removed ``@import`` sat in.  The property: compose text pieces around removed
trackers at random, make the refused copy, and let html5lib (the HTML5 tree builder,
as browsers parse; :mod:`tests.rewrite.oracle`) list the copy's remote loads: none of
the tracker's host may be left.  The Chromium cases of the same shapes are in
``test_rendered_refusal.py`` (``splice_*``); those where a join ends a conditional
comment early are there only (html5lib reads the conditional as Outlook's markup, as
the oracle does, so it cannot tell the browser's reading apart).
"""

from __future__ import annotations

import email
import email.policy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.copies import CopyPolicy, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite.oracle import loads

ENGINE = Engine(load_rules())
RCPT = "reader@example.org"
HOST = "t.splice-tracker.example"
T = f"https://{HOST}/p.gif?e=reader%40example.org"

#: Trackers the refused copy removes (each a whole construct).
_REMOVED = [f'<img src="{T}">', f'<img src="{T}" width="1" height="1">',
            f'<img alt="img src={T} " src="{T}" width="600" height="300">',
            f'<input type=image src="{T}">', f"<link rel=stylesheet href={T}>",
            f'<meta http-equiv=refresh content="0;url={T}">', f"<style>@import '{T}';</style>",
            f"<embed src={T}>", f"<track src={T}>"]
#: Attributes the refused copy empties, and text a join with them could make a load of.
_ATTRS = [f' background="{T}"', f" background={T}", f' poster="{T}"', f' src="{T}"',
          f" srcset={T}", f' srcset="{T} 1x, {T} 2x"', f' https://{HOST}/a="x"']
_TAG_TEXT = ["<im", "g", "<img", " sr", "c=" + T, f' src="{T}"', "<ifram", "e", "<video",
             ' src="data:,"', " poste", "r=" + T, "<styl", "<style", "x", ">", f"<img src={T}>",
             "</style>", " ", f" https:{HOST}/p.gif?reader%40example.org", "/", '"', "'"]
#: Text around them: what a join could make markup of, and the raw text it could open.
_TEXT = ["<", "<", "</", "<!", "!--", "-->", "-", "!", "?", " ", "x", "&", "&lt;", ">",
         "<!--[if mso]>", "<![endif]-->", "--", "--!", "->", "!>",
         f"img src={T}>", f"img src='{T}' ", f"link rel=stylesheet href={T}>", "/style>",
         "style>", "<style>", "</style>", "/* ", " */", f"p{{background:url({T})}}",
         f"@import '{T}';", "u", "rl(" + T + ")", "@", "import", f"'{T}';", "<p>", "</p>"]
#: The same inside a style sheet: a removed @import between the pieces.
_CSS = [f"@import '{T}';", f"@import url({T});", "<", "/style>", "u", f"rl({T})", "@", "</style",
        "</STYLE", ">", "/>", f"<img src={T}>",
        f"import '{T}';", "p{", "}", "background:", " ", "/*", "*/", f"url({T})", ";"]


def _refused_html(html: str) -> str | None:
    data = ("From: n@shop.example\r\nTo: reader@example.org\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    if copy.data is None:
        return None
    msg = email.message_from_bytes(copy.data, policy=email.policy.compat32)
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8", "replace")


def _tracker_loads(html: str) -> list[str]:
    return [load.url for load in loads(html, "html5lib") if HOST in load.url]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TEXT) | st.sampled_from(_REMOVED), min_size=2, max_size=8))
@example([f'<<img src="{T}">', f"img src={T}>"])
@example(["<", f'<img alt="img src={T} " src="{T}" width="600" height="300">', ">"])
@example(["<", f'<img src="{T}">', "!-- <style> --> /* ", f"<img src={T}>", " */ </style>"])
def test_no_removal_joins_text_into_a_load(pieces: list[str]) -> None:
    html = _refused_html("".join(pieces))
    assert html is None or _tracker_loads(html) == []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TAG_TEXT) | st.sampled_from(_ATTRS), min_size=2, max_size=8))
@example(["<im", f' background="{T}"', "g", f' src="{T}"', ">"])
@example(["<ifram", f' src="{T}"', f' src="{T}"', "></iframe>"])
@example(["<img", f" srcset={T}", f" https:{HOST}/p.gif?reader%40example.org", ">"])
@example(["<img sr", f' https://{HOST}/a="x"', "c=" + T, ">"])
def test_no_emptied_attribute_joins_a_tag_into_a_load(pieces: list[str]) -> None:
    """An attribute of a tracker is emptied in place: the bytes around it never meet,
    and the first of two attributes of one name (the one browsers read) stays."""
    html = _refused_html("".join(pieces))
    assert html is None or _tracker_loads(html) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_CSS), min_size=2, max_size=8))
@example(["p{background:u", f"@import '{T}';", f"rl({T})}}"])
@example(["@", f"@import '{T}';", f"import '{T}';"])
@example(["<", f"@import '{T}';", "/style>", f"<img src={T}>"])
@example(["</style", f"@import '{T}';", f"><img src={T}>"])
@example(["</STYLE", f"@import url({T});", "/>", f"<img src={T}>"])
def test_no_removed_import_joins_a_style_sheet_into_a_load(pieces: list[str]) -> None:
    html = _refused_html(f'<img src="{T}" width=1 height=1><style>' + "".join(pieces)
                         + "</style><p>x</p>")
    assert html is None or _tracker_loads(html) == []
