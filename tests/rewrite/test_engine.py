from __future__ import annotations

import base64
import email
import gc
import hashlib
import quopri
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.classify import classify
from beacon_proxy.rewrite.engine import Action, Engine, _identity
from beacon_proxy.rewrite.identity import RecipientIdentity
from beacon_proxy.rewrite.inline import transparent_png
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.transfer import decode

FIXTURES = Path(__file__).parent / "fixtures"
ENGINE = Engine(load_rules())
RCPT = "Ann.Reader@example.org"
LINK = "https://prefs.example.com/o/TOKEN"


def _message(html: bytes, *, cte: str = "quoted-printable", charset: str = "utf-8") -> bytes:
    if cte == "quoted-printable":
        body = quopri.encodestring(html).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    elif cte == "base64":
        raw = base64.encodebytes(html)
        body = raw.replace(b"\n", b"\r\n")
    else:
        body = html
    return (
        b"From: News <news@shop.example>\r\nTo: ann@example.org\r\nSubject: Deals\r\n"
        b"List-Id: Shop news <news.shop.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="BOUND"\r\n\r\n'
        b"--BOUND\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDeals!\r\n"
        b"--BOUND\r\nContent-Type: text/html; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body + b"\r\n--BOUND--\r\n"
    )


def _html_of(message: bytes) -> bytes:
    analysis = ENGINE.analyse(message)
    (part,) = analysis.parts
    return part.decoded


PIXEL = b'<img src="https://t.shop.example/open.gif?u=42" width="1" height="1" alt="">'
PAGE = (
    b"<!DOCTYPE html><html><head><style>.x{color:red}</style></head><body>"
    b"<table><tr><td>Hello &amp; welcome \xe2\x82\xac</td></tr></table>"
    b'<img src="https://cdn.shop.example/logo.png" width="200" alt="Shop">'
    + PIXEL +
    b"<!--[if mso]><v:rect fill=\"true\"><v:fill src=\"https://cdn.shop.example/bg.png\" />"
    b"</v:rect><![endif]--></body></html>"
)


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_refused_copy_loses_the_pixel_and_nothing_else(cte: str) -> None:
    message = _message(PAGE, cte=cte)
    analysis = ENGINE.analyse(message)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    assert out.changed
    assert _html_of(out.data) == PAGE.replace(PIXEL, b"")
    # Headers and the text part are byte-identical; only the HTML body changed.
    part = analysis.parts[0].part
    assert out.data[: part.body_span.start] == message[: part.body_span.start]
    assert out.data.endswith(b"\r\n--BOUND--\r\n")
    stripped = [i for i in out.items if i.action is Action.STRIP]
    assert [i.finding.element for i in stripped] == ["img"]


def test_granted_copy_points_trackers_at_the_open_endpoint() -> None:
    analysis = ENGINE.analyse(_message(PAGE))
    seen: list[str] = []

    def link(url: str) -> str:
        seen.append(url)
        return LINK

    out = ENGINE.render(analysis, RCPT, Policy.GRANTED, link)
    assert seen == ["https://t.shop.example/open.gif?u=42"]
    assert _html_of(out.data) == PAGE.replace(b"https://t.shop.example/open.gif?u=42",
                                              LINK.encode())
    assert analysis.list_id == "news.shop.example"


def test_granted_without_an_endpoint_strips() -> None:
    out = ENGINE.render(ENGINE.analyse(_message(PAGE)), RCPT, Policy.GRANTED, None)
    assert _html_of(out.data) == PAGE.replace(PIXEL, b"")


@pytest.mark.parametrize(
    "form",
    [
        RCPT,
        RCPT.lower().replace("@", "%40"),
        base64.b64encode(RCPT.lower().encode()).decode().rstrip("="),
        hashlib.md5(RCPT.lower().encode()).hexdigest().upper(),
        hashlib.sha256(RCPT.lower().encode()).hexdigest(),
    ],
)
def test_visible_personalised_image_becomes_its_alt_text(form: str) -> None:
    banner = (f'<img src="https://img.shop.example/banner?who={form}" width="600" '
              f'alt="Deals for you <3">').encode()
    page = b"<p>Hi</p>" + banner + b"<p>Bye</p>"
    analysis = ENGINE.analyse(_message(page))
    refused = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    assert _html_of(refused.data) == b"<p>Hi</p>Deals for you &lt;3<p>Bye</p>"
    (item,) = [i for i in refused.items if i.finding.tracker]
    assert "identifies-recipient" in item.finding.reasons
    granted = ENGINE.render(analysis, RCPT, Policy.GRANTED, lambda u: LINK)
    assert not granted.changed  # consented: the visible image stays as it is
    other = ENGINE.render(analysis, "someone@else.example", Policy.REFUSED)
    assert not other.changed  # not this recipient's address: not a tracker for them


