"""Structured logging: one JSON object per line.

Every relay event (``received``, ``rejected``, ``delivered``, ``deferred``,
``bounced``, ...) is written through :func:`event`; the field names are
documented in ``docs/logging.md``.  Ordinary log records from the package and
its libraries come out in the same shape with ``"event": "log"``.

    >>> event("delivered", queue_id="18C0A1B2C3D4E5F6", recipient="a@example.org")
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["JsonFormatter", "event", "setup_logging"]

_relay = logging.getLogger("beacon_proxy.relay")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; relay events carry their fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname.lower()}
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields is not None:
            out["event"] = record.getMessage()
            out.update(fields)
        else:
            out["event"] = "log"
            out["logger"] = record.name
            out["message"] = record.getMessage()
            if record.exc_info:
                out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str, separators=(",", ":"))


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one relay event with its fields (values must be JSON-friendly)."""
    if _relay.isEnabledFor(level):
        _relay.log(level, name, extra={"fields": fields})


def setup_logging(level: str = "info", path: Path | None = None) -> None:
    """Route all logging to one JSON-lines stream (stderr, or a file)."""
    stream: TextIO
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("a", encoding="utf-8", buffering=1)
    else:
        stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # aiosmtpd logs every connection at INFO; our own events say what matters.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, _LEVELS[level]))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
