"""The DKIM step: copies verify with dkimpy, ``h=`` covers what bulk-sender rules want,
the sender's broken signature goes, hostile input still signs and verifies.

Keys are generated here (``cryptography``); dkimpy verifies against a DNS
function that returns the test key's record.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.canonicalization import Relaxed  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config, ConfigError, DkimConfig, DkimKeyConfig
from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.dkim import (
    SIGNED_HEADERS,
    DkimSigner,
    SigningKey,
    crlf,
    dns_record,
    load_keys,
    relaxed_body,
    relaxed_header,
)
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient, TraceHeader, run_steps
from beacon_proxy.rewrite.unsubscribe import UnsubscribeHeaders
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens
from tests.rewrite import hostile

DOMAIN = "example.com"
URL = "https://prefs.example.com/u/AsOKaW_ukpdRlVanSVysBaLvtvaKEF9BTO7tdxu1r2PY8"
ENV = Envelope("Q1", "news@news.example.com", ("ann@example.org",), 0.0)
RCPT = Recipient(ENV, "ann@example.org", Policy.REFUSED)
MESSAGE = (b"From: News <news@news.example.com>\r\nTo: ann@example.org\r\n"
           b"Subject: Our news\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <n1@news.example.com>\r\nList-Id: News <news.example.com>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\nX-Mailer: test\r\n\r\n"
           b"Hello  there,\t\r\nthe news.  \r\n\r\n\r\n")


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey(DOMAIN, "rsa1", rsa.generate_private_key(public_exponent=65537,
                                                               key_size=2048))


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey(DOMAIN, "ed1", ed25519.Ed25519PrivateKey.generate())


def _dns(*keys: SigningKey) -> Callable[..., bytes | None]:
    records = {f"{k.selector}._domainkey.{k.domain}.".encode(): dns_record(k).encode()
               for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)
    return lookup


def _verify(data: bytes, *keys: SigningKey) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of ``data``, top first."""
    d = dkim.DKIM(data)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    out = []
    for i in range(count):
        try:
            out.append(bool(d.verify(idx=i, dnsfunc=_dns(*keys))))
        except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
            out.append(False)
    return out


def _tags(data: bytes, idx: int = 0) -> dict[bytes, bytes]:
    d = dkim.DKIM(data)
    sigs = [value for name, value in d.headers if name.lower() == b"dkim-signature"]
    return dict(dkim.util.parse_tag_value(sigs[idx]))


def _h(data: bytes, idx: int = 0) -> list[str]:
    return [n.strip().decode().lower() for n in _tags(data, idx)[b"h"].split(b":")]


@pytest.mark.parametrize("which", ["rsa_key", "ed_key"])
def test_a_signed_copy_verifies(which: str, request: pytest.FixtureRequest) -> None:
    key: SigningKey = request.getfixturevalue(which)
    data, report = DkimSigner([key]).sign(MESSAGE)
    assert report == f"signed d={DOMAIN} s={key.selector}"
    assert data.endswith(MESSAGE)  # the copy itself is unchanged below our field
    assert _verify(data, key) == [True]
    tags = _tags(data)
    assert tags[b"a"] == key.algorithm.encode()
    assert tags[b"c"] == b"relaxed/relaxed"
    assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), key.selector.encode())
    assert b"l" not in tags


def test_h_covers_the_list_headers_and_over_signs_from(rsa_key: SigningKey) -> None:
    copy = UnsubscribeHeaders(lambda r: URL)(Copy(MESSAGE), RCPT)
    data, _ = DkimSigner([rsa_key]).sign(copy.data)
    h = _h(data)
    assert {"from", "list-unsubscribe", "list-unsubscribe-post"} <= set(h)
    assert h.count("from") == 2  # one From in the copy, listed once more
    assert set(h) == {n.lower() for n in SIGNED_HEADERS}  # all present in this copy
    assert "x-mailer" not in h
    assert _verify(data, rsa_key) == [True]
    # Over-signing: a From added on top after signing breaks the signature.
    assert _verify(b"From: evil@attacker.example\r\n" + data, rsa_key) == [False]


def test_only_present_fields_and_duplicates_each_signed(ed_key: SigningKey) -> None:
    message = (b"From: a@example.com\r\nSubject: one\r\nSubject: two\r\n"
               b"To: x@example.org\r\n\r\nbody\r\n")
    data, _ = DkimSigner([ed_key]).sign(message)
    assert _h(data) == ["from", "from", "to", "subject", "subject"]
    assert _verify(data, ed_key) == [True]


