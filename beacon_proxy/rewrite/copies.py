"""What each recipient's copy gets: the precise rewrite, the fallback, or nothing yet.

This is where the promise "a refused recipient never gets a beacon" is kept,
on every path.  A message is prepared once (:class:`Prepared`: its analysis,
and for signed mail the analysis of its unwrapped form), then each copy is
decided here:

========================  ==========================================================
recipient, situation      copy (``Outcome``)
========================  ==========================================================
granted                   beacons point at the open endpoint (``rewritten``)
granted, cannot analyse   the original (``unmodified_granted``)
refused                   every tracker removed (``stripped``)
refused, signed           ``[policy] signed``: ``unwrap`` - the signed content,
                          rewritten (``unsigned``); ``hold``; ``deliver`` - signed
                          parts left as they are
refused, cannot analyse   ``[policy] unscannable``: ``neutralise`` - every remote
                          load in every renderable part neutralised
                          (:mod:`~beacon_proxy.rewrite.fallback`, ``fallback``);
                          ``hold``; ``deliver`` - what could be rewritten
                          (``unscanned``)
fallback impossible       held (``held``): deferred, and bounced at the queue
                          lifetime - never sent with a beacon
========================  ==========================================================

"Cannot analyse" is an analysis that failed (an internal error, the CPU
budget, a worker crash) or is not complete (``Analysis.unhandled``: broken
MIME, limits, renderable parts the precise path does not scan), or a render
that raised.  The fallback's result is the same for every refused recipient,
so it is computed once per message.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.engine import Analysis, Engine, Link, Rendered
from beacon_proxy.rewrite.fallback import FallbackResult, neutralise_message
from beacon_proxy.rewrite.signed import unwrap_signed

__all__ = ["CopyPolicy", "Decided", "Outcome", "Prepared", "Variant", "decide", "prepare"]

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    STRIPPED = "stripped"
    REWRITTEN = "rewritten"
    UNSIGNED = "unsigned"
    FALLBACK = "fallback"
    HELD = "held"
    UNMODIFIED_GRANTED = "unmodified_granted"
    UNSCANNED = "unscanned"


@dataclass(frozen=True, slots=True)
class CopyPolicy:
    """``[policy] unscannable`` and ``[policy] signed``: refused copies only."""

    unscannable: Literal["neutralise", "hold", "deliver"] = "neutralise"
    signed: Literal["unwrap", "hold", "deliver"] = "unwrap"


@dataclass(slots=True)
class Variant:
    """One form of a message (as received, or unwrapped) and its analysis."""

    data: bytes
    analysis: Analysis | None  # None: the analysis failed (``error`` says why)
    error: str | None = None
    _fallback: FallbackResult | None = field(default=None, repr=False)

    def fallback(self) -> FallbackResult:
        """The neutralised form, computed on first use (the same for every refused copy)."""
        if self._fallback is None:
            try:
                self._fallback = neutralise_message(self.data)
            except Exception as exc:  # then there is no safe copy: hold it
                log.exception("fallback failed")
                self._fallback = FallbackResult(None, 0, f"fallback error: {exc!r}")
        return self._fallback

    def why_not(self) -> tuple[str, ...]:
        """Why the precise path does not cover this variant (empty when it does)."""
        if self.analysis is None:
            return (f"analysis failed: {self.error}",)
        return self.analysis.unhandled


@dataclass(slots=True)
class Prepared:
    """A message ready for its copies."""

    original: Variant
    signed: bool = False  # it has signed (or opaque S/MIME) content
    unwrapped: Variant | None = None  # the signed content unwrapped, when that worked

    @property
    def list_id(self) -> str | None:
        analysis = self.original.analysis
        return analysis.list_id if analysis is not None else None


@dataclass(frozen=True, slots=True)
class Decided:
    """One recipient's copy: its bytes (None when held) and what happened."""

    data: bytes | None
    outcome: Outcome
    rendered: Rendered | None = None  # the precise render, when there was one
    problems: tuple[str, ...] = ()
    neutralised: int = 0  # fallback: constructs neutralised

    @property
    def held(self) -> bool:
        return self.data is None


def _analysed(engine: Engine, data: bytes) -> Variant:
    try:
        return Variant(data, engine.analyse(data))
    except Exception as exc:
        log.exception("analysis failed")
        return Variant(data, None, repr(exc)[:300])


