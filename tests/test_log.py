"""Structured logging: JSON lines, pseudonymised addresses, reopening, no library traces."""

from __future__ import annotations

import ast
import hmac
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy import log as log_module
from beacon_proxy.log import event, pseudonym, pseudonym_key, pseudonymize, setup_logging

KEY = pseudonym_key("0123456789abcdef0123")


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "log" / "relay.jsonl"
    setup_logging("debug", path)
    yield path
    pseudonymize(None)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_json_lines_with_their_fields(logfile: Path) -> None:
    event("delivered", queue_id="Q1", recipient="ann@example.org", size=3)
    logging.getLogger("beacon_proxy.x").warning("plain %s", "text")
    first, second = _lines(logfile)
    assert (first["event"], first["recipient"], first["size"]) == (
        "delivered", "ann@example.org", 3)
    assert (second["event"], second["message"], second["level"]) == ("log", "plain text", "warning")


def test_pseudonymized_logs_carry_no_address(logfile: Path) -> None:
    pseudonymize(KEY)
    event("bounced", sender="news@shop.example", recipient="Ann@Example.org",
          reply="550 5.1.1 <ann@example.org>: Recipient address rejected",
          recipients=["bob@example.org", "x"], count=2, nested={"to": "c@example.org"})
    logging.getLogger("beacon_proxy.y").info("lookup for %s failed", "dan@example.org")
    text = logfile.read_text()
    assert "@" not in text
    bounced, logged = _lines(logfile)
    ann = pseudonym("ann@example.org", KEY)
    assert bounced["recipient"] == ann and ann in str(bounced["reply"])
    assert bounced["recipients"] == [pseudonym("bob@example.org", KEY), "x"]
    assert bounced["count"] == 2 and bounced["nested"] == {"to": pseudonym("c@example.org", KEY)}
    assert logged["message"] == f"lookup for {pseudonym('dan@example.org', KEY)} failed"
    assert ann.startswith("h:") and len(ann) == 18
    # the same name as ever: 16 hex digits of HMAC-SHA256 over the lower-cased address
    assert ann == "h:" + hmac.digest(KEY, b"ann@example.org", "sha256")[:8].hex()
    assert pseudonym(" Ann@Example.ORG ", KEY) == ann
    assert pseudonym("ann@example.org", pseudonym_key("another-secret-0123")) != ann


def test_remembered_pseudonyms_follow_the_key_and_stay_bounded(
        logfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_module._Pseudonyms, "LIMIT", 3)
    other = pseudonym_key("another-secret-0123")
    for key in (KEY, other, KEY):
        pseudonymize(key)
        for n in range(5):  # more addresses than are remembered, each named twice
            event("delivered", recipient=f"r{n}@example.org", sender=f"r{n}@example.org")
    names = log_module._pseudonyms
    assert names is not None and len(names._known) <= 3
    lines = _lines(logfile)
    assert len(lines) == 15 and "@" not in logfile.read_text()
    for i, line in enumerate(lines):
        key = other if 5 <= i < 10 else KEY
        assert line["recipient"] == line["sender"] == pseudonym(f"r{i % 5}@example.org", key)


@pytest.mark.parametrize("address", [
    "D\u00e9sir\u00e9e@example.org",  # SMTPUTF8: a non-ASCII local part
    "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a",  # and domain
    '"john doe"@example.org', '"a\\"b"@example.org',  # quoted local parts
    "postmaster@[192.0.2.1]",  # an address literal
])
def test_pseudonymized_logs_carry_no_international_quoted_or_literal_address(
        logfile: Path, address: str) -> None:
    pseudonymize(KEY)
    event("bounced", recipient=address, reply=f"550 5.1.1 <{address}>: no such user")
    (line,) = _lines(logfile)
    assert "@" not in json.dumps(line)
    assert line["recipient"] == pseudonym(address, KEY)
    assert line["reply"] == f"550 5.1.1 <{pseudonym(address, KEY)}>: no such user"


