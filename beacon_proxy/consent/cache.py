"""The relay's decision cache: what the store said, until the store changes.

The relay asks the store for every message's decisions
(:meth:`~beacon_proxy.consent.sqlstore.SqlStore.decisions`).  Most of the
time nothing changed since the last message to the same recipient, so each
process keeps the last answers in a bounded LRU, keyed by the recipient as
the relay passes it (a hit parses no address and computes no keyed hash) and
the message's list.  What keeps it exact is the store's
**decision version** (migration 0005): a counter that every change of
consent or suppressions moves in the same transaction, read in the same
statement as the decisions looked up.  The cache holds answers of one
version.  When a lookup reads a newer one, it reads the **change log**
(``decision_changes``: the keyed hashes of the addresses each change
touched, written by the store in the change's transaction) since the
cache's version, forgets those answers only, and reads again the hits among
them; when the log does not cover every version in between (a change made
with SQL outside beacon-proxy, which the triggers still count; or pruned)
it forgets everything.

When the version is read:

* **PostgreSQL**: in every lookup (one statement: the misses and the
  version, or the version alone when every recipient is a hit), so a change
  committed before a lookup starts applies to it, on every node.  A change
  also notifies (``LISTEN beacon_proxy_decisions``) every node; while that
  listening connection is down or reconnecting the cache is bypassed, and
  it starts empty when it is back.
* **SQLite**: ``PRAGMA data_version`` on a connection of its own, a few
  microseconds on the event loop, tells whether any connection (another
  process, or this process's writer) committed anything since the version
  was last read: when nothing was, the hits need no statement at all; when
  something was, the lookup reads the version as PostgreSQL does.  A lookup
  with misses runs the statement anyway: once a data version is held, it
  reads the version there and no ``PRAGMA`` (the data version held stays).

    >>> cache = DecisionCache(2)
    >>> cache.advance(7)
    >>> cache.put("a@x.org", "", Decision.GRANTED, "h-a", 7)
    >>> cache.put("b@x.org", "", Decision.REFUSED, "h-b", 7)
    >>> cache.get("a@x.org", "")
    (<Decision.GRANTED: 'granted'>, 'h-a')
    >>> cache.move(7, 8, {"h-b"})  # b changed: forget b only
    >>> cache.get("b@x.org", "") is None, cache.version
    (True, 8)
    >>> cache.advance(9)  # a change nobody logged: forget all
    >>> len(cache)
    0
"""

from __future__ import annotations

import collections
import enum
import sys
from collections import OrderedDict

from beacon_proxy.consent.policy import Decision

__all__ = ["DEFAULT_CACHE_SIZE", "LOOKUPS", "LOOP_READS", "CacheMode", "DecisionCache"]

#: (recipient, list) answers per process: about 530 bytes each in the relay (tracemalloc,
#: 30-character addresses: the key tuple and the address, the 64-character keyed hash,
#: the LRU node, the hash index; 790 before the index kept a lone key without a set and
#: one list-key string served all of a list's entries), so ~11 MB a process.
DEFAULT_CACHE_SIZE = 20_000
#: Recipients the relay looked up since the process started, by result: ``hit``,
#: ``miss``, ``bypass`` (not trusted: PostgreSQL's listener down, SQLite busy), ``off``
#: (no cache).  Served as ``beacon_proxy_decision_cache_total`` by :mod:`beacon_proxy.metrics`
#: (kept here so the store does not import the metrics library: the command line
#: opens the store too).
LOOKUPS: collections.Counter[str] = collections.Counter()
#: SQLite's decision statements by where they ran: ``loop`` (on the event loop's own
#: connection), ``busy`` (tried there, the file was busy or locked: run on the reader's
#: thread instead), ``thread`` (too many addresses for the loop).  Served as
#: ``beacon_proxy_decision_reads_total`` (see :mod:`beacon_proxy.consent.sqlite`).
LOOP_READS: collections.Counter[str] = collections.Counter()


