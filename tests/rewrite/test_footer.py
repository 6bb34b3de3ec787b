"""The footer step: language, parts, charsets x transfer encodings, insertion point,
what is left alone, byte faithfulness on real templates, and Chromium rendering."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import html
import logging
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.bodyend import body_end
from beacon_proxy.rewrite.charsets import decode_text, effective_charset
from beacon_proxy.rewrite.footer import Footer, body_parts
from beacon_proxy.rewrite.footertext import FooterText, FooterTexts
from beacon_proxy.rewrite.mime import MimeTree, parse_message
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.rewrite.transfer import decode
from beacon_proxy.spool.envelope import Envelope
from tests.browser import artifact, chromium, serve_pages
from tests.rewrite.test_oracle import TEMPLATE_FILES, TEMPLATES

FIXTURES = Path(__file__).parent / "fixtures" / "mime"
URL = "https://prefs.example.com/u/AbC-12_x.y~z"
RCPT = Recipient(Envelope("Q1", "news@shop.example", ("ann@example.org",), received_at=0),
                 "ann@example.org", Policy.REFUSED)
TEXTS = FooterTexts.load()
EN_SENTENCE = "Stop read-tracking or suspend delivery"
JA_SENTENCE = "開封の記録の停止・配信の停止"
CODECS = {"utf-8": "utf-8", "iso-8859-1": "latin-1", "iso-2022-jp": "iso2022_jp",
          "shift_jis": "cp932", "euc-jp": "euc_jp"}
CTES = ("7bit", "8bit", "quoted-printable", "base64")


def footer(*, default_language: str = "en", texts: FooterTexts | None = None) -> Footer:
    return Footer(lambda recipient: URL, default_language=default_language, texts=texts)


def run(data: bytes, step: Footer | None = None) -> Copy:
    out = (step or footer())(Copy(data, {"beacons": 0}), RCPT)
    assert out.held is None and out.report["beacons"] == 0
    return out


def encode_body(raw: bytes, cte: str) -> bytes:
    """``raw`` (LF line ends) as a CRLF body in ``cte``."""
    if cte == "quoted-printable":
        return binascii.b2a_qp(raw, istext=True).replace(b"\n", b"\r\n")
    if cte == "base64":
        return base64.encodebytes(raw.replace(b"\n", b"\r\n")).replace(b"\n", b"\r\n")
    return raw.replace(b"\n", b"\r\n")


def message(html_text: str, plain: str, *, charset: str = "utf-8", cte: str = "quoted-printable",
            language: str | None = None, headers: bytes = b"") -> bytes:
    codec = CODECS.get(charset, "utf-8")
    lang = b"" if language is None else b"Content-Language: " + language.encode() + b"\r\n"
    parts = []
    for subtype, content in (("plain", plain), ("html", html_text)):
        parts.append(
            b"--BOUND\r\nContent-Type: text/" + subtype.encode() + b"; charset=" + charset.encode()
            + b"\r\nContent-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n"
            + encode_body(content.encode(codec), cte) + b"\r\n")
    return (b"From: Shop <news@shop.example>\r\nTo: ann@example.org\r\nSubject: Deals\r\n"
            + lang + headers + b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/alternative; boundary="BOUND"\r\n\r\n'
            + b"".join(parts) + b"--BOUND--\r\n")


def contents(data: bytes) -> dict[str, str]:
    """text/plain and text/html of a message as Python's email (policy.default) reads them."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    out = {}
    for part in msg.walk():
        assert isinstance(part, EmailMessage)
        if part.get_content_type() in ("text/plain", "text/html") and not part.is_attachment():
            out[part.get_content_subtype()] = part.get_content().replace("\r\n", "\n")
    return out


