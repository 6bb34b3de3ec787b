"""The relay's decision cache: what the store said, until the store changes.

The relay asks the store for every message's decisions
(:meth:`~beacon_proxy.consent.sqlstore.SqlStore.decisions`).  Most of the
time nothing changed since the last message to the same recipient, so each
process keeps the last answers in a bounded LRU, keyed by the recipient as
the relay passes it (a hit parses no address and computes no keyed hash) and
the message's list.  What keeps it exact is the store's
**decision version** (migration 0005): a counter that every change of
consent or suppressions bumps in the same transaction (triggers), read in
the same statement as the decisions looked up.  The cache holds answers of
one version only; a lookup that reads another version forgets them all.

When the version is read:

* **PostgreSQL**: in every lookup (one statement: the misses and the
  version, or the version alone when every recipient is a hit), so a change
  committed before a lookup starts applies to it, on every node.  A change
  also notifies (``LISTEN beacon_proxy_decisions``) every node, which then
  forgets its answers at once; while that listening connection is down or
  reconnecting the cache is bypassed, and it starts empty when it is back.
* **SQLite**: ``PRAGMA data_version`` on a connection of its own, a few
  microseconds on the event loop, tells whether any connection (another
  process, or this process's writer) committed anything since the version
  was last read: when nothing was, the hits need no statement at all; when
  something was, the lookup reads the version as PostgreSQL does.

    >>> cache = DecisionCache(2)
    >>> cache.advance(7)
    True
    >>> cache.put("a@x.org", "", Decision.GRANTED, 7)
    >>> cache.get("a@x.org", "")
    <Decision.GRANTED: 'granted'>
    >>> cache.advance(8)  # the store changed: forget
    True
    >>> cache.get("a@x.org", "") is None
    True
"""

from __future__ import annotations

import collections
import enum
from collections import OrderedDict

from beacon_proxy.consent.policy import Decision

__all__ = ["DEFAULT_CACHE_SIZE", "LOOKUPS", "CacheMode", "DecisionCache"]

DEFAULT_CACHE_SIZE = 100_000  # (recipient, list) answers per process, ~200 bytes each
#: Recipients the relay looked up since the process started, by result: ``hit``,
#: ``miss``, ``bypass`` (not trusted: PostgreSQL's listener down, SQLite busy), ``off``
#: (no cache).  Served as ``beacon_proxy_decision_cache_total`` by :mod:`beacon_proxy.metrics`
#: (kept here so the store does not import the metrics library: the command line
#: opens the store too).
LOOKUPS: collections.Counter[str] = collections.Counter()


class CacheMode(enum.Enum):
    """How far a lookup may trust the cache, as the backend sees it now."""

    TRUST = "trust"  # nothing changed since the version was read: hits need no statement
    CHECK = "check"  # read the version with the misses (one statement)
    BYPASS = "bypass"  # do not use it (PostgreSQL: the listening connection is down)


class DecisionCache:
    """At most ``capacity`` decisions of one decision version, least recently used out."""

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE) -> None:
        if capacity < 1:
            raise ValueError("a decision cache holds at least one entry")
        self.capacity = capacity
        #: The decision version every entry belongs to; None: unknown (holds nothing).
        self.version: int | None = None
        self._entries: OrderedDict[tuple[str, str], Decision] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, list_key: str) -> Decision | None:
        decision = self._entries.get((key, list_key))
        if decision is not None:
            self._entries.move_to_end((key, list_key))
        return decision

    def put(self, key: str, list_key: str, decision: Decision, version: int) -> None:
        """Keep an answer read at ``version`` (ignored unless that is the cache's)."""
        if version != self.version:
            return
        self._entries[(key, list_key)] = decision
        self._entries.move_to_end((key, list_key))
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def advance(self, version: int) -> bool:
        """The store is at ``version`` (or was, when a statement read it): a newer one
        than the cache's empties the cache; an older one (a slower concurrent lookup)
        changes nothing.  Whether the cache is now at ``version``."""
        if self.version is None or version > self.version:
            self._entries.clear()
            self.version = version
        return self.version == version

    def invalidate(self) -> None:
        """Forget everything, the version too (the next lookup reads it again)."""
        self._entries.clear()
        self.version = None
