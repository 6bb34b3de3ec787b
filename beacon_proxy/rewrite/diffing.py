"""Campaign diffing in the relay: learn each copy once, judge it, let a new campaign wait.

:mod:`~beacon_proxy.rewrite.campaign` says what is personal by comparison;
this module is where the relay compares.  For every message it delivers
(once per delivery attempt, from :meth:`~beacon_proxy.rewrite.beacons.BeaconStep.prepare`),
:meth:`CampaignDiffing.observe`:

1. names the message's campaign (:func:`~beacon_proxy.rewrite.campaign.campaign_key`,
   bound to who submitted it: :func:`relay_digest`; a message without loaded
   remote references has nothing to diff and stops here);
2. learns the copy into the campaign's memory - once per recipient (:func:`copy_id`),
   whatever the number of attempts or of submissions of the same copy, and only
   the first ``learn`` copies of a campaign (16 by default).  The memory is a
   row of the consent store (:mod:`~beacon_proxy.consent.sqlcampaigns`),
   changed under a row lock, so every node of a PostgreSQL deployment learns
   from every node's copies.
   Once a campaign has learned its ``learn`` copies its memory no longer
   changes: each node keeps it in a bounded in-process cache and reads the
   store no more for that campaign;
3. judges the copy against the memory: the references personal by comparison
   become trackers with the reason ``campaign-diff`` in every refused copy;
4. says whether refused copies must **wait**.  A campaign whose memory has
   fewer than two copies cannot be judged: its first copy would go out
   undiffed.  So the refused copies of a campaign's first message wait up to
   ``hold`` seconds (60 by default; 0: never) from the message's receipt for
   a second copy - when the message is a personalised copy of list mail: one
   recipient, a ``List-Id`` (:func:`is_list_mail`; not ``List-Unsubscribe``
   alone, which transactional mail carries too), and some loaded URL with an
   identifier-like component (:func:`~beacon_proxy.rewrite.campaign.may_be_personal`;
   without one, comparison could find nothing).  The hold counts from receipt
   (from now, if the clock stepped back since).  When a second copy is learned on
   this node, the waiting messages are retried at once (:attr:`CampaignDiffing.on_learned`,
   wired to the scheduler); a copy waiting in another worker process or on another
   node is retried within :data:`beacon_proxy.app.CAMPAIGN_POLL` seconds (the relay
   reads the waited campaigns' rows while copies wait).  Once the hold is over, the copy goes out
   with the single-message engine's findings (and whatever was learned
   meanwhile).  Granted copies never wait.

Cost, per message of a known campaign: the key (the header's fields; the
loaded references and their skeleton hash are made once per analysis,
:func:`~beacon_proxy.rewrite.campaign.loads`), one hash per reference to judge
it; no store access.  While a campaign learns: one write transaction per new copy.

Repeats while a campaign learns: a copy this node already saw learned (the
same recipient again -- a newsletter resent to one address, a test send, a
retry) is judged with the memory this node holds from its last transaction
on that campaign, without a store round trip, for ``refresh`` seconds (10
by default) after that transaction; then the next repeat reads the store
again (one transaction; the stored memory is parsed again only when it
changed).  Learning is unchanged -- a copy is learned once, by the store's
list of learned copies, under the row lock -- and so is waiting: a repeat of
a campaign with fewer than two copies that may wait always reads the store,
so a second copy learned on another node is seen when the hold ends.  What
a repeat may miss is a copy another node learned in the last ``refresh``
seconds.  The memories kept for this are bounded like the frozen ones
(``cache_bytes`` each).

Failures: campaign diffing adds findings to the single-message engine's; it
never removes one.  When the store cannot be reached or holds a memory that
does not parse, the copy is judged with what is known (a corrupt memory is
started again from this copy), the event is logged, and delivery goes on.

Expiry: a campaign nothing was learned from for ``expire`` seconds (7 days
by default) is deleted by :meth:`CampaignDiffing.prune`, which the relay runs
every hour.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from beacon_proxy.consent.address import lookup_key
from beacon_proxy.consent.model import CampaignRecord
from beacon_proxy.consent.store import CampaignStore
from beacon_proxy.headerfacts import field as header_field
from beacon_proxy.headerfacts import header_block
from beacon_proxy.metrics import CAMPAIGN_COPIES, child
from beacon_proxy.rewrite.campaign import (
    CampaignMemory,
    campaign_key,
    loads,
    may_be_personal,
    references_at,
)
from beacon_proxy.rewrite.engine import Analysis
from beacon_proxy.spool.envelope import Envelope

__all__ = ["CampaignDiffing", "Observation", "copy_id", "is_list_mail", "relay_digest"]

log = logging.getLogger(__name__)

DEFAULT_LEARN = 16
DEFAULT_HOLD = 60.0
DEFAULT_EXPIRE = 7 * 86400.0
PRUNE_INTERVAL = 3600.0
DEFAULT_REFRESH = 10.0  # seconds a repeat of a learning campaign is judged without the store
CACHE_BYTES = 32 << 20  # frozen memories kept per process (their Python objects, estimated)
#: Bytes of Python objects per character of a memory's stored JSON (measured 5.1 to 7.5
#: over URL shapes and copy counts: sets and ints weigh more than packed hashes).
FOOTPRINT = 8
#: A copy with more loaded references is judged in a thread (up to ~0.2 s of CPU for
#: 1024 references that all differ), not on the event loop; a newsletter has ~125.
THREAD_REFERENCES = 256


@dataclass(frozen=True, slots=True)
class Observation:
    """What campaign diffing says about one message (the same for all its recipients)."""

    campaign: str | None = None  # the campaign's digest; None: not diffed
    copies: int = 0  # copies the memory had learned when this one was judged
    diffed: frozenset[tuple[int, int]] = frozenset()  # (part, index) personal by comparison
    wait_until: float | None = None  # refused copies wait until then (a new campaign)
    error: str | None = None  # the store failed; judged with what was known

    def report(self) -> dict[str, object]:
        """For the relay log of each copy."""
        if self.campaign is None:
            return {}
        out: dict[str, object] = {"campaign": self.campaign[:12],
                                  "campaign_copies": self.copies}
        if self.diffed:
            out["campaign_diffed"] = len(self.diffed)
        if self.error is not None:
            out["campaign_error"] = self.error
        return out


NOTHING = Observation()


def copy_id(envelope: Envelope, campaign: str) -> str:
    """How the store lists a learned copy: a short hash of its recipient, keyed by the
    campaign (of its queue id for a message to several recipients).

    By recipient, not by message: a client that did not see our ``250`` sends the
    same copy again under a new queue id, and a recipient's copy learned twice makes
    its id a repeat, which would hide that beacon in every later copy of the campaign.
    The recipient as the consent store keys it (:func:`lookup_key`), so one mailbox
    spelled two ways (``"ann"@x`` and ``ann@x``, a Unicode domain and its ``xn--``
    form) is one recipient here too.
    """
    if len(envelope.recipients) == 1:
        text, key = lookup_key(envelope.recipients[0]), campaign.encode("ascii", "replace")[:64]
    else:
        text, key = "\0" + envelope.queue_id, b""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=9,
                             key=key).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def is_list_mail(envelope: Envelope, data: bytes) -> bool:
    """List mail (a ``List-Id``, RFC 2919): a new campaign's first copy may wait for a
    second one.  Transactional mail often carries ``List-Unsubscribe`` and varies its
    subject per message, so each message would be a campaign of its own and wait the
    whole hold; a ``List-Id`` names a list, whose issues go to many recipients."""
    if envelope.list_id:
        return True
    return header_field(header_block(data), "list-id") is not None


def relay_digest(digest: str, envelope: Envelope) -> str:
    """The campaign's name in the relay: its key's digest bound to who submitted it
    (the envelope sender's domain and the authenticated user), so a client allowed to
    relay cannot pose as another sender's campaign by copying its ``From``."""
    domain = envelope.sender.rpartition("@")[2].lower()
    text = "\n".join((digest, domain, envelope.auth_user or ""))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _memory(text: str) -> CampaignMemory:
    """The stored memory; a new one for an empty row.  ``ValueError`` when corrupt."""
    if not text:
        return CampaignMemory()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return CampaignMemory.from_json(data)


@dataclass(slots=True)
class _Known:
    """A learning campaign as this node last read it from the store."""

    memory: CampaignMemory
    learned: frozenset[str]  # the copies the store listed as learned
    copies: int
    updated_at: datetime  # the stored row's, to tell whether it changed since
    read_at: float  # the clock when it was read
    size: int  # estimated bytes


class CampaignDiffing:
    """The relay's campaign diffing over a shared store (see the module docstring)."""

    def __init__(self, store: CampaignStore, *, learn: int = DEFAULT_LEARN,
                 hold: float = DEFAULT_HOLD, expire: float = DEFAULT_EXPIRE,
                 cache_bytes: int = CACHE_BYTES, refresh: float = DEFAULT_REFRESH,
                 clock: Callable[[], float] = time.time) -> None:
        if learn < 2:
            raise ValueError("a campaign must learn at least two copies to compare them")
        self.store = store
        self.learn = learn
        self.hold = hold
        self.expire = expire
        self.cache_bytes = cache_bytes
        self.refresh = refresh
        self.clock = clock
        #: Called with a campaign's digest when it learned its second copy on this node
        #: (the relay wires the scheduler's ``wake``: messages waiting for it go now).
        self.on_learned: Callable[[str], object] | None = None
        self._frozen: collections.OrderedDict[str, tuple[CampaignMemory, int]] = (
            collections.OrderedDict())
        self._frozen_bytes = 0
        self._known: collections.OrderedDict[str, _Known] = collections.OrderedDict()
        self._known_bytes = 0
        self._pruner: asyncio.Task[None] | None = None

    # -- per message ------------------------------------------------------------

    async def observe(self, envelope: Envelope, data: bytes, analysis: Analysis) -> Observation:
        """Learn (once) and judge one message; see the module docstring."""
        found = loads(analysis)  # made once per analysis: every copy of a newsletter
        refs, copy = found.refs, found.copy
        if not refs:
            return NOTHING
        recipient = envelope.recipients[0] if len(envelope.recipients) == 1 else None
        campaign = campaign_key(analysis, recipient)
        digest = relay_digest(campaign.digest, envelope)
        error: str | None = None
        key = copy_id(envelope, digest)
        memory = self._cached(digest)
        if memory is None:
            memory = self._repeat(digest, key, envelope, data, copy)
        if memory is None:
            try:
                memory = await self._learn(digest, key, copy)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # judged with the single-message engine alone
                log.warning("campaign %s: the store failed: %r", digest[:12], exc)
                CAMPAIGN_COPIES.labels("error").inc()
                error = repr(exc)[:200]
                memory = CampaignMemory()
        else:
            child(CAMPAIGN_COPIES, "known").inc()
        diffed: frozenset[tuple[int, int]] = frozenset()
        if memory.copies >= 2:
            judged = (memory.judge(copy) if len(copy) <= THREAD_REFERENCES
                      else await asyncio.to_thread(memory.judge, copy))
            diffed = references_at(refs, judged)
        wait_until = None
        # From receipt, or from now if the clock stepped back since: never longer than hold.
        start = min(envelope.received_at, self.clock())
        if memory.copies < 2 and self._may_wait(envelope, data, copy, start):
            wait_until = start + self.hold
            CAMPAIGN_COPIES.labels("waiting").inc()
        return Observation(digest, memory.copies, diffed, wait_until, error)

    def _may_wait(self, envelope: Envelope, data: bytes, copy: Sequence[tuple[str, str]],
                  start: float) -> bool:
        """Whether refused copies of a message its campaign cannot judge yet wait."""
        return self.clock() < start + self.hold and self._may_ever_wait(envelope, data, copy)

    def _may_ever_wait(self, envelope: Envelope, data: bytes,
                       copy: Sequence[tuple[str, str]]) -> bool:
        return (self.hold > 0
                and len(envelope.recipients) == 1  # one copy for many: nothing personal
                and is_list_mail(envelope, data) and may_be_personal(copy))

    def _repeat(self, digest: str, copy_key: str, envelope: Envelope, data: bytes,
                copy: Sequence[tuple[str, str]]) -> CampaignMemory | None:
        """The memory to judge a copy this node saw learned with, without the store; None
        when the store must be asked (see the module docstring)."""
        known = self._known.get(digest)
        if known is None or copy_key not in known.learned:
            return None
        if not 0 <= self.clock() - known.read_at < self.refresh:
            return None
        if known.copies < 2 and self._may_ever_wait(envelope, data, copy):
            return None  # a second copy learned elsewhere must end the wait
        self._known.move_to_end(digest)
        return known.memory

    async def _learn(self, digest: str, copy_key: str,
                     copy: Sequence[tuple[str, str]]) -> CampaignMemory:
        memory = CampaignMemory()
        learned = False
        known = self._known.get(digest)

        def change(record: CampaignRecord) -> CampaignRecord | None:
            # Runs inside the store's transaction, with the campaign's row locked.
            nonlocal memory, learned
            if ((copy_key in record.learned or record.copies >= self.learn)
                    and known is not None and known.copies == record.copies
                    and known.updated_at == record.updated_at):
                memory = known.memory  # nothing to learn and unchanged: no parse
                return None
            try:
                memory = _memory(record.memory)
            except ValueError as exc:
                log.warning("campaign %s: stored memory unreadable, learning it again: %s",
                            digest[:12], exc)
                memory = CampaignMemory()
                record = CampaignRecord("", 0, (), record.updated_at)
            if memory.copies >= self.learn or copy_key in record.learned:
                return None
            memory.learn(copy)
            learned = True
            text = json.dumps(memory.to_json(), separators=(",", ":"))
            return CampaignRecord(text, memory.copies, (*record.learned, copy_key),
                                  record.updated_at)

        record = await self.store.change_campaign(
            digest, change, at=datetime.fromtimestamp(self.clock(), UTC))
        CAMPAIGN_COPIES.labels("learned" if learned else "known").inc()
        if memory.copies >= self.learn:
            self._forget_known(digest)
            self._freeze(digest, memory, len(record.memory) * FOOTPRINT)
        else:
            self._remember(digest, _Known(memory, frozenset(record.learned), record.copies,
                                          record.updated_at, self.clock(),
                                          len(record.memory) * FOOTPRINT))
        if learned and memory.copies == 2 and self.on_learned is not None:
            self.on_learned(digest)
        return memory

    def _cached(self, digest: str) -> CampaignMemory | None:
        item = self._frozen.get(digest)
        if item is None:
            return None
        self._frozen.move_to_end(digest)
        return item[0]

    def _remember(self, digest: str, known: _Known) -> None:
        self._forget_known(digest)
        if known.size > self.cache_bytes:
            return
        self._known[digest] = known
        self._known_bytes += known.size
        while self._known_bytes > self.cache_bytes:
            _, dropped = self._known.popitem(last=False)
            self._known_bytes -= dropped.size

    def _forget_known(self, digest: str) -> None:
        old = self._known.pop(digest, None)
        if old is not None:
            self._known_bytes -= old.size

    def _freeze(self, digest: str, memory: CampaignMemory, size: int) -> None:
        if digest in self._frozen or size > self.cache_bytes:
            return
        self._frozen[digest] = (memory, size)
        self._frozen_bytes += size
        while self._frozen_bytes > self.cache_bytes:
            _, (_, dropped) = self._frozen.popitem(last=False)
            self._frozen_bytes -= dropped

    # -- expiry -----------------------------------------------------------------

    async def prune(self) -> int:
        """Delete campaigns nothing was learned from for ``expire`` seconds; how many."""
        before = datetime.fromtimestamp(self.clock() - self.expire, UTC)
        removed = await self.store.prune_campaigns(before)
        if removed:
            log.info("campaign memory: %d expired campaigns removed", removed)
        return removed

    async def start(self) -> None:
        if self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_loop(), name="campaign-prune")

    async def stop(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: next time
                log.warning("campaign memory: prune failed: %r", exc)
            await asyncio.sleep(PRUNE_INTERVAL)
