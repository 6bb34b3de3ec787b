"""A pflogsumm-style summary of the relay log (``beacon-proxy report``).

One pass over JSON lines (``docs/logging.md``), bounded memory: every table is
a :class:`Tally` of at most ``cap`` distinct keys, the rest counted under
``(other)``; keys are cut to 200 characters.  :meth:`Summary.read` takes a
binary stream, :meth:`Summary.to_json` gives the numbers as one JSON object
(documented in ``docs/logging.md``, "Reports") and :func:`render` prints that
object as text, so the text and ``--json`` cannot disagree.

    >>> s = Summary()
    >>> s.feed(b'{"ts":"2026-11-28T10:00:00.123Z","level":"info","event":"received",'
    ...        b'"size":100,"sender":"news@Shop.example","recipients":2}', "-:1")
    >>> s.feed(b"not json", "-:2")
    >>> r = s.to_json(top=5)
    >>> r["totals"], r["received"], r["skipped"]["total"]
    ({'received': 1}, {'messages': 1, 'bytes': 100, 'recipients': 2}, 1)
    >>> r["top"]["sender_domains"]["rows"]
    [['shop.example', 1, 100]]

Replies and reasons are grouped after :func:`normalise` takes the variable
parts out (addresses, queue ids, numbers), as pflogsumm does.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

__all__ = ["DEFAULT_CAP", "HOUR_COLUMNS", "MAX_LINE", "OTHER", "PSEUDONYMISED", "Lines",
           "Summary", "Tally", "normalise", "render"]

#: Distinct keys a table keeps; further keys are counted under :data:`OTHER`.
DEFAULT_CAP = 100_000
#: The key that counts what did not fit.
OTHER = "(other)"
#: The domain of a pseudonymised address (``h:`` + 16 hex digits, ``[log] pseudonymize``).
PSEUDONYMISED = "(pseudonymised)"
#: A longer line is skipped unread (``too_long``): the relay never writes one.
MAX_LINE = 1 << 20
#: Columns of the per-hour table, after the hour.
HOUR_COLUMNS = ("received", "delivered", "deferred", "bounced", "rejected")

_KEY_LIMIT = 200
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
_HEAD = re.compile(r"\d{3}[ -](?:[245]\.\d{1,3}\.\d{1,3}\b)?")
#: A pseudonym, or an address whose local part starts where no local-part character
#: precedes it, so a long run of them without "@" (a hostile reply) is scanned once, not
#: once per character (16 ms for a 1000-character reply, quadratic).  (A pseudonym run
#: into an address, "h:<16 hex>.x@y", leaves ".x@y": the log writes neither.)
_ADDRESS = re.compile(r"h:[0-9a-f]{16}\b|(?<![^\s<>()\[\]@,;\"'])"
                      r"[^\s<>()\[\]@,;\"']+@[^\s<>()\[\]@,;\"']+")
# Words are separated by these; a word is replaced whole (no backtracking inside one).
_SEP = r"\s<>()\[\],;=\"'"
_NUMBER = re.compile(rf"(?<![^{_SEP}])\d+(?![^{_SEP}])")
_ID = re.compile(rf"(?<![^{_SEP}])(?:[^{_SEP}\d]*\d[^{_SEP}]*|[A-Z]{{12,}}(?![^{_SEP}]))")
_SKIP_REASONS = {
    "not_json": "not JSON",
    "not_event": "not a beacon-proxy event",
    "too_long": f"longer than {MAX_LINE} bytes",
}


def normalise(text: str) -> str:
    """``text`` with its variable parts replaced, so that similar replies group.

    The reply code and enhanced status stay; addresses (and pseudonyms) become
    ``<addr>``; numbers ``<n>``; other words with a digit (queue ids, IP
    addresses, hosts such as ``mx12``), and words of 12 or more capitals, ``<id>``.

    >>> normalise("250 2.0.0 Ok: queued as 4XyZ9")
    '250 2.0.0 Ok: queued as <id>'
    >>> normalise("550 5.1.1 <Ann@example.org>: Recipient address rejected")
    '550 5.1.1 <<addr>>: Recipient address rejected'
    >>> normalise("451 4.7.1 Greylisted, try again in 300 seconds")
    '451 4.7.1 Greylisted, try again in <n> seconds'
    >>> normalise("250 2.0.0 OK 1764324000 WVTSSHTDABHTDQ.17 - gsmtp")
    '250 2.0.0 OK <n> <id> - gsmtp'
    """
    head = _HEAD.match(text)
    start = head.end() if head else 0
    rest = text[start:]
    if "@" in rest or "h:" in rest:
        rest = _ADDRESS.sub("<addr>", rest)
    rest = _ID.sub("<id>", _NUMBER.sub("<n>", rest))
    return " ".join((text[:start] + rest).split())[:_KEY_LIMIT]


def _domain(address: str) -> str:
    """The lower-cased domain of an address; pseudonyms have none."""
    if address.startswith("h:") and "@" not in address:
        return PSEUDONYMISED
    at = address.rfind("@")
    return address[at + 1:].lower() if at >= 0 else (address.lower() or "<>")


class Tally:
    """Counts per key, in one or more columns, for at most ``cap`` keys.

    >>> t = Tally(("count",), cap=1)
    >>> for key in ("a", "b", "a", "c"):
    ...     t.add(key)
    >>> t.top(5)
    [['(other)', 2], ['a', 2]]
    """

    __slots__ = ("cap", "columns", "rows")

    def __init__(self, columns: tuple[str, ...] = ("count",), cap: int = DEFAULT_CAP) -> None:
        self.columns = columns
        self.cap = cap
        self.rows: dict[str, list[int]] = {}

    def add(self, key: str, column: int = 0, n: int = 1) -> None:
        row = self.rows.get(key)
        if row is None:
            if len(key) > _KEY_LIMIT:
                key = key[:_KEY_LIMIT]
            if len(self.rows) >= self.cap and key not in self.rows:
                key = OTHER
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = [0] * len(self.columns)
        row[column] += n

    def top(self, n: int | None) -> list[list[Any]]:
        """The ``n`` largest rows (all with ``None``) by their sum, then by key."""
        ordered = sorted(self.rows.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
        return [[key, *row] for key, row in (ordered if n is None else ordered[:n])]

    def as_dict(self) -> dict[str, int]:
        """A one-column tally as ``{key: count}``, largest first."""
        return {row[0]: row[1] for row in self.top(None)}

    def to_json(self, n: int) -> dict[str, Any]:
        return {"columns": list(self.columns), "distinct": len(self.rows), "rows": self.top(n)}


_NOT_JSON = object()
# The decoder's own scanner, without json.loads' encoding detection and wrappers
# (a fifth of the time on a day of logs); json.loads decides what it does not take.
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder()))


def _parse(raw: bytes | str) -> Any:
    """The JSON value of one line, or ``_NOT_JSON``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value, end = _scan(text, 0)
        if end == len(text) or not text[end:].strip():
            return value
    except (StopIteration, ValueError, RecursionError):
        pass  # leading white space, for one; an undecodable line is no JSON either
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        return _NOT_JSON