class CacheMode(enum.Enum):
    """How far a lookup may trust the cache, as the backend sees it now."""

    TRUST = "trust"  # nothing changed since the version was read: hits need no statement
    CHECK = "check"  # read the version with the misses (one statement)
    BYPASS = "bypass"  # do not use it (PostgreSQL: the listening connection is down)


class DecisionCache:
    """At most ``capacity`` decisions of one decision version, least recently used out;
    each kept with the keyed hash of its address, by which a logged change evicts it."""

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE) -> None:
        if capacity < 1:
            raise ValueError("a decision cache holds at least one entry")
        self.capacity = capacity
        #: The decision version every entry belongs to; None: unknown (holds nothing).
        self.version: int | None = None
        self._entries: OrderedDict[tuple[str, str], tuple[Decision, str]] = OrderedDict()
        #: The keys kept for each keyed hash: one key alone (by far the usual case: one
        #: address, one list), a set only for several (a set costs ~200 bytes a hash).
        self._by_hash: dict[str, tuple[str, str] | set[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, list_key: str) -> tuple[Decision, str] | None:
        """The decision and the address's keyed hash, or None."""
        entry = self._entries.get((key, list_key))
        if entry is not None:
            self._entries.move_to_end((key, list_key))
        return entry

    def put(self, key: str, list_key: str, decision: Decision, key_hash: str,
            version: int) -> None:
        """Keep an answer read at ``version`` (ignored unless that is the cache's)."""
        if version != self.version:
            return
        # One string per list for all its entries (each lookup normalises the List-Id
        # into a new one: 65 bytes an entry otherwise); interned strings die unused.
        where = (key, sys.intern(list_key))
        old = self._entries.get(where)
        if old is not None and old[1] != key_hash:
            self._unindex(where, old[1])
        self._entries[where] = (decision, key_hash)
        self._entries.move_to_end(where)
        self._index(where, key_hash)
        if len(self._entries) > self.capacity:
            gone, (_, h) = self._entries.popitem(last=False)
            self._unindex(gone, h)

    def _index(self, where: tuple[str, str], key_hash: str) -> None:
        keys = self._by_hash.get(key_hash)
        if keys is None:
            self._by_hash[key_hash] = where
        elif isinstance(keys, set):
            keys.add(where)
        elif keys != where:
            self._by_hash[key_hash] = {keys, where}

    def _unindex(self, where: tuple[str, str], key_hash: str) -> None:
        keys = self._by_hash.get(key_hash)
        if keys is None:
            return
        if isinstance(keys, set):
            keys.discard(where)
            if len(keys) == 1:
                self._by_hash[key_hash] = next(iter(keys))
            elif not keys:
                del self._by_hash[key_hash]
        elif keys == where:
            del self._by_hash[key_hash]

    def _drop(self, key_hash: str) -> None:
        """Forget every answer kept for this keyed hash."""
        keys = self._by_hash.pop(key_hash, None)
        if keys is None:
            return
        for where in (keys if isinstance(keys, set) else (keys,)):
            self._entries.pop(where, None)

    def move(self, held: int | None, version: int, changed: set[str] | None) -> None:
        """The store is at ``version`` (or was, when a statement read it), and
        ``changed`` are the keyed hashes changed since ``held`` (None: unknown).  A
        newer version than the cache's evicts those (everything, when unknown or when
        the cache is older than ``held``); an older one (a slower concurrent lookup)
        changes nothing."""
        if self.version is not None and version <= self.version:
            return
        if (changed is None or held is None or self.version is None
                or self.version < held):
            self._entries.clear()
            self._by_hash.clear()
        else:
            for h in changed:
                self._drop(h)
        self.version = version

    def forget(self, hashes: set[str]) -> None:
        """Drop the answers of these addresses (keyed hashes); the version stays."""
        for h in hashes:
            self._drop(h)

    def advance(self, version: int) -> None:
        """The store is at ``version``, nothing known of what changed: a newer version
        than the cache's empties it."""
        self.move(None, version, None)

    def invalidate(self) -> None:
        """Forget everything, the version too (the next lookup reads it again)."""
        self._entries.clear()
        self._by_hash.clear()
        self.version = None
