"""``beacon-proxy report``: a generated day of logs (tests/logday.py), summarised.

The totals are checked against what the generator counted as it wrote the
events, not against a second reading of the file.  How fast it is belongs
to ``bench/report.py``; nothing here is timed.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.cli.report import since_time
from beacon_proxy.logreport import render
from tests.logday import Truth, write_day

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = "100000"  # --top: every row of every table


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    """A day of 100 000 events, written once for the module."""
    path = tmp_path_factory.mktemp("day") / "beacon-proxy.log"
    return path, write_day(path, 100_000)


def _json(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 0) -> dict[str, Any]:
    assert main(["report", *argv, "--json", "--top", EVERYTHING]) == status
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _rows(table: dict[str, Any], column: int = 1) -> dict[str, int]:
    return {row[0]: row[column] for row in table["rows"] if row[column]}


def _check_totals(report: dict[str, Any], truth: Truth) -> None:
    assert report["skipped"]["total"] == 0
    assert report["events"] == truth.events.total()
    assert report["totals"] == dict(truth.events)
    assert report["levels"] == dict(truth.levels)
    assert (report["first"], report["last"]) == (truth.first, truth.last)
    assert report["received"] == {"messages": truth.events["received"],
                                  "bytes": truth.received_bytes,
                                  "recipients": truth.recipients}
    assert report["delivered"]["copies"] == truth.events["delivered"]
    assert report["delivered"]["bytes"] == truth.delivered_bytes
    assert report["outcomes"] == dict(truth.outcomes)
    trackers = report["trackers"]
    assert trackers["beacons"] == truth.beacons
    assert trackers["removed"]["beacons"] == truth.removed
    assert _rows(trackers["removed"]["vendors"]) == dict(truth.vendors_removed)
    assert _rows(trackers["removed"]["kinds"]) == dict(truth.kinds_removed)
    top = report["top"]
    # Replies group as the generator's templates do: every id and number normalised away.
    assert _rows(top["deferral_reasons"]) == dict(truth.deferral_reasons)
    assert _rows(top["bounce_reasons"]) == dict(truth.bounce_reasons)
    assert _rows(top["replies"], 1) == dict(truth.replies)
    assert _rows(top["sender_domains"]) == dict(truth.sender_domains)
    assert _rows(top["senders"]) == dict(truth.senders)
    assert _rows(top["senders"], 2) == dict(truth.sender_bytes)
    assert _rows(top["lists"]) == dict(truth.lists)
    assert report["rejected"]["stages"] == dict(truth.rejected_stages)
    assert _rows(report["auth_failed"]["clients"]) == dict(truth.auth_clients)
    columns = report["hours"]["columns"]
    hours = {(row[0], name): count for row in report["hours"]["rows"]
             for name, count in zip(columns[1:], row[1:], strict=True) if count}
    assert hours == {key: n for key, n in truth.hours.items() if key[1] in columns}


def test_totals_match_a_generated_day(day: tuple[Path, Truth],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, truth = day
    assert truth.events.total() == 100_000
    assert min(truth.events[e] for e in ("received", "delivered", "deferred", "bounced",
                                         "suppressed", "held", "rejected", "auth_failed")) > 100
    report = _json(capsys, str(path))
    _check_totals(report, truth)
    assert report["files"] == [{"name": str(path), "lines": 100_000, "error": None}]
    assert _rows(report["top"]["sender_domains"])["(pseudonymised)"] > 0


def test_json_round_trips_to_the_text(day: tuple[Path, Truth],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The text is the --json object rendered: the same numbers, whichever is asked for."""
    path, truth = day
    assert main(["report", str(path), "--top", "5"]) == 0
    text = capsys.readouterr().out
    assert main(["report", str(path), "--top", "5", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object, one line
    report = json.loads(out)
    assert render(report) == text
    assert text.startswith(f"beacon-proxy report: 100000 events, {truth.first} .. ")
    assert f"{truth.events['received']:>9}  messages received" in text
    assert "Per-hour volume (UTC)" in text and "2026-11-28 23h" in text
    assert len(report["top"]["senders"]["rows"]) == 5
    assert report["top"]["senders"]["distinct"] == len(truth.senders)


def test_since_leaves_out_earlier_events(day: tuple[Path, Truth],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, truth = day
    report = _json(capsys, str(path), "--since", "2026-11-28T14:00+02:00")  # 12:00 UTC
    later = Counter(dict.fromkeys(truth.events, 0))
    for (hour, event), n in truth.hours.items():
        if hour >= "2026-11-28T12":
            later[event] += n
    assert report["since"] == "2026-11-28T12:00:00.000Z"
    assert report["events"] == later.total()
    assert report["before_since"] == 100_000 - later.total()
    assert report["totals"] == {event: n for event, n in later.items() if n}
    assert report["received"]["messages"] == later["received"]
    assert report["first"] >= "2026-11-28T12:00:00.000Z"
    assert [row[0] for row in report["hours"]["rows"]] == [
        f"2026-11-28T{h:02d}" for h in range(12, 24)]
    # Relative: 100 000 days back includes everything, whatever today is.
    assert _json(capsys, str(path), "--since", "100000d")["events"] == 100_000


@pytest.mark.parametrize(("since", "expected"), [
    ("30m", "2026-11-28T11:30:00.000Z"), ("24h", "2026-11-27T12:00:00.000Z"),
    ("7d", "2026-11-21T12:00:00.000Z"), ("2w", "2026-11-14T12:00:00.000Z"),
    ("2026-11-28", "2026-11-28T00:00:00.000Z"),
    ("2026-11-28T09:30:00.250-01:00", "2026-11-28T10:30:00.250Z"),
])
def test_since_times(since: str, expected: str) -> None:
    noon = datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp()
    assert since_time(since, noon) == expected


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    for since in ("yesterday", "99999999999999d"):
        assert main(["report", str(empty), "--since", since]) == 2
        assert capsys.readouterr().err.startswith("beacon-proxy: --since: ")
    assert main(["report", str(empty), "--top", "0"]) == 2


def test_gzip_files_as_logrotate_leaves_them(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A rotated .gz and the current plain file, together; a gzip is known by its bytes."""
    old, new = tmp_path / "bp.log.1.gz", tmp_path / "bp.log"
    truth = write_day(old, 3000, day="2026-11-27", seed=1)
    later = write_day(new, 2000, day="2026-11-28", seed=2)
    renamed = tmp_path / "bp.log.2"  # compressed, without the suffix
    renamed.write_bytes(old.read_bytes())
    report = _json(capsys, str(old), str(new))
    assert report["events"] == 5000
    assert report["totals"] == dict(truth.events + later.events)
    assert report["first"] == truth.first and report["last"] == later.last
    assert _json(capsys, str(renamed))["totals"] == dict(truth.events)
    assert main(["report", str(old), str(new)]) == 0
    text = capsys.readouterr().out
    assert "Per-hour volume (UTC)" in text  # two days, 48 hours: still hour by hour
    assert "2026-11-27 00h" in text and "2026-11-28 23h" in text


def test_a_truncated_gzip_is_named_and_the_rest_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = tmp_path / "bp.log.1.gz"
    write_day(whole, 3000, seed=3)
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    good = tmp_path / "bp.log"
    truth = write_day(good, 500, seed=4)
    assert main(["report", str(cut), str(good), "--json"]) == 1
    captured = capsys.readouterr()
    assert f"beacon-proxy: {cut}: " in captured.err
    assert "Traceback" not in captured.err
    report = json.loads(captured.out)
    bad, ok = report["files"]
    assert bad["name"] == str(cut) and bad["error"] and 0 < bad["lines"] < 3000
    assert ok == {"name": str(good), "lines": 500, "error": None}
    assert report["events"] >= 500 + bad["lines"] - 1  # the cut line, at most, skipped
    assert report["totals"]["received"] >= truth.events["received"]


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope.log")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"beacon-proxy: {tmp_path / 'nope.log'}: ")
    assert "ERROR" in captured.out and "0 events" in captured.out


def test_stdin_plain_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bp.log"
    truth = write_day(path, 1500, seed=5)
    for data in (path.read_bytes(), gzip.compress(path.read_bytes())):
        result = subprocess.run(
            [sys.executable, "-m", "beacon_proxy", "report", "-", "--json"], input=data,
            capture_output=True, cwd=ROOT, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["totals"] == dict(truth.events)
        assert report["files"] == [{"name": "(stdin)", "lines": 1500, "error": None}]


def test_garbage_lines_are_skipped_and_counted(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bp.log"
    truth = write_day(path, 1000, seed=6)
    lines = path.read_bytes().splitlines(keepends=True)
    odd_types = (b'{"ts":"2026-11-28T23:59:59.999Z","level":7,"event":"delivered","size":"big",'
                 b'"delay":"NaN","vendors":"Mailchimp","kinds":[1],"actions":{"strip":"3"},'
                 b'"reply":null,"recipient":42,"policy":[]}\n')
    garbage = [
        (3, b"Nov 28 10:00:00 mail postfix/smtpd[123]: connect from unknown\n"),  # not JSON
        (10, b"\n"),  # not JSON
        (20, b"\xff\xfe{\"event\": \"received\"}\n"),  # not UTF-8: not JSON
        (30, b'{"event":"received","ts":"yesterday"}\n'),  # not an event (ts)
        (40, b"[1, 2, 3]\n"),  # not an event
        (50, b'{"ts":"2026-11-28T10:00:00.000Z","level":"info","event":"rec\n'),  # cut short
        (60, b"{" * 100_000 + b"\n"),  # deeper than the parser goes
        (70, b'{"msg": "' + b"x" * (1 << 20) + b'"}\n'),  # longer than a line may be
    ]
    for at, line in garbage:  # in order: each lands at line at + 1
        lines.insert(at, line)
    lines.append(odd_types)  # an event with fields of the wrong types: counted, not fatal
    path.write_bytes(b"".join(lines))
    report = _json(capsys, str(path))
    assert report["events"] == 1001
    assert report["lines"] == 1000 + len(garbage) + 1
    assert report["skipped"] == {"total": len(garbage), "reasons": {
        "not_event": {"count": 2, "first": f"{path}:31"},
        "not_json": {"count": 5, "first": f"{path}:4"},
        "too_long": {"count": 1, "first": f"{path}:71"},
    }}
    assert report["totals"]["delivered"] == truth.events["delivered"] + 1
    assert report["delivered"]["bytes"] == truth.delivered_bytes
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "skipped 8 lines: " in text and f"not JSON: 5 (first at {path}:4)" in text


def test_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    report = _json(capsys, str(path))
    assert (report["events"], report["lines"], report["first"], report["totals"]) == (
        0, 0, None, {})
    assert main(["report", str(path)]) == 0
    assert capsys.readouterr().out.startswith("beacon-proxy report: 0 events, no events\n")


def test_without_logfile_the_configured_log(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text("")
    assert main(["report", "--config", str(config)]) == 2
    assert "[log] path is not set" in capsys.readouterr().err
    log = tmp_path / "relay.log"
    truth = write_day(log, 300, seed=7)
    config.write_text(f'[log]\npath = "{log}"\n')
    report = _json(capsys, "--config", str(config))
    assert report["totals"] == dict(truth.events)


def test_report_imports_no_server_stack(tmp_path: Path) -> None:
    from tests.cli.test_main import HEAVY, _imported_after

    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    loaded = _imported_after("from beacon_proxy.cli.main import main\n"
                             f"main(['report', {str(empty)!r}])")
    assert "beacon_proxy.logreport" in loaded
    assert [m for m in HEAVY if m in loaded] == []