def test_srcset_candidates_and_css_urls_are_neutralised_in_place() -> None:
    page = (
        b'<img src="https://cdn.shop.example/a.png" width="300" '
        b'srcset="https://cdn.shop.example/a2.png 2x, https://t.shop.example/open.gif?u=1 3x">'
        b'<div style="background:url(https://t.shop.example/open.gif?u=2) no-repeat;color:red">'
        b"x</div>"
    )
    out = ENGINE.render(ENGINE.analyse(_message(page)), RCPT, Policy.REFUSED)
    html = _html_of(out.data)
    assert b"t.shop.example" not in html
    assert b'srcset="https://cdn.shop.example/a2.png 2x' in html
    assert b"background:none no-repeat;color:red" in html


def test_broken_mime_is_reported_unhandled_for_the_fallback() -> None:
    message = _message(PAGE).replace(b'boundary="BOUND"', b'boundary="OTHER"')
    analysis = ENGINE.analyse(message)
    assert analysis.problems and not analysis.complete
    assert analysis.unhandled == ("message: boundary never found",)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)  # the engine alone changes nothing
    assert out.data == message and not out.changed


def test_lying_charset_part_is_scanned_as_its_bytes() -> None:
    message = _message(PAGE.replace(b"\xe2\x82\xac", b"\xff\xfe"), cte="8bit")
    analysis = ENGINE.analyse(message)
    assert len(analysis.parts) == 1 and analysis.complete
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    assert out.changed and PIXEL not in out.data and b"\xff\xfe" in out.data


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "mime").glob("*.eml")))
def test_every_mime_fixture_renders_without_error(name: str) -> None:
    message = (FIXTURES / "mime" / name).read_bytes()
    analysis = ENGINE.analyse(message)
    for policy in Policy:
        out = ENGINE.render(analysis, RCPT, policy, lambda u: LINK)
        if not out.changed:
            assert out.data == message


@pytest.mark.parametrize("name", ["iso2022jp_qp.eml", "iso2022jp_base64.eml"])
def test_japanese_newsletters_keep_their_text(name: str) -> None:
    message = (FIXTURES / "mime" / name).read_bytes()
    analysis = ENGINE.analyse(message)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    assert out.changed
    (part,) = analysis.parts
    before = part.decoded
    after = _decoded_html(out.data)
    removed = [i.reference.removal_span for i in out.items if i.action is Action.STRIP]
    expected = before
    for start, end in sorted(removed, reverse=True):
        expected = expected[:start] + expected[end:]
    assert after == expected
    assert after.decode("iso-2022-jp")  # still valid


def _decoded_html(message: bytes) -> bytes:
    analysis = ENGINE.analyse(message)
    (part,) = analysis.parts
    return decode(analysis.tree.body(part.part), part.part.transfer_encoding)


def test_templates_without_trackers_pass_byte_identical() -> None:
    html = (FIXTURES / "html" / "mjml_welcome.html").read_bytes()
    html = re.sub(rb"<img[^>]*(?:width=\"1\"|open|track|pixel)[^>]*>", b"", html)
    message = _message(html)
    analysis = ENGINE.analyse(message)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    if not any(i.finding.tracker for i in out.items):
        assert out.data == message
        assert not out.changed


_TEXT = st.text(alphabet=st.sampled_from("abc <>&;=\"'/ é€"), max_size=30)
_SAFE_TAGS = st.sampled_from([
    "<p>", "</p>", "<br>", '<a href="https://shop.example/x">', "</a>", "<!-- note -->",
    '<img src="https://cdn.shop.example/p.png" width="120" alt="p">', "<table><tr><td>",
    "</td></tr></table>", '<span style="color:#333">', "</span>",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_TEXT.map(lambda t: t.replace("<", "").replace(">", "")), _SAFE_TAGS),
                max_size=30),
       st.lists(st.integers(min_value=0, max_value=30), max_size=4),
       st.sampled_from(["quoted-printable", "base64", "8bit"]))
