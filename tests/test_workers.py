"""The supervisor's pieces that need no process: merged metrics, listening sockets."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from beacon_proxy.workers import bind_listeners, merge_metrics


def _page(received: int, sessions: int, delays: list[float]) -> str:
    registry = CollectorRegistry()
    Counter("bp_received", "Received.", registry=registry).inc(received)
    Gauge("bp_sessions", "Sessions.", registry=registry).set(sessions)
    hist = Histogram("bp_delay_seconds", "Delay.", registry=registry, buckets=(1.0, 5.0))
    for d in delays:
        hist.observe(d)
    return generate_latest(registry).decode()


def test_merged_metrics_are_sums() -> None:
    text = merge_metrics([_page(3, 2, [0.5]), _page(4, 1, [2.0, 9.0]), _page(0, 0, [])])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    assert samples[("bp_received_total", ())] == 7
    assert samples[("bp_sessions", ())] == 3
    assert samples[("bp_delay_seconds_bucket", (("le", "1.0"),))] == 1
    assert samples[("bp_delay_seconds_bucket", (("le", "5.0"),))] == 2
    assert samples[("bp_delay_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("bp_delay_seconds_count", ())] == 3
    assert samples[("bp_delay_seconds_sum", ())] == 11.5
    assert b"# HELP bp_received_total Received." in text
    assert b"# TYPE bp_delay_seconds histogram" in text


def test_listeners_take_one_port_and_are_inheritable() -> None:
    socks = bind_listeners("127.0.0.1", 0)
    try:
        (sock,) = socks
        port = sock.getsockname()[1]
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the kernel queues it: the socket listens
        sock.set_inheritable(True)
    finally:
        for s in socks:
            s.close()