def same_outside(before: bytes, after: bytes, changed: set[tuple[int, ...]]) -> None:
    """Headers of every part and bodies of the unchanged parts are byte-identical."""
    old, new = parse_message(before), parse_message(after)
    assert [p.path for p in old.parts] == [p.path for p in new.parts]
    assert new.problems == old.problems
    for a, b in zip(old.parts, new.parts, strict=True):
        assert before[a.header_span] == after[b.header_span]
        if not a.is_multipart and a.path not in changed:
            assert old.body(a) == new.body(b)
    ends = [p.body_span.stop for p in old.parts if not p.is_multipart]
    assert after.endswith(before[max(ends, default=len(before)):])


PAGE = ("<!DOCTYPE html><html><head><title>Sale</title></head><body>\n"
        "<p>Hello, welcome to our spring sale.</p>\n</body>\n</html>\n")
PLAIN = "Hello, welcome to our spring sale.\n"


# -- language and link ------------------------------------------------------------------------

@pytest.mark.parametrize(("language", "default", "expected"), [
    (None, "en", "en"), (None, "ja", "ja"), ("ja", "en", "ja"), ("ja-JP", "en", "ja"),
    ("JA-jp, en", "en", "ja"), ("en-US", "ja", "en"), ("fr", "ja", "ja"), ("de-DE", "en", "en"),
])
def test_language_from_content_language_then_default(
        language: str | None, default: str, expected: str) -> None:
    data = message(PAGE, PLAIN, language=language)
    out = run(data, footer(default_language=default))
    assert out.report["footer"] == {"html": 1, "text": 1, "language": expected}
    sentence = JA_SENTENCE if expected == "ja" else EN_SENTENCE
    for kind, content in contents(out.data).items():
        assert sentence in content, kind
        assert content.count(URL) == 1, kind


def test_footer_sits_before_body_end_and_text_after_a_blank_line() -> None:
    got = contents(run(message(PAGE, PLAIN)).data)
    assert got["html"].endswith("</p>\n</body>\n</html>\n")
    assert f'<a href="{URL}"' in got["html"]
    after = got["html"].partition("welcome to our spring sale.</p>\n")[2]
    assert after.index(EN_SENTENCE) < after.index("</body>")
    assert got["plain"] == (PLAIN + "\nYou receive this newsletter because you subscribed.\n"
                            f"Stop read-tracking or suspend delivery: {URL}\n")


def test_link_is_escaped_in_html_and_plain_in_text() -> None:
    link = "https://prefs.example.com/u/x?a=1&b='2'"
    out = run(message(PAGE, PLAIN), Footer(lambda r: link))
    got = contents(out.data)
    assert 'href="https://prefs.example.com/u/x?a=1&amp;b=&#x27;2&#x27;"' in got["html"]
    assert link in got["plain"]


@pytest.mark.parametrize("link", ["javascript:alert(1)", 'https://x.example/"><script>',
                                  "https://x.example/a\r\nBcc: x", "", "https://x.example/ a"])