def test_output_equals_input_with_exactly_the_tracker_spans_removed(
    chunks: list[str], positions: list[int], cte: str
) -> None:
    pieces = [c.encode("utf-8") for c in chunks]
    pixels: list[bytes] = []
    for n, pos in enumerate(sorted(positions, reverse=True)):
        pixel = f'<img src="https://t.shop.example/o.gif?id={n}" width="1" height="1">'.encode()
        pieces.insert(min(pos, len(pieces)), pixel)
        pixels.append(pixel)
    html = b"".join(pieces)
    out = ENGINE.render(ENGINE.analyse(_message(html, cte=cte)), RCPT, Policy.REFUSED)
    expected = html
    for pixel in pixels:
        expected = expected.replace(pixel, b"", 1)
    assert _html_of(out.data) == expected


def test_a_line_too_long_for_8bit_is_re_encoded_as_quoted_printable() -> None:
    long_line = b"<p>" + b"x" * 900 + PIXEL.replace(b"open.gif?u=42", b"o?u=42") + b"</p>"
    message = _message(long_line, cte="8bit")
    analysis = ENGINE.analyse(message)
    link = "https://p.example/" + "y" * 200
    out = ENGINE.render(analysis, RCPT, Policy.GRANTED, lambda u: link)
    assert out.changed and out.problems == ("part 2 (text/html): re-encoded as quoted-printable",)
    assert [i.action for i in out.trackers] == [Action.REWRITE]
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(out.data)
    html = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    decoded = html.get_payload(decode=True)
    assert isinstance(decoded, bytes)
    assert link.encode() in decoded and b"x" * 900 in decoded
    assert decoded.count(b"Content-Transfer-Encoding") == 0
    again = ENGINE.analyse(out.data)
    assert again.complete and again.parts[0].part.transfer_encoding == "quoted-printable"


@pytest.mark.parametrize("name", ["shift_jis_qp.eml", "shift_jis_base64.eml"])
def test_shift_jis_newsletters_lose_only_the_tracker(name: str) -> None:
    message = (FIXTURES / "mime" / name).read_bytes()
    analysis = ENGINE.analyse(message)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    (part,) = analysis.parts
    removed = [i.reference.removal_span for i in out.items if i.action is Action.STRIP]
    expected = part.decoded
    for start, end in sorted(removed, reverse=True):
        expected = expected[:start] + expected[end:]
    assert _decoded_html(out.data) == expected
    assert expected.decode("shift_jis")


def _bench_newsletter(pixels: bool) -> bytes:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from newsletter import newsletter

    data = newsletter().replace(b"\n", b"\r\n")
    if pixels:
        return data
    html = _html_of(data)  # the same template without its two pixels
    clean = re.sub(rb'<img src="https://(?:t\.esp-mailer|pixel\.analytics)[^>]*>', b"", html)
    assert clean != html
    return _message(clean)


def test_industry_template_without_trackers_passes_byte_identical() -> None:
    message = _bench_newsletter(pixels=False)
    analysis = ENGINE.analyse(message)
    assert analysis.parts and not analysis.problems
    assert any(r.in_conditional for r in analysis.parts[0].references)  # VML was scanned
    for policy in Policy:
        out = ENGINE.render(analysis, RCPT, policy, lambda u: LINK)
        assert out.data == message
        assert not any(i.finding.tracker for i in out.items)


def test_industry_template_with_trackers_changes_only_them() -> None:
    message = _bench_newsletter(pixels=True)
    analysis = ENGINE.analyse(message)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    trackers = [i for i in out.items if i.finding.tracker]
    assert {i.finding.element for i in trackers} == {"img"}
    assert len(trackers) == 2
    before, after = message.split(b"\r\n"), out.data.split(b"\r\n")
    import difflib

    changed = [op for op in difflib.SequenceMatcher(a=before, b=after, autojunk=False)
               .get_opcodes() if op[0] != "equal"]
    assert 1 <= len(changed) <= 2  # only the encoded lines holding the two pixels
    assert all(len(line) <= 76 for line in after if line and not line.startswith(b"Content"))


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "html",
    [
        b"<p>" + b"x" * (10 << 20) + PIXEL,  # a 10 MB single line
        b"<div>" * 100_000 + PIXEL + b"</div>" * 100_000,  # 100 000 nested tags
        b"<p>a</p><!-- never closed " + PIXEL * 3,
        b'<img alt="never closed ' + PIXEL * 3,
        b"<!--[if mso]>" + PIXEL + b"<p>no endif",
    ],
    ids=["10MB-line", "nested", "open-comment", "open-quote", "open-conditional"],
)
def test_adversarial_html_finishes_and_delivers(html: bytes) -> None:
    message = _message(html, cte="base64")
    analysis = ENGINE.analyse(message)
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    assert out.data.startswith(message[:100])
    assert out.data.endswith(b"--BOUND--\r\n")
    if analysis.parts:  # scanned: what an HTML parser would load is gone
        scanned = _html_of(out.data) if out.changed else analysis.parts[0].decoded
        if b"<!--" not in html[:30] and b"never closed" not in html:
            assert b"open.gif" not in scanned


