"""The delivery-agent seam: what qmgr hands a transport, and what it gets back.

Rules:
1. A ``DeliveryJob`` is one queued message and the recipients this transport should handle now.
   The body file has CRLF line ends, as the queue stores it; the agent only reads it.
2. ``DeliveryAgent.deliver`` returns one ``RecipientResult`` per job recipient, in the job's order
   (``pigeon.core.results`` Rule 1).
3. An agent never raises for a delivery problem: anything unexpected is a ``deferred`` result with
   ``451 4.3.0`` and a log line, so no message is ever lost (DESIGN.md, "The seams").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pigeon.core.address import Address
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    queue_id: QueueId
    sender: Address | None  # None is the null reverse path <>
    recipients: tuple[Address, ...]
    body_path: Path


class DeliveryAgent(Protocol):
    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]: ...