class Lines(Protocol):
    """What :meth:`Summary.read` reads: a file opened in binary, a ``GzipFile``."""

    def readline(self, size: int = -1, /) -> bytes: ...


def _why(exc: BaseException) -> str:
    """A read error in a few words (``No such file or directory``, ``Compressed file
    ended before the end-of-stream marker was reached``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _str(value: Any, default: str = "") -> str:
    return value if type(value) is str else default


class Summary:
    """The running totals of one report; :meth:`feed` one line at a time."""

    def __init__(self, since: str | None = None, cap: int = DEFAULT_CAP) -> None:
        """``since``: an ISO time in the log's own form (``2026-11-28T10:00:00.000Z``);
        earlier events are counted in ``before_since`` only."""
        self.since = since
        self.lines = 0
        self.events = 0
        self.before_since = 0
        self.first: str | None = None
        self.last: str | None = None
        self.files: list[dict[str, Any]] = []
        self.skipped: dict[str, list[Any]] = {}  # reason -> [count, first place]
        self.totals = Tally(cap=cap)
        self.levels = Tally(cap=cap)
        self.received = [0, 0, 0]  # messages, bytes, recipients
        self.delivered = [0, 0]  # copies, bytes
        self.delay_sum = 0.0
        self.delay_max = 0.0
        self.expired = 0
        self.outcomes = Tally(cap=cap)
        self.beacons = [0, 0, 0]  # in delivered copies: all, removed, rewritten
        self.tracked_copies = 0
        self.actions = Tally(cap=cap)
        self.vendors = (Tally(("copies",), cap), Tally(("copies",), cap))  # removed, rewritten
        self.kinds = (Tally(cap=cap), Tally(cap=cap))
        self.hours = Tally(HOUR_COLUMNS, cap)
        self.deferral_reasons = Tally(cap=cap)
        self.bounce_reasons = Tally(cap=cap)
        self.held_reasons = Tally(cap=cap)
        self.replies = Tally(("delivered", "deferred", "bounced"), cap)
        self.senders = Tally(("messages", "bytes"), cap)
        self.sender_domains = Tally(("messages", "bytes"), cap)
        self.recipient_domains = Tally(("delivered", "deferred", "bounced", "suppressed"), cap)
        self.lists = Tally(("suppressed", "recipient_actions"), cap)
        self.recipient_actions = Tally(cap=cap)
        self.rejected_stages = Tally(cap=cap)
        self.rejected_reasons = Tally(cap=cap)
        self.auth_clients = Tally(cap=cap)
        self.auth_users = Tally(cap=cap)
        self._handlers: Mapping[str, Callable[[dict[str, Any], str], None]] = {
            "received": self._received, "delivered": self._delivered,
            "deferred": self._deferred, "bounced": self._bounced,
            "suppressed": self._suppressed, "held": self._held, "waiting": self._waiting,
            "rejected": self._rejected, "auth_failed": self._auth_failed,
            "recipient_action": self._recipient_action,
        }

    # -- input -------------------------------------------------------------

    def read(self, stream: Lines, name: str) -> str | None:
        """Feed every line of ``stream``; a read error (a truncated gzip, say) ends the
        file: what was read counts, and the error is noted and returned."""
        record: dict[str, Any] = {"name": name, "lines": 0, "error": None}
        self.files.append(record)
        readline, feed, n = stream.readline, self.feed, 0
        error: str | None = None
        try:
            while raw := readline(MAX_LINE):
                n += 1
                if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
                    while (rest := readline(MAX_LINE)) and not rest.endswith(b"\n"):
                        pass
                    self.lines += 1
                    self.skip("too_long", f"{name}:{n}")
                    continue
                feed(raw, name, n)
        except (OSError, EOFError, zlib.error) as exc:
            error = record["error"] = _why(exc)
        record["lines"] = n
        return error

    def fail(self, name: str, exc: OSError) -> str:
        """Note a file that could not be opened; the reason, for a message."""
        self.files.append({"name": name, "lines": 0, "error": _why(exc)})
        return _why(exc)

    def skip(self, reason: str, where: str) -> None:
        entry = self.skipped.get(reason)
        if entry is None:
            self.skipped[reason] = [1, where]
        else:
            entry[0] += 1

    def feed(self, raw: bytes | str, name: str, n: int | None = None) -> None:
        """Count one line (``name``, and ``n`` when given, say where it was)."""
        self.lines += 1
        obj = _parse(raw)
        if type(obj) is not dict:
            self.skip("not_json" if obj is _NOT_JSON else "not_event",
                      name if n is None else f"{name}:{n}")
            return
        event, ts = obj.get("event"), obj.get("ts")
        if type(event) is not str or type(ts) is not str or not _TS.match(ts):
            self.skip("not_event", name if n is None else f"{name}:{n}")
            return
        if self.since is not None and ts < self.since:
            self.before_since += 1
            return
        self.events += 1
        if self.first is None or ts < self.first:
            self.first = ts
        if self.last is None or ts > self.last:
            self.last = ts
        self.totals.add(event)
        self.levels.add(_str(obj.get("level"), "(none)"))
        handler = self._handlers.get(event)
        if handler is not None:
            handler(obj, ts[:13])

    # -- events ------------------------------------------------------------

    def _received(self, e: dict[str, Any], hour: str) -> None:
        size = _int(e.get("size"))
        received = self.received
        received[0] += 1
        received[1] += size
        received[2] += _int(e.get("recipients"))
        self.hours.add(hour, 0)
        sender = _str(e.get("sender"))
        self.senders.add(sender.lower() or "<>", 0)
        self.senders.add(sender.lower() or "<>", 1, size)
        domain = _domain(sender)
        self.sender_domains.add(domain, 0)
        self.sender_domains.add(domain, 1, size)

    def _delivered(self, e: dict[str, Any], hour: str) -> None:
        self.delivered[0] += 1
        self.delivered[1] += _int(e.get("size"))
        delay = e.get("delay")
        if (type(delay) is float or type(delay) is int) and math.isfinite(delay) and delay >= 0:
            self.delay_sum += delay
            self.delay_max = max(self.delay_max, delay)
        self.hours.add(hour, 1)
        self.replies.add(normalise(_str(e.get("reply"), "(none)")), 0)
        self.recipient_domains.add(_domain(_str(e.get("recipient"))), 0)
        self.outcomes.add(_str(e.get("outcome"), "(none)"))
        beacons = _int(e.get("beacons"))
        if beacons > 0:
            self.tracked_copies += 1
            self.beacons[0] += beacons
        which = 0 if e.get("policy") == "refused" else 1
        self.beacons[1 + which] += beacons
        vendors, kinds, actions = e.get("vendors"), e.get("kinds"), e.get("actions")
        if type(vendors) is list:
            tally = self.vendors[which]
            for vendor in vendors:
                if type(vendor) is str:
                    tally.add(vendor)
        if type(kinds) is dict:
            tally = self.kinds[which]
            for kind, count in kinds.items():
                tally.add(kind, 0, _int(count))
        if type(actions) is dict:
            for action, count in actions.items():
                self.actions.add(action, 0, _int(count))

    def _deferred(self, e: dict[str, Any], hour: str) -> None:
        self.hours.add(hour, 2)
        reply = normalise(_str(e.get("reply"), "(none)"))
        self.deferral_reasons.add(reply)
        self.replies.add(reply, 1)
        self.recipient_domains.add(_domain(_str(e.get("recipient"))), 1)

    def _bounced(self, e: dict[str, Any], hour: str) -> None:
        self.hours.add(hour, 3)
        reply = normalise(_str(e.get("reply"), "(none)"))
        if e.get("expired") is True:
            self.expired += 1
            self.bounce_reasons.add(f"(expired) {reply}"[:_KEY_LIMIT])
        else:
            self.bounce_reasons.add(reply)
        self.replies.add(reply, 2)
        self.recipient_domains.add(_domain(_str(e.get("recipient"))), 2)

    def _suppressed(self, e: dict[str, Any], hour: str) -> None:
        self.recipient_domains.add(_domain(_str(e.get("recipient"))), 3)
        self.lists.add(_str(e.get("list_id"), "(no list)"), 0)

    def _held(self, e: dict[str, Any], hour: str) -> None:
        self.outcomes.add(_str(e.get("outcome"), "held"))
        self.held_reasons.add(normalise(_str(e.get("reason"), "(none)")))

    def _waiting(self, e: dict[str, Any], hour: str) -> None:
        self.outcomes.add(_str(e.get("outcome"), "waiting"))

    def _rejected(self, e: dict[str, Any], hour: str) -> None:
        self.hours.add(hour, 4)
        stage = _str(e.get("stage"), "(none)")
        self.rejected_stages.add(stage)
        code = e.get("code")
        self.rejected_reasons.add(
            f"{stage} {code if type(code) in (int, str) else '-'} "
            f"{normalise(_str(e.get('reason')))}")

    def _auth_failed(self, e: dict[str, Any], hour: str) -> None:
        self.auth_clients.add(_str(e.get("client_address"), "(none)"))
        self.auth_users.add(_str(e.get("user"), "(none)"))

    def _recipient_action(self, e: dict[str, Any], hour: str) -> None:
        self.recipient_actions.add(_str(e.get("action"), "(none)"))
        list_id = e.get("list_id")
        if type(list_id) is str:
            self.lists.add(list_id, 1)

    # -- output ------------------------------------------------------------

    def to_json(self, top: int = 10) -> dict[str, Any]:
        """Every number of the report as one JSON-friendly object (``top`` rows a table)."""
        copies = self.delivered[0]
        return {
            "report": 1,
            "since": self.since,
            "first": self.first,
            "last": self.last,
            "files": [dict(f) for f in self.files],
            "lines": self.lines,
            "events": self.events,
            "before_since": self.before_since,
            "skipped": {
                "total": sum(count for count, _ in self.skipped.values()),
                "reasons": {reason: {"count": count, "first": where}
                            for reason, (count, where) in sorted(self.skipped.items())},
            },
            "totals": self.totals.as_dict(),
            "levels": self.levels.as_dict(),
            "received": dict(zip(("messages", "bytes", "recipients"), self.received,
                                 strict=True)),
            "delivered": {"copies": copies, "bytes": self.delivered[1],
                          "delay_avg": round(self.delay_sum / copies, 3) if copies else None,
                          "delay_max": round(self.delay_max, 3) if copies else None},
            "bounced": {"copies": self.totals.rows.get("bounced", [0])[0],
                        "expired": self.expired},
            "outcomes": self.outcomes.as_dict(),
            "trackers": {
                "copies": self.tracked_copies,
                "beacons": self.beacons[0],
                "actions": self.actions.as_dict(),
                "removed": {"beacons": self.beacons[1], "vendors": self.vendors[0].to_json(top),
                            "kinds": self.kinds[0].to_json(top)},
                "rewritten": {"beacons": self.beacons[2],
                              "vendors": self.vendors[1].to_json(top),
                              "kinds": self.kinds[1].to_json(top)},
            },
            "hours": {"columns": ["hour", *HOUR_COLUMNS],
                      "rows": sorted([key, *row] for key, row in self.hours.rows.items())},
            "rejected": {"total": self.totals.rows.get("rejected", [0])[0],
                         "stages": self.rejected_stages.as_dict(),
                         "reasons": self.rejected_reasons.to_json(top)},
            "auth_failed": {"total": self.totals.rows.get("auth_failed", [0])[0],
                            "clients": self.auth_clients.to_json(top),
                            "users": self.auth_users.to_json(top)},
            "recipient_actions": self.recipient_actions.as_dict(),
            "top": {
                "deferral_reasons": self.deferral_reasons.to_json(top),
                "bounce_reasons": self.bounce_reasons.to_json(top),
                "held_reasons": self.held_reasons.to_json(top),
                "replies": self.replies.to_json(top),
                "sender_domains": self.sender_domains.to_json(top),
                "senders": self.senders.to_json(top),
                "recipient_domains": self.recipient_domains.to_json(top),
                "lists": self.lists.to_json(top),
            },
        }


# -- text ------------------------------------------------------------------

def _size(n: int) -> str:
    """``n`` bytes, short: ``512 B``, ``70.3 kB``, ``1.2 GB`` (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # not reached: the loop returns at TB


def _counts(title: str, counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return []
    return ["", title, *(f"  {count:>9}  {key}" for key, count in counts.items())]


def _table(title: str, table: Mapping[str, Any], sizes: tuple[int, ...] = ()) -> list[str]:
    """A top table: one right-aligned column per count (``sizes``: columns in bytes)."""
    rows = table["rows"]
    if not rows:
        return []
    columns: list[str] = table["columns"]
    cells = [[_size(v) if i in sizes else str(v) for i, v in enumerate(row[1:])]
             for row in rows]
    widths = [max(len(name), *(len(c[i]) for c in cells)) for i, name in enumerate(columns)]
    more = f", {table['distinct']} distinct" if table["distinct"] > len(rows) else ""
    out = ["", f"{title} (top {len(rows)}{more})",
           "  " + "  ".join(f"{name:>{w}}" for name, w in zip(columns, widths, strict=True))]
    for row, cell in zip(rows, cells, strict=True):
        out.append("  " + "  ".join(f"{c:>{w}}" for c, w in zip(cell, widths, strict=True))
                   + f"  {row[0]}")
    return out


def _volume(hours: Mapping[str, Any]) -> list[str]:
    """Per-hour volume; per day when the log spans more than 48 hours."""
    rows: list[list[Any]] = hours["rows"]
    if not rows:
        return []
    title = "Per-hour volume (UTC)"
    if len(rows) > 48:
        days: dict[str, list[int]] = {}
        for key, *counts in rows:
            day = days.setdefault(key[:10], [0] * len(counts))
            for i, count in enumerate(counts):
                day[i] += count
        rows = [[key, *counts] for key, counts in days.items()]
        title = "Per-day volume (UTC)"
    columns = hours["columns"]
    out = ["", title, "  " + f"{'':13}" + "".join(f"{c:>10}" for c in columns[1:])]
    for key, *counts in rows:
        label = key.replace("T", " ") + ("h" if len(key) > 10 else "")
        out.append(f"  {label:13}" + "".join(f"{c:>10}" for c in counts))
    return out


#: The text's sections after the grand totals: title, where in the JSON object, and
#: how shown: a count map, a table (with bytes in its second column), the volume.
_SECTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Events", ("totals",), "counts"),
    ("Levels", ("levels",), "counts"),
    ("Copies by outcome", ("outcomes",), "counts"),
    ("Tracker actions", ("trackers", "actions"), "counts"),
    ("Trackers removed, by vendor", ("trackers", "removed", "vendors"), "table"),
    ("Trackers removed, by kind", ("trackers", "removed", "kinds"), "table"),
    ("Trackers rewritten (granted), by vendor", ("trackers", "rewritten", "vendors"), "table"),
    ("Trackers rewritten (granted), by kind", ("trackers", "rewritten", "kinds"), "table"),
    ("", ("hours",), "volume"),
    ("Deferral reasons", ("top", "deferral_reasons"), "table"),
    ("Bounce reasons", ("top", "bounce_reasons"), "table"),
    ("Held copies, by reason", ("top", "held_reasons"), "table"),
    ("Upstream replies", ("top", "replies"), "table"),
    ("Sender domains", ("top", "sender_domains"), "bytes"),
    ("Senders", ("top", "senders"), "bytes"),
    ("Recipient domains", ("top", "recipient_domains"), "table"),
    ("Lists", ("top", "lists"), "table"),
    ("Recipient actions", ("recipient_actions",), "counts"),
    ("Rejections, by stage", ("rejected", "stages"), "counts"),
    ("Rejections, by reason", ("rejected", "reasons"), "table"),
    ("AUTH failures, by client", ("auth_failed", "clients"), "table"),
    ("AUTH failures, by user", ("auth_failed", "users"), "table"),
)


def render(report: Mapping[str, Any]) -> str:
    """The text form of :meth:`Summary.to_json`'s object."""
    span = (f"{report['first']} .. {report['last']}" if report["first"] else "no events")
    out = [f"beacon-proxy report: {report['events']} events, {span}"]
    if report["since"]:
        out.append(f"since {report['since']}: {report['before_since']} earlier events left out")
    for f in report["files"]:
        error = f"  ERROR: {f['error']}" if f["error"] else ""
        out.append(f"  {f['name']}: {f['lines']} lines{error}")
    skipped = report["skipped"]
    if skipped["total"]:
        reasons = "; ".join(f"{_SKIP_REASONS.get(r, r)}: {v['count']} (first at {v['first']})"
                            for r, v in skipped["reasons"].items())
        out.append(f"skipped {skipped['total']} lines: {reasons}")
    rcv, dlv, trk = report["received"], report["delivered"], report["trackers"]
    totals = report["totals"]
    out += ["", "Grand totals",
            f"  {rcv['messages']:>9}  messages received ({_size(rcv['bytes'])}, "
            f"{rcv['recipients']} recipients)",
            f"  {dlv['copies']:>9}  copies delivered ({_size(dlv['bytes'])}"
            + (f"; delay avg {dlv['delay_avg']} s, max {dlv['delay_max']} s)"
               if dlv["copies"] else ")")]
    for name in ("deferred", "bounced", "suppressed", "held", "waiting", "rejected",
                 "auth_failed"):
        extra = (f" ({report['bounced']['expired']} expired)"
                 if name == "bounced" and report["bounced"]["expired"] else "")
        out.append(f"  {totals.get(name, 0):>9}  {name}{extra}")
    out += [f"  {trk['beacons']:>9}  trackers in {trk['copies']} delivered copies: "
            f"{trk['removed']['beacons']} removed, {trk['rewritten']['beacons']} rewritten"]
    for title, path, kind in _SECTIONS:
        value: Any = report
        for key in path:
            value = value[key]
        if kind == "counts":
            out += _counts(title, value)
        elif kind == "volume":
            out += _volume(value)
        else:
            out += _table(title, value, sizes=(1,) if kind == "bytes" else ())
    return "\n".join(out) + "\n"