@pytest.mark.parametrize("recipient", [RCPT, "someone.else@example.net", None])
@pytest.mark.parametrize("policy", [Policy.REFUSED, Policy.GRANTED])
def test_a_copy_lists_every_reference_as_items_does(recipient: str | None,
                                                    policy: Policy) -> None:
    # A copy builds the items of its trackers at once and the others on first use.
    personal = b'<img src="https://cdn.shop.example/p.png?u=' + RCPT.lower().encode() + b'">'
    analysis = ENGINE.analyse(_message(PAGE + personal))
    out = ENGINE.render(analysis, recipient, policy, lambda url: LINK)
    items = ENGINE.items(analysis, recipient, policy)
    assert list(out.items) == items
    assert list(out.trackers) == [i for i in items if i.finding.tracker]
    (part,) = analysis.parts
    assert [i.reference for i in items] == list(part.references)
    assert list(part.findings) == [classify(ref, ENGINE.rules) for ref in part.references]
    assert out.report(policy)["beacons"] == len(out.trackers)


def test_an_image_size_that_is_no_number_does_not_stop_the_analysis() -> None:
    page = PAGE.replace(b'width="200"', b'width="&sup2;"')
    out = ENGINE.render(ENGINE.analyse(_message(page)), RCPT, Policy.REFUSED)
    assert out.changed and _html_of(out.data) == page.replace(PIXEL, b"")


@pytest.mark.parametrize(
    "tail", [b'<style>"\\</style>', b"<style>'\\", b'<img src="cid:x" style="a:\'\\">'],
    ids=["block", "block-at-the-end", "attribute"])
def test_a_backslash_ending_a_css_string_does_not_let_the_pixel_through(tail: bytes) -> None:
    # It made the CSS scanner raise, and the relay delivers a message it cannot rewrite as is.
    page = PAGE + tail
    out = ENGINE.render(ENGINE.analyse(_message(page)), RCPT, Policy.REFUSED)
    assert out.changed and _html_of(out.data) == page.replace(PIXEL, b"")


LAYOUT_IMG = b'<img src="https://inxmail.example/img/gmail_fix.gif" width="780" height="1">'
LAYOUT_PAGE = b"<table><tr><td>" + LAYOUT_IMG + b"</td></tr></table>" + PIXEL


def test_refused_copy_inlines_layout_images_and_changes_only_their_url() -> None:
    analysis = ENGINE.analyse(_message(LAYOUT_PAGE))
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    html = _html_of(out.data)
    inline = transparent_png(780, 1).encode()
    assert html == LAYOUT_PAGE.replace(PIXEL, b"").replace(
        b"https://inxmail.example/img/gmail_fix.gif", inline)
    (item,) = [i for i in out.items if i.action is Action.INLINE]
    assert not item.finding.tracker and item.finding.reasons == ("tiny-layout",)
    assert [i.action for i in out.trackers] == [Action.STRIP]
    assert out.report(Policy.REFUSED)["actions"] == {"strip": 1, "inline": 1}
    assert out.report(Policy.REFUSED)["beacons"] == 1  # a layout image is no beacon


def test_granted_copy_leaves_layout_images_alone() -> None:
    analysis = ENGINE.analyse(_message(LAYOUT_PAGE))
    out = ENGINE.render(analysis, RCPT, Policy.GRANTED, lambda url: LINK)
    assert _html_of(out.data) == LAYOUT_PAGE.replace(
        b"https://t.shop.example/open.gif?u=42", LINK.encode())
    assert all(i.action is Action.KEEP for i in out.items if "gmail_fix" in i.finding.url)
    assert out.report(Policy.GRANTED)["actions"] == {"rewrite": 1}


HINTS = (b'<link rel="preconnect" href="https://cdn.shop.example"> '
         b"<link rel=icon href=https://shop.example/favicon.ico>")
