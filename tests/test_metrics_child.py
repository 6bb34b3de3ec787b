"""The labelled-series lookup the relay's hot path uses (:func:`beacon_proxy.metrics.child`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from beacon_proxy.metrics import child


def test_child_is_the_labelled_series_made_on_first_use() -> None:
    registry = CollectorRegistry()
    counter = Counter("beacon_proxy_test_children", "test", ["result"], registry=registry)
    assert b'result="a"' not in generate_latest(registry)  # not shown before it counts
    first = child(counter, "a")
    assert first is counter.labels("a") and child(counter, "a") is first
    first.inc()
    child(counter, "a").inc(2)
    child(counter, "b").inc()
    page = generate_latest(registry).decode()
    assert 'beacon_proxy_test_children_total{result="a"} 3.0' in page
    assert 'beacon_proxy_test_children_total{result="b"} 1.0' in page
    other = Counter("beacon_proxy_test_children2", "test", ["result"], registry=registry)
    assert child(other, "a") is not first  # per metric, not per label value
