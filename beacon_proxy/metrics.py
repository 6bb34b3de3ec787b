"""Prometheus metrics, in one registry served at ``/metrics``.

Names follow Prometheus conventions (``beacon_proxy_*_total`` counters).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from beacon_proxy.consent.cache import LOOKUPS, LOOP_READS

__all__ = [
    "ANALYSES",
    "CAMPAIGN_COPIES",
    "COPIES",
    "DECISION_CACHE",
    "DELIVERIES",
    "DELIVERY_SECONDS",
    "EVENT_LOOP_LAG",
    "FORWARDS",
    "MESSAGES_QUARANTINED",
    "MESSAGES_RECEIVED",
    "OPENS",
    "QUEUE_MESSAGES",
    "RECIPIENT_ACTIONS",
    "REGISTRY",
    "SMTP_AUTH",
    "SMTP_REJECTIONS",
    "SMTP_SESSIONS",
    "UPSTREAM_CONNECTIONS",
    "WEB_REFUSED",
    "child",
]

REGISTRY = CollectorRegistry(auto_describe=True)

M = TypeVar("M", bound=MetricWrapperBase)
_CHILDREN: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, looked up once per process: ``labels`` takes a lock and
    builds its key on every call (~1 us), and a relayed message counts four labelled
    series.  Made on first use, as ``labels`` makes it, so a series that never counted is
    still not shown."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found  # type: ignore[return-value]

MESSAGES_RECEIVED = Counter(
    "beacon_proxy_messages_received", "Messages accepted (250 after DATA).", registry=REGISTRY
)
SMTP_REJECTIONS = Counter(
    "beacon_proxy_smtp_rejections",
    "SMTP commands refused, by stage and reply class.",
    ["stage", "code"],
    registry=REGISTRY,
)
SMTP_AUTH = Counter(
    "beacon_proxy_smtp_auth",
    "SMTP AUTH attempts by result: success, failure (wrong user or password), blocked "
    "(refused unchecked: the client's address is over [smtp] auth_failure_limit).",
    ["result"],
    registry=REGISTRY,
)
SMTP_IN_FLOW = Counter(
    "beacon_proxy_smtp_in_flow_delays",
    "SMTP transactions whose MAIL FROM waited for delivery to catch up ([smtp] "
    "in_flow_delay), by how the wait ended: caught_up (a delivery worker took a message "
    "of the backlog), delay_passed (the transaction went on after in_flow_delay).",
    ["outcome"],
    registry=REGISTRY,
)
SMTP_IN_FLOW_SECONDS = Counter(
    "beacon_proxy_smtp_in_flow_delay_seconds",
    "Seconds SMTP transactions waited in all for delivery to catch up ([smtp] in_flow_delay).",
    registry=REGISTRY,
)
SMTP_IN_FLOW_WAITING = Gauge(
    "beacon_proxy_smtp_in_flow_waiting",
    "SMTP transactions whose MAIL FROM waits now for delivery to catch up.",
    registry=REGISTRY,
)
SMTP_SESSIONS = Gauge(
    "beacon_proxy_smtp_sessions", "Open SMTP client connections.", registry=REGISTRY
)
DELIVERIES = Counter(
    "beacon_proxy_deliveries",
    "Per-recipient delivery attempts by result (delivered, deferred, bounced, ...).",
    ["result"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "beacon_proxy_delivery_seconds",
    "Time to hand one recipient's copy to the courier.",
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "beacon_proxy_event_loop_lag_seconds",
    "How late each process's event loop ran a timer due every 0.25 s (eventloop.LagMonitor): "
    "callbacks that held the loop, waits for the GIL, a machine short of CPU.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
UPSTREAM_CONNECTIONS = Counter(
    "beacon_proxy_upstream_connections",
    "SMTP sessions set up with the upstream (connected, greeted, EHLO'd, TLS per policy; "
    "each delivery worker reuses its own across messages), by whether the upstream offers "
    "PIPELINING (yes, no).",
    ["pipelining"],
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "beacon_proxy_queue_messages", "Messages in the spool, by state.", ["state"], registry=REGISTRY
)
COPIES = Counter(
    "beacon_proxy_copies",
    "Recipients' copies by outcome: stripped, rewritten, unsigned (refused copy of signed "
    "mail, unwrapped), fallback (conservative neutralisation), held, unmodified_granted, "
    "unscanned ([policy] unscannable = deliver).",
    ["outcome"],
    registry=REGISTRY,
)
ANALYSES = Counter(
    "beacon_proxy_analyses",
    "Messages analysed, by where the analysis came from: known (the same bytes were "
    "analysed recently, rewrite/known.py), header (the same body under another header "
    "was analysed recently; derived once proven, rewrite/known.py), inline (a small "
    "message, in the relay's own process), pool (an analysis worker process; failures "
    "included), failed (the same body's analysis failed within the last 5 minutes: the "
    "copy falls back at once, rewrite/known.py).",
    ["source"],
    registry=REGISTRY,
)
CAMPAIGN_COPIES = Counter(
    "beacon_proxy_campaign_copies",
    "Messages seen by campaign diffing, by outcome: learned (added to its campaign's "
    "memory), known (judged against it), waiting (refused copies of a new campaign's first "
    "copy wait for a second one), error (the store failed; judged with what was known).",
    ["outcome"],
    registry=REGISTRY,
)
class _DecisionCache(Collector):
    """``beacon_proxy_decision_cache_total{result}`` and
    ``beacon_proxy_decision_reads_total{on}``, from the store's own tallies."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "beacon_proxy_decision_cache",
            "Recipients looked up by the relay, by result: hit (answered from the process's "
            "decision cache), miss (read from the store), bypass (the cache was not trusted: "
            "PostgreSQL's listening connection is down, or SQLite's data version could not be "
            "read), off ([store] cache_size = 0).", labels=["result"])
        for result in ("hit", "miss", "bypass", "off"):
            family.add_metric([result], float(LOOKUPS[result]))
        yield family
        reads = CounterMetricFamily(
            "beacon_proxy_decision_reads",
            "SQLite decision statements by where they ran: loop (on the event loop, no "
            "thread hop), busy (the file was busy or locked there: run on the reader's thread "
            "instead), thread (too many recipients for the loop).", labels=["on"])
        for on in ("loop", "busy", "thread"):
            reads.add_metric([on], float(LOOP_READS[on]))
        yield reads