HINT_PAGE = (b'<html><head><link rel="stylesheet" href="https://fonts.example/a.css"> ' + HINTS
             + b'</head><body><img src="https://cdn.shop.example/hero.jpg" width="600">'
             + PIXEL + b"</body></html>")


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_refused_copy_strips_invisible_loads_and_nothing_else(cte: str) -> None:
    """A resource hint or icon that is no tracker goes from a refused copy, whole tag;
    the style sheet and the visible image stay, and a granted copy keeps all three."""
    analysis = ENGINE.analyse(_message(HINT_PAGE, cte=cte))
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED)
    assert _html_of(out.data) == HINT_PAGE.replace(HINTS, b" ").replace(PIXEL, b"")
    assert [i.action for i in out.layout] == [Action.STRIP, Action.STRIP]
    assert all(i.finding.reasons == ("invisible-load",) for i in out.layout)
    report = out.report(Policy.REFUSED)
    assert report["actions"] == {"strip": 3} and report["beacons"] == 1
    granted = ENGINE.render(analysis, RCPT, Policy.GRANTED, lambda url: LINK)
    assert _html_of(granted.data) == HINT_PAGE.replace(
        b"https://t.shop.example/open.gif?u=42", LINK.encode())
    assert not granted.layout


def test_a_layout_image_that_names_the_recipient_is_stripped() -> None:
    md5 = hashlib.md5(RCPT.lower().encode()).hexdigest()
    img = f'<img src="https://cdn.example/{md5}/spacer.gif" width="1" height="1">'.encode()
    analysis = ENGINE.analyse(_message(b"<p>x</p>" + img))
    assert _html_of(ENGINE.render(analysis, RCPT, Policy.REFUSED).data) == b"<p>x</p>"
    other = ENGINE.render(analysis, "someone@else.example", Policy.REFUSED)
    assert [i.action for i in other.items] == [Action.INLINE]


def test_an_image_hidden_by_its_ancestor_is_stripped_and_the_rest_kept() -> None:
    hidden = b'<img src="https://t.shop.example/px/7c1e9a.gif">'
    page = (b'<div style="display:none;max-height:0">Preheader' + hidden + b"</div>"
            b'<img src="https://cdn.shop.example/logo.png" width="200">')
    out = ENGINE.render(ENGINE.analyse(_message(page)), RCPT, Policy.REFUSED)
    assert _html_of(out.data) == page.replace(hidden, b"")
    (item,) = out.trackers
    assert item.finding.reasons == ("hidden",)


def test_visible_images_without_an_identifier_are_never_touched() -> None:
    page = (b'<img src="https://cdn.shop.example/logo.png" width="200" height="60">'
            b'<img src="https://cdn.shop.example/p/summer-dress.jpg" style="width:300px">'
            b'<picture><source srcset="https://cdn.shop.example/hero.webp">'
            b'<img src="https://cdn.shop.example/hero.jpg" width="600"></picture>')
    for policy in (Policy.REFUSED, Policy.GRANTED):
        out = ENGINE.render(ENGINE.analyse(_message(page)), RCPT, policy, lambda url: LINK)
        assert [i.action for i in out.items] == [Action.KEEP] * 4


_SPACER = b'<img src="https://cdn.shop.example/img/spacer.gif" width="1" height="1">'
_STRUT = b"<img src='https://cdn.shop.example/gmail_fix.gif' width=780 height=1>"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_TEXT.map(lambda t: t.replace("<", "").replace(">", "")), _SAFE_TAGS,
                          st.sampled_from([_SPACER.decode(), _STRUT.decode(), PIXEL.decode()])),
                max_size=30),
       st.sampled_from(["quoted-printable", "base64", "8bit"]))
def test_layout_images_change_only_their_url(chunks: list[str], cte: str) -> None:
    html = "".join(chunks).encode()
    out = ENGINE.render(ENGINE.analyse(_message(html, cte=cte)), RCPT, Policy.REFUSED)
    expected = html.replace(PIXEL, b"").replace(
        b"https://cdn.shop.example/img/spacer.gif", transparent_png(1, 1).encode()).replace(
        b"https://cdn.shop.example/gmail_fix.gif", transparent_png(780, 1).encode())
    assert _html_of(out.data) == expected
    assert out.report(Policy.REFUSED).get("actions", {}).get("inline", 0) == (
        html.count(_SPACER) + html.count(_STRUT))


def test_an_amp_layout_image_is_removed_not_inlined() -> None:
    amp = b'<amp-img src="https://cdn.shop.example/img/spacer.gif" width="1" height="1"></amp-img>'
    out = ENGINE.render(ENGINE.analyse(_message(b"<p>x</p>" + amp)), RCPT, Policy.REFUSED)
    (item,) = out.items
    assert item.action is Action.STRIP and not item.finding.tracker
    assert b"spacer.gif" not in _html_of(out.data)


# -- the shared refused copy ----------------------------------------------------------


