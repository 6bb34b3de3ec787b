"""The classifier: platform pixels, look-alikes, spacers, personalised images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.classify import (
    INVISIBLE_LOAD,
    Finding,
    classify,
    classify_all,
    classify_entries,
    is_descriptive,
    is_hidden,
    is_layout,
    is_layout_finding,
    is_neutralised,
    is_spacer,
    is_tiny,
)
from beacon_proxy.rewrite.engine import Action, Engine
from beacon_proxy.rewrite.html import Box, scan_html
from beacon_proxy.rewrite.htmlrefs import EMBEDDED_DOCUMENT, LINK_HINT
from beacon_proxy.rewrite.identity import RecipientIdentity
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite import oracle

FIXTURES = Path(__file__).parent / "fixtures" / "html"
RULES = load_rules()
ME = RecipientIdentity("ana.silva@example.org")
MD5 = hashlib.md5(b"ana.silva@example.org").hexdigest()


def _findings(html: str, identity: RecipientIdentity | None = ME) -> list[Finding]:
    return list(classify_all(scan_html(html.encode()).references, RULES, identity))


def _one(html: str, identity: RecipientIdentity | None = ME) -> Finding:
    (finding,) = _findings(html, identity)
    return finding


# Open pixels as the platforms write them (modelled on their public output, ids invented).
PLATFORM_PIXELS = [
    ("Mailchimp", '<img src="https://harbourbakery.us12.list-manage.com/track/open.php?'
     'u=4f1a2b3c4d5e6f7a8b9c0d1e2&amp;id=9f8e7d6c5b&amp;e=a1b2c3d4e5" height="1" width="1" '
     'alt="">', "Intuit"),
    ("SendGrid", '<img src="https://u4829173.ct.sendgrid.net/wf/open?upn=a8Fk2LmQp9XzR4tYw1Vb-'
     '2BnC7dE5gH3jK6mN0pQ2sT8uV4wX1yZ9aB3cD7eF5gH" alt="" width="1" height="1" border="0" '
     'style="height:1px !important;width:1px !important;border-width:0 !important;'
     'margin-top:0 !important;padding-top:0 !important;"/>', "SendGrid"),
    ("HubSpot", '<img src="https://t.hubspotemail.net/e2t/to/VWx9mG2k7mQXW3ZbN1d5Pjq5WW8g4Lc'
     '-5qkTSbMW3Vvt2n8bL8xN2" alt="" width="1" height="1" border="0" style="display:none!important;'
     'min-height:1px!important;width:1px!important;border-width:0!important">', "HubSpot"),
    ("Klaviyo", '<img src="https://trk.klaviyomail.com/o/eyJrIjoiUlVWRW0iLCJlIjoiYWJjIn0=" '
     'width="1" height="1" alt="">', "Klaviyo"),
    ("Salesforce Marketing Cloud", '<img src="https://click.e.harbour-bakery.example/open.aspx'
     '?ffcb10-fec21d7a7d6c0a7e-fe2c1c7971620d7b7d1c-fe9a13727d63027f7c-ff2d1c75-fe5b15797'
     '06c037e7315-ff6316787361" width="1" height="1">', "Salesforce"),
    ("Braze (SparkPost)", '<img border="0" width="1" height="1" alt="" src="https://ablink.'
     'email.etsy.com/ss/o/u001.abcDEF123/3z9/xyz_-AbC/ho.gif">', "SendGrid"),
    ("Customer.io", '<img src="https://track.customer.io/e/o/eyJlbWFpbF9pZCI6IkRnQjUifQ==" '
     'style="height: 1px !important; max-height: 1px !important; max-width: 1px !important; '
     'width: 1px !important; display: none !important;" alt=""/>', "Customer.io"),
    ("Mailgun", '<img width="1px" height="1px" alt="" src="https://email.harbour-bakery.example'
     '/o/eJwNyL0KgzAQAOBnyWpFMY9Ui1ZWiZcLrSSRG1RV5Ov8mvXIM35_w">', "Mailgun"),
    ("Postmark", '<img src="https://pstmrk.it/open?m=v3_1.aBcD3fGh1jK_lMn0pQ.rStUvWxYz" '
     'width="1" height="1" border="0" alt="" />', "Postmark"),
    ("Campaign Monitor", '<img src="https://harbourbakery.cmail19.com/t/d-o-akjhdl-l/o.gif" '
     'width="1" height="1" alt="" style="display: block;" />', "Campaign Monitor"),
    ("Constant Contact", '<img src="https://r20.rs6.net/on.jsp?ca=3a1b2c3d&amp;a=1101&amp;'
     'c=9e8f7a6b&amp;ch=5c4d3e2f" height="1" width="1" border="0" alt="">', "Constant Contact"),
    ("ActiveCampaign", '<img src="https://harbourbakery.lt.acemlnb.com/lt.php?x=3DZy~GDHJaLk'
     'j3.-Yv~Q" width="1" height="1" border="0" alt="">', "ActiveCampaign"),
]


@pytest.mark.parametrize(("platform", "html", "vendor"), PLATFORM_PIXELS,
                         ids=[p[0] for p in PLATFORM_PIXELS])
def test_platform_pixels(platform: str, html: str, vendor: str) -> None:
    finding = _one(html)
    assert finding.tracker and finding.vendor == vendor, platform
    assert finding.reasons[0] == f"rule:{vendor}"
    assert "tiny" in finding.reasons or "hidden" in finding.reasons
    assert not finding.personalised_visible


def test_an_unknown_pixel_is_caught_by_its_size() -> None:
    finding = _one('<img src="https://stats.newcomer.example/p/7c1e.gif" width="1" height="1">')
    assert finding == Finding("https://stats.newcomer.example/p/7c1e.gif", "img", True, None,
                              ("tiny",))


@pytest.mark.parametrize("style", ["display:none", "visibility: hidden", "opacity:0",
                                   "opacity: 0.0 !important", "max-height:0px;overflow:hidden",
                                   "max-width:0", "mso-hide:all", "width:0.5px", "height:1pt",
                                   "width:0em", "height: 0.1em"])
def test_hidden_or_tiny_by_css(style: str) -> None:
    finding = _one(f'<img src="https://a.example/p.gif?u=9" style="{style}">')
    assert finding.tracker and ({"tiny", "hidden"} & set(finding.reasons))


@pytest.mark.parametrize("attrs", ['width="1"', 'height="2"', 'width="0"', "width=1px",
                                   'height=" 1 "', 'width="0%"', "width='2.0'"])
def test_tiny_by_attribute(attrs: str) -> None:
    assert _one(f'<img src="https://a.example/banner.png" {attrs}>').reasons == ("tiny",)


# Look-alikes: none of these is a beacon.
LOOK_ALIKES = [
    '<img src="https://cdn.harbour-bakery.example/mail/spacer.gif" width="1" height="1" alt="">',
    '<img src="https://cdn.harbour-bakery.example/img/2024/05/blank_1x1.gif" width="1" '
    'height="10">',
    '<img src="https://static.example.net/s.gif" style="display:block;width:1px;height:1px">',
    '<img src="https://cdn.example.com/images/clear.png" width="2" height="2" border="0">',
    '<img src="https://cdn.example.com/logo.png" style="border:1px solid #ccc" width="200">',
    '<img src="https://cdn.example.com/banner.jpg" width="100%" height="20" alt="Sale">',
    '<img src="https://cdn.example.com/logo.png?v=123" width="180" height="48">',
    '<img src="https://cdn.example.com/divider.png" '
    'style="width:100%;height:20px;line-height:1px">',
    '<img src="cid:logo@harbour-bakery" width="1" height="1">',
    '<img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"'
    ' width="1" height="1">',
    '<table><tr><td style="border-top: 1px solid #dddddd; height: 1px; font-size: 1px; '
    'line-height: 1px;">&nbsp;</td></tr></table>',
    '<!--[if gte mso 9]><v:rect fill="true" stroke="false" style="width:600px;height:300px;">'
    '<v:fill type="tile" src="https://cdn.example.com/hero.jpg" color="#222222" /><v:textbox '
    'inset="0,0,0,0"><![endif]--><div>Hero</div><!--[if gte mso 9]></v:textbox></v:rect>'
    '<![endif]-->',
    '<div style="background-image:url(https://cdn.example.com/pattern.png);padding:1px">x</div>',
]


@pytest.mark.parametrize("html", LOOK_ALIKES)
def test_look_alikes_are_not_trackers(html: str) -> None:
    for finding in _findings(html):
        assert not finding.tracker, finding


def test_spacer_rule() -> None:
    assert is_spacer("https://cdn.example.com/img/spacer.gif")
    assert is_spacer("http://cdn.shopify.com/s/files/1/0253/4589/2345/files/spacer_1x1.gif?")
    assert is_spacer("https://cdn.example.com/pixel-transparent.png")
    assert not is_spacer("https://t.example.com/spacer.gif?u=123")  # a query string
    assert not is_spacer("https://t.example.com/u/8f3a2b1c9d7e/spacer.gif")  # an identifier
    assert not is_spacer("https://a1b2c3d4e5f6.t.example.com/spacer.gif")  # in the host
    assert not is_spacer("https://t.example.com/12345678/blank.gif")  # a numeric id
    assert not is_spacer("https://t.example.com/pixel.gif")  # not a spacer name
    assert not is_spacer("cid:spacer.gif")


def test_spacer_with_the_recipient_in_it_is_a_tracker() -> None:
    finding = _one(f'<img src="https://cdn.example.com/{MD5}/spacer.gif" width="1" height="1">')
    assert finding.reasons == ("tiny", "identifies-recipient", "address-md5")
    finding = _one('<img src="https://cdn.example.com/ana.silva@example.org/spacer.gif" width=1>')
    assert finding.tracker and finding.reasons == ("tiny", "identifies-recipient", "address")


def test_local_references_are_never_trackers() -> None:
    finding = _one(f'<img src="cid:{MD5}@example.org" width="1" height="1">')
    assert finding == Finding(f"cid:{MD5}@example.org", "img", False, None, ())


def test_a_visible_personalised_image_is_a_beacon_to_replace_by_its_alt() -> None:
    finding = _one(f'<img src="https://img.example.com/hello/{MD5}.png" width="600" alt="Hi Ana">')
    assert finding.tracker and finding.personalised_visible
    assert finding.reasons == ("identifies-recipient", "address-md5")
    hidden = _one(f'<img src="https://img.example.com/hello/{MD5}.png" width="1">')
    assert hidden.tracker and not hidden.personalised_visible


def test_without_an_identity_only_rules_and_size_count() -> None:
    assert not _one(f'<img src="https://img.example.com/{MD5}.png" width="600">', None).tracker


def test_amp_pixel_elements() -> None:
    findings = _findings('<amp-pixel src="https://stats.example.com/p?r=RANDOM" layout="nodisplay">'
                         '</amp-pixel><amp-img src="https://cdn.example.com/a.jpg" width="600" '
                         'height="300"></amp-img>')
    assert [(f.element, f.tracker, f.reasons) for f in findings] == [
        ("amp-pixel", True, ("pixel-element",)), ("amp-img", False, ())]


def test_css_beacons_match_rules_but_are_not_sized() -> None:
    findings = _findings('<div style="width:1px;height:1px;background:url(https://u1.ct.sendgrid.'
                         'net/wf/open?upn=x)"></div><td width="1" style="background:url(https://'
                         'cdn.example.com/border.png)"></td>')
    assert [(f.tracker, f.vendor) for f in findings] == [(True, "SendGrid"), (False, None)]


def test_trackers_inside_conditional_comments() -> None:
    view = (FIXTURES / "vector_conditional.html").read_bytes()
    scan = scan_html(view)
    trackers = [(r.condition, f.reasons) for r, f in
                zip(scan.references, classify_all(scan.references, RULES, ME), strict=True)
                if f.tracker]
    assert trackers == [("mso", ("tiny",)), ("!mso", ("tiny",)), ("(gte mso 9)|(IE)", ("tiny",))]


def test_catalogue_has_exactly_its_two_pixels() -> None:
    scan = scan_html((FIXTURES / "catalogue.html").read_bytes())
    me = RecipientIdentity("hello@example.org")
    trackers = [f for f in classify_all(scan.references, RULES, me) if f.tracker]
    assert [(f.vendor, f.reasons) for f in trackers] == [
        ("SendGrid", ("rule:SendGrid", "tiny")), (None, ("tiny",))]


def test_real_templates_without_trackers_have_none() -> None:
    scan = scan_html((FIXTURES / "mjml_welcome.html").read_bytes())
    assert not any(f.tracker for f in classify_all(scan.references, RULES, ME))


def test_size_helpers() -> None:
    assert is_tiny(Box(width="1")) and is_tiny(Box(css_height="2px"))
    assert not is_tiny(Box(width="100%", height="20")) and not is_tiny(Box(css_width="auto"))
    assert is_hidden(Box(display="none")) and is_hidden(Box(opacity="0%"))
    assert not is_hidden(Box(display="block", opacity="0.5", css_max_height="100px"))


def test_classify_one_reference_directly() -> None:
    (ref,) = scan_html(b'<img src="https://x.example/a.png" width="600">').references
    assert classify(ref, RULES) == Finding("https://x.example/a.png", "img", False, None, ())


def test_a_non_ascii_digit_size_is_no_size() -> None:
    # str.isdigit() is true for "²", and float("²") raised: one such image stopped the
    # whole analysis (and the relay delivered every tracker of the message).
    (finding,) = _findings('<img src="https://t.test/x.gif" width="&sup2;" height="&#xB9;">')
    assert not finding.tracker and finding.reasons == ()
    assert not is_tiny(Box(width="\u00b2"))


# Layout images: tiny or hidden, no identifier - neutralised in refused copies, not beacons.
LAYOUT = [
    ('<img src="https://inxmail.example/img/gmail_fix.gif" width="780" height="1">',
     "tiny-layout"),
    ('<img src="https://cdn.example/3f2a9c8b7d6e5f4a3b2c1d0e9f8a7b6c/transparent.gif" '
     'width="20" height="1">', "tiny-layout"),  # a resource hash in the path
    ('<img src="https://editor.example/assets/line.png" width="265" height="1">',
     "tiny-layout"),
    ('<img src="https://editor.example/assets/line.png" style="width:265px;height:1px">',
     "tiny-layout"),
    ('<img src="https://cdn.example/img/spacer.gif" style="display:none">', "hidden-layout"),
    ('<div style="display:none"><img src="https://cdn.example/img/spacer.gif"></div>',
     "hidden-layout"),
    # MailTrackerBlocker's testSpacers msg5: FedEx's mobile logo, shown by a media query
    ('<img alt="FedEx" border="0" class="showonmobilelogo" style="display:none;width:0px;'
     'max-height:0px;overflow:hidden;" height="1" width="1" '
     'src="http://www.fedex.com/ENS/images/fedex_collective_logo_mobile.png">', "hidden-layout"),
    ('<img src="https://cdn.example/img/footer-rule-grey-2x.png" width="1" height="1">',
     "tiny-layout"),
    # the CITP crawl's LivingSocial strut: a 1 x 23 image named by its asset UUID
    ('<img src="http://a5.lscdn.net/imgs/4922d873-8315-4f8e-8587-169eebb74dd0" width="1" '
     'height="23">', "tiny-layout"),
    ('<img src="https://cdn.example/lib/fe90157070640d7a7c9e/line.png" width="600" '
     'height="1">', "tiny-layout"),
]


@pytest.mark.parametrize(("html", "reason"), LAYOUT)
def test_layout_images_are_not_trackers(html: str, reason: str) -> None:
    finding = _one(html)
    assert not finding.tracker and finding.reasons == (reason,)
    assert is_layout_finding(finding)


@pytest.mark.parametrize(("html", "reason"), LAYOUT[-4:])
def test_new_layout_images_are_inlined_in_refused_copies_only(html: str, reason: str) -> None:
    engine = Engine(RULES)
    message = ("From: n@sender.example\r\nTo: ana.silva@example.org\r\nSubject: s\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
               + html).encode()
    analysis = engine.analyse(message)
    refused = engine.render(analysis, "ana.silva@example.org", Policy.REFUSED)
    (item,) = refused.layout
    assert item.action is Action.INLINE and not refused.trackers
    assert b"data:image/png;base64," in refused.data and b"http" not in refused.data.split(
        b"\r\n\r\n", 1)[1]
    granted = engine.render(analysis, "ana.silva@example.org", Policy.GRANTED, lambda u: "x")
    assert not granted.changed and not granted.trackers


@pytest.mark.parametrize("html", [
    '<img src="https://t.example/open/8f3a2b1c9d7e.gif" width="780" height="1">',  # an id
    '<img src="https://t.example/line.png?u=42" width="780" height="1">',  # a query
    '<img src="https://t.example/track.png" width="1" height="1">',  # not a strut
    '<img src="https://t.example/track.png" style="width:1px;height:1px">',
    '<img src="https://a1b2c3d4e5f6a7b8.t.example/gmail_fix.gif" width="780" height="1">',
    '<img src="https://t.example/u/8f3a2b1c9d7e/spacer.gif" width="1" height="1">',
    '<img src="https://t.example/x.gif#frag" width="780" height="1">',
    # a strut's identifier must be a content id as a whole (a UUID or 16+ hex digits)
    '<img src="https://t.example/u/a8Fk2LmQp9XzR4tY.gif" width="1" height="23">',
    '<img src="https://t.example/imgs/4922d873-8315-4f8e-8587-169eebb74dd0x" width="1" '
    'height="23">',
    # ... and no word of it may name a tracking endpoint
    '<img src="https://t.example/open/4922d873-8315-4f8e-8587-169eebb74dd0" width="1" '
    'height="23">',
    '<img src="https://pixel.t.example/imgs/4922d873-8315-4f8e-8587-169eebb74dd0" width="1" '
    'height="23">',
    '<img src="https://t.example/img/3pixel.gif" width="3" height="1">',  # trocker's case
    # a descriptive name: two words, none a tracking word, no identifier anywhere
    '<img src="https://t.example/img/open_pixel.gif" width="1" height="1">',
    '<img src="https://t.example/img/email-open.png" style="display:none">',
    '<img src="https://t.example/img/logo.png" width="1" height="1">',  # one word
    '<img src="https://foo.com/bar/xyzsdfji" style="width: 1px; height: 1px;">',  # MTB's
    '<img src="https://t.example/img/logo_mobile.png?u=42" style="display:none">',
    '<img src="https://t.example/u/8f3a2b1c9d7e/logo_mobile.png" style="display:none">',
    '<img src="https://t.example/img/logo_mobile_8f3a2b1c9d7e.png" style="display:none">',
    '<img src="https://t.example/img/footer-rule-grey@2x.png" width="1" height="1">',
    '<img src="https://t.example/img/logo_mobile" width="1" height="1">',  # no extension
])
def test_tiny_images_with_an_identifier_stay_trackers(html: str) -> None:
    assert _one(html, None).tracker


def test_a_layout_image_with_the_recipient_or_a_rule_is_a_tracker() -> None:
    mine = _one(f'<img src="https://cdn.example/{MD5}/gmail_fix.gif" width="780" height="1">')
    assert mine.tracker and mine.reasons[:2] == ("tiny", "identifies-recipient")
    ruled = _one('<img src="https://t.sidekickopen.com/spacer.gif" '
                 'width="1" height="1">')
    assert ruled.tracker and ruled.reasons[0].startswith("rule:")


def test_a_content_id_strut_with_the_recipient_s_hash_is_a_tracker() -> None:
    # MD5 is 32 hex digits, a content id by its shape: the identity check comes first
    html = f'<img src="https://cdn.example/imgs/{MD5}" width="1" height="23">'
    assert not _one(html, None).tracker
    mine = _one(html)
    assert mine.tracker and "identifies-recipient" in mine.reasons


def test_descriptive_names() -> None:
    assert is_descriptive("fedex_collective_logo_mobile.png")
    assert is_descriptive("hero-image-v2.JPG")
    assert is_descriptive("footer.rule.gif")
    assert not is_descriptive("logo.png")  # one word may be a token
    assert not is_descriptive("open_pixel.gif")  # tracking words
    assert not is_descriptive("read-receipt.gif")
    assert not is_descriptive("logo_mobile")  # no image extension
    assert not is_descriptive("logo_mobile.php")
    assert not is_descriptive("logo_mobile_ab12cd.png")  # a part that is no word
    assert not is_descriptive("logo mobile.png")


def test_is_layout_needs_a_strut_or_a_spacer_name() -> None:
    assert is_layout("https://cdn.example/gmail_fix.gif", Box("1", "1"))
    assert is_layout("https://cdn.example/rule.png", Box("600", "2"))
    assert not is_layout("https://cdn.example/rule.png", Box("1", "1"))
    assert not is_layout("https://cdn.example/rule.png", Box("600", None))
    assert not is_layout("https://cdn.example/rule.png?", Box(None, "1"))


# CSS-only sizing on every image-like element (trocker's misses, and their relatives).
CSS_SIZED = [
    '<img src="https://t.example/1x1pixel.gif" style="width:1px;height:1px">',
    '<img src="https://t.example/track.png" style="max-width:1px;max-height:1px">',
    '<img src="https://t.example/track.png" style="width:1px!important;height:1px" width="600">',
    '<input type="image" src="https://t.example/track.png" style="width:1px;height:1px">',
    '<video poster="https://t.example/track.png" style="width:1px;height:1px"></video>',
    '<video poster="https://t.example/track.png" width="1" height="1"></video>',
    '<picture><source srcset="https://t.example/track.png"><img src="https://t.example/a.png"'
    ' style="width:1px;height:1px"></picture>',
    '<v:image src="https://t.example/track.png" style="width:1px;height:1px"/>',
    '<table><tr><td style="display:none"><img src="https://t.example/track.png"></td></tr>'
    '</table>',
]


@pytest.mark.parametrize("html", CSS_SIZED)
def test_css_sized_and_ancestor_hidden_pixels_are_trackers(html: str) -> None:
    findings = _findings(html)
    assert findings and all(f.tracker for f in findings), findings


@pytest.mark.parametrize("html", CSS_SIZED)
def test_the_oracle_sees_the_same_loads(html: str) -> None:
    wanted = oracle.remote_urls(html)
    found = {oracle.normalise(f.url) for f in _findings(html)}
    for urls in wanted.values():
        assert urls <= found


def test_a_picture_source_takes_a_visible_img_box_too() -> None:
    html = ('<picture><source srcset="https://cdn.example/hero.webp"><img '
            'src="https://cdn.example/hero.jpg" width="600"></picture>')
    assert not any(f.tracker for f in _findings(html))


@pytest.mark.parametrize("html", [
    '<div style="width: 1px; height: 1px; background-image: url(\'https://t.example/1x1pixel.gif\')">'
    "</div>",
    '<div style="width:0;height:0;background:url(https://t.example/track.png)"></div>',
    '<div style="display: none; background-image: url(\'https://t.example/track.png\')"></div>',
])
def test_a_tiny_or_hidden_element_s_background_is_a_pixel(html: str) -> None:
    finding = _one(html)
    assert finding.tracker and finding.element == "css-url"
    assert {"tiny", "hidden"} & set(finding.reasons)


def test_a_normal_background_is_no_tracker() -> None:
    html = ('<td style="background-image:url(https://cdn.example/pattern.png);width:600px;'
            'height:1px;padding:0">x</td>')
    assert not _one(html).tracker  # a strut-shaped background: layout at most
    assert not _one('<td style="background:url(https://cdn.example/bg.jpg);width:1%">x</td>')\
        .tracker


def test_prefixed_spacer_names_under_a_library_id_are_layout() -> None:
    url = "https://image.fidelityinvestments.com/lib/fe90157070640d7a7c/m/3/pi_svc_spacer.gif"
    assert is_layout(url, Box("1", None))
    assert not is_layout("https://t.example/track_s.gif", Box("1", "1"))  # short names: no
    assert not is_layout("https://t.example/u/8f3a2b1c9d7e/pi_spacer.gif", Box("1", "1"))


# -- data: URLs a browser loads as a document or style sheet -----------------------------------

@pytest.mark.parametrize("html", [
    b'<iframe src="data:text/html,<img src=%22https://t.test/o%22>"></iframe>',
    b'<frameset><frame src="DATA:text/html;base64,PGltZz4="></frameset>',
    b'<object data="data:image/svg+xml,<svg/>"></object>',
    b'<embed src="data:text/html,x">',
    b'<link rel="stylesheet" href="data:text/css,@import url(//t.test/o);">',
    b'<style>@import url("data:text/css,p{}");</style>',
    b'<p style="x:y">&#100;ata</p><iframe src="&#100;ata:text/html,x"></iframe>',
    b'<iframe srcdoc="<iframe src=&quot;data:text/html,x&quot;></iframe>"></iframe>',
    # a part of the message a frame loads: rendered as a document (an SVG part loads
    # what it names), not as the image an <img> shows
    b'<iframe src="cid:part1"></iframe><iframe src="page.html"></iframe>',
    b'<embed src="CID:part1">', b'<object data="mid:m1/part1"></object>',
])
def test_a_data_url_loaded_as_a_document_is_noted(html: bytes) -> None:
    entries = scan_html(html).references
    noted = classify_entries(entries, RULES)
    assert [f.reasons for f in noted.values()] == [(EMBEDDED_DOCUMENT,)]
    assert not any(f.tracker for f in noted.values())


@pytest.mark.parametrize("html", [
    b'<img src="data:image/svg+xml,<svg><image href=%22https://t.test/o%22/></svg>">',
    b'<p style="background:url(data:image/svg+xml,x);filter:url(data:image/svg+xml,x#f)">',
    b'<video poster="data:image/png;base64,AAAA"></video>',
    b'<img src="cid:part1"><p style="background:url(cid:part2)">',
    b'<iframe src="page.html"></iframe><iframe src="data/x.html"></iframe>',
])
def test_a_data_url_loaded_as_an_image_is_not(html: bytes) -> None:
    assert classify_entries(scan_html(html).references, RULES) == {}


# -- invisible loads: resource hints, icons, manifests -----------------------------------------

@pytest.mark.parametrize("html", [
    '<link rel="preconnect" href="https://cdn.shop.example">',
    '<link rel="dns-prefetch" href="//cdn.shop.example">',
    "<LINK REL='DNS-PREFETCH PRECONNECT' HREF=https://cdn.shop.example/ crossorigin>",
    '<link rel="prefetch" href="https://cdn.shop.example/app.js">',
    '<link rel="preload" as="font" href="https://cdn.shop.example/f.woff2" crossorigin>',
    '<link rel="modulepreload" href="https://cdn.shop.example/m.js">',
    '<link rel="prerender" href="https://shop.example/sale">',
    '<link rel="shortcut icon" href="https://shop.example/favicon.ico">',
    '<link rel="apple-touch-icon" href="https://shop.example/touch.png">',
    '<link rel="manifest" href="https://shop.example/site.webmanifest">',
    '<link rel="preload" as="image" imagesrcset="https://cdn.shop.example/hero.jpg 1x">',
    '<link rel="compression-dictionary" href="https://cdn.shop.example/d">',
    # a style sheet that never loads shows nothing: its hints still connect
    '<link rel="stylesheet preconnect" type="text/plain" href="https://cdn.shop.example/">',
])
def test_a_link_that_shows_nothing_is_an_invisible_load(html: str) -> None:
    """No tracker (no rule, no identifier), yet it tells its host the mail is open and
    shows nothing: neutralised in refused copies, kept in granted ones."""
    finding = _one(html)
    assert finding.element == LINK_HINT and not finding.tracker
    assert finding.reasons == (INVISIBLE_LOAD,)
    assert is_neutralised(finding) and not is_layout_finding(finding)
    (noted,) = classify_entries(scan_html(html.encode()).references, RULES).values()
    assert noted == _one(html, None)


@pytest.mark.parametrize("html", [
    '<link rel="stylesheet" href="https://fonts.example/css?family=Roboto">',
    '<link rel="stylesheet preload" as="style" href="https://fonts.example/a.css">',
    '<link rel="alternate stylesheet" href="https://fonts.example/b.css" title="b">',
    '<link rel="stylesheet" type="TEXT/CSS; charset=utf-8" href="https://fonts.example/c.css">',
])
def test_a_style_sheet_link_is_kept_like_a_visible_image(html: str) -> None:
    finding = _one(html)
    assert finding.element == "link" and finding.reasons == () and not is_neutralised(finding)


def test_a_link_that_is_not_loaded_is_no_reference() -> None:
    assert _findings('<link rel="alternate" href="https://shop.example/feed.xml">') == []
    assert _findings('<link href="https://shop.example/x" rel="canonical">') == []


def test_an_invisible_load_with_the_recipient_or_a_rule_is_a_tracker() -> None:
    mine = _one(f'<link rel="preconnect" href="https://cdn.example/{MD5}">')
    assert mine.tracker and "address-md5" in mine.reasons and not is_neutralised(mine)
    assert not mine.personalised_visible  # nothing to replace by its alt text
    ruled = _one('<link rel="prefetch" href="https://www.google-analytics.com/collect?v=1">')
    assert ruled.tracker and ruled.vendor is not None
    assert _one('<link rel="preload" href="data:font/woff2;base64,AAAA">').reasons == ()


# -- media elements: a source or track takes its video's or audio's box ------------------------

_TOKEN = "https://media.shop.example/o/8f3a2b1c9d"


@pytest.mark.parametrize(("html", "reasons"), [
    (f'<video style="display:none"><source src="{_TOKEN}.mp4" type="video/mp4"></video>',
     [("hidden",)]),
    (f'<VIDEO WIDTH=1 HEIGHT=1>\n<source src="{_TOKEN}.mp4"><track default src="{_TOKEN}.vtt">'
     "</VIDEO>", [("tiny",), ("tiny",)]),
    (f'<audio><source src="{_TOKEN}.mp3" type="audio/mpeg"></audio>', [("hidden",)]),
    (f'<audio src="{_TOKEN}.mp3" title="controls" data-controls></audio>', [("hidden",)]),
    (f'<audio controls style="display:none" src="{_TOKEN}.mp3"></audio>', [("hidden",)]),
    (f'<div style="display:none"><video><source src="{_TOKEN}.mp4"></video></div>',
     [("hidden",)]),
    (f'<div hidden><audio controls><source src="{_TOKEN}.mp3"></audio></div>', [("hidden",)]),
    (f'<video width="1"><audio controls><source src="{_TOKEN}.mp3"></audio></video>',
     [("hidden",)]),  # the innermost: an audio element inside a video is never shown
    # shown: kept
    (f'<audio controls src="{_TOKEN}.mp3"></audio><audio CONTROLS><source src="{_TOKEN}.ogg">'
     "</audio>", [(), ()]),
    (f'<video width="600" height="300" poster="https://media.shop.example/poster.jpg">'
     f'<source src="{_TOKEN}.mp4"><track default src="{_TOKEN}.vtt"></video>', [(), (), ()]),
    (f'<video width="1"></video><source src="{_TOKEN}.mp4">', [()]),  # closed before it
    (f'<!-- <video width="1"> --><source src="{_TOKEN}.mp4">', [()]),  # a comment
    (f'<picture><source srcset="{_TOKEN}.png"><img src="https://c.example/hero.png" '
     'width="600"></picture>', [(), ()]),
    # a picture's source takes its <img>'s box after the hiding: hidden with it
    (f'<picture><source srcset="{_TOKEN}.png"><img hidden src="data:,"></picture>',
     [("hidden",), ()]),
    (f'<picture><source srcset="{_TOKEN}.png"><img hidden width="600"></picture>',
     [("hidden",)]),
    (f'<div hidden><picture><source srcset="{_TOKEN}.png"><img></picture></div>',
     [("hidden",)]),
    (f'<video hidden><source src="{_TOKEN}.mp4"></video>', [("hidden",)]),
    # a media end tag in a value closes nothing; fallback content and nested media hide
    (f'<video width=1 height=1><p title="</video>">x</p><source src="{_TOKEN}.mp4"></video>',
     [("tiny",)]),
    (f'<VIDEO TITLE="</VIDEO>" WIDTH=1><source src="{_TOKEN}.mp4"></VIDEO>', [("tiny",)]),
    (f'<p title="a>b </video>"><video width=1><source src="{_TOKEN}.mp4"></video></p>',
     [("tiny",)]),
    (f'<video controls width=300 height=200><video src="{_TOKEN}.mp4"></video></video>',
     [("hidden",)]),
    (f'<audio><img src="{_TOKEN}.gif" width="600" height="300"></audio>', [("hidden",)]),
    (f'<video controls width="300"><iframe src="{_TOKEN}"></iframe></video>', [("hidden",)]),
    (f'<p title="<video width=1>"><source src="{_TOKEN}.mp4"></p>', [()]),
    # a picture's source passes over comments, text and other tags to its <img>
    (f'<picture><source srcset="{_TOKEN}.png"><!-- x -->text<br><img src="data:," width="1" '
     'height="1"></picture>', [("tiny",), ()]),
])
def test_media_sources_take_their_element_s_box(html: str, reasons: list[tuple[str, ...]]
                                                 ) -> None:
    findings = _findings(html)
    assert [f.reasons for f in findings] == reasons
    assert all(f.tracker == bool(f.reasons) for f in findings)
    noted = classify_entries(scan_html(html.encode()).references, RULES)
    assert [f.reasons for f in noted.values()] == [r for r in reasons if r]


@pytest.mark.parametrize(("html", "reasons"), [
    (f'<iframe src="{_TOKEN}" width="0" height="0" frameborder="0"></iframe>', ("tiny",)),
    (f'<iframe src="{_TOKEN}" style="display:none"></iframe>', ("hidden",)),
    (f'<iframe src="{_TOKEN}" hidden></iframe>', ("hidden",)),
    (f'<IFRAME SRC="{_TOKEN}" HIDDEN STYLE="DISPLAY:BLOCK"></IFRAME>', ()),
    (f'<object data="{_TOKEN}" width="1" height="1"></object>', ("tiny",)),
    (f'<embed src="{_TOKEN}" style="visibility:hidden">', ("hidden",)),
    (f'<div style="display:none"><iframe src="{_TOKEN}"></iframe></div>', ("hidden",)),
    (f'<iframe src="{_TOKEN}" width="600" height="400"></iframe>', ()),
    (f'<object data="{_TOKEN}"></object>', ()),
])
def test_a_tiny_or_hidden_frame_is_a_pixel(html: str, reasons: tuple[str, ...]) -> None:
    """A 0 x 0 or hidden ``<iframe>``, ``<object>`` or ``<embed>`` loads all the same."""
    (finding,) = _findings(html)
    assert finding.reasons == reasons and finding.tracker == bool(reasons)