def test_tampering_is_detected(rsa_key: SigningKey, ed_key: SigningKey) -> None:
    data, _ = DkimSigner([rsa_key, ed_key]).sign(MESSAGE)
    assert _verify(data.replace(b"the news", b"the newz"), rsa_key, ed_key) == [False, False]
    assert _verify(data.replace(b"Our news", b"Our newz"), rsa_key, ed_key) == [False, False]


def test_two_keys_of_the_domain_both_sign(rsa_key: SigningKey, ed_key: SigningKey) -> None:
    data, report = DkimSigner([rsa_key, ed_key]).sign(MESSAGE)
    assert report == f"signed d={DOMAIN} s=rsa1,ed1"
    assert _verify(data, rsa_key, ed_key) == [True, True]
    assert [_tags(data, i)[b"a"] for i in (0, 1)] == [b"rsa-sha256", b"ed25519-sha256"]


def test_key_choice_by_from_domain(ed_key: SigningKey) -> None:
    sub = SigningKey("news.example.com", "sub", ed25519.Ed25519PrivateKey.generate())
    other = SigningKey("example.org", "org", ed25519.Ed25519PrivateKey.generate())
    signer = DkimSigner([ed_key, sub, other])
    assert signer.keys_for("news.example.com") == (sub,)  # the closest one
    assert signer.keys_for("deep.news.example.com") == (sub,)
    assert signer.keys_for("example.com") == (ed_key,)
    assert signer.keys_for("badexample.com") == ()  # a parent by labels, not by suffix
    assert signer.keys_for("com") == ()
    data, report = signer.sign(MESSAGE)
    assert report == "signed d=news.example.com s=sub"
    assert _verify(data, sub) == [True]
    data, report = signer.sign(MESSAGE.replace(b"news@news.example.com", b"x@EXAMPLE.ORG."))
    assert report == "signed d=example.org s=org"
    assert _verify(data, other) == [True]


@pytest.mark.parametrize(("from_", "report"), [
    (b"From: a@elsewhere.example\r\n", "no key for elsewhere.example"),
    (b"", "no From domain"),
    (b"From: undisclosed\r\n", "no From domain"),
    (b"From: a@example.com, b@elsewhere.example\r\n", "no From domain"),
    (b"From: a@example.com\r\nFrom: b@elsewhere.example\r\n", "no From domain"),
    (b"From: <@example.com>\r\n", "no From domain"),
    (b"From: a@exa_mple.com\r\n", "no From domain"),
])
def test_no_key_leaves_the_copy_unsigned(ed_key: SigningKey, from_: bytes, report: str) -> None:
    message = from_ + b"Subject: x\r\n\r\nbody\r\n"
    copy = DkimSigner([ed_key])(Copy(message, {"footer": {"html": 0}}), RCPT)
    assert copy.data == message
    assert copy.report == {"footer": {"html": 0}, "dkim": report}


def test_same_domain_several_from_addresses_signs(ed_key: SigningKey) -> None:
    message = (b"From: =?utf-8?q?Caf=C3=A9?= <a@example.com>, \"x, y\" <b@Example.COM>\r\n"
               b"\r\nbody\r\n")
    data, report = DkimSigner([ed_key]).sign(message)
    assert report == "signed d=example.com s=ed1"
    assert _verify(data, ed_key) == [True]


def test_internationalised_from_domain(ed_key: SigningKey) -> None:
    key = SigningKey("xn--bcher-kva.example", "idn", ed25519.Ed25519PrivateKey.generate())
    message = "From: a@news.bücher.example\r\nSubject: ü\r\n\r\nbody\r\n".encode()
    data, report = DkimSigner([ed_key, key]).sign(message)
    assert report == "signed d=xn--bcher-kva.example s=idn"
    assert _verify(data, key) == [True]


# --------------------------------------------------------------------------
# The sender's signature

SENDER_SIG = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=news.example.com;\r\n"
              b"\ts=esp; h=From:To:Subject:Date:Message-ID; bh=AAAA; b=BBBB\r\n")