def _personal_page(address: str) -> bytes:
    return _message(
        b'<html><body><img src="https://cdn.shop.example/hero.jpg" width="600" height="300">'
        b'<img src="https://img.shop.example/p/' + address.encode() + b'/me.jpg" width="600"'
        b' height="300" alt="You"><img src="https://pixel.tracker-host.example/o.gif" '
        b'width="1" height="1"></body></html>')


def test_refused_copies_nobody_is_named_in_are_rendered_once_and_equal_a_fresh_render(
        ) -> None:
    import pickle
    from dataclasses import replace

    data = _personal_page("ann@example.org")
    analysis = ENGINE.analyse(data)
    first = ENGINE.render(analysis, "bob@example.org", Policy.REFUSED)
    assert ENGINE.render(analysis, "carl@example.org", Policy.REFUSED) is first
    assert ENGINE.render(analysis, None, Policy.REFUSED) is first
    for rcpt in ("bob@example.org", "carl@example.org", None):
        fresh = ENGINE._render(analysis, rcpt, Policy.REFUSED, None, ())
        assert fresh.data == first.data and fresh.trackers == first.trackers
        assert fresh.layout == first.layout and fresh.items == first.items
    # the recipient a URL names gets a copy of her own: her image goes too
    ann = ENGINE.render(analysis, "ann@example.org", Policy.REFUSED)
    assert ann is not first and b"/p/ann@example.org/" in first.data
    assert b"/p/ann@example.org/" not in ann.data
    assert ENGINE.render(analysis, "ann@example.org", Policy.REFUSED) is not ann
    # other campaign findings, another copy; granted copies are never shared
    diffed = ENGINE.render(analysis, "bob@example.org", Policy.REFUSED, diffed=[(0, 0)])
    assert diffed is not first and b"cdn.shop.example/hero.jpg" not in diffed.data
    assert ENGINE.render(analysis, "bob@example.org", Policy.REFUSED) is first
    granted = ENGINE.render(analysis, "bob@example.org", Policy.GRANTED, lambda u: u + "#b")
    assert ENGINE.render(analysis, "bob@example.org", Policy.GRANTED,
                         lambda u: u + "#c") is not granted
    # the memo belongs to these bytes: not to a replace()d analysis, not through pickle
    other = _personal_page("ann@example.orh")
    moved = replace(analysis, data=other, tree=replace(analysis.tree, data=other))
    assert moved._refused == {} and analysis._refused
    assert pickle.loads(pickle.dumps(analysis))._refused == {}
    assert len(analysis._refused) <= 2


@pytest.mark.parametrize(("recipient", "in_url"), [
    ("ann@b\u00fccher.example", "ann@xn--bcher-kva.example"),
    ("ann@xn--bcher-kva.example", "ann@b\u00fccher.example"),
    ("ANN@XN--BCHER-KVA.EXAMPLE", "ann%40b%C3%BCcher.example"),
    ('"ann"@b\u00fccher.example', "ann@xn--bcher-kva.example"),
])
def test_a_refused_recipient_named_in_another_spelling_loses_her_personal_image(
        recipient: str, in_url: str) -> None:
    analysis = ENGINE.analyse(_personal_page(in_url))
    shared = ENGINE.render(analysis, "bob@example.org", Policy.REFUSED)  # memo filled
    assert b"img.shop.example/p/" in _html_of(shared.data)
    mine = ENGINE.render(analysis, recipient, Policy.REFUSED)
    assert mine is not shared
    assert b"img.shop.example/p/" not in _html_of(mine.data)
    assert b"cdn.shop.example/hero.jpg" in _html_of(mine.data)


@pytest.mark.parametrize("cte", ["quoted-printable", "8bit", "base64"])
def test_a_granted_copy_says_what_was_written_for_it(cte: str) -> None:
    """``Rendered.written`` (step.Spliced): the same shape for every unnamed granted copy,
    the stretches of the body written for it, whose outside is the same bytes in each;
    none for a refused copy or a base64 part (re-encoded to the end)."""
    html = (b'<html><body><p>Hi</p><img src="https://pixel.tracker-host.example/o.gif?u=1"'
            b' width="1" height="1" alt=""></body></html>')
    analysis = ENGINE.analyse(_message(html, cte=cte))
    def link(size: int) -> Callable[[str], str]:
        return lambda url: "https://p.example/o/" + "T" * size

    copies = [ENGINE.render(analysis, f"{'r' * n}@x.example", Policy.GRANTED, link(n))
              for n in (3, 40)]
    assert ENGINE.render(analysis, "r@x.example", Policy.REFUSED).written is None
    if cte == "base64":
        assert [c.written for c in copies] == [None, None]
        return
    shapes, parts = zip(*(c.written for c in copies if c.written is not None), strict=True)
    assert len(parts) == 2 and shapes[0] == shapes[1]
    outside = []
    for copy, ((path, stretches),) in zip(copies, parts, strict=True):
        part = next(p for p in analysis.tree.parts if p.path == path)
        start = part.body_span.start
        body = copy.data[start : len(copy.data) - (len(analysis.data) - part.body_span.stop)]
        cuts = [0, *(x for s in stretches for x in s), len(body)]
        outside.append([body[a:b] for a, b in zip(cuts[::2], cuts[1::2], strict=True)])
        assert b"T" * 3 in body[stretches[0][0] : stretches[0][1]] or b"T" * 40 in body
    assert outside[0] == outside[1]


