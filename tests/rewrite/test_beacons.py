"""The relay's rewrite step: the beacon step first, then the wired steps, per recipient."""

from __future__ import annotations

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.engine import Engine
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
