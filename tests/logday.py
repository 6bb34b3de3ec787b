"""A generated day of relay logs, with its own count of what it wrote.

:func:`write_day` writes ``events`` relay events over one UTC day through the
real :func:`beacon_proxy.log.event` and :class:`~beacon_proxy.log.JsonFormatter`
(so the format cannot drift from the relay's), in a realistic mix: messages
received with 1-4 recipients, each copy delivered (trackers stripped or
rewritten, now and then by the fallback), deferred and then delivered,
bounced, suppressed, held or waiting; rejections, AUTH failures, recipient
actions and ordinary warning lines in between; some senders pseudonymised.
Busier in the day than at night.  Its :class:`Truth` is counted as the events
are written, independently of ``beacon_proxy.logreport``; the expected
groups of replies are written out by hand beside their templates.

Used by ``tests/cli/test_report.py`` and ``bench/report.py``.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from beacon_proxy.log import JsonFormatter, event, pseudonym

__all__ = ["Truth", "write_day"]

_KEY = b"k" * 32
_DOMAINS = ("shop.example", "news.example.org", "club.example.net", "bank.example",
            "travel.example", "esp.example.com")
_SENDERS = [f"{local}@{domain}" for domain in _DOMAINS for local in ("news", "offers", "info")]
_SENDER_WEIGHTS = list(itertools.accumulate(range(len(_SENDERS), 0, -1)))  # Zipf-like
_RECIPIENT_DOMAINS = ("example.net", "mail.example", "isp.example.jp", "corp.example")
_VENDORS = ("Mailchimp", "SendGrid", "HubSpot", "Salesforce Marketing Cloud", "Braze",
            "Klaviyo", "Amazon SES")
_KINDS = ("img", "css-url", "background")
# (template, what the report should group it as)
_DELIVERED = (("250 2.0.0 Ok: queued as {id}", "250 2.0.0 Ok: queued as <id>"),
              ("250 2.0.0 OK {n} {id}.{n} - gsmtp", "250 2.0.0 OK <n> <id> - gsmtp"))
_DEFERRED = (
    ("451 4.7.1 Greylisted, please try again in {n} seconds",
     "451 4.7.1 Greylisted, please try again in <n> seconds"),
    ("421 4.7.0 [TSS04] Messages from 192.0.2.{n} temporarily deferred due to user complaints",
     "421 4.7.0 [<id>] Messages from <id> temporarily deferred due to user complaints"),
    ("452 4.2.2 The email account that you tried to reach is over quota {id} - gsmtp",
     "452 4.2.2 The email account that you tried to reach is over quota <id> - gsmtp"),
    ("451 4.3.0 consent lookup failed: timeout after {n} ms",
     "451 4.3.0 consent lookup failed: timeout after <n> ms"),
)
_BOUNCED = (
    ("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
     "550 5.1.1 <<addr>>: Recipient address rejected: User unknown in virtual mailbox table"),
    ("552 5.2.2 {rcpt} mailbox full ({n} bytes over quota)",
     "552 5.2.2 <addr> mailbox full (<n> bytes over quota)"),
)
_REJECTED = (
    ("RCPT", 550, "Relay access denied"),
    ("MAIL", 553, "Sender address rejected"),
    ("CONNECT", 421, "Too many connections from your address"),
    ("DATA", 554, "Line {n} of the message is longer than 998 octets; wrap it"),
)
_HELD = ("encrypted or opaque S/MIME content", "past the fallback's limits")


@dataclass
class Truth:
    """What :func:`write_day` wrote, counted as it wrote it."""

    events: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)
    hours: Counter[tuple[str, str]] = field(default_factory=Counter)  # (hour, event)
    received_bytes: int = 0
    recipients: int = 0
    delivered_bytes: int = 0
    beacons: int = 0
    removed: int = 0
    senders: Counter[str] = field(default_factory=Counter)
    sender_bytes: Counter[str] = field(default_factory=Counter)
    sender_domains: Counter[str] = field(default_factory=Counter)
    vendors_removed: Counter[str] = field(default_factory=Counter)
    kinds_removed: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    deferral_reasons: Counter[str] = field(default_factory=Counter)
    bounce_reasons: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)  # delivered
    lists: Counter[str] = field(default_factory=Counter)  # suppressed
    rejected_stages: Counter[str] = field(default_factory=Counter)
    auth_clients: Counter[str] = field(default_factory=Counter)
    first: str = ""
    last: str = ""


class _Full(Exception):
    """The day has its events."""


class _Writer(logging.Handler):
    """Writes each record, stamped with the generator's clock, as the relay would."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self.clock = 0.0
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        record.created = self.clock
        self.stream.write(self.format(record) + "\n")


