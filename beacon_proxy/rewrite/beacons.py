"""The relay's rewrite step with beacon handling: trace header + the engine.

Delivery calls :meth:`BeaconStep.prepare` once per attempt: the
recipient-independent analysis (through an :data:`Analyse` function, which
the relay backs with a process pool under a CPU budget,
:mod:`~beacon_proxy.rewrite.pool`), and for signed mail the analysis of its
unwrapped form.  Each recipient's copy is then a cheap render, decided by
:func:`~beacon_proxy.rewrite.copies.decide`: precise, fallback or held.  For
``granted`` recipients, trackers point at ``public_url + "/o/<token>"``, the
token binding the recipient, the list, the queue id and the original URL
(:mod:`~beacon_proxy.rewrite.links`).

With campaign diffing (:mod:`~beacon_proxy.rewrite.diffing`), ``prepare``
also learns the message into its campaign's memory and judges it: the
references that differ between recipients' copies become trackers in every
copy, and the refused copies of a new campaign's first message wait briefly
for a second one (a held copy with a :class:`~beacon_proxy.rewrite.step.Wait`).

With an :class:`~beacon_proxy.rewrite.known.AnalysisCache`, a message whose
exact bytes were analysed recently is not analysed again (its analysis is
reused; campaign diffing still observes it), nor is one whose body was and
whose header is proven to change nothing the analysis depends on
(:meth:`Engine.rebase <beacon_proxy.rewrite.engine.Engine.rebase>`).

Every copy is counted in ``beacon_proxy_copies_total`` by outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from beacon_proxy.consent.policy import Policy
from beacon_proxy.metrics import COPIES, child
from beacon_proxy.rewrite.copies import CopyPolicy, Decided, Prepared, Variant, decide
from beacon_proxy.rewrite.diffing import NOTHING, CampaignDiffing, Observation
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.known import AnalysisCache, cached
from beacon_proxy.rewrite.links import open_links
from beacon_proxy.rewrite.signed import unwrap_signed
from beacon_proxy.rewrite.step import (
    Copy,
    CopyStep,
    Recipient,
    Spliced,
    TraceHeader,
    Wait,
    run_steps,
)
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

__all__ = ["Analyse", "BeaconStep", "inline_analyse"]

log = logging.getLogger(__name__)

Analyse = Callable[[bytes], Awaitable[Analysis]]
"""Analyse one message; raises when it cannot (the copy then falls back)."""

_THREAD_BYTES = 1 << 20  # unwrap big messages off the event loop


def inline_analyse(engine: Engine) -> Analyse:
    """Analysis in this process (a thread for big messages): for tests and ``scan``."""

    async def analyse(data: bytes) -> Analysis:
        if len(data) > _THREAD_BYTES:
            return await asyncio.to_thread(engine.analyse, data)
        return engine.analyse(data)

    return analyse


async def _variant(analyse: Analyse, data: bytes) -> Variant:
    try:
        analysis = await analyse(data)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the copy falls back; never lose or block mail over it
        log.warning("analysis failed: %r", exc)
        return Variant(data, None, repr(exc)[:300])
    return Variant(_shared(data, analysis), analysis)


def _shared(data: bytes, analysis: Analysis) -> bytes:
    """The bytes object the copies name as their original: the analysis's own when it
    holds *equal* bytes (a known-bytes hit), else ``data``.

    Every message with the same bytes then shares one ``original`` object, and the
    steps that remember work per original object (DKIM's body hash of the last copy,
    the sender's parsed header: :mod:`~beacon_proxy.rewrite.dkim`) reuse it across
    messages instead of per message only; they still compare each copy's bytes with
    what they remember.  The equality is checked here (one ``memcmp``, some 5 us for
    70 KB), not taken from the cache.
    """
    kept = analysis.data
    if kept is not data and len(kept) == len(data) and kept == data:
        return kept
    return data


class _Message:
    """A prepared message: each recipient's copy is the beacon step, then the others."""

    def __init__(self, step: BeaconStep, envelope: Envelope, prepared: Prepared,
                 campaign: Observation = NOTHING) -> None:
        self.step, self.envelope, self.prepared = step, envelope, prepared
        self.campaign = campaign

    @property
    def size(self) -> int:
        return len(self.prepared.original.data)

    def render(self, recipient: str, policy: Policy) -> Copy:
        steps = (self._beacons, *self.step.steps)
        return run_steps(steps, Copy(b""), Recipient(self.envelope, recipient, policy,
                                                     self.prepared.original.data))

    def _beacons(self, copy: Copy, recipient: Recipient) -> Copy:
        """The first step: this recipient's copy of the message, precise, fallback or held."""
        step, env = self.step, recipient.envelope
        # The List-Id read once, when the message was received (beacon_proxy.headerfacts)
        link = open_links(step.tokens, step.public_url, recipient.address, env.list_id,
                          env.queue_id, forward=step.forward_opens)
        campaign = self.campaign
        if campaign.wait_until is not None and recipient.policy is Policy.REFUSED:
            assert campaign.campaign is not None
            report = {**copy.report, **campaign.report(), "outcome": "waiting"}
            return Copy(b"", report, held="the first copy of a new campaign waits for a "
                        "second one to compare with (campaign diffing)",
                        wait=Wait(campaign.wait_until, campaign.campaign))
        decided = decide(step.engine, self.prepared, recipient.address, recipient.policy,
                         step.policy, link, diffed=campaign.diffed)
        child(COPIES, decided.outcome.value).inc()
        report = {**copy.report, **campaign.report(), **_report(decided, recipient.policy)}
        if decided.data is None:
            return Copy(b"", report, held=decided.problems[-1])
        rendered = decided.rendered
        written = None if rendered is None or rendered.data is not decided.data \
            else rendered.written
        spliced = None if written is None else Spliced(decided.data, *written)
        return Copy(decided.data, report, spliced=spliced)


def _report(decided: Decided, policy: Policy) -> dict[str, Any]:
    if decided.rendered is not None:
        out = decided.rendered.report(policy, decided.problems)
    else:
        out = {"beacons": None}
        if decided.problems:
            out["rewrite_problems"] = list(decided.problems)
    out["outcome"] = decided.outcome.value
    if decided.neutralised:
        out["neutralised"] = decided.neutralised
    return out


class BeaconStep:
    """The relay's rewrite: analyse once per attempt, then per recipient the beacon step
    and ``steps`` (by default the trace header; the relay wires its list in ``app.py``)."""

    def __init__(self, engine: Engine, tokens: Tokens, *, public_url: str, hostname: str,
                 policy: CopyPolicy | None = None, analyse: Analyse | None = None,
                 steps: Sequence[CopyStep] | None = None, forward_opens: bool = False,
                 campaigns: CampaignDiffing | None = None,
                 cache: AnalysisCache | None = None) -> None:
        self.engine = engine
        self.campaigns = campaigns  # None: no campaign diffing
        self.forward_opens = forward_opens  # open tokens carry the tracker URL
        self.tokens = tokens
        self.public_url = public_url.rstrip("/")
        self.hostname = hostname
        self.steps: tuple[CopyStep, ...] = tuple(
            steps if steps is not None else (TraceHeader(hostname),))
        self.policy = policy or CopyPolicy()
        analyse = analyse or inline_analyse(engine)
        # Known bytes skip analysis (rewrite/known.py): the cache's context must name the
        # analyser ``analyse`` runs (the relay's pool builds the same engine as ``engine``).
        # A body under another header is rebased by ``engine`` (its parse limits; other
        # limits than the analyser's can only make the proof fail, never pass wrongly).
        self.cache = cache
        self.analyse = analyse if cache is None else cached(analyse, cache, engine.rebase)

    async def prepare(self, envelope: Envelope, data: bytes) -> _Message:
        original = await _variant(self.analyse, data)
        signed = original.analysis is not None and original.analysis.signed
        prepared = Prepared(original, signed)
        if signed and self.policy.signed == "unwrap":
            unwrapped = (await asyncio.to_thread(unwrap_signed, data) if len(data) > _THREAD_BYTES
                         else unwrap_signed(data))
            if unwrapped is not None:
                prepared.unwrapped = await _variant(self.analyse, unwrapped)
                log.info("%s: signed content unwrapped for refused copies", envelope.queue_id)
        campaign = NOTHING
        if self.campaigns is not None and original.analysis is not None \
                and envelope.bounce_of is None:
            try:
                campaign = await self.campaigns.observe(envelope, data, original.analysis)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: the copies go with the single-message engine's findings
                log.exception("%s: campaign diffing failed", envelope.queue_id)
        return _Message(self, envelope, prepared, campaign)
