"""The durable queue: the seam (``api.QueueStore``) and its file-system implementation
(``store.FileQueueStore``: records in state directories, bodies in msg/; see docs/queue.md)."""

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
from pigeon.queue.api import QueueStore
from pigeon.queue.store import BodyWriter, FileQueueStore, QueueWriteError, RecordNotFound

__all__ = [
    "Attempt",
    "BodyWriter",
    "CorruptRecord",
    "FileQueueStore",
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