def test_sender_signature_removed_from_a_modified_copy(ed_key: SigningKey) -> None:
    original = SENDER_SIG + MESSAGE
    modified = original.replace(b"the news", b"the news (footer)")
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, original)
    copy = DkimSigner([ed_key])(Copy(modified), recipient)
    assert b"d=news.example.com" not in copy.data
    assert copy.data.count(b"DKIM-Signature:") == 1
    assert copy.report["dkim"] == "signed d=example.com s=ed1; sender signature removed"
    assert _verify(copy.data, ed_key) == [True]


def test_sender_signature_kept_on_a_byte_identical_copy(ed_key: SigningKey) -> None:
    original = SENDER_SIG + MESSAGE
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, original)
    # The trace header on top is no field the sender signed.
    steps = (TraceHeader("relay.example.com"), DkimSigner([ed_key]))
    copy = run_steps(steps, Copy(original), recipient)
    assert copy.data.endswith(original)
    assert copy.data.count(b"DKIM-Signature:") == 2
    assert copy.report["dkim"] == "signed d=example.com s=ed1; sender signature kept"
    assert _verify(copy.data, ed_key)[0] is True


def test_sender_signature_over_a_field_we_changed_is_removed(ed_key: SigningKey) -> None:
    sig = SENDER_SIG.replace(b"h=From:", b"h=List-Unsubscribe:From:")
    original = sig + b"List-Unsubscribe: <https://esp.example/u/1>\r\n" + MESSAGE
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, original)
    steps = (UnsubscribeHeaders(lambda r: URL), DkimSigner([ed_key]))
    copy = run_steps(steps, Copy(original), recipient)
    assert copy.report["dkim"].endswith("sender signature removed")
    assert b"s=esp" not in copy.data
    # The same field added (over-signed by the sender: a new instance) removes it too.
    original = SENDER_SIG.replace(b"h=From:", b"h=List-Unsubscribe:From:") + MESSAGE
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, original)
    copy = run_steps(steps, Copy(original), recipient)
    assert copy.report["dkim"].endswith("sender signature removed")


def test_sender_signature_without_the_original_is_removed(ed_key: SigningKey) -> None:
    copy = DkimSigner([ed_key])(Copy(SENDER_SIG + MESSAGE), RCPT)
    assert b"s=esp" not in copy.data


def test_sender_signatures_judged_each(ed_key: SigningKey) -> None:
    keeps = SENDER_SIG
    breaks = SENDER_SIG.replace(b"s=esp", b"s=two").replace(b"h=From:", b"h=X-Mailer:From:")
    over = SENDER_SIG.replace(b"s=esp", b"s=three").replace(b"h=From:", b"h=DKIM-Signature:")
    original = keeps + breaks + over + MESSAGE
    copy = original.replace(b"X-Mailer: test", b"X-Mailer: changed")
    data, report = DkimSigner([ed_key]).sign(copy, original)
    assert report.endswith("; sender signature removed")
    assert b"s=esp" in data
    assert b"s=two" not in data
    assert b"s=three" not in data  # it signed the one removed


def test_unsigned_copy_still_drops_a_broken_sender_signature() -> None:
    data, report = DkimSigner([]).sign(SENDER_SIG + MESSAGE, b"other")
    assert report == "no key for news.example.com; sender signature removed"
    assert data == MESSAGE


# --------------------------------------------------------------------------
# The copy step in the pipeline


def test_bounce_signed_with_the_relays_domain(ed_key: SigningKey) -> None:
    dsn = (b"From: Mail Delivery System <MAILER-DAEMON@relay.example.com>\r\n"
           b"To: news@news.example.com\r\nSubject: Undelivered Mail\r\n\r\nsorry\r\n")
    bounce = Envelope("Q2", "", ("news@news.example.com",), 0.0, bounce_of="Q1")
    recipient = Recipient(bounce, "news@news.example.com", Policy.REFUSED, dsn)
    steps = (TraceHeader("relay.example.com"), DkimSigner([ed_key]))
    copy = run_steps(steps, Copy(dsn), recipient)
    assert copy.report["dkim"] == "signed d=example.com s=ed1"
    assert _verify(copy.data, ed_key) == [True]


def test_held_copy_is_not_signed(ed_key: SigningKey) -> None:
    held = Copy(b"", {"outcome": "held"}, held="reason")
    assert run_steps((DkimSigner([ed_key]),), held, RCPT) is held


# --------------------------------------------------------------------------
# Further copies of one message


