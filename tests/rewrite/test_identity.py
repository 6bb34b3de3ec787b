"""The recipient's address in every form a URL can carry it."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.rewrite.identity import HASHES, RecipientIdentity, base64_cores, spellings

ADDRESS = "Jane.Doe+news@Example.com"
LOWER = ADDRESS.lower()
ME = RecipientIdentity(f"  {ADDRESS} ")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


FORMS = [
    (f"https://t.test/o.gif?e={ADDRESS}", "address"),
    (f"https://t.test/o.gif?e={LOWER.upper()}", "address"),
    (f"https://t.test/o.gif?e={quote(ADDRESS, safe='')}", "address-urlencoded"),
    (f"https://t.test/o.gif?e={quote(LOWER, safe='@')}", "address-urlencoded"),
    (f"https://t.test/o.gif?e={quote_plus(ADDRESS)}", "address-urlencoded"),
    (f"https://t.test/o.gif?e={quote(ADDRESS, safe='').replace('%40', '%40'.lower())}",
     "address-urlencoded"),
    ("https://t.test/o.gif?e=jane.doe%2bnews%40example.com", "address-urlencoded"),
    (f"https://t.test/r?u={quote(quote(ADDRESS, safe=''), safe='')}", "address-urlencoded"),
    (f"https://t.test/o?e={_b64(ADDRESS)}", "address-base64"),
    (f"https://t.test/o?e={_b64(LOWER)}", "address-base64"),
    (f"https://t.test/o?e={_b64(LOWER).rstrip('=')}", "address-base64"),
    (f"https://t.test/o/{_b64url(LOWER)}/p.gif", "address-base64"),
    (f"https://t.test/o/{_b64url(ADDRESS).rstrip('=')}", "address-base64"),
    (f"https://t.test/o?d={_b64('email=' + ADDRESS + '&list=7')}", "address-base64"),
    ("https://t.test/o?d=" + _b64('{"e":"' + LOWER + '","c":1}'), "address-base64"),
    (f"https://t.test/o?d={_b64url('xy' + LOWER)}", "address-base64"),
    (f"https://t.test/o?d={quote(_b64(ADDRESS), safe='')}", "address-base64"),
]
# session 16's attack: decoded readings, encodings of encodings, formatted digests
_SHA = hashlib.sha256(LOWER.encode()).hexdigest()
_MD5 = hashlib.md5(LOWER.encode()).hexdigest()
_CANONICAL = "Jane.Doe+news@example.com"  # the consent store's form: the domain lower-cased
FORMS += [
    (f"https://t.test/r?u={quote(quote(quote(ADDRESS, safe=''), safe=''), safe='')}",
     "address-urlencoded"),  # three times
    (f"https://t.test/r/{quote(quote(quote(quote(LOWER, safe=''), safe=''), safe=''), safe='')}",
     "address-urlencoded"),  # four times
    ("https://t.test/o?e=jane.doe+news%u0040example.com", "address-urlencoded"),  # IIS
    ('https://t.test/o?d={"e":"jane.doe+news\\u0040example.com"}', "address-urlencoded"),
    ("https://t.test/o?e=jane.doe+news\\x40example.com", "address-urlencoded"),
    ("https://t.test/o?e=jane.doe+news%26%23x40%3Bexample.com", "address-urlencoded"),
    ("https://t.test/o?e=jane.doe+news%26commat%3Bexample.com", "address-urlencoded"),
    ("https://t.test/o?e=jane.doe+news\uff20example.com", "address-urlencoded"),  # full-width
    (f"https://t.test/o?e={quote('jane.doe+news' + chr(0xff20) + 'example.com')}",
     "address-urlencoded"),
    ("https://t.test/o?e=jane.\u200bdoe+news@example.com", "address-urlencoded"),  # zero-width
    ("https://t.test/o?e=jane.%C2%ADdoe+news@example.com", "address-urlencoded"),  # soft hyphen
    (f"https://t.test/o?e={_b64(quote(LOWER, safe=''))}", "address-base64"),  # btoa(encodeURI..)
    (f"https://t.test/o?e={_b64('email=' + quote(ADDRESS, safe='') + '&l=1')}", "address-base64"),
    (f"https://t.test/o?e={_b64(_CANONICAL)}", "address-base64"),
    (f"https://t.test/o?e={quote(base64.encodebytes(('x' * 60 + LOWER).encode()).decode())}",
     "address-base64"),  # wrapped at 76 characters, the line end percent-encoded
    (f"https://t.test/o?e={LOWER.encode().hex()}", "address-hex"),
    (f"https://t.test/o/{ADDRESS.encode().hex().upper()}/p.gif", "address-hex"),
    (f"https://t.test/o?e={base64.b32encode(LOWER.encode()).decode()}", "address-base32"),
    (f"https://t.test/o?e={base64.b32encode(LOWER.encode()).decode().rstrip('=').lower()}",
     "address-base32"),
    (f"https://t.test/p/{_SHA[:31]}%{ord(_SHA[31]):02X}{_SHA[32:]}.gif", "address-sha256"),
    ("https://t.test/p/" + "".join(f"%{ord(c):02x}" for c in _SHA), "address-sha256"),
    (f"https://t.test/p/{_MD5[:8]}-{_MD5[8:12]}-{_MD5[12:16]}-{_MD5[16:20]}-{_MD5[20:]}",
     "address-md5"),  # a UUID
    ("https://t.test/p/" + ":".join(_MD5[i:i + 2] for i in range(0, 32, 2)), "address-md5"),
    (f"https://t.test/p/{_SHA[:32]}/{_SHA[32:]}/p.gif", "address-sha256"),
    (f"https://t.test/p/{hashlib.md5(_CANONICAL.encode()).hexdigest()}", "address-md5"),
]
FORMS += [
    (f"https://t.test/p/{hashlib.new(name, LOWER.encode()).hexdigest()}.gif", f"address-{name}")
    for name in HASHES
]
FORMS += [
    (f"https://t.test/p?h={hashlib.new(name, LOWER.encode()).hexdigest().upper()}",
     f"address-{name}")
    for name in HASHES
]


@pytest.mark.parametrize(("url", "reason"), FORMS)
def test_every_form_is_found(url: str, reason: str) -> None:
    assert reason in ME.find(url)


def test_hash_of_the_address_as_given_is_found_too() -> None:
    url = "https://t.test/p/" + hashlib.md5(ADDRESS.encode()).hexdigest()
    assert ME.find(url) == ["address-md5"]


@pytest.mark.parametrize("url", [
    "https://cdn.example.com/img/logo.png?v=20240301",
    "https://t.test/p/" + hashlib.md5(b"someone.else@example.com").hexdigest(),
    "https://t.test/p/" + hashlib.sha256(LOWER.encode()).hexdigest()[:40],
    "https://t.test/o?e=" + _b64("someone.else@example.com"),
    "https://t.test/o?e=jane.doe%40example.org",
    # what the new readings must not invent: other hex, base32 and base64 texts
    "https://t.test/o/" + b"jane.doe+news@example.org".hex(),
    "https://t.test/o?e=" + base64.b32encode(b"jane.doe+news@example.org").decode(),
    "https://t.test/p/" + "-".join([_MD5[:16], "0" * 16]),
    "https://t.test/o?e=jane.doe+news%26%23x41%3Bexample.com",
])
def test_other_texts_are_not_the_address(url: str) -> None:
    assert ME.find(url) == []


def test_empty_address_finds_nothing() -> None:
    assert RecipientIdentity("  ").find("https://t.test/?e=") == []


def test_base64_cores_are_stable_in_any_surrounding() -> None:
    data = b"a.b@example.org"
    for before in (b"", b"x", b"xy", b"xyz", b"email="):
        for after in (b"", b"&", b"&l=1"):
            blob = base64.b64encode(before + data + after).decode()
            assert any(core in blob for core in base64_cores(data))


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20),
       st.binary(max_size=12), st.binary(max_size=12))
def test_property_address_inside_any_base64_blob(local: str, before: bytes, after: bytes) -> None:
    address = f"{local}@example.net"
    blob = base64.urlsafe_b64encode(before + address.encode() + after).decode().rstrip("=")
    assert "address-base64" in RecipientIdentity(address).find("https://t.test/o?d=" + blob)


def test_reasons_are_listed_once_in_a_stable_order() -> None:
    md5 = hashlib.md5(LOWER.encode()).hexdigest()
    url = f"https://t.test/{md5}/{md5.upper()}?e={LOWER}&b={_b64(LOWER)}"
    assert ME.find(url) == ["address", "address-base64", "address-md5"]


# -- one mailbox, several spellings (internationalised domains, quoted local parts) ---------

_U = "Ann.Lee@b\u00fccher.example"  # the envelope's U-label form
_A = "ann.lee@xn--bcher-kva.example"  # its A-label form, what senders usually hash


@pytest.mark.parametrize("recipient", [_U, _A, _A.upper(), '"ann.lee"@xn--bcher-kva.example'])
@pytest.mark.parametrize(("text", "reason"), [
    (_A, "address"),
    ("ann.lee@b\u00fccher.example", "address"),
    (quote(_A, safe=""), "address-urlencoded"),
    (quote("ann.lee@b\u00fccher.example", safe=""), "address-urlencoded"),
    (base64.urlsafe_b64encode(_A.encode()).decode(), "address-base64"),
    (base64.b64encode("ann.lee@b\u00fccher.example".encode()).decode(), "address-base64"),
    (hashlib.sha256(_A.encode()).hexdigest(), "address-sha256"),
    (hashlib.md5("ann.lee@b\u00fccher.example".encode()).hexdigest(), "address-md5"),
])
def test_every_spelling_of_an_idn_mailbox_is_found(recipient: str, text: str,
                                                    reason: str) -> None:
    # A refused recipient whose envelope has one form of the domain and whose URL has the
    # other was not recognised: her personalised image reached her (an identifying load).
    assert reason in RecipientIdentity(recipient).find(f"https://img.test/p/{text}/me.jpg")


def test_other_idn_mailboxes_are_not_found() -> None:
    me = RecipientIdentity(_U)
    assert me.find("https://img.test/p/ann.lee@xn--bcher-kvb.example/") == []
    assert me.find("https://img.test/p/ann.lee@bucher.example/") == []
    assert RecipientIdentity("a@[192.0.2.1]").find("https://t.test/?e=a@[192.0.2.1]") == [
        "address"]


@given(st.text(max_size=30),
       st.sampled_from(["", "xn--", "XN--", "\u00fc", ".", "..", "-", "xn--a.", "\u0308"]),
       st.text(max_size=10))
def test_property_any_address_text_is_handled(local: str, middle: str, tail: str) -> None:
    """Whatever the envelope holds, looking for it never raises (an address whose domain
    is no valid IDN simply has no other spelling)."""
    address = f"{local}@{middle}{tail}"
    RecipientIdentity(address).find(f"https://t.test/{local}{middle}{tail}")


def test_the_kept_readings_of_the_last_texts_find_what_fresh_ones_find() -> None:
    """``find`` keeps the lower-cased and decoded readings of the last text objects (a
    message's joined URLs and stray URLs, searched once per recipient): searching them for
    one identity after another, with other texts in between, finds what it finds with
    nothing kept."""
    import hashlib

    import beacon_proxy.rewrite.identity as identity

    people = ["Jane.Doe@Example.com", "ann@b\u00fccher.example", "x+y@z.org", "bob@example.net"]
    urls = [f"https://t.example/o?e={p.lower().replace('@', '%40')}" for p in people]
    urls += ["https://t.example/p/" + hashlib.sha256(b"bob@example.net").hexdigest() + ".gif",
             "https://t.example/q?x=a+b%2540x+y%40z.org", "https://t.example/plain"]
    joined = "\n".join(urls)
    texts = [joined, urls[0], joined, joined.upper(), joined, urls[4], joined]
    for person in people:
        me = RecipientIdentity(person)
        for text in texts:
            got = me.find(text)
            identity._kept.clear()  # nothing kept
            assert got == me.find(text), (person, text)


def test_texts_searched_in_turn_are_read_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy searches its message's URLs and then its stray URLs: with several messages'
    copies rendering in turn, each text is read once, not once per copy (one text kept
    made both again for every copy: session 19's profile), and no more are kept than
    :data:`~beacon_proxy.rewrite.identity._KEPT`."""
    import beacon_proxy.rewrite.identity as identity

    made: list[str] = []
    real = identity._Text

    def counted(url: str) -> identity._Text:
        made.append(url)
        return real(url)

    monkeypatch.setattr(identity, "_Text", counted)
    identity._kept.clear()
    texts = ["\n".join(f"https://t{n}.example/{kind}?{n}" for _ in range(3))
             for n in range(4) for kind in ("urls", "strays")]
    for person in (f"r{i}@example.org" for i in range(20)):
        me = RecipientIdentity(person)
        for text in texts:
            me.find(text)
    assert sorted(made) == sorted(texts)
    more = [f"https://t.example/{n}" for n in range(3 * identity._KEPT)]
    for text in more:
        RecipientIdentity("a@b.example").find(text)
    assert len(identity._kept) == identity._KEPT
    assert all(kept.url is text for kept, text in zip(identity._kept.values(),
                                                        more[-identity._KEPT:], strict=True))


@given(st.lists(st.sampled_from([*"aZ09_.~@-xn", "xn--", "XN--", "@@", "\u00fc", '"', " "]),
                max_size=30).map("".join))
def test_a_plain_address_is_its_only_spelling(text: str) -> None:
    """What RecipientIdentity takes without calling spellings(): an address of the
    characters quote() leaves alone and no "xn--" (in any case) has no other spelling."""
    address = text.strip()
    lower = address.lower()
    if address and re.fullmatch(r"[A-Za-z0-9_.~@-]*", lower) and "xn--" not in lower:
        assert spellings(address) == [address]
        me = RecipientIdentity(address)
        local, at, domain = address.rpartition("@")
        assert me._lowers == (lower,) and me._variants == tuple(dict.fromkeys(
            v.encode() for v in (lower, address, f"{local}{at}{domain.lower()}")))
