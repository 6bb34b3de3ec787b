"""Spool stage: durable queue files and per-recipient journals."""

from beacon_proxy.spool.envelope import Envelope, new_queue_id
from beacon_proxy.spool.queue import (
    FINAL_STATES,
    QueueEntry,
    RecipientStatus,
    Spool,
    SpoolCorruptError,
)

__all__ = [
    "FINAL_STATES",
    "Envelope",
    "QueueEntry",
    "RecipientStatus",
    "Spool",
    "SpoolCorruptError",
    "new_queue_id",
]
