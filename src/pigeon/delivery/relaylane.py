"""The relay lane: mail for other domains, committed to the intake journal, relayed from memory.

A message none of whose recipients is local is committed to the intake journal like small local
mail (``queue.store`` rule 8, ``relay_journal``): one ``fdatasync`` of the journal, shared with
every message appended meanwhile, is its commit point, and its body stays in memory. This lane
hands it to the relay agent (``delivery.relay``, body in memory: its Rule 9) and, when every
recipient was accepted by the next hop, appends its done entry: the message never touched the
queue files. Before this lane, relay mail took the queue files (two files created and fsynced
per message and a thread hop for each commit and removal; docs/benchmarks.md, "Relay through
the intake journal").

Rules:
1. The journal's rules are the fast lane's (``delivery.fastlane`` Rules 1-3 and 6; this lane is
   a ``FastLane`` whose delivery is the relay agent): a message all of whose recipients were
   relayed, none asking for a success DSN, is done (done entry, ``delivered`` and ``removed`` in
   the log). Anything else (a recipient deferred or failed, a success DSN to send, an
   unexpected error) spills the message into the queue files and the queue manager records
   this attempt's results as its own (retries, bounces, DSNs). A spill that fails holds the
   message in the journal and tries again (fastlane Rule 6). At most ``max_inflight``
   messages are in the lane; past that they are spilled at once.
2. A message with a local recipient is never relayed here (the queue sends mixed mail to the
   queue files; one that became local since its commit is spilled untried).
3. The done entry follows the next hop's final ``250`` to the end of data, never precedes it;
   a crash in between relays the message again after the restart (at least once, as for every
   message: RFC 5321 §6.1 allows the duplicate, never the loss).
5. A message a recipient of which asks for a success notice (NOTIFY=SUCCESS, RFC 3461 §4.1) is
   spilled untried: whether Pigeon or the next hop sends the notice depends on the next hop's
   DSN support (``delivery.relay`` Rule 7), which the queue manager handles; rare mail.
4. ``JournalLanes`` is the one ``MessageAgent`` (``delivery.base`` Rule 4) the queue manager
   sees: it sends each journaled message to the local lane or the relay lane by its
   recipients' domains, and answers ``retry_now``, ``held``, ``wait_idle`` and ``stop`` for both.

What can go wrong: nothing raises out of the lane (fastlane's "what can go wrong"); a relay
that takes long (a slow next hop, up to the SMTP timeouts of RFC 5321 §4.5.3.2) keeps the
message, and so its journal segment, live meanwhile: bounded by ``max_inflight``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from pigeon.core.clock import Clock
from pigeon.core.envelope import Recipient
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryAgent
from pigeon.delivery.fastlane import DEFAULT_MAX_INFLIGHT, FastLane, LocalDomains, Results
from pigeon.delivery.local import UserLookup
from pigeon.delivery.relay import RelayJob
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import FileQueueStore
from pigeon.store.maildir import MaildirStore

log = logging.getLogger(__name__)


class RelayLane(FastLane):
    """Rule 1: the fast lane's journal handling, with the relay agent as its delivery."""

    def __init__(self, queue: FileQueueStore, store: MaildirStore, users: UserLookup, domains: LocalDomains,
                 clock: Clock, relay: DeliveryAgent,
                 finish: Callable[[QueueRecord, Results], Awaitable[None]],
                 submit: Callable[[QueueRecord], None], *, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        super().__init__(queue, store, users, domains, clock, None, finish, submit, max_inflight=max_inflight)
        self._relay = relay

    async def _deliver(self, record: QueueRecord, body: bytes) -> Results | None:
        """Relay to every recipient from memory; None (nothing sent) when one is local (Rule 2)."""
        rcpts = record.rcpts
        if any(self._domains.is_local_domain(r.address.domain) for r in rcpts):
            return None
        if any("SUCCESS" in r.notify for r in rcpts):
            return None  # Rule 5: the queue manager relays it and sends the notice
        job = RelayJob(queue_id=record.id, sender=record.envelope.sender,
                       recipients=tuple(r.address for r in rcpts),
                       body_path=self._queue.body_path(record.id), envelope=record.envelope,
                       params=tuple(Recipient(r.address, r.notify, r.orcpt) for r in rcpts), body=body,
                       originals=tuple(r.original for r in rcpts))  # forwards: SRS and ARC (relay rule 9)
        out: list[RecipientResult] = await self._relay.deliver(job)
        if len(out) != len(rcpts):
            log.error("%s: the relay agent returned %d results for %d recipients; moving it to the queue",
                      record.id, len(out), len(rcpts))
            return None
        return list(zip(rcpts, out, strict=True))


class _Lane(Protocol):
    def take(self, record: QueueRecord) -> None: ...

    def retry_now(self) -> int: ...

    def held(self) -> list[QueueRecord]: ...

    async def wait_idle(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


class JournalLanes:
    """Rule 4: the journal's two lanes behind one ``MessageAgent``."""

    def __init__(self, local: _Lane, relay: _Lane, domains: LocalDomains) -> None:
        self.local = local
        self.relay = relay
        self._domains = domains

    def _lane(self, rcpts: list[RcptState]) -> _Lane:
        if rcpts and not any(self._domains.is_local_domain(r.address.domain) for r in rcpts):
            return self.relay
        return self.local  # mixed mail never takes the journal; the local lane spills what is not local

    def take(self, record: QueueRecord) -> None:
        self._lane(record.rcpts).take(record)

    def retry_now(self) -> int:
        return self.local.retry_now() + self.relay.retry_now()

    def held(self) -> list[QueueRecord]:
        return self.local.held() + self.relay.held()

    async def wait_idle(self) -> None:
        await self.local.wait_idle()
        await self.relay.wait_idle()

    async def stop(self, grace: float) -> None:
        await asyncio.gather(self.local.stop(grace), self.relay.stop(grace))