def _newsletter() -> bytes:
    """A multipart/alternative newsletter of about 30 KB: a text part, then a
    quoted-printable HTML part with a tracking pixel (CRLF line ends)."""
    rows = "".join(f'<tr><td class=3D"p"><a href=3D"https://shop.example/p/{i}">Product {i}'
                   f"</a> caf=C3=A9 {i * 7},00 =E2=82=AC</td></tr>\n" for i in range(300))
    text = "".join(f"* Product {i}: https://shop.example/p/{i}\n" for i in range(40))
    return (
        "From: Shop <news@shop.example>\nTo: list@shop.example\nSubject: Sale\n"
        "Date: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <sale-1@shop.example>\n"
        "MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"b1\"\n\n"
        "--b1\nContent-Type: text/plain; charset=utf-8\n\n" + text + "\n"
        "--b1\nContent-Type: text/html; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "<html><body><table>\n" + rows + '<img src=3D"https://t.esp.example/o?id=3D77" '
        'width=3D"1" height=3D"1">\n</table></body></html>\n--b1--\n'
    ).replace("\n", "\r\n").encode()


def test_further_copies_of_a_newsletter_verify(rsa_key: SigningKey, ed_key: SigningKey) -> None:
    """The relay's case: copies of one newsletter made by the relay's own copy steps
    (the beacon step, footer link, unsubscribe headers, trace header), signed one
    after the other by one step, which checks and hashes each against the last
    (rewrite/dkimbody.py): each verifies with dkimpy and is byte-identical to what a
    step that remembers nothing signs."""
    original = _newsletter()
    keys = [SigningKey("shop.example", "r", rsa_key.private),
            SigningKey("shop.example", "e", ed_key.private)]
    tokens = Tokens(["test secret 0123456789abcdef"])
    step = BeaconStep(Engine(load_rules()), tokens, public_url="https://prefs.example.com",
                      hostname="relay.example",
                      steps=(*copy_steps(Config(), tokens, hostname="relay.example"),))
    envelope = Envelope("Q2", "news@shop.example", ("a@example.org",),
                        list_id="news.shop.example")
    prepared = asyncio.run(step.prepare(envelope, original))
    fast = DkimSigner(keys, clock=lambda: 1_700_000_000)
    whole = DkimSigner(keys, clock=lambda: 1_700_000_000, cache=0)
    for k, policy in enumerate([Policy.REFUSED] * 3 + [Policy.GRANTED] * 2 + [Policy.REFUSED]):
        copy = prepared.render(f"reader{k}{'x' * k}@example.org", policy)
        recipient = Recipient(envelope, f"reader{k}@example.org", policy, original)
        signed = fast(copy, recipient)
        assert signed == whole(copy, recipient)
        assert signed.report["dkim"] == "signed d=shop.example s=r,e"
        assert _verify(signed.data, *keys) == [True, True]


# --------------------------------------------------------------------------
# Hostile input

