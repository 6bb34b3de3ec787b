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
