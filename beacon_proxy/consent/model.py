"""What the consent store holds, as plain values, and its errors.

Errors::

    StoreError                  the store failed (database error, bad state)
    +-- StoreUnavailable        it cannot be opened or reached (also an OSError)
    ValueError
    +-- AddressError            not an address (beacon_proxy.consent.address)
    +-- ListIdError             not a list id
    +-- InvalidValue            another field is out of range (names the field)

Times are timezone-aware UTC :class:`~datetime.datetime` values;
:func:`to_json` turns any record into a JSON-friendly dict with ISO 8601
times (``2026-11-28T10:00:00.123456Z``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from beacon_proxy.consent.address import Address

__all__ = [
    "MAX_TEXT",
    "AuditEntry",
    "Beacons",
    "CampaignRecord",
    "Consent",
    "ConsentInput",
    "Forgotten",
    "ForwardJob",
    "ForwardState",
    "Imported",
    "InvalidValue",
    "OpenEvent",
    "OpenInput",
    "Page",
    "StoreError",
    "StoreUnavailable",
    "Suppression",
    "SuppressionInput",
    "check_text",
    "iso",
    "parse_time",
    "storable_problem",
    "to_json",
    "utcnow",
]

T = TypeVar("T")
MAX_TEXT = 200  # characters of a short free-text field (source, actor)


class StoreError(Exception):
    """The consent store failed."""


class StoreUnavailable(StoreError, OSError):
    """The store cannot be opened or reached."""


class InvalidValue(ValueError):
    """A field has a bad value."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Beacons(enum.StrEnum):
    """A recipient's recorded beacon consent."""

    GRANTED = "granted"
    REFUSED = "refused"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Consent:
    address: str
    beacons: Beacons
    source: str | None
    actor: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Suppression:
    """Delivery suspended for an address, for one list or (``list_id=None``) all mail.

    After ``forget`` only a keyed hash of the address remains: ``address`` is
    ``None`` and ``forgotten`` is true, and the suppression still applies.
    """

    id: int
    address: str | None
    list_id: str | None
    reason: str | None
    source: str | None
    actor: str | None
    created_at: datetime
    forgotten: bool = False


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change, in an append-only trail (erasure only blanks ``address`` and ``reason``)."""

    id: int
    at: datetime
    actor: str | None
    action: str  # consent.set, consent.delete, suppression.add, suppression.remove, forget
    address: str | None
    list_id: str | None
    old: str | None
    new: str | None
    source: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class OpenEvent:
    id: int
    at: datetime
    address: str
    list_id: str | None
    message_id: str | None
    ua_class: str | None
    machine: bool


class ForwardState(enum.StrEnum):
    """Where a queued server-side forward stands."""

    PENDING = "pending"  # waiting for its (next) attempt, or being sent
    DONE = "done"  # the sender's server accepted it
    FAILED = "failed"  # given up; kept with its last error for inspection


@dataclass(frozen=True, slots=True)
class ForwardJob:
    """One queued server-side forward (a recipient's one-click, sent on to the sender).

    ``attempts`` counts the attempts started (a claim starts one).  While
    pending, ``next_at`` is when the job is next due (for a claimed job: the
    end of its lease); once done or failed, when it ended.
    """

    id: int
    url: str
    address: str
    list_id: str | None
    attempts: int
    created_at: datetime
    next_at: datetime
    state: ForwardState
    last_error: str | None


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    """What the store keeps of one campaign for campaign diffing (:mod:`.sqlcampaigns`).

    ``memory``: :meth:`~beacon_proxy.rewrite.campaign.CampaignMemory.to_json` as
    text ("" before the first copy); ``learned``: the copies learned so far, as
    short hashes (``rewrite.diffing.copy_id``); ``updated_at``: when a copy was last learned.
    """

    memory: str
    copies: int
    learned: tuple[str, ...]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget`` did."""

    consent: bool  # a consent record was removed
    opens: int  # open events removed
    suppressions: int  # suppressions reduced to a keyed hash
    audit: int  # audit entries whose address was blanked
    forwards: int = 0  # queued one-click forwards removed (they held the sender's URL)


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did: the rows read, and how many changed something (a row equal
    to what the store holds is neither written again nor audited)."""

    rows: int
    changed: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next`` as ``after`` for the following one."""

    items: Sequence[T]
    next: str | None


@dataclass(frozen=True, slots=True)
class ConsentInput:
    """One validated consent change (a CSV row, an API call)."""

    address: Address
    beacons: Beacons
    source: str | None


@dataclass(frozen=True, slots=True)
class SuppressionInput:
    address: Address
    list_id: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class OpenInput:
    """One open to record (a pixel fetch), for :meth:`record_opens`."""

    address: str | Address
    list_id: str | None = None
    message_id: str | None = None
    ua_class: str | None = None
    machine: bool = False
    at: datetime | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """``2026-11-28T10:00:00.123456Z``: fixed width, so text order is time order."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (a date alone means midnight UTC; no zone means UTC)."""
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidValue("since", f"not an ISO 8601 time: {text!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def storable_problem(value: str) -> str | None:
    """Why no store can keep ``value`` as text, or ``None``.

    PostgreSQL refuses a NUL character in text, and a lone surrogate (a JSON
    ``"\\ud800"``, undecodable bytes in a command-line argument) is not UTF-8
    at all; both would otherwise surface as a database error.
    """
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text (lone surrogate U+{ord(value[exc.start]):04X})"
    return None


def check_text(field: str, value: object, limit: int = MAX_TEXT) -> str | None:
    """A short free-text field: ``None``/empty -> ``None``; no control characters,
    nothing a store cannot keep (:func:`storable_problem`)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(field, "expected a string")
    value = value.strip(" \t\r\n")  # str.strip() would also eat \x1c-\x1f
    if len(value) > limit:
        raise InvalidValue(field, f"longer than {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidValue(field, "must not contain control characters")
    problem = storable_problem(value)
    if problem is not None:
        raise InvalidValue(field, problem)
    return value or None


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def to_json(record: Any) -> dict[str, Any]:
    """A store record as a JSON-friendly dict."""
    return {f.name: _json_value(getattr(record, f.name)) for f in dataclasses.fields(record)}