class _Day:
    def __init__(self, writer: _Writer, times: list[float], rng: random.Random) -> None:
        self.writer, self.times, self.rng = writer, times, rng
        self.truth = Truth()
        self.n = 0
        self.log = logging.getLogger("beacon_proxy.deliver.scheduler")

    def _tick(self, name: str, level: str) -> None:
        if self.n >= len(self.times):
            raise _Full
        t = self.writer.clock = self.times[self.n]
        self.n += 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
        truth = self.truth
        truth.first = truth.first or stamp
        truth.last = stamp
        truth.events[name] += 1
        truth.levels[level] += 1
        truth.hours[stamp[:13], name] += 1

    def emit(self, name: str, level: int = logging.INFO, /, **fields: Any) -> None:
        self._tick(name, logging.getLevelName(level).lower())
        event(name, level, **fields)

    def warning(self, message: str) -> None:
        self._tick("log", "warning")
        self.log.warning(message)

    def ident(self) -> str:
        return "".join(self.rng.choices("0123456789ABCDEFGHJKMNPQRSTVWXYZ", k=16))

    def message(self) -> None:
        rng, truth = self.rng, self.truth
        sender = rng.choices(_SENDERS, cum_weights=_SENDER_WEIGHTS)[0]
        list_id = sender.replace("@", ".") + ".lists"
        if rng.random() < 0.05:
            sender = pseudonym(sender, _KEY)
        qid, size = self.ident(), rng.randint(4_000, 250_000)
        rcpts = [f"u{rng.randint(1, 5000)}@{rng.choice(_RECIPIENT_DOMAINS)}"
                 for _ in range(rng.randint(1, 4))]
        mid = f"<{qid.lower()}@{sender.rpartition('@')[2] or 'h'}>"
        self.emit("received", queue_id=qid, message_id=mid, size=size, sender=sender,
                  recipients=len(rcpts), client_address="192.0.2.7", helo="esp.example",
                  protocol="ESMTP", auth_user=None)
        truth.received_bytes += size
        truth.recipients += len(rcpts)
        truth.senders[sender.lower()] += 1
        truth.sender_bytes[sender.lower()] += size
        truth.sender_domains["(pseudonymised)" if sender.startswith("h:")
                             else sender.rpartition("@")[2]] += 1
        base = {"queue_id": qid, "message_id": mid, "sender": sender}
        for rcpt in rcpts:
            fate = rng.random()
            if fate < 0.03:
                self.emit("suppressed", **base, recipient=rcpt, list_id=list_id)
                truth.lists[list_id] += 1
            elif fate < 0.04:
                reason = rng.choice(_HELD)
                self.emit("held", logging.WARNING, queue_id=qid, message_id=mid, recipient=rcpt,
                          policy="refused", reason=reason, outcome="held")
                truth.outcomes["held"] += 1
            elif fate < 0.045:
                self.emit("waiting", queue_id=qid, message_id=mid, recipient=rcpt,
                          policy="refused", reason="first copy of a new campaign",
                          until="2026-11-28T23:59:59.000Z", campaign="0123456789ab",
                          campaign_copies=1, outcome="waiting")
                truth.outcomes["waiting"] += 1
            elif fate < 0.065:
                template, group = rng.choice(_BOUNCED)
                reply = template.format(rcpt=rcpt, n=rng.randint(1, 99999))
                self.emit("bounced", **base, recipient=rcpt, relay="mx.example.net:25",
                          reply=reply, attempt=1, delay=0.4, status="5.1.1", expired=False,
                          dsn_queue_id=self.ident())
                truth.bounce_reasons[group] += 1
            else:
                if fate < 0.145:
                    template, group = rng.choice(_DEFERRED)
                    reply = template.format(n=rng.randint(1, 99999), id=self.ident())
                    self.emit("deferred", **base, recipient=rcpt, relay="mx.example.net:25",
                              reply=reply, attempt=1, delay=0.3,
                              next_attempt="2026-11-28T23:59:59.000Z")
                    truth.deferral_reasons[group] += 1
                self.delivered(base, rcpt)
        self.emit("removed", queue_id=qid, reason="all recipients done")

    def delivered(self, base: dict[str, Any], rcpt: str) -> None:
        rng, truth = self.rng, self.truth
        refused = rng.random() < 0.7
        beacons = rng.choice((0, 0, 1, 2, 3))
        vendors = sorted(rng.sample(_VENDORS, k=min(beacons, rng.randint(1, 2))))
        kinds = Counter(rng.choice(_KINDS) for _ in range(beacons))
        action = "strip" if refused else "rewrite"
        outcome = ("fallback" if refused and rng.random() < 0.03
                   else "stripped" if refused else "rewritten")
        template, group = rng.choice(_DELIVERED)
        size = rng.randint(4_000, 250_000)
        fields: dict[str, Any] = {"beacons": beacons}
        if beacons:
            fields |= {"kinds": dict(kinds), "vendors": vendors, "actions": {action: beacons}}
        self.emit("delivered", **base, recipient=rcpt, relay="mx.example.net:25",
                  reply=template.format(id=self.ident(), n=rng.randint(10**9, 10**10)),
                  attempt=1, delay=round(rng.uniform(0.01, 3.0), 3),
                  policy="refused" if refused else "granted", size=size, **fields,
                  outcome=outcome)
        truth.delivered_bytes += size
        truth.beacons += beacons
        truth.outcomes[outcome] += 1
        truth.replies[group] += 1
        if refused:
            truth.removed += beacons
            truth.vendors_removed.update(vendors)
            truth.kinds_removed.update(kinds)

    def between(self) -> None:
        """Now and then, what else a relay logs."""
        rng, truth = self.rng, self.truth
        roll = rng.random()
        if roll < 0.04:
            stage, code, reason = rng.choice(_REJECTED)
            self.emit("rejected", stage=stage, code=code,
                      reason=reason.format(n=rng.randint(1, 900)),
                      client_address=f"198.51.100.{rng.randint(1, 254)}")
            truth.rejected_stages[stage] += 1
        elif roll < 0.06:
            client = f"203.0.113.{rng.randint(1, 20)}"
            self.emit("auth_failed", logging.WARNING, client_address=client, mechanism="PLAIN",
                      user=rng.choice(("admin", "test", "esp")), connection_failures=1,
                      address_failures=rng.randint(1, 9))
            truth.auth_clients[client] += 1
        elif roll < 0.07:
            self.emit("recipient_action", action="stop-tracking", changed=True,
                      list_id=None, queue_id=self.ident())
        elif roll < 0.075:
            self.warning(f"consent lookup for {self.ident()} failed: timeout")


