"""Tracker rules: derivation, shipping, loading and indexed matching."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite.rules import RulesError, TrackerRules, literal_runs, load_rules

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "trackers.json"
PACKAGED = ROOT / "beacon_proxy" / "data" / "trackers.json"
UPSTREAM = ROOT.parent / "shared" / "data" / "trackers" / "mailtrackerblocker-rules.json"
RULES = load_rules()
# The regex parser of the standard library, to build a sample string per pattern.
sre_parse: Any = importlib.import_module("re._parser")
sre_constants: Any = importlib.import_module("re._constants")


def _derive_tool() -> Any:
    spec = importlib.util.spec_from_file_location("derive_trackers", ROOT / "tools" /
                                                  "derive_trackers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_documented_and_packaged_copies_are_identical() -> None:
    assert CONFIG.read_bytes() == PACKAGED.read_bytes()
    assert (CONFIG.parent / "LICENSE-trackers.txt").read_bytes() == (
        PACKAGED.parent / "LICENSE-trackers.txt").read_bytes()


def test_licence_notice_ships_with_the_rules() -> None:
    notice = (ROOT / "config" / "LICENSE-trackers.txt").read_text("utf-8")
    assert "Copyright (c) 2020, Aaron Lee" in notice and "8a8c43c" in notice
    assert "tools/derive_trackers.py" in notice
    data = json.loads(CONFIG.read_text())
    assert data["upstream_commit"] == "8a8c43c" and "BSD-3-Clause" in data["license"]


@pytest.mark.skipif(not UPSTREAM.exists(),
                    reason=f"needs the shared upstream tracker list at {UPSTREAM} "
                    "(a checkout beside ../shared)")
def test_rules_are_exactly_the_derivation_of_the_upstream_list() -> None:
    derived = _derive_tool().derive(json.loads(UPSTREAM.read_text()))
    assert json.loads(CONFIG.read_text()) == derived


def test_a_skip_names_the_path_it_wants() -> None:
    marks = test_rules_are_exactly_the_derivation_of_the_upstream_list.pytestmark  # type: ignore[attr-defined]
    (skip,) = [m for m in marks if m.name == "skipif"]
    assert str(UPSTREAM) in skip.kwargs["reason"]


def test_derivation_makes_hostname_dots_literal_only() -> None:
    translate = _derive_tool().translate
    assert translate("t.hubspotemail") == r"t\.hubspotemail"
    assert translate(r"/lt.php\?") == r"/lt\.php\?"
    assert translate("mail..+.pl/o/") == "mail..+.pl/o/"
    assert translate("/[0-9].gif") == "/[0-9].gif"
    assert translate(r"a\d.b") == r"a\d.b"


def test_the_packaged_rules_load_and_compile() -> None:
    data = json.loads(PACKAGED.read_text())
    assert len(RULES) == sum(len(v) for v in data["vendors"].values()) == 493
    assert len(data["vendors"]) == 318
    assert RULES.source.startswith("MailTrackerBlocker")
    assert load_rules(CONFIG).rules == RULES.rules


@pytest.mark.parametrize(("url", "vendor"), [
    ("https://u4829173.ct.sendgrid.net/wf/open?upn=a8Fk2L", "SendGrid"),
    ("https://example.us12.list-manage.com/track/open.php?u=9f&id=1a&e=b2", "Intuit"),
    ("https://t.hubspotemail.net/e2t/to/VWx9mG2", "HubSpot"),
    ("https://trk.klaviyomail.com/o/abc", "Klaviyo"),
    ("https://click.e.example.com/open.aspx?ffcb10-fec21d7a", "Salesforce"),
    ("https://track.customer.io/e/o/eyJlbWFpbF9pZCI6", "Customer.io"),
    ("https://email.example.com/o/eJwNyL0KgzAQ", "Mailgun"),
    ("https://cmail19.com/t/d-o-akjhdl-l/o.gif", "Campaign Monitor"),
    ("https://r20.rs6.net/on.jsp?ca=1&a=2", "Constant Contact"),
    ("https://pstmrk.it/open?m=v3_1.abc", "Postmark"),
    ("https://createsend1.com/t/o.gif", "Campaign Monitor"),
    ("https://mail.example.com/image.png1", "Alida"),
])
def test_known_tracker_urls(url: str, vendor: str) -> None:
    assert RULES.match(url) == vendor
    assert RULES.explain(url)[0].vendor == vendor


@pytest.mark.parametrize("url", [
    "https://cdn.northwind-outfitters.example/products/NW10000/thumb-180.jpg",
    "https://static.harbour-bakery.example/mail/logo-2x.png?v=20240301",
    "https://fonts.googleapis.com/css?family=Ubuntu:300,400,500,700",
    "https://images.ctfassets.net/space/asset/hero.jpg?w=1200&fm=webp",
    "https://cdn.shopify.com/s/files/1/0253/4589/2345/products/item_800x.png?v=1600000012",
    "https://gallery.mailchimp.com/4f1a2b3c4d5e6f7a8b9c0d1e2/images/banner.jpg",
])
def test_ordinary_urls_match_nothing(url: str) -> None:
    assert RULES.match(url) is None
    assert RULES.explain(url) == []


def _sample(items: Any) -> str:
    """A short string the parsed regular expression matches (wildcards become '/')."""
    out = []
    for op, arg in items:
        if op is sre_constants.LITERAL:
            out.append(chr(arg))
        elif op is sre_constants.ANY:
            out.append("/")
        elif op is sre_constants.IN:
            first_op, first = arg[0]
            if first_op is sre_constants.RANGE:
                out.append(chr(first[0]))
            elif first_op is sre_constants.CATEGORY:
                out.append("0" if first is sre_constants.CATEGORY_DIGIT else "a")
            else:
                out.append(chr(first))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, _, sub = arg
            out.append(_sample(sub) * low)
        elif op is sre_constants.SUBPATTERN:
            out.append(_sample(arg[-1]))
        elif op is sre_constants.BRANCH:
            out.append(_sample(arg[1][0]))
        elif op is sre_constants.CATEGORY:
            out.append("a")
    return "".join(out)


@pytest.mark.parametrize("rule", RULES.rules, ids=lambda r: f"{r.vendor}:{r.pattern}")
def test_the_index_finds_every_rule(rule: Any) -> None:
    url = "https://example.test/" + _sample(sre_parse.parse(rule.pattern, re.I))
    assert re.search(rule.pattern, url, re.I | re.A), url
    assert RULES.match(url) == RULES.explain(url)[0].vendor


_WORDS = sorted({r.key for r in RULES.rules} | {"cdn", "img", "open", "o", "t", "email", "net"})


@given(st.lists(st.sampled_from(_WORDS) | st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
                min_size=1, max_size=8),
       st.lists(st.sampled_from("./?=&-_~"), min_size=8, max_size=8))
def test_property_index_agrees_with_brute_force(words: list[str], seps: list[str]) -> None:
    url = "https://" + "".join(w + s for w, s in zip(words, seps, strict=False))
    found = RULES.match(url)
    if found is not None:  # never a match the patterns do not make
        assert found in {r.vendor for r in RULES.explain(url)}
    first = RULES.explain(url)
    if first and found is None:
        # A miss is allowed only where a pattern's first word is glued to other letters
        # in the URL (documented): its index word is then not a whole word of the URL.
        words_in_url = set(re.split(r"[^a-z]+", url.lower()))
        assert all(rule.key not in words_in_url for rule in first)


# Patterns with a top-level ".+"/".*" are searched piece by piece (linear); the answer
# must be re's.  Inputs: the pattern's pieces (any of their variants), each whole, cut at
# either end or left out, with 0-2 characters around them, sometimes shuffled.
_GAP = re.compile(r"(?<!\\)\.[+*]\??|\(\.[+*]\)")
_GAP_PATTERNS = [rule.pattern for rule in RULES.rules if _GAP.search(rule.pattern)]
_URL_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@st.composite
def _near_matches(draw: st.DrawFn) -> tuple[str, str]:
    pattern = draw(st.sampled_from(_GAP_PATTERNS))
    out: list[str] = []
    for piece in _GAP.split(pattern):
        text = draw(st.from_regex(re.compile(piece, re.I | re.A), fullmatch=True,
                                  alphabet=_URL_CHARS)) if piece else ""
        cut = draw(st.integers(0, 9))
        text = text if cut > 3 else text[:-1] if cut == 3 else text[1:] if cut == 2 else (
            text[: len(text) // 2] if cut == 1 else "")
        size = draw(st.integers(0, 2))  # around the minimum a gap takes
        out += [draw(st.text(_URL_CHARS, min_size=size, max_size=size)), text]
    if draw(st.integers(0, 3)) == 0:
        out = draw(st.permutations(out))
    return pattern, "".join(out)


@settings(max_examples=300)
@given(_near_matches())
@example(("sellercentral(-europe)?(-japan)?.amazon.+/nms/img/",  # the piece ending first
          "sellercentral/amazonx/nms/img/sellercentral-europe-japan/amazon"))
@example(("survey[0-9]?.medallia.+/\\?[a-z0-9_]+&invite-opened=yes",
          "survey1/medalliax/?a&invite-opened=yessurvey/medallia"))
def test_property_rules_with_gaps_match_as_re_searches(case: tuple[str, str]) -> None:
    pattern, path = case
    rules = TrackerRules({"V": [pattern]})
    url = f"https://x.test/!{rules.rules[0].key}!{path}"  # the index picks the pattern
    assert (rules.match(url) is not None) == bool(re.search(pattern, url, re.I | re.A))


def test_results_are_memoised_and_bounded() -> None:
    rules = TrackerRules({"V": [r"t\.example/o"]})
    assert rules.match("https://t.example/o") == "V"
    assert rules.match("https://t.example/o") == "V"
    for i in range(9000):
        rules.match(f"https://a.example/{i}")
    assert rules.match("https://t.example/o") == "V"


def test_literal_runs() -> None:
    assert literal_runs(r"/e2t/[bc]to/") == [("/e2t/", True, False), ("to/", False, False)]
    assert literal_runs(r"sellercentral(-europe)?.amazon.+/nms/img/") == [
        ("sellercentral", True, False), ("amazon", False, False), ("/nms/img/", False, False)]
    assert literal_runs(r".png1") == [("png1", True, False)]


@pytest.mark.parametrize("vendors", [{"V": ["("]}, {"V": ["a|b"]}, {"V": [".."]}])
def test_unusable_patterns_are_refused(vendors: dict[str, list[str]]) -> None:
    with pytest.raises(RulesError, match="V"):
        TrackerRules(vendors)


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RulesError):
        load_rules(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"vendors": []}')
    with pytest.raises(RulesError):
        load_rules(tmp_path / "bad.json")


def test_the_memo_keeps_no_huge_urls() -> None:
    rules = load_rules()  # the memo outlives messages: a huge URL would stay in memory
    huge = "https://t.test/" + "a" * 100_000
    assert rules.match(huge) is None and huge not in rules.matched
    assert rules.match("https://t.test/x") is None and "https://t.test/x" in rules.matched


# -- issue 9: no content lost, the measured misses closed ---------------------------

OVERRIDES = json.loads((ROOT / "config" / "trackers-overrides.json").read_text())["overrides"]


@pytest.mark.parametrize("entry", OVERRIDES, ids=lambda e: f"{e['vendor']}:{e['with'][0]}")
def test_every_override_catches_its_tracker_and_spares_its_content(entry: Any) -> None:
    for url in entry["tracker"]:
        assert RULES.match(url) == entry["vendor"], url
    for url in entry["content"]:
        assert RULES.explain(url) == [], url
    derived = json.loads(PACKAGED.read_text())
    assert all(p in derived["vendors"][entry["vendor"]] for p in entry["with"])
    assert entry["replace"] not in derived["vendors"][entry["vendor"]]


@pytest.mark.parametrize("url", [
    "https://shop.example.com/o/summer-dress.jpg",  # Epsilon's /O/ matched case-insensitively
    "https://shop.example.com/O/summer_dress/front_view.jpg",
    "https://img.amxe.net/im/5123401/logo.png",  # Sendinblue's image CDN, not its pixel
    "https://cdn.example.com/t/products/shoe.jpg",  # Sendy's /t/<a>/<b>
    "https://cdn.example.com/mo/banner.gif",  # Emarsys' /mo/...gif
])
def test_content_images_the_broad_rules_used_to_strip(url: str) -> None:
    assert RULES.match(url) is None
    assert RULES.explain(url) == []


@pytest.mark.parametrize(("url", "vendor"), [
    ("https://open.convertkit-mail4.com/v8ue2o3kxdh7h0l3rrwfohg7ql0qq", "ConvertKit"),
    ("https://stats.example.org/piwik.php?idsite=3&rec=1", "Matomo"),
    ("https://analytics.example.com/matomo.php?idsite=1&rec=1", "Matomo"),
    ("https://sendibt2.com/track/openc.php?x=1", "Sendinblue"),
    ("https://tracking.vocus.io/abcd", "Vocus"),
    ("https://x8k2p.r.bh.amxe.net/tr/op/Qm9vX2FiY2RlZg", "Sendinblue"),
    ("http://epslocalmail.com/O/v60000017b9910d078a63fa06e966f45e8/"
     "e2b342d0ae1348c000004c5a42963aa1", "Epsilon"),
    ("https://lists.panic.com/t/TfytDRucxMhTmMmeRUryNg/Bw2EZEL3ysIdV5Ql3aYwKw", "Sendy"),
    ("https://link.runtastic.com/mo/W37jKbRMwg_645781705_2447263_458311_1086436.gif",
     "Emarsys"),
])
def test_vendor_pixels_the_list_missed_or_kept_after_anchoring(url: str, vendor: str) -> None:
    assert RULES.match(url) == vendor


def test_the_proxys_own_pixel_is_never_a_vendor() -> None:
    from beacon_proxy.rewrite.links import open_links
    from beacon_proxy.tokens import Tokens

    link = open_links(Tokens(["0" * 32]), "https://relay.example.org", "a@b.example",
                      "list.example", "Q1")
    own = link("https://u1.ct.sendgrid.net/wf/open?upn=x")
    assert own is not None and own.startswith("https://relay.example.org/o/")
    rules = load_rules(allow=["https://Relay.Example.org/"])
    assert rules.match(own) is None
    assert rules.match(own.replace("relay.example.org", "RELAY.example.org")) is None
    assert rules.match("https://u1.ct.sendgrid.net/wf/open?upn=x") == "SendGrid"
    # Only that origin and path: a look-alike host is still matched.
    assert rules.match(own.replace("relay.example.org", "relay.example.org.evil.example")) \
        == RULES.match(own.replace("relay.example.org", "relay.example.org.evil.example"))


def test_a_bad_allow_list_entry_is_refused() -> None:
    with pytest.raises(RulesError, match="not an http"):
        load_rules(allow=["relay.example.org"])


def test_stale_overrides_are_reported_and_additions_applied() -> None:
    tool = _derive_tool()
    vendors = {"Acme": ["acme\\.example/o/"]}
    applied, stale = tool.apply_overrides(vendors, [
        {"vendor": "Acme", "replace": "gone", "with": ["x"], "why": "w"},
        {"vendor": "Acme", "replace": "acme\\.example/o/", "with": ["acme\\.example/o/[0-9]+"],
         "why": "w"},
        {"vendor": "New", "replace": None, "with": ["new\\.example/p"], "why": "w"},
    ])
    assert stale == ["Acme: gone is no longer upstream"]
    assert vendors == {"Acme": ["acme\\.example/o/[0-9]+"], "New": ["new\\.example/p"]}
    assert len(applied) == 2


def test_refresh_reports_the_diff_and_works_offline_from_a_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = _derive_tool()
    assert tool.diff({"A": ["a", "b"], "B": ["x"]}, {"A": ["a", "c"], "C": ["y"]}) == [
        "changed A:", "  + c", "  - b", "removed vendor B:", "  - x", "added vendor C:", "  + y"]
    upstream = tmp_path / "rules.json"
    upstream.write_text(json.dumps({"source": "test", "license": "BSD",
                                    "vendors": {"Acme": ["acme.example/o/"]}}))
    assert tool.read_input(str(upstream))["vendors"] == {"Acme": ["acme.example/o/"]}
    # --check against the repository's rules: the tiny list differs (exit 1) and nothing
    # is written; the overrides whose vendors are missing from it are reported stale.
    before = CONFIG.read_bytes()
    assert tool.main(["--input", str(upstream), "--check"]) == 1
    assert CONFIG.read_bytes() == before
    out = capsys.readouterr()
    assert "added vendor" in out.out or "removed vendor" in out.out
    assert "stale override" in out.err
    (tmp_path / "bad.json").write_text("[]")
    assert tool.main(["--input", str(tmp_path / "bad.json"), "--check"]) == 2
