"""URLs inside tags where browsers load nothing (beacon_proxy.rewrite.stray).

Session 18's attack ran refused copies through Roundcube's own washer (PHP: libxml2 and
Masterminds' HTML5 parser) and Chromium: these readings differ from a browser's in ways
no model ends (a tag cut off at the end kept, "<" opening a tag inside one, attributes
recovered otherwise, CSS parsed again), and each left a URL naming the recipient in a
refused copy.  A URL inside a tag that the browser's reading neither loads nor follows
now sends that copy to the fallback (a tracker rule's URL: every refused copy).
"""

from __future__ import annotations

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.html import scan_entries
from beacon_proxy.rewrite.stray import stray_urls, url_spans
from tests.rewrite.test_webmail import ENGINE, U, _message

READER = "reader@example.org"
#: Each held a URL naming the recipient that Roundcube's washer loaded from the refused copy.
ATTACKS = {
    "cut_off_at_the_end": '<p>x</p><img src="{U}',
    "lt_inside_a_tag": "<p>x <p <img src={U}>y</p>",
    "lt_after_a_value": '<p s=""<img src={U}>',
    "processing_instruction": "<p>x</p><?x > <!-- ?> <img src={U}> -->",
    "duplicate_style": '<p style=color:red style="background:url({U})">x</p>',
    "dash_declaration": "<p>x</p><!- <img src={U}> ->",
    "bracket_declaration": "<p>x</p><![x <img src={U}> ]>",
    "cdata_without_bracket": "<p>x</p><![CDATA <img src={U}> >",
    "quote_as_attribute": '<img "= src={U}>',
    "ampersand_as_attribute": "<img &= src={U}>",
    "question_mark_in_name": "<img? src={U}>",
    "vertical_tab_in_name": "<img\x0b\nsrc={U}>",
    "css_quotes": "<p style=\"background:url('#a), url({U}')\">x</p>",
    "css_newline_in_string": "<p style=\"a:'1\n';background:url({U});b:'\">x</p>",
    "body_background_blank": '<body background=" #x),url({U}"><p>x</p></body>',
    "fix_html5": 'x<p title="<html><img src={U}><body>">y</p><head>',
    "latin1_quotes": '<p title="a\x94><img src={U}>\x93">x</p>',
}


def _refused(html: bytes) -> Outcome:
    prepared = prepare(ENGINE, _message(html), CopyPolicy())
    return decide(ENGINE, prepared, READER, Policy.REFUSED, CopyPolicy()).outcome


@pytest.mark.parametrize("case", list(ATTACKS))
def test_a_url_naming_the_recipient_inside_a_tag_is_not_left_to_other_readers(
        case: str) -> None:
    html = ATTACKS[case].replace("{U}", U).encode("latin-1")
    assert _refused(html) in (Outcome.FALLBACK, Outcome.HELD)


def test_another_recipients_copy_stays_precise() -> None:
    html = f'<img src="https://cdn.example/a.png" alt="x"><p data-u="{U}">x</p>'.encode()
    prepared = prepare(ENGINE, _message(html), CopyPolicy())
    mine = decide(ENGINE, prepared, READER, Policy.REFUSED, CopyPolicy())
    assert mine.outcome is Outcome.FALLBACK
    other = decide(ENGINE, prepared, "someone@example.net", Policy.REFUSED, CopyPolicy())
    assert other.outcome is Outcome.STRIPPED


def test_a_tracker_rules_url_inside_a_tag_sends_every_refused_copy_to_the_fallback() -> None:
    html = b'<p>x</p><img src="https://www.google-analytics.com/collect?v=1&t=event'
    prepared = prepare(ENGINE, _message(html), CopyPolicy())
    copy = decide(ENGINE, prepared, "someone@example.net", Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK, copy.problems


@pytest.mark.parametrize("html", [
    # links, loads the browser reads (stripped), text, comments: none of them stray
    f'<a href="https://esp.example/u?e=reader%40example.org">{U}</a>',
    f'<img src="{U}"><p style="background:url({U})">x</p>',
    f"<p>Sent to reader@example.org: {U}</p>",
    f"<!-- {U} --><!--[if mso]><v:roundrect href=\"{U}\"></v:roundrect><![endif]-->",
    '<html xmlns="http://www.w3.org/1999/xhtml"><p itemtype="https://schema.org/x">a</p>',
])
def test_what_no_reader_loads_is_not_stray(html: str) -> None:
    data = html.encode()
    entries, _, _ = scan_entries(data)
    strays = stray_urls(data, data.lower(), url_spans(entries, data.lower()))
    assert not any("reader" in url for url in strays), strays
    assert _refused(data) is Outcome.STRIPPED


def test_a_tab_reference_in_a_url_is_dropped_as_browsers_do() -> None:
    data = b'<p data-u="http:/&#9;/t.example/x?e=1">a</p>'
    assert stray_urls(data, data.lower(), []) == ["https://t.example/x?e=1"]


def test_entities_and_backslashes_are_read() -> None:
    data = b'<p title="\\\\t.example/p?u=1" data-x="https:&#47;&#47;s.example/a&amp;b">'
    assert stray_urls(data, data.lower(), []) == ["https://t.example/p?u=1",
                                                 "https://s.example/a&b"]


@pytest.mark.parametrize("spelling", [
    "https://@t.oracle-tracker.example/x.gif?e=reader%40example.org",
    "https://%74.oracle-tracker.example/x.gif?e=reader%40example.org",
    "https://\uff54.oracle-tracker.example/x.gif?e=reader%40example.org",
])
def test_url_spellings_browsers_fold_are_read(spelling: str) -> None:
    """Session 18's second attack: hosts Chromium normalises (a stray URL, well-formed)."""
    assert _refused(f'<p data-u="{spelling}">x</p>'.encode()) is Outcome.FALLBACK


def test_a_tracker_rules_host_is_matched_as_browsers_read_it() -> None:
    html = b'<p>x</p><p title="https://www.%67oogle-analytics.com/collect?v=1&amp;t=event">a</p>'
    prepared = prepare(ENGINE, _message(html), CopyPolicy())
    copy = decide(ENGINE, prepared, "someone@example.net", Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK, copy.problems
