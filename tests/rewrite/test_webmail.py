"""Roundcube's HTML washer, as modelled (beacon_proxy.rewrite.webmail).

Session 17's attack ran the refused copies through Roundcube's own washer (rcube_washtml,
both its libxml2 and its HTML5 parser) and rendered the result in Chromium: these 26
cases were stripped by the precise path, and some survived the fallback too, yet loaded
the tracker once washed.  Each is now read as the washer makes it: the precise path gives
such a part to the fallback, and the fallback holds it when even its neutralised text
loads once washed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite import webmail
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules

ENGINE = Engine(load_rules())
U = "https://t.oracle-tracker.example/p/x.gif?e=reader%40example.org"
ATTACKS = {
    "alnum_comment": '<p>x<!--x><img src="{U}">--></p>',
    "end_tag_attributes": '<p>x</b title="><img src={U}>"></p>',
    "quote_in_tag_name": '<p>x<i"mg src="{U}"></p>',
    "smart_tag_colon": '<p>x<img:x src="{U}"></p>',
    "end_tag_blank": '<p>x</ <img src="{U}"></p>',
    "titlex": '<p>x<titlex><!--</title><img src="{U}">--></p>',
    "title_end_with_blank": '<p>x<title></title ><!--</title><img src="{U}">--></p>',
    "html_attributes": '<html title="><img src={U}>"><body><p>x</p></body></html>',
    "meta_charset": '<p>x<meta charset=utf-8 a="><img src={U}>"></p>',
    "header_as_head": '<header a="><img src={U}>"><p>x</p></header>',
    "list_in_comment": '<ul><li>a</li><!--<ul><li><img src="{U}"></li></ul>--></ul>',
    "base_in_comment": '<!--<base href="https://t.oracle-tracker.example/p/">--><p>'
                       '<img src="x.gif?e=reader%40example.org"></p>',
    "basefont": '<basefont href="https://t.oracle-tracker.example/p/"><p>'
                '<img src="x.gif?e=reader%40example.org"></p>',
    "style_comment": '<p style="background:ur/**/l({U})">x</p>',
    "style_double_entity": '<p style="background:u&amp;#114;l({U})">x</p>',
    "style_paren_entity": '<p style="background:url&amp;#40;{U})">x</p>',
    "style_backslash": '<p style="background:url\\({U})">x</p>',
    "style_hex_escape": '<p style="background:url\\28{U})">x</p>',
    "style_tag": '<p style="background:ur<b>l({U})">x</p>',
    "xmp": '<p>x<xmp><img src="{U}"></xmp></p>',
    "noembed": '<p>x<noembed><img src="{U}"></noembed></p>',
    "plaintext": '<p>x<plaintext><img src="{U}">',
    "title_over_lines": '<title>\n<img src="{U}"></title><p>x</p>',
    "cdata": '<p>x<![CDATA[ <img src="{U}"> ]]></p>',
    "bogus_declaration": '<p>x<!x <img src="{U}">></p>',
}
BAD_UTF8 = {
    "invalid_in_tag_name": b'<p>x<i\xffmg src="{U}"></p>',
    "invalid_in_attribute": b'<img s\xffrc="{U}">',
    "invalid_in_background": b'<table><tr><td back\xffground="{U}">x</td></tr></table>',
    "invalid_in_url": b'<p style="background:u\xffrl({U})">x</p>',
}


def _message(html: bytes) -> bytes:
    return (b"From: a@shop.example\r\nTo: reader@example.org\r\nSubject: s\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
            + b"\r\n")


def _refused(data: bytes) -> tuple[Outcome, bytes | None]:
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, "reader@example.org", Policy.REFUSED, CopyPolicy())
    return copy.outcome, copy.data


CASES = {**{k: v.replace("{U}", U).encode() for k, v in ATTACKS.items()},
         **{k: v.replace(b"{U}", U.encode()) for k, v in BAD_UTF8.items()}}


@pytest.mark.parametrize("case", list(CASES))
def test_what_the_washer_makes_load_is_seen(case: str) -> None:
    assert webmail.loads_more(CASES[case], "utf-8")
    outcome, copy = _refused(_message(CASES[case]))
    if copy is not None:  # the fallback's copy: nothing loads once washed either
        assert outcome is Outcome.FALLBACK
        body = copy.split(b"\r\n\r\n", 1)[1]
        assert not webmail.loads(body, "utf-8"), body


@pytest.mark.parametrize("html", [
    b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Hi</title></head>'
    b'<body><p style="color:red;font-family:\'A\\\'s\'">x</p><img src="https://cdn.example/a.png">'
    b"<!--[if mso]><p>o</p><![endif]--><ul><li>a</li></ul></body></html>",
    b'<base href="https://shop.example/"><img src="a.png"><p>x</p>',
    b"<p>caf\xc3\xa9 &amp; <b>bold</b></p>",
])
def test_honest_html_washes_to_the_same_loads(html: bytes) -> None:
    assert not webmail.loads_more(html, "utf-8")


TEMPLATES = sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "templates")
                   .glob("*.html"))


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
def test_the_real_templates_keep_the_precise_path() -> None:
    for path in TEMPLATES:
        assert not webmail.loads_more(path.read_bytes(), "utf-8"), path.name
