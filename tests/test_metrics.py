"""The metrics the relay serves and the ones its documentation names are the same."""

from __future__ import annotations

import re
from pathlib import Path

from beacon_proxy.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
#: ``beacon_proxy_*`` names in the documentation that are no metric: PostgreSQL's
#: change-notification channel (docs/consent.md).
NOT_METRICS = frozenset({"beacon_proxy_decisions"})


def _served() -> set[str]:
    """Every metric as a query names it: counters with their ``_total``."""
    return {family.name + "_total" if family.type == "counter" else family.name
            for family in REGISTRY.collect()}


def _documents() -> list[Path]:
    """What operators read; docs/performance.md is a lab notebook, not a reference."""
    docs = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "performance.md"]
    return [ROOT / "README.md", ROOT / "SECURITY.md", *docs,
            *sorted((ROOT / "config").glob("*.toml"))]


def test_every_metric_has_a_row_in_the_logging_doc() -> None:
    """docs/logging.md's metrics table lists every metric ``/metrics`` serves."""
    text = (ROOT / "docs" / "logging.md").read_text()
    table = text.split("\n## Metrics\n", 1)[1]
    rows = {m[1] for m in re.finditer(r"^\| `(beacon_proxy_[a-z_]+)` \|", table, re.M)}
    served = _served()
    assert len(served) > 15  # the registry was read
    assert (sorted(served - rows), sorted(rows - served)) == ([], [])


def test_every_metric_a_doc_names_is_served() -> None:
    """No document names a metric (in an alert, a table, a comment) that is not served."""
    served = _served()
    named: dict[str, str] = {}
    for path in _documents():
        for m in re.finditer(r"beacon_proxy_[a-z_]+", path.read_text(encoding="utf-8")):
            name = re.sub(r"_(bucket|sum|count|created)$", "", m[0])
            if name not in NOT_METRICS:
                named.setdefault(name, path.name)
    assert len(named) > 15  # the documents were read
    assert {name: where for name, where in named.items() if name not in served} == {}