def test_pseudonymizing_a_hostile_text_is_linear(logfile: Path) -> None:
    """Long runs of address characters with no address (an upstream's reply, a header
    quoted in a message): each run is scanned once.  Were every character a new start,
    these would take minutes; here they are what they say."""
    pseudonymize(KEY)
    runs = ["a" * 100_000 + " @", '"' * 100_000 + "@", "@" * 100_000,
            '\\"' * 50_000 + "@",  # each escaped quote would open a quoted local part
            "a@[" * 30_000,  # each would open an address literal
            "x" * 100_000 + "@example.org"]
    event("deferred", reply=runs)
    (line,) = _lines(logfile)
    assert line["reply"] == [*runs[:5], pseudonym(runs[5], KEY)]


#: The address pattern before its quoted local parts and address literals were bounded
#: (quadratic on a run of escaped quotes, or of "a@["): the same matches elsewhere.
_UNBOUNDED = re.compile(r"(?<![\w!#$%&'*+/=?^`{|}~.-])"
                        r"(?:\"(?:[^\"\\\r\n]|\\.)*\"|[\w!#$%&'*+/=?^`{|}~.-]+)"
                        r"@(?:[^\W_](?:[\w.-]*[^\W_])?|\[[^\]\s]*\])")
_LOCAL = re.compile(r"\"(?:[^\"\\\r\n]|\\.)*\"|[^@]+")
_VALID_LOCAL = re.compile(r"\"(?:[^\"\\\r\n]|\\.){0,64}\"|[^\"].*", re.S)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(['"', "a", "\u00e9", "_", ".", "-", " ", "\\", "@", "[", "]",
                                 "<", ">", "\r", "\n", "b.c", '\\"', "x@y", '"a"@', "@[1]"]),
                max_size=40).map("".join) | st.text(max_size=80))
def test_the_bounded_address_pattern_finds_what_the_unbounded_one_did(text: str) -> None:
    """Every match of the unbounded pattern is found, unless its quoted local part is
    longer than RFC 5321 allows or its address literal holds a "["."""
    old = [m.group() for m in _UNBOUNDED.finditer(text)]
    for found in old:
        local = _LOCAL.match(found)
        assert local is not None
        if not _VALID_LOCAL.fullmatch(local.group()) or "[" in found[local.end() + 2:]:
            return
    assert [m.group() for m in log_module._ADDRESS.finditer(text)] == old


def test_a_value_json_would_write_as_text_is_pseudonymized_too(logfile: Path) -> None:
    """An error, a path or bytes become their text in the line (``default=str``): the
    address in that text is masked like any other."""
    pseudonymize(KEY)
    event("failed", error=LookupError("no such user ann@example.org"),
          path=Path("/spool/bob@example.org"), raw=b"<c@example.org>", n=3, ok=None)
    (line,) = _lines(logfile)
    assert "@" not in json.dumps(line)
    assert line["error"] == f"no such user {pseudonym('ann@example.org', KEY)}"
    assert line["path"] == pseudonym("/spool/bob@example.org", KEY)  # "/" is an atom character
    assert line["raw"] == f"b'<{pseudonym('c@example.org', KEY)}>'"
    assert line["n"] == 3 and line["ok"] is None


def test_setup_again_reopens_the_file_for_logrotate(logfile: Path) -> None:
    event("one")
    rotated = logfile.with_suffix(".1")
    logfile.rename(rotated)
    event("two")  # still written to the renamed file, as with any daemon
    setup_logging("info", logfile)  # what SIGHUP does
    event("three")
    assert [e["event"] for e in _lines(rotated)] == ["one", "two"]
    assert [e["event"] for e in _lines(logfile)] == ["three"]


