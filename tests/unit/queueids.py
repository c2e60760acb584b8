"""Fresh queue ids for tests: ``core.queueid.new_queue_id`` is pure, the test supplies the
clock reading and the random bits, as ``queue.store`` does."""

from __future__ import annotations

import secrets
import time

from pigeon.core.queueid import ENTROPY_BITS, QueueId, new_queue_id


def fresh_queue_id() -> QueueId:
    return new_queue_id(time.time(), secrets.randbits(ENTROPY_BITS))
