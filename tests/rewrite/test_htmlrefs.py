"""A URL spelled in an image's attribute names (``htmlrefs.name_url``): malformed, removed.

``<img alt=" src="https://t.example/o/abc">`` - a quote too many, as in
MailTrackerBlocker's Mailgun tests - leaves the URL to the tokenizer as attribute
*names*.  No browser loads it (the oracle's parsers agree); a lenient client might, and
the sender meant it as a pixel, so a refused copy loses it: only the names go, every
other byte of the tag stays.
"""

from __future__ import annotations

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.classify import classify_all
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.html import scan_entries, scan_html
from beacon_proxy.rewrite.htmlrefs import URL_IN_NAME, materialize, name_url
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite import oracle

RULES = load_rules()

# MailTrackerBlocker's testMailgun messages, shortened (ids cut; the shape is theirs).
MAILGUN = [
    ('<img width="1px" height="1px" alt=" src="http://email.mgdynamic1.webpt.com/o/eJwtz81u">',
     "http://email.mgdynamic1.webpt.com/o/eJwtz81u", "Mailgun"),
    ('<img width="1px" height="1px" alt=" src="https://email.unsplash.com/o/eJydkDFThDAQ">',
     "https://email.unsplash.com/o/eJydkDFThDAQ", "Unsplash"),
    ('<img width="1px" height="1px" alt=" src="email.mailgun.patreon.com/o/eJwdj0uOwzAM">',
     "//email.mailgun.patreon.com/o/eJwdj0uOwzAM", "Mailgun"),
    ('<img width="1px" height="1px" alt=" src="http://email.mail.gitguardian.com/o/eJxtUct">',
     "http://email.mail.gitguardian.com/o/eJxtUct", "Mailgun"),
]


def _message(html: str) -> bytes:
    return ("From: news@sender.example\r\nTo: reader@example.org\r\nSubject: s\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + html).encode()


@pytest.mark.parametrize(("html", "url", "vendor"), MAILGUN)
def test_a_url_in_attribute_names_is_a_malformed_tracker(html: str, url: str,
                                                         vendor: str) -> None:
    (ref,) = scan_html(html.encode()).references
    assert (ref.element, ref.url, ref.tag, ref.remote, ref.rewritable) == (
        URL_IN_NAME, url, "img", True, False)
    (finding,) = classify_all([ref], RULES)
    assert finding.tracker and finding.vendor == vendor
    assert finding.reasons == (f"rule:{vendor}", "malformed", "tiny")


@pytest.mark.parametrize(("html", "url", "vendor"), MAILGUN)
def test_no_browser_loads_it(html: str, url: str, vendor: str) -> None:
    assert oracle.remote_urls(html) == {parser: set() for parser in oracle.PARSERS}


@pytest.mark.parametrize(("html", "url", "vendor"), MAILGUN)
def test_a_url_in_names_is_left_to_the_fallback(html: str, url: str, vendor: str) -> None:
    """Session 18: markup that readers cut into other tags (a URL spelled as attribute
    names: libxml2 reads such names otherwise) is not read precisely; the refused copy
    takes the fallback, which removes the URL with the names."""
    engine = Engine(RULES)
    data = _message(f"<p>Hello {html} there</p>")
    analysis = engine.analyse(data)
    assert "markup other readers cut into other tags" in analysis.unhandled[0]
    prepared = prepare(engine, data, CopyPolicy())
    refused = decide(engine, prepared, "reader@example.org", Policy.REFUSED, CopyPolicy())
    assert refused.outcome is Outcome.FALLBACK and refused.data is not None
    assert url.encode() not in refused.data
    assert decide(engine, prepared, "reader@example.org", Policy.GRANTED,
                  CopyPolicy()).outcome is Outcome.UNMODIFIED_GRANTED


@pytest.mark.parametrize(("html", "removed"), [
    # protocol-relative, with the separators before it
    ('<img alt=" src="//t.example/o/abc" width="1">', '//t.example/o/abc"'),
    # the run ends after the name holding the quote: "/width=1" stays
    ('<img alt=" src="https://t.example/o/abc"/width=1>', 'https://t.example/o/abc"'),
    # a query string in a name's value, and whitespace before the URL
    ('<img alt="x" https://t.example/o?u=1&amp;e=2 width=1>', " https://t.example/o?u=1&amp;e=2"),
    ('<img alt=" src="t.example:8080/o/abc">', 't.example:8080/o/abc"'),
    ('<IMG ALT=" SRC="HTTPS://T.EXAMPLE/O/ABC">', 'HTTPS://T.EXAMPLE/O/ABC"'),
])
def test_the_span_removed(html: str, removed: str) -> None:
    low = html.encode().lower()
    found = name_url(low, 0, len(low))
    assert found is not None
    (start, end), _ = found
    assert html[start:end] == removed


def test_entities_are_decoded_as_in_a_value() -> None:
    (ref,) = scan_html(b'<img alt="x" https://t.example/o?u=1&amp;e=2 width=1>').references
    assert ref.url == "https://t.example/o?u=1&e=2"


@pytest.mark.parametrize("html", [
    '<img alt="x" class="a b" data-x>',
    '<img alt="x" foo.bar>',  # a dotted name, no path after it
    '<img alt="x" foo.bar/>',  # ... nor here: "/>" closes the tag
    '<img alt="x" mailto:a/b.example>',  # not a web scheme
    '<img alt="x" http:/>',  # a scheme, no host
    '<img alt="x" a.b1/c>',  # no top-level label
    '<img alt="x" http:="1"//t.example>',  # the scheme has a value; a host, no path
])
def test_names_that_are_no_url(html: str) -> None:
    low = html.encode().lower()
    assert name_url(low, 0, len(low)) is None
    assert scan_html(html.encode()).references == ()


def test_only_an_image_without_src_is_looked_at() -> None:
    html = b'<img src="https://cdn.example/a.png" alt=" src="https://t.example/o/abc">'
    (ref,) = scan_html(html).references
    assert ref.element == "img" and ref.url == "https://cdn.example/a.png"
    html = b'<a href="x" alt=" src="https://t.example/o/abc">link</a>'
    assert scan_html(html).references == ()


@pytest.mark.parametrize("html", [
    '<img alt=" src="https://t.example/o/abc">',  # read by the fast path
    '<img style="border:0" alt=" src="https://t.example/o/abc">',  # by img()
    '<img srcset="https://cdn.example/a.png 2x" alt=" src="https://t.example/o/abc">',  # tag()
    '<input type="image" alt=" src="https://t.example/o/abc">',
    '<p><img alt=" src="https://t.example/o/abc"><img src="https://cdn.example/b.png"></p>',
])
def test_every_path_finds_it_the_same_way(html: str) -> None:
    fast, _, _ = scan_entries(html.encode())
    exact, _, _ = scan_entries(html.encode(), fast=False)
    assert [materialize(e) for e in fast] == [materialize(e) for e in exact]
    urls = [materialize(e).url for e in fast if materialize(e).element == URL_IN_NAME]
    assert urls == ["https://t.example/o/abc"]


def test_a_hidden_ancestor_and_a_conditional_comment_reach_it() -> None:
    html = (b'<!--[if mso]><div style="display:none"><img alt=" src="https://t.example/o/abc">'
            b"</div><![endif]-->")
    (ref,) = scan_html(html).references
    assert ref.in_conditional and ref.box is not None and ref.box.display == "none"
    (finding,) = classify_all([ref], RULES)
    assert finding.reasons == ("malformed", "hidden")