def test_a_shared_refused_copys_report_is_made_once_and_handed_out_fresh() -> None:
    """The refused copy shared by the recipients no URL names reports the same for each
    (the report of a fresh render); each caller gets a dict of its own to add to."""
    engine = Engine(load_rules())
    data = (b"Content-Type: text/html\r\n\r\n<p>hi</p>"
            b'<img src="https://t.example/o.gif" width="1" height="1">\r\n')
    analysis = engine.analyse(data)
    first = engine.render(analysis, "ann@example.org", Policy.REFUSED)
    again = engine.render(analysis, "bob@example.org", Policy.REFUSED)
    assert again is first  # shared
    fresh = engine._render(analysis, None, Policy.REFUSED, None, ())
    want = fresh.report(Policy.REFUSED, ("p",))
    one = first.report(Policy.REFUSED, ("p",))
    one["outcome"] = "stripped"  # what beacons._report adds
    two = again.report(Policy.REFUSED, ("p",))
    assert two == want and "outcome" not in two
    assert first.report(Policy.REFUSED) == fresh.report(Policy.REFUSED)
    assert want["beacons"] == 1


# -- the recipient's identity, kept per address (engine._identity) ----------------------------

def test_a_kept_identity_finds_what_a_new_one_finds() -> None:
    url = "https://t.test/o?e=" + hashlib.sha256(RCPT.lower().encode()).hexdigest()
    kept = _identity(RCPT)
    assert kept is _identity(RCPT)  # built once per address
    assert kept.find(url) == RecipientIdentity(RCPT).find(url) == ["address-sha256"]
    assert _identity(" " + RCPT) is not kept  # another string: its own (equal) identity
    assert _identity(" " + RCPT).find(url) == kept.find(url)


def test_copies_are_the_same_with_a_kept_identity() -> None:
    # A personalised copy (its URL names the recipient) and a shared refused one, each
    # rendered with the kept identity and with the cache emptied first.
    html = (b'<p>hi</p><img src="https://t.test/o.gif?e=ann.reader%40example.org" width="1">'
            b'<img src="https://cdn.test/a.jpg" width="300">')
    for recipient in (RCPT, "other@example.org"):
        for policy in (Policy.REFUSED, Policy.GRANTED):
            _identity.cache_clear()
            fresh = ENGINE.render(ENGINE.analyse(_message(html)), recipient, policy,
                                  lambda url: LINK).data
            kept = ENGINE.render(ENGINE.analyse(_message(html)), recipient, policy,
                                 lambda url: LINK).data
            assert kept == fresh


# -- an analysis and its copies are freed by reference counting --------------------------------

@pytest.mark.parametrize("policy", [Policy.REFUSED, Policy.GRANTED])
def test_an_analysis_and_its_copies_leave_no_reference_cycle(policy: Policy) -> None:
    # A shared refused copy is kept by its analysis, and a copy keeps what builds its
    # items: had that been the analysis, each one would wait for the garbage collector.
    engine = Engine(load_rules(), templates=0)
    message = _message(PAGE + b'<img src="https://cdn.shop.example/p.png?u=1" width="1">')
    gc.collect()
    gc.disable()
    try:
        analysis = engine.analyse(message)
        for recipient in (RCPT, "someone.else@example.net", None):
            out = engine.render(analysis, recipient, policy, lambda url: LINK)
            assert out.items and out.changed
        del analysis, out
        assert gc.collect() == 0
    finally:
        gc.enable()


# -- a data: URL loaded as a document or style sheet: what it loads was not scanned ------------