HOSTILE: dict[str, bytes] = {
    "folded": (b"From: News\r\n <a@example.com>\r\nSubject: a\r\n\tlong\r\n  folded\r\n"
               b" subject  \r\nTo:\r\n x@example.org\r\n\r\nbody\r\n"),
    "duplicates": (b"From: a@example.com\r\nFrom: b@example.com\r\nSubject: 1\r\n"
                   b"Subject: 2\r\nTo: a@x.org\r\nTo: b@x.org\r\nList-Unsubscribe: <a>\r\n"
                   b"List-Unsubscribe: <b>\r\nContent-Type: text/plain\r\n"
                   b"content-type: text/html\r\n\r\nbody\r\n"),
    "eight_bit": ("From: Café Ünïcode <a@example.com>\r\nSubject: 日本語のニュース\r\n"
                  "To: 受信者 <b@example.org>\r\n\r\nHéllo wörld\r\n").encode()
                 + b"Latin-1 \xe9\xff in a header body\r\n",
    "lf_only": b"From: a@example.com\nSubject: lf\n\nline one\nline two  \n\n",
    "mixed_ends": b"From: a@example.com\r\nSubject: mixed\n\r\nline\rtwo\r\nthree\n",
    "empty_body": b"From: a@example.com\r\nSubject: empty\r\n\r\n",
    "no_body_separator": b"From: a@example.com\r\nSubject: headers only\r\n",
    "no_final_line_end": b"From: a@example.com\r\nSubject: x\r\n\r\nno line end",
    "blank_lines_only": b"From: a@example.com\r\n\r\n\r\n\r\n\r\n",
    # (No blank before a colon: dkimpy cannot parse "Subject :"; relaxed_header's doctest.)
    "whitespace": (b"From: a@example.com \t\r\nSubject:\t \t\r\nTo:   b@example.org\r\n\r\n"
                   b" \t leading\r\n\t\r\n  \r\ntrailing \t \r\n\r\n \r\n"),
    "nul_and_controls": b"From: a@example.com\r\nSubject: a\x00b\x0bc\r\n\r\nx\x00y\x0c\r\n",
    "long_lines": b"From: a@example.com\r\nSubject: " + b"s" * 2000 + b"\r\n\r\n"
                  + b"x" * 5000 + b"\r\n",
    "huge_body": (b"From: a@example.com\r\nSubject: huge\r\n\r\n"
                  + b"A line of text  with\tblanks \r\n" * 50_000),  # 1.5 MB
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_signs_and_verifies(name: str, rsa_key: SigningKey,
                                          ed_key: SigningKey) -> None:
    message = HOSTILE[name]
    data, report = DkimSigner([rsa_key, ed_key]).sign(message)
    assert report == "signed d=example.com s=rsa1,ed1", report
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert _verify(data, rsa_key, ed_key) == [True, True]


@pytest.mark.parametrize("name", sorted(hostile.MESSAGES))
def test_hostile_corpus_signs_and_verifies(name: str, ed_key: SigningKey) -> None:
    message = hostile.MESSAGES[name]()
    data, report = DkimSigner([SigningKey("shop.example", "s", ed_key.private)]).sign(message)
    assert report == "signed d=shop.example s=s"
    assert _verify(data, SigningKey("shop.example", "s", ed_key.private)) == [True]


def test_lines_of_our_field_stay_short(rsa_key: SigningKey) -> None:
    big = SigningKey(DOMAIN, "big", rsa.generate_private_key(public_exponent=65537,
                                                             key_size=3072))
    data, _ = DkimSigner([big]).sign(HOSTILE["duplicates"])
    ours = data[: data.index(b"From:")]
    assert max(len(line) for line in ours.split(b"\r\n")) <= 100
    assert _verify(data, big) == [True]


# --------------------------------------------------------------------------
# Canonicalisation agrees with dkimpy's

_BODY_CHARS = st.sampled_from([b" ", b"\t", b"\r\n", b"a", b"b", b"\xe9", b"\x00", b"  "])
_HEADER_CHARS = st.sampled_from([b" ", b"\t", b"\r\n ", b"\r\n\t", b"a", b"B", b":", b"\xff"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_BODY_CHARS, max_size=60))
def test_relaxed_body_matches_dkimpy(parts: list[bytes]) -> None:
    body = crlf(b"".join(parts))
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"Subject", b"X-A ", b"FROM"]), st.lists(_HEADER_CHARS, max_size=30))
def test_relaxed_header_matches_dkimpy(name: bytes, parts: list[bytes]) -> None:
    value = b"".join(parts)
    ((cname, cvalue),) = Relaxed.canonicalize_headers([(name, value + b"\r\n")])
    assert relaxed_header(name + b":" + value + b"\r\n") == cname + b":" + cvalue


# --------------------------------------------------------------------------
# Loading keys


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
         fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
         encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt,
                             encryption or serialization.NoEncryption())


def _small_rsa(bits: int = 512) -> rsa.RSAPrivateKey:
    """``cryptography`` will not make keys under 1024 bits, but loads them."""
    rnd = random.Random(bits)

    def prime() -> int:
        while True:
            n = rnd.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31)):
                return n

    e = 65537
    while True:
        p, q = prime(), prime()
        if p != q and math.gcd(e, (p - 1) * (q - 1)) == 1:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), rsa.RSAPublicNumbers(e, p * q)
                                 ).private_key()


def _conf(path: Path, algorithm: str | None = None, *, index: int = 0) -> DkimConfig:
    return DkimConfig(keys=(DkimKeyConfig(DOMAIN, "sel", path, algorithm,  # type: ignore[arg-type]
                                          key=f"dkim.keys[{index}]"),))


