"""The delivery-agent seam: what qmgr hands a transport, and what it gets back.

Rules:
1. A ``DeliveryJob`` is one queued message and the recipients this transport should handle now.
   Its body is a ``BodySource`` (``queue.api``): a ``msg/`` file, or for mail in the intake
   journal the bytes held in memory or in a journal segment (``queue.source``). The agent only
   reads it, and never asks where it is kept. The bytes have CRLF line ends, as queued.
2. ``DeliveryAgent.deliver`` returns one ``RecipientResult`` per job recipient, in the job's order
   (``pigeon.core.results`` Rule 1); each says whether it is final (delivered, failed) or not
   (deferred). The queue manager applies them to the queue: done, deferral, bounce.
3. An agent never raises for a delivery problem: anything unexpected is a ``deferred`` result with
   ``451 4.3.0`` and a log line, so no message is ever lost (DESIGN.md, "The seams"). The queue
   manager holds every agent to this (``qmgr.lane.call_agent``): an exception that escapes, or a
   wrong number of results, defers the job's recipients with ``451 4.3.0``.
4. The agents: ``delivery.local.LocalDelivery`` (Maildir, one worker-thread call per mailbox),
   ``delivery.fastlane.FastLocalDelivery`` (Maildir, written on the event loop with batched
   flushes: the fast road for small local mail in the intake journal) and
   ``delivery.relay.RelayDelivery`` (SMTP to the next hop: from the queue files, or, for relay
   mail in the intake journal, from memory on the same fast road). ``qmgr.lane.transport``
   chooses, for the queue manager and its fast road alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pigeon.core.address import Address
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.queue.api import BodySource


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    queue_id: QueueId
    sender: Address | None  # None is the null reverse path <>
    recipients: tuple[Address, ...]
    body: BodySource
    folder: str | None = None  # "Junk" for quarantined mail (core.envelope rule 5); None = INBOX


class DeliveryAgent(Protocol):
    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]: ...