DECISION_CACHE = _DecisionCache()
REGISTRY.register(DECISION_CACHE)
MESSAGES_QUARANTINED = Counter(
    "beacon_proxy_messages_quarantined",
    "Messages moved to corrupt/ after their delivery attempts kept failing, by reason.",
    ["reason"],
    registry=REGISTRY,
)
FORWARDS = Counter(
    "beacon_proxy_forwards",
    "Server-side forwards by kind (one-click: a recipient's unsubscribe sent on to the "
    "sender's RFC 8058 URL; open: a consenting recipient's open sent on to the tracker) and "
    "result (queued, done, redirect, retry, failed, expired, refused; open: sent, rejected, "
    "error, dropped, refused).",
    ["kind", "result"],
    registry=REGISTRY,
)
OPENS = Counter(
    "beacon_proxy_opens",
    "Open pixel requests by result: recorded, not_consenting (recorded nothing: the "
    "recipient does not consent now), invalid_token, rate_limited, dropped (the recording "
    "queue was full), error (the store failed), head (HEAD requests record nothing).",
    ["result"],
    registry=REGISTRY,
)
RECIPIENT_ACTIONS = Counter(
    "beacon_proxy_recipient_actions",
    "Requests to change state through a recipient's link, by action (one-click, "
    "stop-tracking, allow-tracking, suspend-list, suspend-all, resume) and result (changed, "
    "unchanged, invalid_token, bad_request, cross_site: a page action without its form token "
    "or from another site).",
    ["action", "result"],
    registry=REGISTRY,
)
WEB_REFUSED = Counter(
    "beacon_proxy_web_refused",
    "HTTP requests refused before any handler, by route class (pixel: /o/, page: /u/, api: "
    "/api/, console: /console, other) and reason (rate_limited: 429, too_large: a declared "
    "body over the bound, 413).",
    ["route", "reason"],
    registry=REGISTRY,
)