def _times(events: int, day: str, rng: random.Random) -> list[float]:
    """``events`` sorted times over ``day`` (UTC), three times as busy by day as by night."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
    weights = [3 if 8 <= h < 20 else 1 for h in range(24)]
    hours = rng.choices(range(24), weights=weights, k=events)
    return sorted(start + h * 3600 + rng.random() * 3600 for h in hours)


def write_day(path: Path, events: int = 100_000, *, day: str = "2026-11-28",
              seed: int = 13) -> Truth:
    """Write ``events`` relay events of ``day`` to ``path`` (gzip when it ends in .gz)."""
    rng = random.Random(seed)
    times = _times(events, day, rng)
    with (gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz"
          else path.open("w", encoding="utf-8")) as stream:
        writer = _Writer(stream)
        day_log = _Day(writer, times, rng)
        package = logging.getLogger("beacon_proxy")
        saved = package.level, package.propagate
        package.addHandler(writer)
        package.setLevel(logging.INFO)
        package.propagate = False
        try:
            for _ in range(events):  # each round writes at least one event
                day_log.message()
                day_log.between()
        except _Full:
            pass
        finally:
            package.removeHandler(writer)
            package.setLevel(saved[0])
            package.propagate = saved[1]
    assert day_log.n == events
    return day_log.truth
