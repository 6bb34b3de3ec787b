"""The relay's rewrite step: the beacon step first, then the wired steps, per recipient."""

from __future__ import annotations

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.known import AnalysisCache, cached
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient, TraceHeader
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Purpose, Tokens
from tests.rewrite.hostile import MESSAGES, tracker_traces

ENGINE = Engine(load_rules())


def _step() -> BeaconStep:
    def footer(copy: Copy, recipient: Recipient) -> Copy:
        return Copy(copy.data + b"<!-- after beacons -->", {**copy.report, "footer": True})

    return BeaconStep(ENGINE, Tokens(["a test secret of some length"]),
                      public_url="https://prefs.example", hostname="relay.example",
                      steps=(footer, TraceHeader("relay.example")))


def _env() -> Envelope:
    return Envelope("Q1", "news@shop.example", ("r@x.example",), list_id="news.shop.example")


async def test_the_beacon_step_runs_first_then_the_wired_steps() -> None:
    prepared = await _step().prepare(_env(), MESSAGES["missing_close"]())
    copy = prepared.render("r@x.example", Policy.REFUSED)
    assert copy.held is None and tracker_traces(copy.data) == []
    assert copy.data.startswith(b"Received: ") and copy.data.endswith(b"<!-- after beacons -->")
    assert copy.report["outcome"] == "stripped" and copy.report["footer"] is True


async def test_a_held_copy_skips_the_other_steps() -> None:
    data = (b"Subject: x\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqG\r\n")
    copy = (await _step().prepare(_env(), data)).render("r@x.example", Policy.REFUSED)
    assert copy.held is not None and copy.data == b"" and "footer" not in copy.report


async def test_granted_links_carry_the_envelope_list_id() -> None:
    step = _step()
    copy = (await step.prepare(_env(), MESSAGES["missing_close"]())).render(
        "r@x.example", Policy.GRANTED)
    token = copy.data.split(b"https://prefs.example/o/", 1)[1].split(b'"', 1)[0].decode()
    claims = step.tokens.verify(token, Purpose.OPEN)
    assert claims.list_id == "news.shop.example" and claims.recipient == "r@x.example"


async def test_a_bug_in_campaign_diffing_does_not_stop_the_copies() -> None:
    class Broken:
        async def observe(self, envelope: Envelope, data: bytes, analysis: object) -> None:
            raise RuntimeError("a campaign diffing bug")

    step = _step()
    step.campaigns = Broken()  # type: ignore[assignment]
    prepared = await step.prepare(_env(), MESSAGES["missing_close"]())
    copy = prepared.render("r@x.example", Policy.REFUSED)
    assert copy.held is None and tracker_traces(copy.data) == []
    assert copy.report["outcome"] == "stripped" and "campaign" not in copy.report


async def test_messages_with_equal_bytes_share_one_original() -> None:
    """With known bytes (rewrite/known.py), a message whose bytes equal an analysed
    one's names the analysis's bytes object as its original: the steps that remember
    work per original (DKIM's last body) then serve every such message.  The copies
    are the same as without the sharing."""
    step = _step()
    step.cache = AnalysisCache(ENGINE.fingerprint)
    step.analyse = cached(inline_analyse(ENGINE), step.cache)
    first = MESSAGES["missing_close"]()
    again = bytes(bytearray(first))  # equal bytes, another object
    assert again is not first
    one = await step.prepare(_env(), first)
    two = await step.prepare(_env(), again)
    assert two.prepared.original.data is one.prepared.original.data
    plain = await _step().prepare(_env(), again)  # no cache: its own bytes
    assert plain.prepared.original.data is again
    for policy in Policy:
        assert two.render("r@x.example", policy) == plain.render("r@x.example", policy)


async def test_an_analysis_of_other_bytes_is_never_taken_as_the_original() -> None:
    """The sharing is proven by comparing the bytes, not taken from the analyser: one
    that answers with another message's analysis (a cache bug) does not make that
    message the original."""
    other = MESSAGES["missing_close"]()
    data = other.replace(b"a", b"b", 1)
    assert len(data) == len(other) and data != other
    wrong = ENGINE.analyse(other)

    async def buggy(_: bytes) -> Analysis:
        return wrong

    step = _step()
    step.analyse = buggy
    prepared = await step.prepare(_env(), data)
    assert prepared.prepared.original.data is data
