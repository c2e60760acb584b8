"""The queue manager: schedules delivery attempts, routes recipients, retries and expires.

Rules:
1. Every message in ``active/`` or ``deferred/`` is either in flight, ready, or has a timer at
   its earliest ``next_try``; ``hold/`` is never scheduled. At start-up the app calls
   ``schedule_existing`` after ``QueueStore.recover`` and before any listener opens.
2. Routing: a recipient in a local domain goes to the local delivery agent; any other to the
   remote agent (DNS MX + SMTP client). One job per agent per message, carrying all of its
   recipients; results come back one per recipient.
3. After an attempt the record is rewritten (per-recipient status and history) before anything
   is removed, so a crash repeats at most the attempt under way (delivery is at least once).
   A message whose recipients are all final is removed (record first, then body).
4. Temporary failures are retried on ``queue.retry_schedule`` (the last step repeats) with
   ``queue.jitter`` spread; past ``queue.max_lifetime`` a still-deferred recipient fails with
   ``5.4.7`` (RFC 3463: delivery time expired) and is bounced.
5. Permanent failures go to the ``Bouncer`` (RFC 3464 DSN to the envelope sender; the bounce
   stage handles null senders and double bounces). The failed recipients' state is written
   only after the bounce itself is durable in the queue.
6. An exception from a delivery agent defers its recipients with ``451 4.3.0`` and a log line:
   never lost mail.
7. Every committed message arrives the same way (``submit``, a ``QueueRecord``) and
   ``transport`` chooses its agent, as Postfix's qmgr chooses a transport: a message the queue
   holds in its intake journal (``QueueStore.in_journal``) goes whole to the fast lane
   (``delivery.fastlane``, a ``MessageAgent``), which delivers it from memory; what the lane
   cannot finish (a recipient no longer local among them) it moves into the queue files and
   hands back here, with its results (``complete``) or without. Any other message's recipients
   go to the local agent or the remote one (Rule 2).
8. A full disk: an attempt whose results cannot be written leaves the record as it was, in
   ``active/``, and is tried again after ``queue.retry_schedule[0]`` (``_tracked``);
   ``flush`` (``pigeon queue flush``) tries those at once too, with deferred messages and the
   fast lane's held ones.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

from pigeon import maillog
from pigeon.config import Config
from pigeon.core.clock import Clock
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.core.envelope import Recipient
from pigeon.delivery.base import DeliveryAgent, MessageAgent
from pigeon.delivery.relay import RelayJob, RelayResult
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.api import QueueStore
from pigeon.queue.body import QueueWriteError
from pigeon.queue.record import Attempt, QueueRecord, RcptState

log = logging.getLogger(__name__)

C451_AGENT_CRASHED = Reply(451, "4.3.0", "Local error in delivery, will retry")
C554_EXPIRED = Reply(554, "5.4.7", "Delivery time expired")
# `pigeon queue bounce`: RFC 3463 X.0.0 (other/undefined), the reason stated in the text.
C550_ADMIN_BOUNCE = Reply(550, "5.0.0", "Delivery cancelled by the mail administrator")


Transport = Literal["fastlane", "local", "relay"]


def transport(journaled: bool, local: bool) -> Transport:
    """Rules 2 and 7: the agent for a recipient of a message. ``journaled``: the queue holds the
    message in its intake journal (the fast lane takes all of it, and moves what it cannot
    deliver into the queue files); ``local``: the recipient's domain is a local one."""
    if journaled:
        return "fastlane"
    return "local" if local else "relay"


class MessageBusy(ValueError):
    """The message is being delivered right now; the admin action must wait."""