_DATA_DOCUMENTS = {
    # each loads the tracker in Chromium (tests/rewrite/test_rendered_refusal.py)
    "iframe_html": b'<iframe src="data:text/html,<img src=%22https://t.test/o.gif?u=1%22>">'
                   b"</iframe>",
    "iframe_base64": b'<iframe src="data:text/html;base64,' + base64.b64encode(
        b'<img src="https://t.test/o.gif?u=1">') + b'"></iframe>',
    "object_svg": b'<object data="data:image/svg+xml,%3Csvg xmlns=%22http://www.w3.org/2000/svg'
                  b'%22%3E%3Cimage href=%22https://t.test/o.gif%22/%3E%3C/svg%3E"></object>',
    "embed_html": b'<embed src="data:text/html,<img src=%22https://t.test/o.gif%22>">',
    "stylesheet": b'<link rel="stylesheet" href="data:text/css,@import url(//t.test/o.css);">',
    "import": b'<style>@import url("data:text/css,p{background:url(//t.test/o.gif)}");</style>',
    "in_srcdoc": b'<iframe srcdoc="<iframe src=&quot;data:text/html,<img src=//t.test/o>'
                 b'&quot;></iframe>"></iframe>',
}


@pytest.mark.parametrize("name", _DATA_DOCUMENTS)
def test_a_data_url_document_sends_refused_copies_to_the_fallback(name: str) -> None:
    from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare

    html = b"<p>Offers</p>" + _DATA_DOCUMENTS[name]
    analysis = ENGINE.analyse(_message(html, cte="8bit"))
    assert not analysis.complete and any(  # (a "<img" in a value: other readers differ)
        reason in analysis.unhandled[0] for reason in (
            "a data: URL loaded as a document", "markup other readers cut into other tags"))
    prepared = prepare(ENGINE, _message(html, cte="8bit"), CopyPolicy())
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK and copy.data is not None
    assert b"x-bp-" in copy.data or b"@_import" in copy.data  # 8bit: the body as it is
    granted = decide(ENGINE, prepared, RCPT, Policy.GRANTED, CopyPolicy())
    assert granted.outcome is Outcome.UNMODIFIED_GRANTED


def test_a_data_url_image_stays_on_the_precise_path() -> None:
    html = (b'<img src="data:image/svg+xml,%3Csvg%3E%3Cimage href=%22https://t.test/o%22/%3E">'
            b'<p style="background:url(data:image/png;base64,AAAA)">x</p>')
    assert ENGINE.analyse(_message(html, cte="8bit")).complete


# --- MIME readings ----------------------------------------------------------------------------

@pytest.mark.parametrize("subtype", [b"news", b"partial; id=1; number=1; total=1", b"x-foo",
                                     b"external-body", b"rfc822-headers"])
def test_a_pixel_inside_any_message_subtype_is_found_and_removed(subtype: bytes) -> None:
    data = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
            b"Content-Type: text/plain\r\n\r\nsee below\r\n--m\r\n"
            b"Content-Type: message/" + subtype + b"\r\n\r\nSubject: fwd\r\n"
            b"Content-Type: text/html\r\n\r\n<p>x</p>" + PIXEL + b"\r\n--m--\r\n")
    analysis = ENGINE.analyse(data)
    assert analysis.unhandled == () and [p.part.path for p in analysis.parts] == [(1, 0)]
    out = ENGINE.render(analysis, RCPT, Policy.REFUSED, None)
    assert b"t.shop.example" not in out.data and b"<p>x</p>" in out.data


def test_an_encoded_message_of_any_subtype_is_not_handled() -> None:
    data = (b"MIME-Version: 1.0\r\nContent-Type: message/news\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(b"Content-Type: text/html\r\n\r\n" + PIXEL))
    assert ENGINE.analyse(data).unhandled == (
        "part 1 (message/news): message/* parts are left untouched",)


def test_html_in_base64_that_python_shows_raw_is_not_handled() -> None:
    """Its alphabet characters are 1 more than a multiple of 4: no decoding exists, and
    Python's email shows the text as it is (bpo-27397); here it decodes leniently."""
    html = b"<style>body{background:url(https://t.shop.example/o.gif)}</style><p>Deals</p>"
    html += b"x" * (1 - len(html.translate(None, b"<>{}():.")) % 4)
    data = _message(b"", cte="base64").replace(b"\r\n\r\n\r\n--BOUND--", b"\r\n\r\n" + html
                                                 + b"\r\n--BOUND--")
    analysis = ENGINE.analyse(data)
    assert analysis.unhandled == (
        "part 2 (text/html): base64 that clients read in two ways (its length, data "
        "after its padding, base64url's '-' and '_', or bytes over 0x7F), not scanned "
        "precisely",)
    assert ENGINE.analyse(_message(html, cte="base64")).unhandled == ()  # encoded: precise