def test_a_bad_link_leaves_the_copy_unchanged(link: str, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    data = message(PAGE, PLAIN)
    with caplog.at_level(logging.ERROR, "beacon_proxy.rewrite.footer"):
        out = run(data, Footer(lambda r: link))
    assert out.data == data
    assert out.report["footer"] == {"skipped": "error"}


def test_an_error_is_logged_once_and_never_loses_the_copy(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    def broken(recipient: Recipient) -> str:
        raise RuntimeError("token service down")

    step = Footer(broken)
    data = message(PAGE, PLAIN)
    with caplog.at_level(logging.ERROR, "beacon_proxy.rewrite.footer"):
        for _ in range(3):
            assert run(data, step) == Copy(data, {"beacons": 0, "footer": {"skipped": "error"}})
    assert len([r for r in caplog.records if "token service down" in r.getMessage()]) == 1


def test_unknown_default_language_is_refused() -> None:
    with pytest.raises(ValueError, match="default_language 'de'"):
        footer(default_language="de")


# -- charsets x transfer encodings ------------------------------------------------------------

def _original(charset: str, cte: str) -> tuple[str, str]:
    """Content every (charset, cte) can carry: 7bit only ASCII (ISO-2022-JP is 7-bit)."""
    native = {"utf-8": "Grüße 日本", "iso-8859-1": "Grüße", "iso-2022-jp": "日本語のお知らせ",
              "shift_jis": "日本語ソ表", "euc-jp": "日本語のお知らせ"}[charset]
    word = native if cte != "7bit" or charset == "iso-2022-jp" else "Hello"
    return (f"<html><body>\n<p>{word}</p>\n<p>{'x' * 200} {word}</p>\n</body></html>\n",
            f"{word}\n{'y' * 120}\n")


@pytest.mark.parametrize("cte", CTES)
@pytest.mark.parametrize("charset", list(CODECS))
def test_every_charset_and_transfer_encoding(charset: str, cte: str) -> None:
    page, plain = _original(charset, cte)
    data = message(page, plain, charset=charset, cte=cte, language="ja")
    out = run(data)
    ja_text = charset != "iso-8859-1" and (cte != "7bit" or charset == "iso-2022-jp")
    expected = {"html": 1, "text": 1, "language": "ja"}
    if not ja_text:
        expected["text_language"] = "en"
    assert out.report["footer"] == expected
    got = contents(out.data)
    assert JA_SENTENCE in html.unescape(got["html"])
    assert got["html"].count(URL) == 1 and got["plain"].count(URL) == 1
    assert (JA_SENTENCE if ja_text else EN_SENTENCE) in got["plain"]
    assert got["html"].startswith(page.split("</body>")[0])  # the original text is all there
    assert got["plain"].startswith(plain.rstrip("\n") + "\n\n")
    limit = 76 if cte in ("quoted-printable", "base64") else 998
    tree = parse_message(out.data)
    for part in tree.leaves():
        assert all(len(line) <= limit for line in tree.body(part).split(b"\r\n"))
    if cte == "7bit":
        assert out.data.isascii()
    same_outside(data, out.data, {(0,), (1,)})


def test_iso_2022_jp_insertions_start_and_end_in_ascii() -> None:
    page, plain = _original("iso-2022-jp", "7bit")
    data = message(page, plain, charset="iso-2022-jp", cte="7bit", language="ja")
    tree = parse_message(run(data).data)
    for part in body_parts(tree):
        body = tree.body(part)
        # every shift into JIS X 0208 is undone before a line ends
        for line in body.split(b"\r\n"):
            if b"\x1b$B" in line:
                assert line.rfind(b"\x1b(B") > line.rfind(b"\x1b$B"), line


def test_jis_roman_state_is_restored_around_the_footer() -> None:
    page = "<html><body><p>x</p>\x1b(J</body></html>"
    data = (b"Content-Type: text/html; charset=iso-2022-jp\r\nContent-Language: ja\r\n\r\n"
            + page.encode("ascii"))
    out = run(data).data
    assert b"<p>x</p>\x1b(J\x1b(B\r\n<p " in out
    assert out.endswith(b"\x1b(B</a>\r\n</p>\r\n\x1b(J</body></html>")


def test_unknown_charsets_and_lying_bytes_get_no_footer() -> None:
    data = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/html; charset=x-klingon\r\n\r\n<p>x</p></body>\r\n--b--\r\n")
    out = run(data)
    assert out.data == data and out.report["footer"]["skipped"].startswith("html: charset")
    lying = b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n\xff\xfe caf\xe9\r\n"
    assert run(lying).data == lying
    utf16 = b"Content-Type: text/plain; charset=utf-16\r\n\r\n" + "hi\r\n".encode("utf-16")
    assert run(utf16).data == utf16  # 7bit: NUL bytes and all, not touched
    utf7 = b"Content-Type: text/plain; charset=utf-7\r\n\r\n" + "h\u00e9\r\n".encode("utf-7")
    assert run(utf7).report["footer"] == {"skipped": "text: charset utf-7"}


@pytest.mark.parametrize(("label", "codec"), [("utf-16", "utf-16"), ("utf-16le", "utf-16-le"),
                                              ("utf-16be", "utf-16-be"), ("utf-32", "utf-32")])
def test_utf_16_and_32_parts_through_their_utf_8_transcoding(label: str, codec: str) -> None:
    page, plain = _original("utf-8", "base64")
    parts = [b"--B\r\nContent-Type: text/" + subtype + b"; charset=" + label.encode()
             + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes(content.replace("\n", "\r\n").encode(codec))
             for subtype, content in ((b"plain", plain), (b"html", page))]
    data = (b"Content-Language: ja\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n"
            + b"\r\n".join(parts) + b"\r\n--B--\r\n")
    out = run(data)
    assert out.report["footer"] == {"html": 1, "text": 1, "language": "ja"}
    got = contents(out.data)
    assert JA_SENTENCE in got["html"] and JA_SENTENCE in got["plain"]
    assert got["html"].replace("\ufeff", "").startswith(page.split("</body>")[0])
    same_outside(data, out.data, {(0,), (1,)})


def test_a_too_long_line_skips_only_that_part() -> None:
    # 150 kana: 450 bytes of UTF-8, but 1200 as &#NNNNN; in an ISO-8859-1 part
    long_ja = FooterText("<p>" + "あ" * 150 + '<a href="{url}">x</a></p>', "{url}")
    texts = FooterTexts({"en": TEXTS.get("en"), "ja": long_ja})
    data = message(PAGE, PLAIN, charset="iso-8859-1", cte="8bit", language="ja")
    out = run(data, footer(texts=texts))
    assert out.report["footer"] == {"html": 0, "text": 1, "language": "ja",
                                    "not_modified": ["html: a line would pass 998 octets"]}
    same_outside(data, out.data, {(0,)})


# -- where in the HTML ------------------------------------------------------------------------

def test_no_body_end_appends_before_trailing_line_breaks() -> None:
    data = b"Content-Type: text/html\r\n\r\n<p>Hello</p>\r\n\r\n"
    out = run(data).data
    assert out.startswith(data[:-4] + b"\r\n<p style=")
    assert out.endswith(b"</p>\r\n\r\n")


def test_the_footer_never_makes_a_boundary_line() -> None:
    # The close delimiter is broken, so the HTML part runs to the end of the message and
    # its last </body> follows "--B" on the same line: a line break there would make a
    # delimiter line of it.
    data = (b'Content-Type: multipart/alternative; boundary="B"\r\n\r\n--B\r\n'
            b"Content-Type: text/html\r\n\r\n<p>x</p></body>\r\n--B</body>--\r\n")
    tree = parse_message(data)
    out = run(data).data
    assert out.count(b"\n--B") == data.count(b"\n--B") and parse_message(out).notes == tree.notes
    # "--B</body>--" starts with the boundary: a close delimiter to Dovecot (session 17),
    # so the structure is ambiguous and the footer leaves that line alone
    assert any("a boundary and more" in p for p in tree.problems)
    assert b"\r\n--B</body>--" in out


def test_a_message_cut_after_its_header_stays_as_it_is() -> None:
    for data in (b"Subject: x\r\nTo: a@b.example", b"Subject: x\r\n"):
        out = run(data)
        assert out.data == data
        assert out.report["footer"] == {"skipped": "text: no body after the header"}


def test_lf_only_message() -> None:
    data = message(PAGE, PLAIN).replace(b"\r\n", b"\n")
    out = run(data).data
    assert b"\r" not in out
    got = contents(out)
    assert EN_SENTENCE in got["html"] and EN_SENTENCE in got["plain"]
    same_outside(data, out, {(0,), (1,)})


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.eml")), ids=lambda p: p.stem)
def test_mime_fixtures_get_their_footer_and_keep_every_other_byte(path: Path) -> None:
    data = path.read_bytes()
    out = run(data)
    old, new = parse_message(data), parse_message(out.data)
    changed = set() if "skipped" in out.report["footer"] else {p.path for p in body_parts(old)}
    same_outside(data, out.data, changed)
    report = out.report["footer"]
    modified = [b for a, b in zip(old.parts, new.parts, strict=True)
                if not a.is_multipart and old.body(a) != new.body(b)]
    assert len(modified) == report.get("html", 0) + report.get("text", 0)
    for part in modified:
        decoded = decode(new.body(part), part.transfer_encoding)
        text = decode_text(decoded, effective_charset(decoded, part.charset))
        assert html.unescape(text).count(URL) == 1, part.path
        assert EN_SENTENCE in html.unescape(text)


_SEEDS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))] + [
    message(*_original(charset, cte), charset=charset, cte=cte, language="ja")
    for charset in CODECS for cte in CTES]