def test_loads_pem_and_seed_keys(tmp_path: Path, rsa_key: SigningKey) -> None:
    assert isinstance(rsa_key.private, rsa.RSAPrivateKey)
    (tmp_path / "rsa.pem").write_bytes(_pem(rsa_key.private))
    (tmp_path / "rsa1.pem").write_bytes(
        _pem(rsa_key.private, serialization.PrivateFormat.TraditionalOpenSSL))
    ed = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(_pem(ed))
    seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    (tmp_path / "ed.key").write_bytes(base64.b64encode(seed) + b"\n")  # dkimpy's dknewkey
    conf = DkimConfig(
        domain="example.org", selector="short", private_key_file=tmp_path / "rsa.pem",
        keys=(DkimKeyConfig(DOMAIN, "a", tmp_path / "rsa1.pem", "rsa-sha256", key="dkim.keys[0]"),
              DkimKeyConfig(DOMAIN, "b", tmp_path / "ed.pem", key="dkim.keys[1]"),
              DkimKeyConfig(DOMAIN, "c", tmp_path / "ed.key", "ed25519-sha256",
                            key="dkim.keys[2]")))
    keys = load_keys(conf)
    assert [(k.domain, k.selector, k.algorithm) for k in keys] == [
        ("example.org", "short", "rsa-sha256"), (DOMAIN, "a", "rsa-sha256"),
        (DOMAIN, "b", "ed25519-sha256"), (DOMAIN, "c", "ed25519-sha256")]
    assert dns_record(keys[2]) == dns_record(keys[3])
    data, _ = DkimSigner(keys).sign(MESSAGE)
    assert _verify(data, *keys) == [True, True, True]


@pytest.mark.parametrize(("content", "reason"), [
    (None, "No such file"),
    (b"not a key", "not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM private key"),
    ("encrypted", "encrypted key"),
    ("ec", "an EC key"),
    ("small", "a 512-bit RSA key"),
])
def test_bad_key_files_name_the_key(tmp_path: Path, content: bytes | str | None,
                                    reason: str) -> None:
    path = tmp_path / "key.pem"
    if content == "encrypted":
        content = _pem(ed25519.Ed25519PrivateKey.generate(),
                       encryption=serialization.BestAvailableEncryption(b"secret"))
    elif content == "ec":
        content = _pem(ec.generate_private_key(ec.SECP256R1()))
    elif content == "small":
        content = _pem(_small_rsa())
    if isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_keys(_conf(path, index=3))
    assert err.value.key == "dkim.keys[3].private_key_file"
    assert reason in err.value.reason
    assert str(path) in err.value.reason


def test_algorithm_must_match_the_key(tmp_path: Path) -> None:
    path = tmp_path / "ed.pem"
    path.write_bytes(_pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(ConfigError) as err:
        load_keys(_conf(path, "rsa-sha256"))
    assert err.value.key == "dkim.keys[0].algorithm"


def test_short_rsa_keys_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with caplog.at_level(logging.WARNING, logger="beacon_proxy.relay"):
        (key,) = load_keys(_conf(path))
    assert key.algorithm == "rsa-sha256"
    notices = [r for r in caplog.records if r.getMessage() == "notice"]
    assert len(notices) == 1
    fields = notices[0].fields  # type: ignore[attr-defined]
    assert fields["key"] == "dkim.keys[0].private_key_file"
    assert "1024 bits" in fields["message"]


def test_one_signer_judges_each_message_against_its_own_original(ed_key: SigningKey) -> None:
    signer = DkimSigner([ed_key])
    a = SENDER_SIG + MESSAGE
    b = SENDER_SIG + MESSAGE.replace(b"Our news", b"Other news")
    for original, copy, verdict in ((a, a, "kept"), (a, a, "kept"), (b, a, "removed"),
                                    (b, b, "kept"), (a, b, "removed")):
        recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, original)
        report = signer(Copy(copy), recipient).report["dkim"]
        assert report.endswith(f"sender signature {verdict}")
    # An LF-only original and its CRLF copy are the same bytes on the wire: kept.
    lf = (SENDER_SIG + MESSAGE).replace(b"\r\n", b"\n")
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, lf)
    assert signer(Copy(SENDER_SIG + MESSAGE), recipient).report["dkim"].endswith("kept")


def test_a_maildir_copy_keeps_its_envelope_and_its_signature(rsa_key: SigningKey,
                                                             tmp_path: Path) -> None:
    # Return-Path and Delivered-To go on top at the Maildir write, after signing, as a
    # final MTA adds them: the signature still verifies.
    from beacon_proxy.deliver.maildir import MaildirCourier

    signed, _ = DkimSigner([rsa_key]).sign(MESSAGE)
    result = asyncio.run(MaildirCourier(tmp_path).deliver("news@news.example.com",
                                                          "ann@example.org", signed))
    assert result.ok
    [file] = (tmp_path / "new").iterdir()
    data = file.read_bytes()
    assert data == (b"Return-Path: <news@news.example.com>\r\nDelivered-To: ann@example.org\r\n"
                    + signed)
    assert _verify(data, rsa_key) == [True]