def prepare(engine: Engine, data: bytes, rules: CopyPolicy) -> Prepared:
    """Prepare a message in this thread (``scan``, tests); the relay does the same
    asynchronously, under a CPU budget (:mod:`~beacon_proxy.rewrite.beacons`)."""
    original = _analysed(engine, data)
    signed = original.analysis is not None and original.analysis.signed
    prepared = Prepared(original, signed)
    if signed and rules.signed == "unwrap":
        unwrapped = unwrap_signed(data)
        if unwrapped is not None:
            prepared.unwrapped = _analysed(engine, unwrapped)
    return prepared


def _held(reason: str, problems: tuple[str, ...] = ()) -> Decided:
    return Decided(None, Outcome.HELD, None, (*problems, reason))


def decide(engine: Engine, prepared: Prepared, recipient: str | None, policy: Policy,
           rules: CopyPolicy, link: Link | None = None, *,
           diffed: Collection[tuple[int, int]] = ()) -> Decided:
    """The copy for one recipient (see the module docstring).

    ``diffed``: references of the original's analysis that campaign diffing
    found personal (``Engine.render``); not applied to an unwrapped variant,
    whose references are other ones.
    """
    if policy is Policy.GRANTED:
        return _granted(engine, prepared.original, recipient, link, diffed)
    variant, outcome = prepared.original, Outcome.STRIPPED
    problems: tuple[str, ...] = ()
    if prepared.signed and rules.signed != "deliver":
        if rules.signed == "hold":
            return _held("signed content ([policy] signed = hold)")
        if prepared.unwrapped is not None:
            variant, outcome = prepared.unwrapped, Outcome.UNSIGNED
        else:
            problems = ("signed content could not be unwrapped",)
    problems += variant.why_not()
    if not problems and variant.analysis is not None and engine.names_astray(
            variant.analysis, recipient):
        problems = ("a URL naming the recipient inside markup where browsers load nothing "
                    "(other readers may)",)
    if variant is not prepared.original:
        diffed = ()
    if not problems and variant.analysis is not None:
        try:
            rendered = engine.render(variant.analysis, recipient, policy, diffed=diffed)
        except Exception as exc:
            log.exception("render failed; falling back")
            problems = (f"render failed: {exc!r}",)
        else:
            return Decided(rendered.data, outcome, rendered, rendered.problems)
    if rules.unscannable == "hold":
        return _held("not scannable ([policy] unscannable = hold)", problems)
    if rules.unscannable == "deliver":
        return _deliver_unscanned(engine, variant, recipient, policy, problems, diffed)
    fallback = variant.fallback()
    if fallback.data is None:
        return _held(f"fallback impossible: {fallback.reason}", problems)
    return Decided(fallback.data, Outcome.FALLBACK, None, problems, fallback.neutralised)


def _granted(engine: Engine, variant: Variant, recipient: str | None,
             link: Link | None, diffed: Collection[tuple[int, int]]) -> Decided:
    problems = variant.why_not()
    if problems or variant.analysis is None:
        return Decided(variant.data, Outcome.UNMODIFIED_GRANTED, None, problems)
    try:
        rendered = engine.render(variant.analysis, recipient, Policy.GRANTED, link,
                                 diffed=diffed)
    except Exception as exc:
        log.exception("render failed; the consenting recipient gets the original")
        return Decided(variant.data, Outcome.UNMODIFIED_GRANTED, None,
                       (f"render failed: {exc!r}",))
    return Decided(rendered.data, Outcome.REWRITTEN, rendered, rendered.problems)


def _deliver_unscanned(engine: Engine, variant: Variant, recipient: str | None,
                       policy: Policy, problems: tuple[str, ...],
                       diffed: Collection[tuple[int, int]]) -> Decided:
    """``unscannable = "deliver"``: what the precise path could do, or the original."""
    if variant.analysis is not None:
        try:
            rendered = engine.render(variant.analysis, recipient, policy, diffed=diffed)
        except Exception:
            log.exception("render failed; delivering the original (unscannable = deliver)")
        else:
            return Decided(rendered.data, Outcome.UNSCANNED, rendered, problems)
    return Decided(variant.data, Outcome.UNSCANNED, None, problems)