_SNIPPETS = [b"</body>", b"<!--", b"-->", b"<script>", b"\x1b$B", b"\x1b(B", b"=\r\n", b"=3D",
             b"\r\n", b"\n", b"<![if !mso]>", b"</BODY>", b"\x82", b"\xff", b"--BOUND"]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["byte", "cut", "insert", "truncate"]))
        if op == "byte":
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 50))]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(_SNIPPETS))
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mangled_messages_never_error_and_keep_their_structure(data: bytes) -> None:
    out = run(data)
    assert out.report["footer"] != {"skipped": "error"}
    if "skipped" in out.report["footer"]:
        assert out.data == data
    else:
        same_outside(data, out.data, {p.path for p in body_parts(parse_message(data))})


# -- what is left alone -----------------------------------------------------------------------

def _mixed(*parts: bytes) -> bytes:
    return (b'Content-Type: multipart/mixed; boundary="M"\r\n\r\n'
            + b"".join(b"--M\r\n" + p + b"\r\n" for p in parts) + b"--M--\r\n")


def test_only_the_first_part_of_a_mixed_message_and_never_an_attachment() -> None:
    body = b"Content-Type: text/plain\r\n\r\nHello"
    attached = b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nnotes"
    inline = b"Content-Type: text/html\r\n\r\n<p>second</p></body>"
    data = _mixed(body, attached, inline)
    out = run(data)
    assert out.report["footer"] == {"html": 0, "text": 1, "language": "en"}
    same_outside(data, out.data, {(0,)})
    first_attached = _mixed(attached, body)
    assert run(first_attached).data == first_attached


