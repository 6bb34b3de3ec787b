"""campaign_key reads a header's fields once for a run of messages with the same header
bytes (``_header_key``): every key is the one the fields read afresh give."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.headerfacts import field as header_field
from beacon_proxy.headerfacts import header_block
from beacon_proxy.rewrite import campaign
from beacon_proxy.rewrite.campaign import CampaignKey, campaign_key, loads, normalise_subject
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.rules import load_rules

ENGINE = Engine(load_rules())
_BODY = ('<p>Hi</p><img src="https://t.shop.example/o.gif?u=k3JdP9xQw2Lm" width="1" '
         'height="1"><img src="https://cdn.shop.example/a.png" width="600">')
_SUBJECTS = ["Ann, your 12 deals", "Your deals", "x\\y deals for bob", "=?utf-8?q?Ann=2C_hi?=",
             "deals deals 3", ""]
_TOS = ["Ann Lee <ann@example.org>", "bob@example.org", '"B\\\\ob" <b@x.org>', "",
        "=?utf-8?q?Ann?= <deals@x.org>", None]
_FROMS = ["Shop <news@shop.example>", "news@Other.example"]
_RECIPIENTS = ["ann@example.org", "Bob@x.org", None, "", "deals@x.org", "12@x.org", "y@x"]


def _reference(analysis: Analysis, recipient: str | None) -> CampaignKey:
    """campaign_key before the header's fields were kept: each read afresh."""
    header = header_block(analysis.data)
    sender = campaign._sender_domain(header_field(header, "from") or "")
    subject = header_field(header, "subject") or ""
    words = campaign._subject_words(subject)
    subject = normalise_subject(subject, campaign._personal_words(header, recipient, words))
    return CampaignKey(sender, analysis.list_id or "", subject, loads(analysis).skeleton)


def _analysis(sender: str, to: str | None, subject: str, list_id: bool) -> Analysis:
    header = f"From: {sender}\r\n" + (f"To: {to}\r\n" if to is not None else "")
    header += f"Subject: {subject}\r\n" + ("List-Id: <news.shop.example>\r\n" if list_id else "")
    return ENGINE.analyse((header + "MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
                           + _BODY + "\r\n").encode())


_MESSAGE = st.tuples(st.sampled_from(_FROMS), st.sampled_from(_TOS), st.sampled_from(_SUBJECTS),
                     st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(_RECIPIENTS)), min_size=1,
                max_size=8),
       st.lists(_MESSAGE, min_size=3, max_size=3))
def test_every_key_is_the_one_read_afresh(runs: list[tuple[int, str | None]],
                                          messages: list[tuple[str, str | None, str, bool]]
                                          ) -> None:
    analyses = [_analysis(*m) for m in messages]  # some equal headers, some not
    for which, recipient in runs:
        analysis = analyses[which]
        assert campaign_key(analysis, recipient) == _reference(analysis, recipient)


def test_a_personal_word_in_the_local_part_still_drops_it() -> None:
    analysis = _analysis("news@shop.example", "list@shop.example", "Ann, your 12 deals", True)
    assert campaign_key(analysis, "ann@example.org").subject == "your # deals"
    assert campaign_key(analysis, "bob@example.org").subject == "ann your # deals"
    assert campaign_key(analysis, "ann@example.org").subject == "your # deals"
