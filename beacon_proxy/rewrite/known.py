"""Known bytes skip analysis: a bounded cache of analyses keyed by the exact message.

Many sends of a newsletter are byte-identical (a non-personalised template,
one recipient per message): every copy used to cost a round trip through the
analysis pool (:mod:`~beacon_proxy.rewrite.pool`) for the same result.
:class:`AnalysisCache` keeps the last analyses, keyed by a SHA-256 digest of

* the *context*: what the analysis depends on besides the bytes - the
  fingerprint of the analyser (:attr:`Engine.fingerprint
  <beacon_proxy.rewrite.engine.Engine.fingerprint>`: the tracker rules, their
  allow-list, the engine's limits); and
* the exact message bytes, with their length.

A hit costs one hash of the message (about 0.045 ms for 70 KB; from 256 KB
in a thread, off the event loop) and one comparison of the bytes: the cached
analysis is returned only when the bytes it was made from are *equal* to the
bytes asked about, so not even a digest collision could apply an analysis to
other bytes (which could leak a beacon to a refused recipient).  Failed
analyses (an error, the CPU budget, a crash) are never cached: the next copy
tries again.

An analysis is recipient-independent and immutable (frozen dataclasses; the
lazily built ``references``/``findings`` of a part are the same whoever
builds them first), so one object serves every copy; everything per
recipient (consent, campaign diffing's judgement, the tokens) is done after
it, as before.  Campaign diffing still observes every message: a copy known
to its campaign is not learned again, exactly as without the cache.

Concurrent misses of the same bytes are merged (single flight): while one
copy's analysis runs, another copy of the same bytes waits for it instead of
sending the message to the pool again (a burst at start used to analyse one
newsletter once per connection).  The waiter checks the bytes are equal, as a
hit does; when the analysis fails or is cancelled, each waiter tries again on
its own, exactly as without the merge.

Hits, merged misses included, are counted in
``beacon_proxy_analyses_total{source="known"}``.

Bounds: at most ``entries`` analyses and ``max_bytes`` of estimated memory
(the message, its decoded HTML and the scan entries: :func:`footprint`),
least recently used first out; a message larger than ``max_message`` bytes
is not kept.  :meth:`AnalysisCache.clear` empties it (the relay does on
``SIGHUP``; the tracker rules do not change while the relay runs, and a
changed analyser has another fingerprint, so that is belt and braces).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from beacon_proxy.metrics import ANALYSES
from beacon_proxy.rewrite.engine import _REFUSED_KEPT, Analysis

__all__ = ["AnalysisCache", "cached", "footprint"]

DEFAULT_ENTRIES = 64
DEFAULT_BYTES = 32 << 20
DEFAULT_MESSAGE = 8 << 20
_HASH_IN_THREAD = 256 << 10  # bytes from which the digest is computed in a thread (~0.15 ms)
_PERSON = b"beacon-analysis\0"  # what BLAKE2b's person= said: these keys are no others
_PER_ENTRY = 800  # bytes per scanned reference (Entry, Finding, index), measured: ~780


def footprint(analysis: Analysis) -> int:
    """The estimated memory an analysis keeps alive, its message bytes included.

    Over-estimates the measured figure (tracemalloc: 237 KB for the 70 KB
    benchmark newsletter, estimated 301 KB without the shared copies): the
    decoded HTML counted twice (the part and its scan view), 800 bytes per
    reference, and room for the shared refused copies the engine keeps with
    the analysis (:meth:`Engine.render <beacon_proxy.rewrite.engine.Engine.render>`).
    """
    size = len(analysis.data) * (1 + _REFUSED_KEPT) + len(analysis.urls)  # + shared copies
    for part in analysis.parts:
        size += 2 * len(part.decoded) + _PER_ENTRY * len(part.entries)
    return size


class AnalysisCache:
    """The last analyses by message digest, bounded in entries and bytes (LRU)."""

    def __init__(self, context: bytes, *, entries: int = DEFAULT_ENTRIES,
                 max_bytes: int = DEFAULT_BYTES, max_message: int = DEFAULT_MESSAGE) -> None:
        if entries < 0 or max_bytes < 0 or max_message < 0:
            raise ValueError("cache bounds must not be negative")
        self.context = bytes(context)
        self.entries = entries
        self.max_bytes = max_bytes
        self.max_message = max_message
        self._items: OrderedDict[bytes, tuple[Analysis, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """The estimated bytes held (:func:`footprint` of each entry)."""
        return self._bytes

    def key(self, data: bytes) -> bytes:
        """The digest of the context, the message's length and its bytes.

        SHA-256, not BLAKE2b: OpenSSL's SHA-256 (SHA extensions on x86) hashes the
        70 KB newsletter in 0.044 ms of CPU, hashlib's own BLAKE2b in 0.083 ms.  The key
        lives in this process only, and a hit still needs equal bytes."""
        h = hashlib.sha256(_PERSON)
        h.update(len(self.context).to_bytes(8, "big"))
        h.update(self.context)
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
        return h.digest()

    def get(self, data: bytes, key: bytes | None = None) -> Analysis | None:
        """The analysis of exactly these bytes, if kept (``key``: :meth:`key` of ``data``)."""
        key = self.key(data) if key is None else key
        item = self._items.get(key)
        if item is None or item[0].data != data:  # equal bytes, not just an equal digest
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, data: bytes, analysis: Analysis, key: bytes | None = None) -> None:
        """Keep ``analysis`` of ``data`` (skipped when it is not of these bytes or too big)."""
        if analysis.data != data or len(data) > self.max_message or not self.entries:
            return
        size = footprint(analysis)
        if size > self.max_bytes:
            return
        key = self.key(data) if key is None else key
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (analysis, size)
        self._bytes += size
        while len(self._items) > self.entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


Analyse = Callable[[bytes], Awaitable[Analysis]]


def cached(analyse: Analyse, cache: AnalysisCache) -> Analyse:
    """``analyse`` behind ``cache``: known bytes answer at once, failures are not kept."""

    # misses being analysed now, by key: a copy of the same bytes that arrives
    # meanwhile waits for that analysis instead of sending the bytes again
    pending: dict[bytes, asyncio.Future[Analysis | None]] = {}

    async def known(data: bytes) -> Analysis:
        if len(data) > cache.max_message:  # never kept: not even hashed
            return await analyse(data)
        # hashlib lets go of the GIL: a big message is hashed while the loop runs on
        key = (cache.key(data) if len(data) <= _HASH_IN_THREAD
               else await asyncio.to_thread(cache.key, data))
        found = cache.get(data, key)
        if found is not None:
            ANALYSES.labels("known").inc()
            return found
        running = pending.get(key)
        if running is not None:
            # shielded: a waiter that is cancelled does not cancel the analysis
            shared = await asyncio.shield(running)
            if shared is not None and shared.data == data:  # equal bytes, as for a hit
                ANALYSES.labels("known").inc()
                return shared
            return await analyse(data)  # the first try failed: try again, as without it
        done: asyncio.Future[Analysis | None] = asyncio.get_running_loop().create_future()
        pending[key] = done
        analysis: Analysis | None = None
        try:
            analysis = await analyse(data)
            cache.put(data, analysis, key)
        finally:
            del pending[key]
            done.set_result(analysis)  # None after a failure or a cancellation
        return analysis

    return known