class LocalDomains(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...


class Bouncer(Protocol):
    async def bounce(self, record: QueueRecord, failed: Sequence[RcptState]) -> None:
        """Queue a failure notice for ``failed`` (durable when it returns)."""

    async def delay_warning(self, record: QueueRecord, delayed: Sequence[RcptState]) -> None:
        """Queue a delay notice (RFC 3464 action=delayed)."""

    async def success(self, record: QueueRecord, relayed: Sequence[RcptState], action: str) -> None:
        """Queue a success notice for NOTIFY=SUCCESS recipients (RFC 3461 §4.1)."""


class QueueManager:
    def __init__(self, queue: QueueStore, local: DeliveryAgent, remote: DeliveryAgent,
                 domains: LocalDomains, config: Callable[[], Config], clock: Clock,
                 bouncer: Bouncer, concurrency: int = 32) -> None:
        self.queue = queue
        self.local = local
        self.remote = remote
        self.domains = domains
        self.config = config
        self.clock = clock
        self.bouncer = bouncer
        self.concurrency = concurrency  # parallel delivery attempts (local + remote)
        self._ready: asyncio.Queue[QueueId] = asyncio.Queue()
        self._fresh: dict[QueueId, QueueRecord] = {}
        self._timers: list[tuple[float, QueueId]] = []
        self._scheduled: dict[QueueId, float] = {}
        self._inflight: set[QueueId] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Rule 7: messages from the intake journal go to the fast lane (the app sets it).
        self.fastlane: MessageAgent | None = None

    # -- scheduling ------------------------------------------------------------------------
    def submit(self, record: QueueRecord) -> None:
        """A message just committed by cleanup: deliver it now (Rule 7)."""
        if transport(self.queue.in_journal(record.id), local=True) == "fastlane":
            if self.fastlane is None:
                raise RuntimeError(f"{record.id} is in the intake journal but there is no fast lane")
            self.fastlane.take(record)
            return
        self._fresh[record.id] = record
        self._make_ready(record.id)

    def _make_ready(self, qid: QueueId) -> None:
        self._scheduled.pop(qid, None)
        if qid in self._inflight:
            return
        self._idle.clear()
        self._ready.put_nowait(qid)

    def schedule(self, qid: QueueId, when: float) -> None:
        prev = self._scheduled.get(qid)
        if prev is not None and prev <= when:
            return
        self._scheduled[qid] = when
        heapq.heappush(self._timers, (when, qid))
        self._wake.set()

    def schedule_existing(self) -> int:
        n = 0
        now = self.clock.now()
        for rec in self.queue.scan(("active", "deferred")):
            pending = [r for r in rec.rcpts if r.status in ("pending", "deferred")]
            if not pending:
                continue
            if rec.state == "active":
                self._make_ready(rec.id)
            else:
                self.schedule(rec.id, min((r.next_try for r in pending), default=now))
            n += 1
        return n

    def flush(self) -> int:
        """Retry every deferred message now (``pigeon queue flush``): those in ``deferred/``,
        those in ``active/`` waiting for a retry after an attempt whose results could not be
        written (a full disk, Rule 8), and the fast lane's held messages (Rule 7)."""
        n = 0
        for rec in self.queue.scan(("deferred",)):
            for r in rec.rcpts:
                if r.status == "deferred":
                    r.next_try = 0.0
            # Persist the cleared next_try: the attempt reloads the record from disk. On a
            # full disk this cannot be written; the attempt is made all the same.
            try:
                self.queue.update_sync(rec)
            except QueueWriteError as exc:
                log.warning("%s: flush: cannot record the cleared retry time (%s)", rec.id, exc)
            self._make_ready(rec.id)
            n += 1
        for qid in [q for q in self._scheduled if q not in self._inflight]:
            try:
                if self.queue.state_of(qid) != "active":
                    continue  # deferred: taken above; hold: never scheduled
            except FileNotFoundError:
                continue
            self._make_ready(qid)
            n += 1
        if self.fastlane is not None:
            n += self.fastlane.retry_now()
        return n

    async def bounce_now(self, qid: QueueId) -> int:
        """``pigeon queue bounce ID``: fail every undelivered recipient now, with a DSN.

        Returns the number of recipients failed. Refused while an attempt is under way.
        """
        if qid in self._inflight:
            raise MessageBusy(f"{qid} is being delivered right now; try again in a moment")
        record = self.queue.load(qid)
        now = self.clock.now()
        failed = [r for r in record.rcpts if r.status in ("pending", "deferred")]
        for r in failed:
            r.status = "failed"
            r.attempts.append(Attempt(now, "", str(C550_ADMIN_BOUNCE)))
            r.last_reply = str(C550_ADMIN_BOUNCE)
            maillog.bounced(record.id, r.address, "admin", now - record.created, C550_ADMIN_BOUNCE)
        self.forget(qid)
        if failed:
            await self.bouncer.bounce(record, failed)
        if record.done:
            await self.queue.remove_async(qid)
            maillog.removed(qid, "bounced by admin")
        else:
            await self.queue.update(record)
        return len(failed)

    def forget(self, qid: QueueId) -> None:
        """The admin deleted or held a message: drop its timer."""
        self._scheduled.pop(qid, None)
        self._fresh.pop(qid, None)

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="qmgr-timers"))
        for i in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"qmgr-worker-{i}"))

    def running(self) -> bool:
        """Every scheduling task is alive (the health check, ``pigeon.web``)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def stop(self, grace: float = 10.0) -> None:
        """Let attempts under way finish (up to ``grace`` seconds), then cancel the rest."""
        self._stopping = True
        if self.fastlane is not None:
            await self.fastlane.stop(grace)
        workers = [t for t in self._tasks]
        if self._inflight:
            try:
                async with asyncio.timeout(grace):
                    while self._inflight:
                        await asyncio.sleep(0.05)
            except TimeoutError:
                log.warning("stopping with %d deliveries under way; they will be retried", len(self._inflight))
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def wait_idle(self) -> None:
        while True:
            await self._idle.wait()
            if self.fastlane is None:
                return
            await self.fastlane.wait_idle()
            if self._idle.is_set():
                return

    async def complete(self, record: QueueRecord, results: list[tuple[RcptState, RecipientResult]]) -> None:
        """Rule 7: the fast lane's attempt, for a message it moved into the queue files: its
        results are recorded exactly as an attempt of the manager's own."""
        await self._tracked(record.id, self._record_results(record, results), "recording the delivery results")

    async def _tracked(self, qid: QueueId, work: Awaitable[None], what: str) -> None:
        """Run one attempt's work with ``qid`` in flight; a failure is retried, never lost."""
        self._inflight.add(qid)
        self._idle.clear()
        try:
            await work
        except Exception:
            log.exception("%s: %s failed; will retry", qid, what)
            self.schedule(qid, self.clock.now() + self.config().queue.retry_schedule[0])
        finally:
            self._inflight.discard(qid)
            if self._ready.empty() and not self._inflight:
                self._idle.set()

    async def _timer_loop(self) -> None:
        while True:
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                due, qid = heapq.heappop(self._timers)
                if self._scheduled.get(qid) == due:
                    self._make_ready(qid)
            delay = 1.0 if not self._timers else max(0.0, min(1.0, self._timers[0][0] - now))
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _worker(self) -> None:
        while not self._stopping:
            qid = await self._ready.get()
            if qid in self._inflight:
                continue
            await self._tracked(qid, self._attempt(qid), "delivery attempt")

    # -- one attempt ----------------------------------------------------------------------------
    async def _attempt(self, qid: QueueId) -> None:
        record = self._fresh.pop(qid, None)
        if record is not None:
            # Recipients cleanup already failed (an alias that expands to nothing but loops):
            # bounce them now, before anything else happens to the message.
            prefailed = [r for r in record.rcpts if r.status == "failed"]
            if prefailed:
                await self.bouncer.bounce(record, prefailed)
                if record.done:
                    await self.queue.remove_async(qid)
                    maillog.removed(qid, "failed")
                    return
        if record is None:
            try:
                record = self.queue.load(qid)
            except FileNotFoundError:
                return  # deleted meanwhile
        if record.state == "hold":
            return
        now = self.clock.now()
        due = [r for r in record.rcpts if r.status == "pending" or (r.status == "deferred" and r.next_try <= now)]
        if not due:
            waiting = [r.next_try for r in record.rcpts if r.status == "deferred"]
            if waiting:
                self.schedule(qid, min(waiting))
            elif record.done:
                self.queue.remove(qid)
            return
        if record.state == "deferred":
            record = await self.queue.move_async(qid, "active")
            due = [r for r in record.rcpts if r.status == "pending" or (r.status == "deferred" and r.next_try <= now)]
        local: list[RcptState] = []
        remote: list[RcptState] = []
        for r in due:  # one directory lookup per recipient; not journaled: it is in a state
            agent = transport(False, self.domains.is_local_domain(r.address.domain))
            (local if agent == "local" else remote).append(r)
        jobs = []
        if local:
            jobs.append(self._run_agent(self.local, record, local))
        if remote:
            jobs.append(self._run_agent(self.remote, record, remote))
        results: list[tuple[RcptState, RecipientResult]] = []
        for part in await asyncio.gather(*jobs):
            results.extend(part)
        await self._record_results(record, results)

    async def _run_agent(self, agent: DeliveryAgent, record: QueueRecord,
                         rcpts: list[RcptState]) -> list[tuple[RcptState, RecipientResult]]:
        # A RelayJob is a DeliveryJob that also carries the DSN parameters (RFC 3461) and the
        # envelope's BODY/SMTPUTF8; the local agent ignores them.
        job = RelayJob(
            queue_id=record.id,
            sender=record.envelope.sender,
            recipients=tuple(r.address for r in rcpts),
            body_path=self.queue.body_path(record.id),
            folder=record.envelope.folder,
            envelope=record.envelope,
            params=tuple(Recipient(r.address, r.notify, r.orcpt) for r in rcpts),
            originals=tuple(r.original for r in rcpts),
        )
        try:
            out = await agent.deliver(job)
            if len(out) != len(rcpts):
                raise RuntimeError(f"agent returned {len(out)} results for {len(rcpts)} recipients")
        except Exception:
            log.exception("%s: delivery agent %s crashed", record.id, type(agent).__name__)
            out = [RecipientResult(r.address, "deferred", C451_AGENT_CRASHED, "") for r in rcpts]
        return list(zip(rcpts, out, strict=True))

    def _next_try(self, rcpt: RcptState, now: float) -> float:
        q = self.config().queue
        n = len([a for a in rcpt.attempts])  # attempts so far, this one included
        step = q.retry_schedule[min(max(n - 1, 0), len(q.retry_schedule) - 1)]
        return now + step * (1 + random.uniform(-q.jitter, q.jitter))

    async def _record_results(self, record: QueueRecord,
                              results: list[tuple[RcptState, RecipientResult]]) -> None:
        now = self.clock.now()
        q = self.config().queue
        failed: list[RcptState] = []
        succeeded: list[RcptState] = []
        relayed: list[RcptState] = []
        delay = now - record.created
        for rcpt, res in results:
            rcpt.attempts.append(Attempt(now, res.host, str(res.reply)))
            rcpt.last_reply = str(res.reply)
            if res.status == "delivered":
                rcpt.status = "delivered"
                if "SUCCESS" in rcpt.notify:
                    if not isinstance(res, RelayResult):
                        succeeded.append(rcpt)
                    elif not res.peer_dsn:
                        # RFC 3461 §5.2.2: the next hop does not speak DSN, so we say "relayed";
                        # a DSN-capable next hop was given NOTIFY and reports itself.
                        relayed.append(rcpt)
                maillog.delivered(record.id, rcpt.address, res.host, delay, res.reply, rcpt.original)
            elif res.status == "failed":
                rcpt.status = "failed"
                failed.append(rcpt)
                maillog.bounced(record.id, rcpt.address, res.host, delay, res.reply)
            elif now - record.created >= q.max_lifetime:
                rcpt.status = "failed"
                expired = C554_EXPIRED.with_text(f"Delivery time expired; last reply: {res.reply}")
                rcpt.attempts.append(Attempt(now, res.host, str(expired)))
                rcpt.last_reply = str(expired)
                failed.append(rcpt)
                maillog.bounced(record.id, rcpt.address, res.host, delay, expired)
            else:
                rcpt.status = "deferred"
                rcpt.next_try = self._next_try(rcpt, now)
                maillog.deferred(record.id, rcpt.address, res.host, delay, res.reply, rcpt.next_try - now)
        if failed:
            await self.bouncer.bounce(record, failed)
        if succeeded:
            await self.bouncer.success(record, succeeded, "delivered")
        if relayed:
            await self.bouncer.success(record, relayed, "relayed")
        if record.done:
            await self.queue.remove_async(record.id)
            maillog.removed(record.id)
            return
        deferred = [r for r in record.rcpts if r.status == "deferred"]
        if deferred and not record.delay_warned and now - record.created >= q.delay_warning:
            await self.bouncer.delay_warning(record, deferred)
            record.delay_warned = True
        await self.queue.update(record)
        if deferred:
            await self.queue.move_async(record.id, "deferred")
            self.schedule(record.id, min(r.next_try for r in deferred))