def test_libraries_that_trace_data_stay_at_info_even_at_debug(logfile: Path) -> None:
    for name in ("aiosqlite", "asyncpg", "aiosmtplib", "mail.log"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    assert logging.getLogger("beacon_proxy").isEnabledFor(logging.DEBUG)


#: Functions whose first argument is the event name they log: :func:`event` itself and
#: the helpers that pass their ``name`` on to it (the scheduler's per-recipient lines).
_EVENT_HELPERS = frozenset({"event", "_log_recipient"})
_PACKAGE = Path(__file__).resolve().parents[1] / "beacon_proxy"


def _package_trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(_PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def _helper_call(node: ast.AST) -> ast.Call | None:
    """``node`` when it calls ``event(...)`` or a helper (``self._log_recipient(...)``)."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = (func.id if isinstance(func, ast.Name)
            else func.attr if isinstance(func, ast.Attribute) else None)
    return node if name in _EVENT_HELPERS else None


def _logged_events() -> dict[str, str]:
    """Every event name the package logs with :func:`event` (or a helper that passes its
    name on), and one place it does."""
    found: dict[str, str] = {}
    for path, tree in _package_trees():
        for node in ast.walk(tree):
            call = _helper_call(node)
            if (call is not None and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)):
                found.setdefault(call.args[0].value, f"{path.name}:{call.lineno}")
    return found


def _documented_events() -> set[str]:
    """The names in the first column of docs/logging.md's table of events."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "logging.md").read_text()
    table = docs.split("\n| event | when | fields |\n", 1)[1].split("\n\n", 1)[0]
    return {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}


def test_every_event_is_documented() -> None:
    """docs/logging.md has a row for every event the code logs (its first column)."""
    rows = _documented_events()
    events = _logged_events()
    assert len(events) > 20  # the walk finds them
    assert {name: where for name, where in events.items() if name not in rows} == {}


def test_every_documented_event_is_logged() -> None:
    """No row of docs/logging.md's table names an event the code no longer logs."""
    rows = _documented_events()
    assert len(rows) > 20  # the table was found
    assert sorted(rows - set(_logged_events())) == []


def test_event_names_are_found_by_the_walk() -> None:
    """An event name that is not a literal is only passed on by a helper in
    ``_EVENT_HELPERS`` (whose callers give literals), so the two tests above see every
    event the package can log."""
    dynamic = []
    for path, tree in _package_trees():
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                call = _helper_call(node)
                if (call is not None and not isinstance(call.args[0], ast.Constant)
                        and function.name not in _EVENT_HELPERS):
                    dynamic.append(f"{path.name}:{call.lineno} in {function.name}")
    assert dynamic == []


def test_worker_field_and_one_write_per_line(tmp_path: Path) -> None:
    from beacon_proxy.log import set_worker

    path = tmp_path / "workers.jsonl"
    set_worker(1)
    try:
        setup_logging("info", path)  # a worker: one write(2) per line, O_APPEND
        event("received", queue_id="Q1", note="x" * 70_000)
        logging.getLogger("beacon_proxy.test").warning("plain")
    finally:
        set_worker(None)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
    first, second = _lines(path)
    assert first["worker"] == 1 and first["event"] == "received"
    assert len(str(first["note"])) == 70_000
    assert second["worker"] == 1 and second["message"] == "plain"


def test_records_skip_the_process_and_thread_names_no_line_shows(
        logfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("logProcesses", "logThreads", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, True)  # restored after the test
    setup_logging("debug", logfile)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        event("delivered", queue_id="Q1")
    finally:
        logging.getLogger().removeHandler(keep)
    (record,) = records
    assert (record.process, record.thread, record.processName) == (None, None, None)
    (line,) = _lines(logfile)
    assert set(line) == {"ts", "level", "event", "queue_id"} | ({"worker"} & set(line))


def test_line_times_are_gmtimes_also_when_the_second_is_kept() -> None:
    """``_iso`` keeps the last second's text: times in order, out of order, across
    seconds, before 1970 (not kept), each as ``strftime`` of ``gmtime`` makes it."""
    import random
    import time

    from beacon_proxy.log import _iso

    def fresh(ts: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"

    rng = random.Random(12)
    times = [1733333333 + i / 997 for i in range(3000)] + [rng.uniform(0, 4e9) for _ in range(3000)]
    times += [0.0, 0.999, 1.0, 0.5, -0.5, 0.5, -1.0, -1.5, -0.25, 0.25, 86399.9999, 86400.0]
    for ts in times:
        assert _iso(ts) == fresh(ts), ts


def test_a_line_is_the_json_dumps_of_its_fields() -> None:
    """The formatter's kept encoder gives what ``json.dumps`` with the same options gives
    (non-ASCII kept, ``str`` for the unknown, compact)."""
    from pathlib import PurePosixPath

    from beacon_proxy.log import JsonFormatter

    fields = {"recipient": "d\u00e9@example.org", "path": PurePosixPath("/x"), "n": 1.5,
              "nested": {"a": [1, None, True]}}
    record = logging.makeLogRecord({"msg": "delivered", "fields": fields, "created": 1.25,
                                    "levelname": "INFO"})
    line = JsonFormatter().format(record)
    assert line == json.dumps({"ts": "1970-01-01T00:00:01.250Z", "level": "info",
                               "event": "delivered", **fields},
                              ensure_ascii=False, default=str, separators=(",", ":"))


def test_listened_is_when_an_event_would_reach_anyone() -> None:
    """``listened`` answers exactly when ``event`` would do something: a tap, or the
    relay log enabled at the level (callers skip gathering fields otherwise)."""
    from beacon_proxy.log import add_event_tap, listened, remove_event_tap

    relay = logging.getLogger("beacon_proxy.relay")
    seen: list[str] = []

    def tap(name: str, fields: dict[str, object]) -> None:
        seen.append(name)

    old = relay.level
    try:
        relay.setLevel(logging.WARNING)
        assert not listened() and listened(logging.WARNING) and listened(logging.ERROR)
        add_event_tap(tap)
        try:
            assert listened() and listened(logging.DEBUG)
            event("delivered", queue_id="Q1")
        finally:
            remove_event_tap(tap)
        assert seen == ["delivered"] and not listened()
        relay.setLevel(logging.INFO)
        assert listened() and not listened(logging.DEBUG)
    finally:
        relay.setLevel(old)


def _no_handlers() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("worker", [None, 2])
def test_an_events_line_is_the_same_written_straight_or_through_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes | None,
        worker: int | None) -> None:
    """With the file's handler alone, ``event`` writes the line itself; with a filter on the
    relay logger it goes through a ``LogRecord`` and the formatter: the same bytes, for
    non-ASCII text, a lone surrogate, nested values, pseudonyms and the worker field."""
    import time

    from beacon_proxy import log

    # the same instant from both clocks: a LogRecord's ``created`` is time.time_ns() / 1e9 on
    # Python 3.13+ (time.time() before), which can differ from a float literal in its last bit
    now_ns = 1_733_333_333_250_000_000
    monkeypatch.setattr(time, "time_ns", lambda: now_ns)
    monkeypatch.setattr(time, "time", lambda: now_ns / 1e9)
    path = tmp_path / "relay.jsonl"
    log.set_worker(worker)
    pseudonymize(key)
    relay = logging.getLogger("beacon_proxy.relay")
    fields = {"recipient": "D\u00e9@example.org", "odd": "\udce9", "n": 1.5, "path": tmp_path,
              "nested": {"to": ["a@example.org", None, True]}}
    try:
        setup_logging("info", path)
        assert log._direct is not None and log._direct_reaches(log._direct, logging.INFO)
        event("delivered", **fields)
        event("deferred", logging.WARNING, **fields)

        def keep(record: logging.LogRecord) -> bool:
            return True

        relay.addFilter(keep)
        try:
            assert not log._direct_reaches(log._direct, logging.INFO)
            event("delivered", **fields)
            event("deferred", logging.WARNING, **fields)
        finally:
            relay.removeFilter(keep)
        event("debugged", logging.DEBUG, **fields)  # below the level: nowhere
    finally:
        log.set_worker(None)
        pseudonymize(None)
        _no_handlers()
    straight, straight_warning, through, through_warning = path.read_bytes().splitlines()
    assert straight == through and straight_warning == through_warning
    assert b'"level":"warning"' in straight_warning and b"\\udce9" in straight
    assert (b"@" not in straight) is (key is not None)


def test_anything_else_attached_gets_the_record(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A second handler (here pytest's capture), a handler on the package's logger or a
    logger that does not pass records on: the ordinary way, which reaches each."""
    from beacon_proxy import log

    path = tmp_path / "relay.jsonl"
    package = logging.getLogger("beacon_proxy")
    try:
        setup_logging("info", path)
        assert log._direct is not None
        caplog.set_level(logging.INFO, logger="beacon_proxy.relay")
        logging.getLogger().addHandler(caplog.handler)
        event("received", queue_id="Q1")
        logging.getLogger().removeHandler(caplog.handler)
        package.propagate = False
        assert not log._direct_reaches(log._direct, logging.INFO)
        event("received", queue_id="Q2")  # stops at the package's logger: no handler there
        package.propagate = True
        package.addHandler(caplog.handler)
        assert not log._direct_reaches(log._direct, logging.INFO)
        event("received", queue_id="Q3")
        package.removeHandler(caplog.handler)
    finally:
        package.propagate = True
        _no_handlers()
    queued = [getattr(r, "fields", {}).get("queue_id") for r in caplog.records]
    assert queued == ["Q1", "Q3"]
    assert [line["queue_id"] for line in _lines(path)] == ["Q1", "Q3"]


@pytest.mark.parametrize("change", ["formatter", "level name"])
def test_an_embedders_formatter_or_level_name_is_honoured(tmp_path: Path, change: str) -> None:
    """An embedding program that gives the file's handler its own formatter, or renames a
    level, gets its lines as the ordinary way writes them (the straight way wrote JSON,
    and "info", regardless)."""
    from beacon_proxy import log

    path = tmp_path / "relay.jsonl"
    try:
        setup_logging("info", path)
        assert log._direct is not None
        if change == "formatter":
            log._direct.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
            assert not log._direct_reaches(log._direct, logging.INFO)
        else:
            logging.addLevelName(logging.INFO, "NOTICE")
        event("delivered", queue_id="Q1")
    finally:
        logging.addLevelName(logging.INFO, "INFO")
        _no_handlers()
    if change == "formatter":
        assert path.read_text() == "INFO delivered\n"
    else:
        assert _lines(path)[0]["level"] == "notice"


def test_the_file_is_closed_under_the_lock_each_write_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``setup_logging`` again (``SIGHUP``) closes the old file only once no thread is
    writing to it (its descriptor's number could be another file's by then)."""
    import os

    from beacon_proxy import log

    steps: list[str] = []

    class Recording:
        def acquire(self) -> None:
            steps.append("acquire")

        def release(self) -> None:
            steps.append("release")

    handler = log.LineHandler(tmp_path / "relay.jsonl")
    monkeypatch.setattr(handler, "lock", Recording())
    real_close = os.close

    def close(fd: int) -> None:
        steps.append("close")
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    handler.close()
    assert steps[:3] == ["acquire", "close", "release"]


def test_a_line_that_cannot_be_written_is_reported_not_raised(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The straight way fails as the handler's own ``emit`` does: ``handleError`` reports
    it on standard error, the caller goes on."""
    import os

    from beacon_proxy import log

    try:
        setup_logging("info", tmp_path / "relay.jsonl")
        assert log._direct is not None
        os.close(log._direct._fd)
        event("received", queue_id="Q1")
        log._direct._fd = os.open(os.devnull, os.O_WRONLY)
    finally:
        _no_handlers()
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "OSError" in err