def test_related_root_and_other_text_types() -> None:
    alternative = (
        b'Content-Type: multipart/alternative; boundary="A"\r\n\r\n'
        b"--A\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--A\r\nContent-Type: text/x-amp-html\r\n\r\n<html amp4email><body>a</body></html>\r\n"
        b'--A\r\nContent-Type: multipart/related; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/html\r\n\r\n<p>root</p></body>\r\n"
        b"--R\r\nContent-Type: text/html\r\nContent-ID: <x>\r\n\r\n<p>other</p></body>\r\n--R--\r\n"
        b"\r\n--A\r\nContent-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n--A--\r\n")
    data = _mixed(alternative, b"Content-Type: text/plain\r\n\r\nsecond")
    tree = parse_message(data)
    assert [p.content_type for p in body_parts(tree)] == ["text/plain", "text/html"]
    out = run(data)
    assert out.report["footer"] == {"html": 1, "text": 1, "language": "en"}
    same_outside(data, out.data, {p.path for p in body_parts(tree)})


def test_an_embedded_message_is_left_alone() -> None:
    inner = (b"Content-Type: message/rfc822\r\n\r\nSubject: fwd\r\n"
             b"Content-Type: text/html\r\n\r\n<p>inner</p></body>")
    data = _mixed(b"Content-Type: text/plain\r\n\r\nSee below.", inner)
    out = run(data)
    assert out.report["footer"] == {"html": 0, "text": 1, "language": "en"}
    same_outside(data, out.data, {(0,)})
    only = _mixed(inner)
    assert run(only).data == only


ENCRYPTED = (b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
             b'boundary="E"\r\n\r\n--E\r\nContent-Type: application/pgp-encrypted\r\n\r\n'
             b"Version: 1\r\n--E\r\nContent-Type: application/octet-stream\r\n\r\n"
             b"-----BEGIN PGP MESSAGE-----\r\n--E--\r\n")
