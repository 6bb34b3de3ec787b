"""Each recipient's copy: precise, unwrapped, fallback or held; never a beacon when refused."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, Prepared, Variant, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite.hostile import (
    HELD_FOR_REFUSED,
    MESSAGES,
    POISON,
    TRACKER_HOST,
    tracker_traces,
)

ENGINE = Engine(load_rules())
RCPT = "reader@example.org"
LINK = "https://prefs.example/o/TOKEN"
EXPECTED = {  # what the precise path can do for each; the rest falls back
    "lf_only": Outcome.STRIPPED, "missing_close": Outcome.STRIPPED,
    "huge_html_part": Outcome.FALLBACK, "smime_signed": Outcome.UNSIGNED,
    "forwarded_rfc822": Outcome.STRIPPED, "charset_x_unknown_42": Outcome.STRIPPED,
    "charset_unicode11utf8": Outcome.STRIPPED, "charset_utf16_bom": Outcome.STRIPPED,
    "charset_utf16be_no_bom": Outcome.STRIPPED, "charset_utf7": Outcome.HELD,
    "deep_nesting": Outcome.FALLBACK, "many_parts": Outcome.FALLBACK,
    "many_items": Outcome.FALLBACK, "sloppy_base64_no_mime_version": Outcome.STRIPPED,
    "amp_json_poison": Outcome.STRIPPED, "font_face_poison": Outcome.STRIPPED,
    "svg_foreign_content": Outcome.FALLBACK, "select_raw_text": Outcome.FALLBACK,
}


def test_the_held_cases_are_the_ones_the_end_to_end_test_expects_held() -> None:
    assert {name for name, outcome in EXPECTED.items() if outcome is Outcome.HELD} == (
        HELD_FOR_REFUSED)


@pytest.fixture(scope="module", params=sorted({**MESSAGES, **POISON}))
def case(request: pytest.FixtureRequest) -> tuple[str, bytes, Prepared]:
    name: str = request.param
    data = {**MESSAGES, **POISON}[name]()
    assert tracker_traces(data), "the original carries the tracker"
    return name, data, prepare(ENGINE, data, CopyPolicy())


def test_a_refused_copy_never_keeps_the_tracker(case: tuple[str, bytes, Prepared]) -> None:
    name, _, prepared = case
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    if EXPECTED[name] is Outcome.HELD:  # UTF-7: browsers read its bytes as ASCII markup
        assert copy.outcome is Outcome.HELD and copy.data is None, copy.problems
        return
    assert copy.data is not None, copy.problems
    assert copy.outcome is EXPECTED[name], copy.problems
    assert tracker_traces(copy.data) == []
    assert b"Autumn offers" in copy.data or copy.outcome is not Outcome.FALLBACK


def test_a_granted_copy_is_always_delivered(case: tuple[str, bytes, Prepared]) -> None:
    name, data, prepared = case
    copy = decide(ENGINE, prepared, RCPT, Policy.GRANTED, CopyPolicy(), lambda url: LINK)
    assert copy.data is not None
    if EXPECTED[name] in (Outcome.FALLBACK, Outcome.HELD):
        assert copy.outcome is Outcome.UNMODIFIED_GRANTED and copy.data == data
    elif name == "smime_signed":  # the signature stays intact for consenting recipients
        assert copy.outcome is Outcome.REWRITTEN and copy.data == data
    else:
        assert copy.outcome is Outcome.REWRITTEN
        assert tracker_traces(copy.data) == []  # pointed at the open endpoint instead


def test_unicode_copies_still_decode_to_the_same_text() -> None:
    data = MESSAGES["charset_utf16_bom"]()
    copy = decide(ENGINE, prepare(ENGINE, data, CopyPolicy()), RCPT, Policy.REFUSED,
                  CopyPolicy())
    assert copy.data is not None
    part = email.message_from_bytes(copy.data, policy=email.policy.compat32)
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes) and payload.startswith(b"\xff\xfe")
    text = payload.decode("utf-16")
    assert "Autumn offers" in text and "hero.jpg" in text and TRACKER_HOST not in text


@pytest.mark.parametrize(
    ("rules", "outcome"),
    [(CopyPolicy(signed="hold"), Outcome.HELD), (CopyPolicy(signed="deliver"), Outcome.STRIPPED)],
)
def test_signed_policy(rules: CopyPolicy, outcome: Outcome) -> None:
    data = MESSAGES["smime_signed"]()
    copy = decide(ENGINE, prepare(ENGINE, data, rules), RCPT, Policy.REFUSED, rules)
    assert copy.outcome is outcome
    if outcome is Outcome.HELD:
        assert copy.data is None and copy.held and "signed" in copy.problems[-1]
    else:  # the operator chose to keep signatures: the signed part is left as it is
        assert copy.data == data


@pytest.mark.parametrize(
    ("rules", "outcome"),
    [(CopyPolicy(unscannable="hold"), Outcome.HELD),
     (CopyPolicy(unscannable="deliver"), Outcome.UNSCANNED)],
)
def test_unscannable_policy(rules: CopyPolicy, outcome: Outcome) -> None:
    data = MESSAGES["many_parts"]()
    copy = decide(ENGINE, prepare(ENGINE, data, rules), RCPT, Policy.REFUSED, rules)
    assert copy.outcome is outcome
    assert (copy.data is None) is (outcome is Outcome.HELD)


def test_a_failed_analysis_falls_back_for_refused_and_keeps_the_original_for_granted() -> None:
    data = MESSAGES["missing_close"]()
    prepared = Prepared(Variant(data, None, "AnalysisTimeout('budget')"))
    refused = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert refused.outcome is Outcome.FALLBACK and refused.data is not None
    assert tracker_traces(refused.data) == []
    assert "analysis failed: AnalysisTimeout('budget')" in refused.problems
    granted = decide(ENGINE, prepared, RCPT, Policy.GRANTED, CopyPolicy(), lambda u: LINK)
    assert granted.outcome is Outcome.UNMODIFIED_GRANTED and granted.data == data


def test_a_render_that_raises_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    data = MESSAGES["missing_close"]()
    prepared = prepare(ENGINE, data, CopyPolicy())

    def boom(*args: object, **kwargs: object) -> object:
        raise ValueError("bug")

    monkeypatch.setattr(ENGINE, "render", boom)
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK and copy.data is not None
    assert tracker_traces(copy.data) == [] and "render failed" in copy.problems[0]


def test_encrypted_content_is_held_for_refused_recipients() -> None:
    data = (b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
            b"smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqG\r\n")
    copy = decide(ENGINE, prepare(ENGINE, data, CopyPolicy()), RCPT, Policy.REFUSED,
                  CopyPolicy())
    assert copy.outcome is Outcome.HELD and copy.data is None


def test_text_clients_read_in_two_ways_is_held_for_refused_recipients() -> None:
    # A bare utf-16 label, no BOM, NULs on both sides: big-endian (our sniff) and
    # little-endian (browsers) readings can both hold markup.
    mixed = "<p>x</p>".encode("utf-16-be") + '<img src="https://t.test/o.gif">'.encode(
        "utf-16-le")
    data = (b"Content-Type: text/html; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + base64.encodebytes(mixed))
    copy = decide(ENGINE, prepare(ENGINE, data, CopyPolicy()), RCPT, Policy.REFUSED,
                  CopyPolicy())
    assert copy.outcome is Outcome.HELD and copy.data is None
    assert "decode differently" in copy.problems[-1]


# --- honest shapes the session-17 rules must not hold (found by a false-hold hunt) ------------

_HD = b"From: n@shop.example\r\nTo: reader@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
_PX = b'<p>Hi</p><img src="https://t.esp.example/o?u=reader%40example.org" width="1" height="1">'


def _alternative(boundary: bytes, pre: bytes = b"", epi: bytes = b"", ctype: bytes = b"",
                 plain: bytes = b"Hi\r\n") -> bytes:
    ctype = ctype or b'Content-Type: multipart/alternative; boundary="' + boundary + b'"'
    return (_HD + ctype + b"\r\n\r\n" + pre + b"--" + boundary
            + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + plain + b"\r\n--" + boundary
            + b"\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + _PX + b"\r\n--" + boundary
            + b"--\r\n" + epi)


def _html(body: bytes, ctype: bytes) -> bytes:
    return (_HD + b"Content-Type: " + ctype + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(body).replace(b"\n", b"\r\n"))


HONEST = {
    "encoded_word_file_name": _HD + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
    b"Content-Type: text/html; charset=utf-8\r\n\r\n" + _PX + b'\r\n--m\r\nContent-Type: '
    b'application/pdf; name="=?utf-8?Q?R=C3=A9sum=C3=A9.pdf?="\r\nContent-Transfer-Encoding: '
    b"base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n",
    "preamble_autolink": _alternative(b"b", pre=b"View online: <https://shop.example/v/1>\r\n"),
    "epilogue_list_address": _alternative(b"b", epi=b"Write to <majordomo@lists.example>\r\n"),
    "preamble_stray_cte": _alternative(b"b", pre=b"Content-Transfer-Encoding: 7bit\r\n\r\n"),
    "unquoted_next_part_and_dash_lines": _alternative(
        b"----=_NextPart_000_0001_01C7A1B2.3C4D5E60", plain=b"Hi\r\n--------\r\n------\r\n",
        ctype=b"Content-Type: multipart/alternative; "
              b"boundary=----=_NextPart_000_0001_01C7A1B2.3C4D5E60"),
    "unquoted_next_part_and_quoted_plain_header": _alternative(
        b"----=_NextPart_000_0012_01D4A1B2.C3D4E5F6",
        plain=b"The header reads:\r\n------\r\nContent-Type: text/plain\r\n------\r\nThanks\r\n",
        ctype=b"Content-Type: multipart/alternative; "
              b"boundary=----=_NextPart_000_0012_01D4A1B2.C3D4E5F6"),
    "unquoted_digest_and_dash_line": _HD + b"Content-Type: multipart/mixed; boundary=\"o\"\r\n"
    b"\r\n--o\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + _PX + b"\r\n--o\r\n"
    b"Content-Type: multipart/digest; boundary=----=_Digest_000_1\r\n\r\n"
    b"------=_Digest_000_1\r\n\r\nFrom: a@b.example\r\nSubject: sep\r\n"
    b"Content-Type: text/plain\r\n\r\nPart one\r\n------\r\nPart two\r\n\r\n"
    b"------=_Digest_000_1--\r\n\r\n--o--\r\n",
    "unquoted_boundary_starting_with_equals": _alternative(
        b"==Multipart_Boundary_x1x",
        ctype=b"Content-Type: multipart/alternative; boundary===Multipart_Boundary_x1x"),
    "delimiter_then_close": _HD + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + _PX + b"\r\n--b\r\n--b--\r\n",
    "big5_backslash_trail_then_tab": _html("<p>成功\t\r\n</p>".encode("big5") + _PX,
                                           b"text/html; charset=big5"),
    "sjis_backslash_trail_then_tab": _html("<p>表\t\r\n</p>".encode("cp932") + _PX,
                                           b"text/html; charset=shift_jis"),
    "trailing_nul": _html(_PX + b"\x00", b"text/html; charset=utf-8"),
    "unicode_label_with_bom": _html("<p>Hi</p>".encode("utf-16"), b"text/html; charset=unicode"),
    "dsn_folded_diagnostic": _HD + b'Content-Type: multipart/report; report-type=delivery-status;'
    b' boundary="b"\r\n\r\n--b\r\n\r\nhi\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n'
    b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\n"
    b"Action: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 550 rejected\r\n"
    b" Content-Type: not a field here\r\n\r\n--b--\r\n",
}


@pytest.mark.parametrize("case", list(HONEST))
def test_honest_shapes_keep_the_precise_path(case: str) -> None:
    """The false-hold hunt of session 17: real mailers write these; each was held or sent to
    the fallback by a rule against an attack before the rule was narrowed."""
    prepared = prepare(ENGINE, HONEST[case], CopyPolicy())
    copy = decide(ENGINE, prepared, "reader@example.org", Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.STRIPPED, copy.outcome
    assert copy.data is not None and b"t.esp.example" not in copy.data


def test_markup_in_an_epilogue_is_neutralised_in_the_fallback() -> None:
    """An HTML disclaimer after the close delimiter: a part to a reader that splits
    otherwise, so the copy takes the fallback, which neutralises it where it is."""
    data = _alternative(b"b", epi=b'<p>Disclaimer <img src="https://t.esp.example/d"></p>\r\n')
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, "reader@example.org", Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK and copy.data is not None
    assert b"https://t.esp.example/d" not in copy.data and b"<p>Disclaimer" in copy.data
