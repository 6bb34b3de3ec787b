"""Known bytes skip analysis: a bounded cache of analyses keyed by the message's body.

Many sends of a newsletter are byte-identical (a non-personalised template,
one recipient per message), and most others differ only in their header
(``To``, ``Message-ID``, a sender's ids): every copy used to cost a round trip
through the analysis pool (:mod:`~beacon_proxy.rewrite.pool`) for the same
result.  :class:`AnalysisCache` keeps the last analyses, keyed by a SHA-256
digest of

* the *context*: what the analysis depends on besides the bytes - the
  fingerprint of the analyser (:attr:`Engine.fingerprint
  <beacon_proxy.rewrite.engine.Engine.fingerprint>`: the tracker rules, their
  allow-list, the engine's limits); and
* the message's *body* (the bytes after the first empty line,
  :func:`~beacon_proxy.headerfacts.body_start`; the whole message when it has
  none), with its length.

A message whose key is kept is answered in one of two ways, counted in
``beacon_proxy_analyses_total{source}``:

* ``known``: the cached analysis was made from *equal* bytes, header and all
  (compared, not just hashed, so not even a digest collision could apply an
  analysis to other bytes, which could leak a beacon to a refused recipient);
* ``header``: only the header differs.  :meth:`Engine.rebase
  <beacon_proxy.rewrite.engine.Engine.rebase>` proves that the header changes
  nothing the analysis depends on - the bodies compared byte for byte, the
  message parsed again by the real MIME parser and its tree equal to the
  cached one shifted by the header's change in length, the ``Content-Base``,
  ``Content-Location`` and signed parts read again (its docstring lists what
  the analysis reads from a header) - and derives the new message's analysis
  from the cached one (~0.2 ms for 70 KB, half of it the parse, instead of ~2 ms of
  analysis plus its round trip).  When the proof fails (a changed
  ``Content-Type``, boundary, charset or transfer encoding in the header, a
  header that moves the body, ...) the message is analysed as a new one and
  its analysis replaces the kept one.  A seeded differential fuzzer
  (``tests/rewrite/test_known_header_fuzz.py``: the real templates, the hostile
  messages, hundreds of header mutations a lenient client reads differently)
  holds every derived analysis to a fresh one, field by field and copy by copy.

A hit costs one hash of the body (about 0.045 ms for 70 KB; from 256 KB in a
thread, off the event loop, as is the rebase; none when the body equals the last
one keyed: :meth:`AnalysisCache.key`) and one comparison of the bytes.  The
derived analyses are not kept (the one kept still answers its own bytes as
``known``); one entry per body, so two headers the proof tells apart (two
``Content-Type`` spellings of one body) take turns.

An analysis is recipient-independent and immutable (frozen dataclasses; the
lazily built ``references``/``findings`` of a part are the same whoever
builds them first, and a derived analysis shares them: they depend on the
part's decoded bytes only), so one object serves every copy of its bytes;
everything per recipient (consent, campaign diffing's judgement, the tokens)
is done after it, as before.  Campaign diffing still observes every message
(its key reads the header: ``From``, ``Subject``, the ``List-Id``, which a
derived analysis reads from its own message): a copy known to its campaign
is not learned again, exactly as without the cache.

Concurrent misses of the same body are merged (single flight): while one
copy's analysis runs, another copy of the same body waits for it instead of
sending the message to the pool again (a burst at start used to analyse one
newsletter once per connection).  The waiter uses it as a hit would: equal
bytes, or a proven header-only change; otherwise, or when the analysis is
cancelled, each waiter analyses on its own, exactly as without the merge.

A failed analysis (an error, the CPU budget, a crash of the worker) is
remembered for :data:`FAILED_FOR` seconds, by the body's key and the header's
``Content-*`` and ``MIME-Version`` lines (what the parse of that body depends
on): a copy of the same body with the same content lines, waiting for it or
arriving later, gets :class:`KnownFailure` at once and takes the fail-closed
fallback, as the failed copy did, instead of spending the pool's budget on the
same bytes again (a newsletter that overruns its budget, sent as a thousand
one-recipient messages, would otherwise hold the analysis workers for a
thousand budgets, and every other message with them).  Other content lines
are analysed on their own; after :data:`FAILED_FOR` seconds (a retry of a
held copy, a quieter machine) the body is tried again.  This holds for
messages of any size (a big one is hashed in a thread).  Counted as
``beacon_proxy_analyses_total{source="failed"}``.

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
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

# The split of the key: where the body starts (the header facts' search, with the MIME
# parser's rule: Engine.rebase checks that the parser's root body starts there too).
# Named here as well, for the callers that split for this cache (footer.py).
from beacon_proxy.headerfacts import body_start
from beacon_proxy.metrics import ANALYSES, child
from beacon_proxy.rewrite.engine import _REFUSED_KEPT, Analysis

__all__ = ["FAILED_FOR", "AnalysisCache", "KnownFailure", "Rebase", "body_start", "cached",
           "content_lines", "footprint"]

DEFAULT_ENTRIES = 64
DEFAULT_BYTES = 32 << 20
DEFAULT_MESSAGE = 8 << 20
_HASH_IN_THREAD = 256 << 10  # bytes from which the digest is computed in a thread (~0.15 ms)
_PERSON = b"beacon-analysis\0"  # what BLAKE2b's person= said: these keys are no others
_PER_ENTRY = 800  # bytes per scanned reference (Entry, Finding, index), measured: ~780
#: Seconds a failed analysis answers for the same body and content lines.
FAILED_FOR = 300.0
_FAILED_KEPT = 256  # failures remembered at most (least recently failed first out)
#: A header line (with its folded continuations) naming the content: what a body's
#: parse reads from the header, spelled any way a lenient reader accepts.
_CONTENT_LINE = re.compile(
    rb"(?im)^[ \t]*(?:content-[^:\r\n]*|mime-version)[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*")


class KnownFailure(Exception):
    """The analysis of the same body (and content lines) failed moments ago."""

Rebase = Callable[[Analysis, bytes, int], Analysis | None]
"""``(analysis of other bytes, data, body_start(data))``: the analysis of ``data``
derived from one of a message with the same body, or None (:meth:`Engine.rebase
<beacon_proxy.rewrite.engine.Engine.rebase>`)."""


def content_lines(data: bytes, split: int) -> bytes:
    """The header's ``Content-*`` and ``MIME-Version`` lines (``data[:split]``, ``split``
    being :func:`body_start` of ``data``), in order, as they are: what tells two
    messages with one body apart for the parse.  Errs towards more lines (any field
    name that starts so, leading blanks), so it never calls two parses the same
    that a lenient reader would tell apart by them.

    >>> m = b"To: a\\r\\nContent-Type: text/html;\\r\\n charset=utf-8\\r\\nX: 1\\r\\n\\r\\nbody"
    >>> content_lines(m, body_start(m))
    b'Content-Type: text/html;\\r\\n charset=utf-8\\r'
    """
    return b"\n".join(m[0] for m in _CONTENT_LINE.finditer(data, 0, split))


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
    """The last analyses by the digest of their message's body, bounded in entries and
    bytes (LRU)."""

    def __init__(self, context: bytes, *, entries: int = DEFAULT_ENTRIES,
                 max_bytes: int = DEFAULT_BYTES, max_message: int = DEFAULT_MESSAGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if entries < 0 or max_bytes < 0 or max_message < 0:
            raise ValueError("cache bounds must not be negative")
        self.context = bytes(context)
        self.entries = entries
        self.max_bytes = max_bytes
        self.max_message = max_message
        self._items: OrderedDict[bytes, tuple[Analysis, int]] = OrderedDict()
        self._bytes = 0
        # failed analyses: (body key, content lines) -> (when it stops answering, why)
        self._failed: OrderedDict[tuple[bytes, bytes], tuple[float, str]] = OrderedDict()
        self._clock = clock
        # (message, where its body starts, key) of the last key made (see key())
        self._last_key: tuple[bytes, int, bytes] | None = None
        self.hits = 0  # equal bytes
        self.rebased = 0  # the same body under another header (Engine.rebase)
        self.misses = 0  # analysed
        self.failed = 0  # answered by a failure of the same body (KnownFailure)

    def __len__(self) -> int:
        return len(self._items)

    def fail(self, key: bytes, lines: bytes, exc: BaseException) -> None:
        """Remember that the analysis of the body ``key`` with these :func:`content_lines`
        failed, for :data:`FAILED_FOR` seconds."""
        self._failed.pop((key, lines), None)
        self._failed[key, lines] = (self._clock() + FAILED_FOR, repr(exc)[:200])
        while len(self._failed) > _FAILED_KEPT:
            self._failed.popitem(last=False)

    def failure(self, key: bytes, lines: bytes) -> KnownFailure | None:
        """The failure remembered for this body and content lines, if not too old."""
        item = self._failed.get((key, lines))
        if item is None:
            return None
        until, why = item
        if self._clock() >= until:
            del self._failed[key, lines]
            return None
        self.failed += 1
        ANALYSES.labels("failed").inc()
        return KnownFailure(f"the analysis of the same body failed within {FAILED_FOR:g} s: "
                            f"{why}")

    @property
    def size(self) -> int:
        """The estimated bytes held (:func:`footprint` of each entry)."""
        return self._bytes

    def key(self, data: bytes, split: int | None = None) -> bytes:
        """The digest of the context and the message's body (``data[split:]``, ``split``
        being :func:`body_start` of ``data``), with its length.

        SHA-256, not BLAKE2b: OpenSSL's SHA-256 (SHA extensions on x86) hashes the
        70 KB newsletter in 0.044 ms of CPU, hashlib's own BLAKE2b in 0.083 ms.  The key
        lives in this process only, and a hit still needs equal bytes (or a proven
        header-only change).

        The key depends on the body alone (the context is the cache's), so a body of up
        to 256 KB equal to the last one keyed, byte for byte (one ``memcmp``: 0.003 ms
        for 70 KB), has that one's key, without hashing: a newsletter sent as one
        message per recipient has one body under many headers.  (Bigger bodies are
        hashed in a thread, :func:`cached`, and not compared on it.)  Only a ``bytes``
        object is remembered so: a mutable buffer could change under the kept key."""
        split = body_start(data) if split is None else split
        size = len(data) - split
        last = self._last_key
        if last is not None and size <= _HASH_IN_THREAD:
            old, old_split, old_key = last
            # the last `size` bytes of data are its body: compared with the other body
            if len(old) - old_split == size and data.endswith(memoryview(old)[old_split:]):
                return old_key
        h = hashlib.sha256(_PERSON)
        h.update(len(self.context).to_bytes(8, "big"))
        h.update(self.context)
        h.update(size.to_bytes(8, "big"))
        h.update(memoryview(data)[split:])
        key = h.digest()
        # Only immutable bytes are remembered (the type says bytes; nothing checks it at
        # run time): a bytearray changed after this call would lend this key to what it
        # holds then.
        if size <= _HASH_IN_THREAD and type(data) is bytes:
            self._last_key = (data, split, key)  # one tuple, replaced whole (threads)
        return key

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

    def kept(self, key: bytes) -> Analysis | None:
        """The analysis kept under ``key`` (a message with the same body digest, maybe other
        bytes: the caller compares), marked as used; not counted."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, data: bytes, analysis: Analysis, key: bytes | None = None) -> None:
        """Keep ``analysis`` of ``data`` (skipped when it is not of these bytes or too big);
        it replaces the one kept for the same body."""
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
        self._failed.clear()
        self._last_key = None
        self._bytes = 0


Analyse = Callable[[bytes], Awaitable[Analysis]]


def cached(analyse: Analyse, cache: AnalysisCache, rebase: Rebase | None = None) -> Analyse:
    """``analyse`` behind ``cache``: known bytes answer at once, a known body under another
    header through ``rebase`` when it proves the header changes nothing (None: equal bytes
    only); a failure answers the same body and content lines for a while
    (:class:`KnownFailure`)."""

    # misses being analysed now, by key: a copy of the same body that arrives
    # meanwhile waits for that analysis instead of sending the bytes again
    pending: dict[bytes, asyncio.Future[Analysis | None]] = {}

    async def reuse(base: Analysis, data: bytes, split: int) -> Analysis | None:
        """``base`` itself for equal bytes, else its rebase onto ``data`` (None: not proven)."""
        if base.data == data:  # equal bytes, not just an equal digest
            cache.hits += 1
            child(ANALYSES, "known").inc()
            return base
        if rebase is None or split == 0:  # no header to tell apart from the body
            return None
        derived = (rebase(base, data, split) if len(data) <= _HASH_IN_THREAD
                   else await asyncio.to_thread(rebase, base, data, split))
        if derived is not None:
            cache.rebased += 1
            ANALYSES.labels("header").inc()
        return derived

    async def analysed(data: bytes, key: bytes, lines: bytes) -> Analysis:
        """A new analysis of ``data``; its failure is remembered."""
        cache.misses += 1
        try:
            return await analyse(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            cache.fail(key, lines, exc)
            raise

    def refused(key: bytes, lines: bytes) -> None:
        failure = cache.failure(key, lines)
        if failure is not None:
            raise failure

    async def known(data: bytes) -> Analysis:
        split = body_start(data)
        big = len(data) > _HASH_IN_THREAD
        # hashlib lets go of the GIL: a big message is hashed while the loop runs on
        key = await asyncio.to_thread(cache.key, data, split) if big else cache.key(data, split)
        if len(data) > cache.max_message:  # never kept; only a failure is remembered
            lines = content_lines(data, split)
            refused(key, lines)
            return await analysed(data, key, lines)
        base = cache.kept(key)
        if base is not None:
            found = await reuse(base, data, split)
            if found is not None:
                return found
        lines = content_lines(data, split)  # a miss: only failures are told apart by them
        refused(key, lines)
        running = pending.get(key)
        if running is not None:
            # shielded: a waiter that is cancelled does not cancel the analysis
            shared = await asyncio.shield(running)
            found = None if shared is None else await reuse(shared, data, split)
            if found is not None:
                return found
            refused(key, lines)  # it failed: so would this copy's
            return await analysed(data, key, lines)  # cancelled, or other content lines
        done: asyncio.Future[Analysis | None] = asyncio.get_running_loop().create_future()
        pending[key] = done
        analysis: Analysis | None = None
        try:
            analysis = await analysed(data, key, lines)
            cache.put(data, analysis, key)
        finally:
            del pending[key]
            done.set_result(analysis)  # None after a failure or a cancellation
        return analysis

    return known