PKCS7 = (b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n")


@pytest.mark.parametrize("data", [(FIXTURES / "signed.eml").read_bytes(), ENCRYPTED, PKCS7,
                                  _mixed(b"Content-Type: text/plain\r\n\r\nhi", PKCS7)],
                         ids=["signed", "pgp-encrypted", "pkcs7", "mixed-pkcs7"])
def test_signed_and_encrypted_mail_is_left_alone(data: bytes) -> None:
    out = run(data)
    assert out.data == data
    assert out.report["footer"] == {"skipped": "signed or encrypted"}


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("broken_*.eml")))
def test_broken_mime_is_left_alone(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    if not parse_message(data).problems:
        pytest.skip("repaired leniently: modifiable")
    out = run(data)
    assert out.data == data and out.report["footer"] == {"skipped": "broken MIME structure"}


# -- byte faithfulness on real templates ------------------------------------------------------

def _html_part(tree: MimeTree) -> bytes:
    (part,) = [p for p in body_parts(tree) if p.content_type == "text/html"]
    return decode(tree.body(part), part.transfer_encoding)


@pytest.mark.skipif(not TEMPLATE_FILES, reason=f"no shared templates at {TEMPLATES}")
@pytest.mark.parametrize("cte", ["quoted-printable", "8bit", "base64"])
@pytest.mark.parametrize("name", [p.name for p in TEMPLATE_FILES] or ["none"])
def test_real_templates_change_only_by_the_footer(name: str, cte: str) -> None:
    page = (TEMPLATES / name).read_text("utf-8")
    data = message(page, "Hello\n", cte=cte, language="ja")
    out = run(data)
    assert out.report["footer"] == {"html": 1, "text": 1, "language": "ja"}
    before, after = _html_part(parse_message(data)), _html_part(parse_message(out.data))
    footer_html = TEXTS.get("ja").html.replace("{url}", URL)
    at = body_end(before)
    assert at is not None
    lead = b"" if before[at - 1 : at] == b"\n" else b"\r\n"
    inserted = lead + footer_html.encode().replace(b"\n", b"\r\n") + b"\r\n"
    assert after == before[:at] + inserted + before[at:]
    same_outside(data, out.data, {(0,), (1,)})


# -- rendering in Chromium --------------------------------------------------------------------

@pytest.fixture
def served() -> Iterator[tuple[dict[str, tuple[bytes, str]], str]]:
    """A loopback HTTP server answering each path with (bytes, charset) from a dict."""
    with serve_pages() as served:
        yield served


@pytest.mark.parametrize(("charset", "cte"), [("iso-2022-jp", "quoted-printable"),
                                              ("shift_jis", "base64")])
def test_japanese_footer_renders_in_chromium(
        charset: str, cte: str, served: tuple[dict[str, tuple[bytes, str]], str]) -> None:
    pages, base = served
    page, plain = _original(charset, cte)
    out = run(message(page, plain, charset=charset, cte=cte, language="ja")).data
    pages["/mail.html"] = (_html_part(parse_message(out)), charset)
    with chromium(width=700, height=500) as browser:
        browser.get(base + "/mail.html")
        text = browser.execute_script("return document.body.innerText")
        link = browser.execute_script("return document.querySelector('a').href")
        browser.save_screenshot(str(artifact(f"footer-{charset}.png")))
    assert "このメールは、配信をお申し込みいただいた方にお送りしています。" in text
    assert JA_SENTENCE + "はこちら" in text
    assert "日本" in text  # the original text still reads right
    assert link == URL


def test_no_footer_without_a_link() -> None:
    data = b"Content-Type: text/plain\r\n\r\nHello\r\n"
    rcpt = Recipient(Envelope("Q1", "a@x.org", ("b@y.org",), received_at=0), "b@y.org",
                     Policy.REFUSED)
    none = Footer(lambda r: None)(Copy(data), rcpt)
    assert (none.data, none.report["footer"]) == (data, {"skipped": "no preference link"})
