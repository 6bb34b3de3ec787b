"""Structured logging: one JSON object per line.

Every relay event (``received``, ``rejected``, ``delivered``, ``deferred``,
``bounced``, ...) is written through :func:`event`; the field names are
documented in ``docs/logging.md``.  Ordinary log records from the package and
its libraries come out in the same shape with ``"event": "log"``; every line
is one JSON object.  aiosmtpd's warnings about a client's command (unrecognised,
too many bogus commands, ...) are dropped: the ``rejected`` event reports each.

No secret reaches the log at any level: libraries that trace their traffic
at debug level (aiosqlite's SQL, with its parameters; aiosmtplib's and
aiosmtpd's protocol lines) are kept at ``info`` or above.  With
:func:`pseudonymize` (``[log] pseudonymize = true``) every e-mail address in
every line is replaced by a keyed hash, ``h:`` and 16 hex digits
(:func:`pseudonym`; ``beacon-proxy hash-address`` computes one to look an
address up).  :func:`setup_logging` may be called again (``SIGHUP``): it
closes the old file and opens the configured one, so ``logrotate`` can move
the file away and signal.

    >>> event("delivered", queue_id="18C0A1B2C3D4E5F6", recipient="a@example.org")
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from beacon_proxy.keyed import KeyedHash

__all__ = ["EventTap", "JsonFormatter", "LineHandler", "add_event_tap", "event", "listened",
           "pseudonym", "pseudonym_key", "pseudonymize", "remove_event_tap", "set_worker",
           "setup_logging"]

_relay = logging.getLogger("beacon_proxy.relay")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


#: Libraries whose debug output carries data (SQL parameters, SMTP lines): never below info.
_QUIET_LIBRARIES = ("aiosqlite", "asyncpg", "aiosmtplib", "aiohttp.client", "aiohttp.server")
#: An e-mail address anywhere in a string: a local part of atom characters (any letter
#: or digit, SMTPUTF8's too) or a quoted one, ``@``, a domain (its labels in any script,
#: or an address literal).  Linear in the string's length, so that a hostile reply or
#: header cannot stall the relay: an atom local part starts only where no atom character
#: precedes it (a run of them without ``@`` is scanned once, not once per character); a
#: quoted one holds at most 64 characters or pairs (RFC 5321's 64 octets of local part,
#: so every valid one), as each ``\"`` of a run of them would otherwise start a scan
#: to the run's end; an address literal holds no "[" (it ends a scan at the next one).
_ADDRESS = re.compile(r"(?<![\w!#$%&'*+/=?^`{|}~.-])"
                      r"(?:\"(?:[^\"\\\r\n]|\\.){0,64}+\"|[\w!#$%&'*+/=?^`{|}~.-]+)"
                      r"@(?:[^\W_](?:[\w.-]*[^\W_])?|\[[^\[\]\s]*\])")


class _Pseudonyms:
    """The pseudonyms of one key, remembered: a message's lines name its sender, recipient
    and Message-ID again and again (one HMAC each otherwise).  Bounded: emptied when
    full, so addresses an outsider chooses only cost the HMAC they would cost anyway."""

    LIMIT: Final = 4096

    def __init__(self, key: bytes) -> None:
        self._keyed = KeyedHash(key)
        self._known: dict[str, str] = {}

    def of(self, match: re.Match[str]) -> str:
        address = match.group(0)
        name = self._known.get(address)
        if name is None:
            name = _pseudonym(address, self._keyed)
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            self._known[address] = name
        return name


#: The current key's pseudonyms (None: addresses are logged as they are).
_pseudonyms: _Pseudonyms | None = None
#: The ``worker`` field of every line (several worker processes): an index or "supervisor".
_worker: int | str | None = None


def pseudonym(address: str, key: bytes) -> str:
    """The log's name for an address under ``key``: ``h:`` and 16 hex digits of
    HMAC-SHA256 over the lower-cased address.

    >>> pseudonym("Ann@Example.org", b"k" * 32) == pseudonym("ann@example.org", b"k" * 32)
    True
    """
    return _pseudonym(address, KeyedHash(key))


def _pseudonym(address: str, keyed: KeyedHash) -> str:
    """:func:`pseudonym` under a key's kept state (each line is written on the thread
    that logs it, often the event loop: :class:`~beacon_proxy.keyed.KeyedHash` keeps
    the GIL)."""
    digest = keyed.digest(address.strip().lower().encode("utf-8", "surrogatepass"))
    return "h:" + digest[:8].hex()


def pseudonym_key(secret: str) -> bytes:
    """The pseudonym key derived from a token secret (``[tokens] secret``, current one)."""
    return hmac.new(secret.encode("utf-8"), b"beacon-proxy log pseudonyms v1",
                    hashlib.sha256).digest()


def pseudonymize(key: bytes | None) -> None:
    """Replace every address in every log line by :func:`pseudonym` (None: stop)."""
    global _pseudonyms
    _pseudonyms = None if key is None else _Pseudonyms(key)


def set_worker(worker: int | str | None) -> None:
    """Give every line a ``worker`` field (the worker's index, or ``"supervisor"``); None:
    none (a single-process relay)."""
    global _worker
    _worker = worker


def _masked(value: Any, names: _Pseudonyms) -> Any:
    if isinstance(value, str):
        return _ADDRESS.sub(names.of, value) if "@" in value else value
    if isinstance(value, list | tuple):
        return [_masked(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, names) for k, v in value.items()}
    if value is None or isinstance(value, int | float):
        return value
    return _masked(str(value), names)  # what the JSON would hold (default=str): an error, a path


#: The JSON of a line: one encoder made once (``json.dumps`` with options builds one per
#: call), the same output.
_JSON = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))
#: The second of the last line's time and its text (the lines of one second share it).
_second: tuple[int, str] = (-1, "")


def _iso(ts: float) -> str:
    global _second
    whole = int(ts)  # gmtime's second for ts >= 0 (gmtime floors, int() truncates)
    second = _second
    if second[0] != whole or ts < 0:
        second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)))
        if ts >= 0:
            _second = second
    return second[1] + f".{int(ts % 1 * 1000):03d}Z"


def _line(created: float, levelname: str, name: str, fields: dict[str, Any]) -> str:
    """A line: its time, level, worker, ``event`` name, then ``fields`` (pseudonymised
    when :func:`pseudonymize` is on)."""
    out: dict[str, Any] = {"ts": _iso(created), "level": levelname}
    if _worker is not None:
        out["worker"] = _worker
    out["event"] = name
    out.update(fields)
    names = _pseudonyms
    if names is not None:
        out = _masked(out, names)
    return _JSON.encode(out)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; relay events carry their fields, any other
    record is an ``event`` ``"log"`` with its logger, message and exception."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields is not None:
            return _line(record.created, record.levelname.lower(), record.getMessage(), fields)
        plain: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            plain["exception"] = self.formatException(record.exc_info)
        return _line(record.created, record.levelname.lower(), "log", plain)


class _ReportedByUs(logging.Filter):
    """Drops aiosmtpd's warnings about a client's command that the relay's own
    ``rejected`` event already reports (with its stage, code and reason): one line
    per refusal, and a documented one."""

    MESSAGES = frozenset({"%r unrecognised: %s", "%r too many bogus commands",
                          "%r over limit for %s", "%r aborted AUTH with '*'"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.MESSAGES


_reported_by_us = _ReportedByUs()


EventTap = Callable[[str, dict[str, Any]], None]
_taps: list[EventTap] = []


def add_event_tap(tap: EventTap) -> None:
    """Hand every relay event (name, fields) to ``tap`` too, whatever the log level.

    A tap runs synchronously in :func:`event` (on the hot path): it must be cheap
    and must not raise.  The console dashboard counts events this way."""
    _taps.append(tap)


def remove_event_tap(tap: EventTap) -> None:
    if tap in _taps:
        _taps.remove(tap)


def listened(level: int = logging.INFO) -> bool:
    """Whether an :func:`event` at ``level`` would be seen by anyone: a tap, or the relay
    log at that level.  A caller that gathers many fields for every delivered copy asks
    first, so that a relay logging warnings only builds none of them (the call, its
    keyword dictionary and the values: some 5 us a copy)."""
    return bool(_taps) or _relay.isEnabledFor(level)


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one relay event with its fields (values must be JSON-friendly).

    When :func:`setup_logging`'s :class:`LineHandler` is the only handler the event
    would reach, with no filter on the way, its line is written straight away, the
    same bytes its record would have become: no ``LogRecord``, caller lookup or
    handler chain (a serving relay writes three lines a message at ``info``, its
    default: 15 -> 11 us each, ``bench/log_event.py``).  Anything else attached (a
    test's capture, a handler an embedding program added) takes the ordinary way."""
    for tap in _taps:
        tap(name, fields)
    if _relay.isEnabledFor(level):
        handler = _direct
        if handler is not None and _direct_reaches(handler, level):
            line = _line(time.time(), logging.getLevelName(level).lower(), name, fields)
            with handler.lock:  # type: ignore[union-attr]  # made by Handler.__init__
                try:
                    handler.write_line(line)
                except Exception:
                    handler.handleError(_relay.makeRecord(
                        _relay.name, level, "", 0, name, (), None, extra={"fields": fields}))
        else:
            _relay.log(level, name, extra={"fields": fields})


_root = logging.getLogger()
_package = logging.getLogger("beacon_proxy")
#: The handler setup_logging attached to the root logger, when it is a LineHandler.
_direct: LineHandler | None = None


def _direct_reaches(handler: LineHandler, level: int) -> bool:
    """Whether a relay event's record would reach ``handler`` and nothing else, unfiltered
    and formatted by a :class:`JsonFormatter` (the relay logger and its parent add no
    handler or filter and pass records on, the root logger has ``handler`` alone, with no
    filter, the handler takes ``level`` and nobody gave it another formatter)."""
    handlers = _root.handlers
    return (len(handlers) == 1 and handlers[0] is handler and level >= handler.level
            and type(handler.formatter) is JsonFormatter
            and not (_relay.handlers or _relay.filters or _package.handlers
                     or _package.filters or _root.filters or handler.filters)
            and _relay.propagate and _package.propagate)


class LineHandler(logging.Handler):
    """Writes each record as one line with a single ``write(2)`` on a file descriptor:
    to a file opened with ``O_APPEND`` (``path``) or to standard error.  Several
    processes writing one log (the worker processes) never interleave inside a line:
    ``O_APPEND`` writes to a file are atomic, and so are writes to a pipe up to
    ``PIPE_BUF`` (4096 bytes; a longer line to a pipe may interleave)."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self._owned = path is not None
        self._fd = (os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                    if path is not None else sys.stderr.fileno())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Write ``line`` and its newline (a short write is continued)."""
        data = (line + "\n").encode("utf-8", "backslashreplace")
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        """Close the file, under the lock every write holds: a thread writing a line as
        ``setup_logging`` (``SIGHUP``) replaces the handler finishes first, rather than
        write to the closed descriptor, or to a file opened meanwhile with its number."""
        self.acquire()
        try:
            if self._owned and self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        finally:
            self.release()
        super().close()


def setup_logging(level: str = "info", path: Path | None = None, *,
                  atomic: bool | None = None) -> None:
    """Route all logging to one JSON-lines stream (stderr, or a file opened for
    appending); called again, it closes the previous file and opens ``path`` anew.
    A file, and standard error when ``atomic``, get one ``write(2)`` per line
    (:class:`LineHandler`): several processes can write one log (``atomic`` is on by
    default when :func:`set_worker` named a worker).  Standard error otherwise goes
    through ``sys.stderr`` (a caller may have replaced it)."""
    handler: logging.Handler
    if atomic is None:
        atomic = _worker is not None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = LineHandler(path)
    elif atomic:
        handler = LineHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    global _direct
    _direct = handler if isinstance(handler, LineHandler) else None
    # JsonFormatter reads none of the process, thread or multiprocessing names a
    # LogRecord gathers by default: without them a record is made without a
    # getpid(2) system call and two lookups (0.8 us of 2.3 per record, several
    # records per message).
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()  # a LineHandler closes its file; stderr stays open
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # aiosmtpd logs every connection at INFO; our own events say what matters (and
    # its warnings about a refused command are our `rejected` events).
    smtpd_log = logging.getLogger("mail.log")
    smtpd_log.setLevel(max(logging.WARNING, _LEVELS[level]))
    if _reported_by_us not in smtpd_log.filters:
        smtpd_log.addFilter(_reported_by_us)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, _LEVELS[level]))
