"""The delivery-agent seam: what qmgr hands a transport, and what it gets back.

Rules:
1. A ``DeliveryJob`` is one queued message and the recipients this transport should handle now.
   The body file has CRLF line ends, as the queue stores it; the agent only reads it.
2. ``DeliveryAgent.deliver`` returns one ``RecipientResult`` per job recipient, in the job's order
   (``pigeon.core.results`` Rule 1).
3. An agent never raises for a delivery problem: anything unexpected is a ``deferred`` result with
   ``451 4.3.0`` and a log line, so no message is ever lost (DESIGN.md, "The seams").
4. A ``MessageAgent`` takes a whole committed message instead of a job (today the fast lane,
   ``delivery.fastlane``, for mail committed to the queue's intake journal): qmgr chooses it as
   it chooses a ``DeliveryAgent`` (``qmgr.manager.transport``), and the agent reports back
   through qmgr (its results for a message it moved into the queue files, or the message alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pigeon.core.address import Address
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.queue.record import QueueRecord


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    queue_id: QueueId
    sender: Address | None  # None is the null reverse path <>
    recipients: tuple[Address, ...]
    body_path: Path
    folder: str | None = None  # "Junk" for quarantined mail (core.envelope rule 5); None = INBOX


class DeliveryAgent(Protocol):
    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]: ...


class MessageAgent(Protocol):
    """Rule 4."""

    def take(self, record: QueueRecord) -> None:
        """Deliver this just-committed message (the agent owns it from now on)."""

    def retry_now(self) -> int:
        """``pigeon queue flush``: try what it holds now; returns how many."""

    async def wait_idle(self) -> None: ...

    async def stop(self, grace: float) -> None: ...
