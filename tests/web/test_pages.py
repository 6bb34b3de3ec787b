"""The preference page's language choice, masking, escaping and texts."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from beacon_proxy.web.pages import (
    ACTIONS,
    LANGUAGES,
    PAGE_HEADERS,
    View,
    choose_language,
    invalid_page,
    mask_address,
    preferences_page,
    texts,
)


def test_every_language_has_every_text() -> None:
    keys = {lang: set(texts(lang)) for lang in LANGUAGES}
    assert all(k == keys["en"] for k in keys.values())
    for action in ACTIONS:
        assert action.replace("-", "_") in keys["en"]
        assert "done_" + action.replace("-", "_") in keys["en"]
    with pytest.raises(ValueError, match="language"):
        texts("fr")


@pytest.mark.parametrize(("query", "accept", "expected"), [
    ("ja", None, "ja"),
    ("JA", None, "en"),
    (None, "ja-JP", "ja"),
    (None, "en-GB;q=0.4, ja;q=0.6", "ja"),
    (None, "ja;q=0, en;q=0.1", "en"),
    (None, "ja;q=2, en;q=0.1", "en"),
    (None, "ja;q=abc", "en"),
    (None, "*", "en"),
    (None, "fr, *;q=0.5, ja;q=0.4", "en"),
    (None, ",,,;;;q=,", "en"),
    (None, "x;q=0.1," * 10_000 + "ja", "en"),
])
def test_choose_language(query: str | None, accept: str | None, expected: str) -> None:
    assert choose_language(query, accept, "en") == expected


@pytest.mark.parametrize(("address", "masked"), [
    ("ann@example.org", "a***@example.org"),
    ("a@example.org", "a***@example.org"),
    ('"odd@local"@example.org', '"***@example.org'),
    ("no-at-sign", "***"),
])
def test_mask_address(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_everything_put_into_the_page_is_escaped() -> None:
    view = View("<b>x@example.org", "<script>alert(1)</script>", True, False, False)
    html = preferences_page("en", view, ("suspend-list", True))
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;***@example.org" in html


def test_the_page_offers_what_fits_the_state() -> None:
    def offered(view: View) -> list[str]:
        return re.findall(r'name="action" value="([a-z-]+)"', preferences_page("en", view))

    assert offered(View("a@x.org", "l.x.org", True, False, False)) == [
        "stop-tracking", "suspend-list", "suspend-all"]
    assert offered(View("a@x.org", "l.x.org", False, True, False)) == [
        "allow-tracking", "suspend-all", "resume"]
    assert offered(View("a@x.org", "l.x.org", False, True, True)) == ["allow-tracking", "resume"]
    assert offered(View("a@x.org", None, True, False, False)) == [
        "stop-tracking", "suspend-all"]


def test_one_invalid_page_per_language() -> None:
    assert "This link is not valid or has expired" in invalid_page("en")
    assert 'lang="ja"' in invalid_page("ja")
    assert "<form" not in invalid_page("en")


def test_the_policy_allows_the_page_style_by_its_hash_and_nothing_else() -> None:
    csp = PAGE_HEADERS["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives == {"default-src": "'none'", "style-src": directives["style-src"],
                          "form-action": "'self'", "frame-ancestors": "'none'",
                          "base-uri": "'none'"}
    view = View("ann@example.org", "news.example.org", True, False, False, "FORM")
    for page in (preferences_page("en", view), preferences_page("ja", view),
                 invalid_page("en")):
        [style] = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert directives["style-src"] == f"'sha256-{digest}'"
        assert " style=" not in page and "<script" not in page
    assert 'name="form" value="FORM"' in preferences_page("en", view)
