"""The relay's rewrite step with beacon handling: trace header + the engine.

Delivery calls :meth:`BeaconStep.render` once per recipient with the same
message bytes; the recipient-independent analysis is cached per message
(keyed by queue id and checked by identity of the bytes object, so a stale
entry can never be used for other bytes), and each recipient's copy is then
a cheap render.  For ``granted`` recipients, trackers point at
``public_url + "/o/<token>"``, the token binding the recipient, the list, the
queue id and the original URL.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.engine import Analysis, Engine, Link
from beacon_proxy.rewrite.step import Copy, received_header
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Claims, Purpose, Tokens, url_identity

__all__ = ["BeaconStep", "open_links"]

log = logging.getLogger(__name__)


def open_links(tokens: Tokens, public_url: str, recipient: str, list_id: str | None,
               queue_id: str) -> Link:
    """The ``link`` callback for one copy: tracker URL -> ``public_url/o/<token>``."""
    base = public_url.rstrip("/") + "/o/"

    def link(url: str) -> str:
        claims = Claims(Purpose.OPEN, recipient, list_id, queue_id, url_identity(url))
        return base + tokens.mint(claims)

    return link


class BeaconStep:
    def __init__(self, engine: Engine, tokens: Tokens, *, public_url: str, hostname: str,
                 cache_size: int = 64) -> None:
        self.engine = engine
        self.tokens = tokens
        self.public_url = public_url.rstrip("/")
        self.hostname = hostname
        self._cache: OrderedDict[str, tuple[bytes, Analysis]] = OrderedDict()
        self._cache_size = cache_size

    def analysis(self, envelope: Envelope, data: bytes) -> Analysis:
        key = envelope.queue_id
        hit = self._cache.get(key)
        if hit is not None and hit[0] is data:
            self._cache.move_to_end(key)
            return hit[1]
        analysis = self.engine.analyse(data)
        self._cache[key] = (data, analysis)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return analysis

    def render(self, envelope: Envelope, data: bytes, recipient: str, policy: Policy) -> Copy:
        trace = received_header(envelope, recipient, self.hostname)
        try:
            analysis = self.analysis(envelope, data)
            link = open_links(self.tokens, self.public_url, recipient, analysis.list_id,
                              envelope.queue_id)
            rendered = self.engine.render(analysis, recipient, policy, link)
        except Exception as exc:  # never lose or block mail over a rewrite bug
            log.exception("rewrite of %s failed; delivering it unmodified", envelope.queue_id)
            return Copy(trace + data, {"beacons": None, "rewrite_problems": [f"error: {exc!r}"]})
        return Copy(trace + rendered.data, rendered.report(policy, analysis.problems))
