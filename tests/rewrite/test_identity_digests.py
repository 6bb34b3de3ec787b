"""RecipientIdentity's digests made on first need and compared with a text's hex runs:
every answer equal to making them all up front and searching the whole text."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite import identity
from beacon_proxy.rewrite.identity import HASHES, RecipientIdentity


def _reference(me: RecipientIdentity, url: str) -> list[str]:
    """find() as it was: every digest of every variant searched in every lower-cased
    reading of the text."""
    # the other forms, found as before (that code is unchanged), then the digests
    fresh = [r for r in me.find(url) if r in ("address", "address-urlencoded",
                                               "address-base64")]
    # every reading of the URL (percent-decoded, escapes read, ...), as written and
    # with the separators of a formatted digest dropped ("9d/b8bf...", UUID dashes)
    lows = identity._Text(url).lows
    texts = [*lows, *(identity._HEX_SEPARATOR.sub("", low) for low in lows)]
    if me._folded and len(url) >= 32:
        hashes: dict[str, str] = {}
        for name in HASHES:
            for text in me._variants:
                hashes[hashlib.new(name, text).hexdigest()] = "address-" + name
        for digest, reason in hashes.items():
            if any(digest in low for low in texts) and reason not in fresh:
                fresh.append(reason)
    return fresh


_ADDRESSES = ["Jane.Doe@Example.com", "ann@example.org", "x@y", '"ann.lee"@bücher.example', ""]


def _digests(address: str) -> list[str]:
    texts = {address.strip().lower(), address.strip()}
    return [hashlib.new(name, t.encode()).hexdigest() for name in HASHES for t in texts if t]


@st.composite
def _urls(draw: st.DrawFn, address: str) -> str:
    digests = _digests(address) or ["d41d8cd98f00b204e9800998ecf8427e"]
    piece = st.one_of(
        st.sampled_from(digests),
        st.sampled_from(digests).map(str.upper),
        st.sampled_from(digests).flatmap(lambda d: st.integers(1, len(d)).map(lambda n: d[:n])),
        st.sampled_from(digests).flatmap(lambda d: st.integers(0, len(d) - 1).map(lambda n: d[n:])),
        st.text("0123456789abcdefABCDEF", max_size=140),
        st.sampled_from(["/", "?h=", "&", "%", "+", "é", "\uff21", "\udcff", "g", "x", "-", ""]),
    )
    return "https://t.example/" + "".join(draw(st.lists(piece, max_size=8)))


def test_a_digest_split_by_a_separator_is_found() -> None:
    """CI's falsifying example (session 20): a SHA-224 written "9d/b8bf..." is found by
    find() and by the reference (the reference searched only the text as written)."""
    identity._kept.clear()
    me = RecipientIdentity("Jane.Doe@Example.com")
    digest = hashlib.sha224(b"jane.doe@example.com").hexdigest()
    url = "https://t.example/" + digest[:2] + "/" + digest[2:]
    assert me.find(url) == _reference(me, url) == ["address-sha224"]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_every_answer_is_the_whole_texts(data: st.DataObject) -> None:
    identity._kept.clear()
    people = [RecipientIdentity(a) for a in _ADDRESSES]
    urls = data.draw(st.lists(st.sampled_from(_ADDRESSES).flatmap(_urls), min_size=1,
                              max_size=6))
    for url in urls:  # the same text for each identity in turn, then the next text
        for me in people:
            assert me.find(url) == _reference(me, url), (me, url)
            assert me.find(url) == _reference(me, url)  # the kept runs and digests


@given(st.text("0123456789abcdefg/é", max_size=300))
def test_the_runs_are_the_maximal_hex_runs_of_32_or_more(text: str) -> None:
    import re

    assert list(identity._Text(text).hex_runs()) == re.findall("[0-9a-f]{32,}", text.lower())


#: Texts with long runs of hex and base32 digits, separators, escapes and readings.
_CODED_TEXTS = st.lists(st.one_of(st.sampled_from([
    "a1", "-", ":", ".", "/", "%41", "%2d", "\u00e9", "g", "zz", "2777", "xyzw", "&#58;",
    "\\u0041", "AF", " ", "+"]), st.text("0123456789abcdef", min_size=8, max_size=40),
    st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=8, max_size=20)),
    max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(_CODED_TEXTS)
def test_the_coded_runs_are_the_regular_expressions_matches(text: str) -> None:
    """The hex and base32 runs (runs of marks) are what ``findall`` of
    ``[0-9a-f]{16,}`` and ``[a-z2-7]{12,}`` finds in each lower-cased reading."""
    import re

    searched = identity._Text(text)
    hexes, b32s = searched.coded()
    assert list(hexes) == [m for low in searched.lows for m in re.findall("[0-9a-f]{16,}", low)]
    assert list(b32s) == [m for low in searched.lows for m in re.findall("[a-z2-7]{12,}", low)]


@settings(max_examples=300, deadline=None)
@given(_CODED_TEXTS)
def test_the_runs_of_every_reading_and_without_separators_are_found(text: str) -> None:
    """:meth:`_Text.hex_runs` with several readings and digest separators: the maximal
    runs of the readings joined, and again without the separators between hex pairs."""
    import re

    searched = identity._Text(text)
    joined = " ".join(searched.lows)
    joined += " " + re.sub(r"(?<=[0-9a-f]{2})[-:./](?=[0-9a-f]{2})", "", joined)
    expected = re.findall("[0-9a-f]{32,}", joined)
    if len(searched.lows) == 1 and not re.search(r"(?<=[0-9a-f]{2})[-:./](?=[0-9a-f]{2})",
                                                 searched.low):
        expected = re.findall("[0-9a-f]{32,}", searched.low)
    assert list(searched.hex_runs()) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "&amp;", "&amp", "&notify=1", "&not", "&#64;", "&#x40", "&#X4a;", "&#99999999;", "&lt",
    "&AElig", "&utm_source=spring", "&" + "a" * 40, "&;", "& ", "x", "%26", "\n", "\r"]),
    max_size=20).map("".join))
def test_references_are_read_as_html_unescape_reads_them(text: str) -> None:
    """The readings take each character reference's answer from a kept one: the same text
    as ``html.unescape`` (named references without ``;``, prefixes of names, numbers out
    of range, 32-character names), and the line ends dropped as a regex drops them."""
    import html
    import re

    assert identity._CHARREF.sub(identity._charref, text) == html.unescape(text)
    assert identity._CHARREF.sub(identity._charref, text) == html.unescape(text)  # kept
    readings = identity._Text(text).readings
    flat = [reading for reading in readings if "\n" not in reading and "\r" not in reading]
    assert all(re.sub("[\r\n]", "", reading) in flat for reading in readings)


def test_only_the_digests_that_fit_are_made() -> None:
    me = RecipientIdentity("ann@example.org")
    assert me.find("https://t.example/" + "0" * 31) == []
    assert me._hashes[0] == 0  # no run of 32: no digest made
    md5 = hashlib.md5(b"ann@example.org").hexdigest()
    assert me.find("https://t.example/" + md5) == ["address-md5"]
    assert me._hashes[0] == 1  # MD5 only
    sha512 = hashlib.sha512(b"ann@example.org").hexdigest()
    assert me.find("https://t.example/?a=" + md5 + "&b=" + sha512.upper()) == [
        "address-md5", "address-sha512"]
    assert me._hashes[0] == len(HASHES)


def test_a_long_reference_is_read_but_not_kept() -> None:
    """Only short references are kept: a number a sender makes 200 KB long is read as
    ``html.unescape`` reads it and leaves nothing behind (4096 such held 800 MB)."""
    import html

    identity._reference.cache_clear()
    long = "&#x" + "0" * 200_000 + "41;"
    assert identity._CHARREF.sub(identity._charref, "a" + long + "&amp;") == html.unescape(
        "a" + long + "&amp;") == "aA&"
    assert identity._reference.cache_info().currsize == 1  # "&amp;" alone
    for ref in ("&#" + "0" * 50 + "65", "&#x" + "0" * 60 + "1F600;", "&#1" + "0" * 60,
                "&#x" + "f" * 45, "&#" + "0" * 45 + "55296;", "&#" + "0" * 41 + "128;"):
        assert identity._CHARREF.sub(identity._charref, ref) == html.unescape(ref), ref


def test_a_number_too_long_for_int_is_read_as_a_browser_reads_it() -> None:
    """``html.unescape`` raises on a decimal reference of more than 4300 digits (Python's
    bound on int()); the readings take it as its value, as a browser does: leading zeros
    dropped, anything past the last code point U+FFFD."""
    me = RecipientIdentity("ann@example.org")
    at = "%26%23" + "0" * 5000 + "64%3B"  # "&#000...064;" percent-encoded: "@"
    assert me.find("https://t.example/o.gif?e=ann" + at + "example.org") == [
        "address-urlencoded"]
    assert identity._CHARREF.sub(identity._charref, "&#" + "9" * 5000 + ";") == "\ufffd"
