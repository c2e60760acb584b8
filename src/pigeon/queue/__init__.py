"""The durable queue: records in state directories, bodies in msg/ (see docs/queue.md)."""

from pigeon.queue.record import (
    Attempt,
    CorruptRecord,
    QueueError,
    QueueRecord,
    RcptState,
    RcptStatus,
    State,
)
from pigeon.queue.recovery import RecoveryReport
from pigeon.queue.store import BodyWriter, QueueStore, QueueWriteError, RecordNotFound

__all__ = [
    "Attempt",
    "BodyWriter",
    "CorruptRecord",
    "QueueError",
    "QueueRecord",
    "QueueStore",
    "QueueWriteError",
    "RcptState",
    "RcptStatus",
    "RecordNotFound",
    "RecoveryReport",
    "State",
]