# --------------------------------------------------------------------------
# The proof the courier relies on (Copy.crlf)


def _canonical(data: bytes) -> bool:
    """CRLF line ends only, ending in one: what wire_data would otherwise make."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") == pairs == data.count(b"\n") and data.endswith(b"\r\n")


def _further(message: bytes) -> list[bytes]:
    """Copies of ``message`` as a later step might make them: a change early and late,
    each bringing a fault the first copy did not have (a bare LF, a bare CR, a lost
    final line end), or none."""
    cut = len(message) // 2
    return [
        message,
        message[:cut] + b"x" + message[cut:],
        message[:cut] + b"\n" + message[cut:],
        message[:cut] + b"\r" + message[cut:],
        message[:cut] + b"\r\r\n\n" + message[cut:],
        message.rstrip(b"\r\n"),
        message + b"tail\n",
        message + b"tail\r",
        b"X-Early: 1\n" + message,
        message.replace(b"\r\n", b"\n", 1),
    ]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_signed_copy_is_crlf_as_its_flag_says(name: str, ed_key: SigningKey) -> None:
    """The DKIM step flags each copy CRLF-only (the courier then skips its check): on
    every path, the first copy's and a further copy's (checked against the last),
    whatever fault a further copy brings, the bytes are CRLF-only and end in CRLF."""
    message = HOSTILE[name]
    signer = DkimSigner([ed_key])
    unsigned = DkimSigner([SigningKey("other.example", "s", ed_key.private)])
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, message)
    for step in (signer, unsigned):
        for data in (*_further(message), *_further(message)):  # twice: each one remembered
            copy = step(Copy(data), recipient)
            assert copy.crlf
            assert _canonical(copy.data), (name, data[:80])


def test_a_further_newsletter_copy_with_a_bare_lf_is_still_made_crlf(
        ed_key: SigningKey) -> None:
    """A copy that shares almost every byte with the last one (the path that does not
    run crlf()) but brings a bare LF or CR in its change is made CRLF all the same."""
    original = _newsletter()
    keys = [SigningKey("shop.example", "e", ed_key.private)]
    signer = DkimSigner(keys)
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, original)
    assert signer(Copy(original), recipient).crlf
    at = original.index(b"Product 7")
    for fault in (b"\n", b"\r", b"\n\r", b" \n"):
        copy = signer(Copy(original[:at] + fault + original[at:]), recipient)
        assert copy.crlf and _canonical(copy.data)
        assert _verify(copy.data, *keys) == [True]


def test_a_copy_from_a_step_after_dkim_is_not_flagged(ed_key: SigningKey) -> None:
    """The flag is the DKIM step's: a step that makes a new copy drops it."""
    signed = DkimSigner([ed_key])(Copy(MESSAGE), RCPT)
    assert signed.crlf
    assert not TraceHeader("relay.example")(signed, RCPT).crlf


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"From: a@example.com\r\n", b"Subject: s\r\n", b"\r\n", b"\r",
                                 b"\n", b"a", b" ", b"\t", b"\r\n\r\n"]), max_size=30),
       st.lists(st.tuples(st.integers(0, 400), st.sampled_from([b"\r", b"\n", b"x", b"\r\n"])),
                max_size=3))
def test_a_signed_copy_is_always_crlf(parts: list[bytes],
                                      edits: list[tuple[int, bytes]]) -> None:
    """Any message, then a copy of it with a few bytes put in (checked against the
    first, the further-copy path): both flagged, both CRLF-only ending in CRLF."""
    message = b"".join(parts)
    copy = message
    for at, insert in edits:
        copy = copy[:at] + insert + copy[at:]
    signer = DkimSigner([_HYPOTHESIS_KEY])
    recipient = Recipient(ENV, "ann@example.org", Policy.REFUSED, message)
    for data in (message, copy, message):
        signed = signer(Copy(data), recipient)
        assert signed.crlf and _canonical(signed.data)


_HYPOTHESIS_KEY = SigningKey(DOMAIN, "hyp", ed25519.Ed25519PrivateKey.generate())
