"""The fast road: the queue manager's scheduling of mail that is live in the intake journal.

Small local mail, and relay mail none of whose recipients is local, is committed to the intake
journal (``queue.store`` rule 8) and never written to the queue files when it can be delivered
at once. ``transport`` (the queue manager's table, ``qmgr.manager`` Rules 2 and 7) chooses the
agent for it as for any message: local recipients go to the fast agent
(``delivery.fastlane.FastLocalDelivery``), the others to the relay agent
(``delivery.relay.RelayDelivery``, the same one the queue manager uses for the queue files).
This lane runs the attempts: one ``DeliveryJob`` per message, its body a ``BodySource`` the
queue hands out (memory, or the journal segment), its per-recipient results applied to the
queue as the queue manager applies any agent's. The server's queue manager owns one lane; an
SMTP worker process, which has no queue manager, owns one too (with its own relay agent) and
tells the server what it could not finish (``app.worker``).

Rules:
1. A message every recipient of which is delivered, none asking for a success DSN, is done:
   ``QueueStore.remove`` (for a journal message: its done entry, nothing else written) and the
   log says ``delivered`` and ``removed`` as for any message.
2. Any other outcome (a recipient deferred or failed, a success DSN to send, an agent that
   raised) *spills* the message: ``QueueStore.spill`` moves it
   into the queue files, and ``finish`` takes the attempt's results (the server's queue
   manager records them exactly as its own attempts': retries, bounces, DSNs; a worker sends
   them to the server), or ``submit`` the message alone when no attempt was made. A spill that
   fails leaves the message live in the journal (Rule 5).
3. At most ``max_inflight`` messages per agent are in the lane; past that, new ones are spilled
   at once and wait in the queue like any other (memory stays bounded when the disk or the
   next hop is slow, and a slow next hop does not crowd local mail off the fast road).
4. ``call_agent`` holds every agent, this lane's and the queue manager's, to ``delivery.base``
   Rule 3: an exception, or not one result per recipient, defers them all with ``451 4.3.0``.
5. A message whose spill fails (the queue's file system is full, or failing) is *held*: it
   stays live in the journal, which is where its 250 came from, and the lane tries it again
   after ``HELD_RETRY_FIRST`` seconds, doubling up to ``HELD_RETRY_MAX``, without a restart
   (docs/queue.md "A full disk"). A try delivers it again when none of its recipients got a
   final result (nothing was delivered, so nothing is delivered twice), else spills it with
   the results it has. Its body is not kept in memory: the queue reads it back from its segment.
   ``retry_now`` (``pigeon queue flush``) tries every held message at once; ``held`` describes
   them for ``pigeon queue list``. At ``stop`` they stay in the journal, and the next start's
   recovery moves them into the queue.
6. The admin's commands reach a message here (``pigeon queue delete/hold``; ``busy``): one being
   delivered right now is refused (``MessageBusy``: try again in a moment, as for a message the
   queue manager is delivering); a held one is deleted (its done entry) or moved into ``hold/``.

7. One agent per message (``route``): the queue journals no mail with both local and remote
   recipients, so a message whose recipients ask for two agents (a domain added or removed
   since its commit), or for the relay agent on a lane without one, is spilled untried and the
   queue manager splits it. Relay mail a recipient of which asks for a success notice
   (NOTIFY=SUCCESS, RFC 3461 §4.1) is spilled untried too: whether Pigeon or the next hop
   sends the notice depends on the next hop's DSN support (``delivery.relay`` Rule 7), which
   the queue manager's own attempt records (an SMTP worker's results reach the server without
   it); rare mail.
8. The relay agent's done entry follows the next hop's final ``250`` to the end of data, never
   precedes it; a crash in between relays the message again after the restart (at least once,
   as for every message: RFC 5321 §6.1 allows the duplicate, never the loss). It sends a body
   held in memory from there, on the event loop (``delivery.relay`` Rule 12).

What can go wrong: nothing raises out of the lane's tasks; every failure ends in a spill
(Rule 2) or, when the spill fails, in a held message (Rule 5). A relay that takes long (a slow
next hop, up to the SMTP timeouts of RFC 5321 §4.5.3.2) keeps the message, and so its journal
segment, live meanwhile: bounded by Rule 3.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pigeon import maillog
from pigeon.core.clock import Clock
from pigeon.core.envelope import Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryAgent, DeliveryJob
from pigeon.delivery.relay import RelayJob
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.api import BodySource, QueueStore
from pigeon.queue.record import QueueRecord, RcptState

log = logging.getLogger(__name__)

C451_AGENT_CRASHED = Reply(451, "4.3.0", "Local error in delivery, will retry")
DEFAULT_MAX_INFLIGHT = 512  # Rule 3: ~512 small bodies (≤ MEMORY_BODY each) in memory at most

# Rule 5: a held message is tried again this soon, then after twice as long each time, up to
# the maximum: once space is freed, held mail moves within a minute (at once with
# ``pigeon queue flush``), and a disk that stays full costs one small write attempt a minute.
HELD_RETRY_FIRST = 2.0  # seconds
HELD_RETRY_MAX = 60.0  # seconds

Results = list[tuple[RcptState, RecipientResult]]
Transport = Literal["fastlane", "local", "relay"]


def transport(journaled: bool, local: bool) -> Transport:
    """``qmgr.manager`` Rules 2 and 7: the agent for one recipient of a message. ``journaled``:
    the queue holds the message in its intake journal (it is on the fast road, its body in
    memory); ``local``: the recipient's domain is a local one. Journaled local mail goes to the
    fast agent, other local mail to the local agent, mail for other domains to the relay agent
    (from memory on the fast road, from the queue files otherwise)."""
    if local:
        return "fastlane" if journaled else "local"
    return "relay"


def relay_job(record: QueueRecord, rcpts: Sequence[RcptState], body: BodySource) -> RelayJob:
    """A job for ``rcpts`` of ``record`` that also carries the DSN parameters (RFC 3461), the
    envelope's BODY/SMTPUTF8/REQUIRETLS and where expansion started (SRS); the local agents
    ignore them."""
    return RelayJob(queue_id=record.id, sender=record.envelope.sender,
                    recipients=tuple([r.address for r in rcpts]), body=body, folder=record.envelope.folder,
                    envelope=record.envelope,
                    params=tuple([Recipient(r.address, r.notify, r.orcpt) for r in rcpts]),
                    originals=tuple([r.original for r in rcpts]))


class MessageBusy(ValueError):
    """The message is being delivered right now; the admin action must wait."""


class LocalDomains(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...


async def call_agent(agent: DeliveryAgent, job: DeliveryJob, rcpts: Sequence[RcptState]) -> Results:
    """Rule 4: the agent's results paired with ``rcpts`` (the job's recipients, in order)."""
    try:
        out = await agent.deliver(job)
        if len(out) != len(rcpts):
            raise RuntimeError(f"agent returned {len(out)} results for {len(rcpts)} recipients")
    except Exception:
        log.exception("%s: delivery agent %s crashed", job.queue_id, type(agent).__name__)
        out = [RecipientResult(r.address, "deferred", C451_AGENT_CRASHED, "") for r in rcpts]
    return list(zip(rcpts, out, strict=True))


def complete(results: Results) -> bool:
    """Rule 1: all delivered, and no success DSN asked for."""
    return all(res.status == "delivered" and "SUCCESS" not in rcpt.notify for rcpt, res in results)


@dataclass(slots=True)
class Held:
    """Rule 5: a message the lane could neither deliver nor move into the queue files."""

    record: QueueRecord
    results: Results | None  # the last attempt's, when one was made
    error: str  # why the spill failed
    pause: float  # seconds until the next try, doubled after each failure
    next_try: float  # clock time of the next try
    timer: asyncio.TimerHandle | None = None  # None while a try is under way

    def describe(self) -> QueueRecord:
        """A copy of the record whose recipients show where this message stands."""
        by_key = {} if self.results is None else {r.address.key: res for r, res in self.results}
        why = f"held in the intake journal: {self.error}"
        rcpts = []
        for rcpt in self.record.rcpts:
            res = by_key.get(rcpt.address.key)
            if res is not None and res.status != "deferred":
                rcpts.append(dataclasses.replace(rcpt, status=res.status, last_reply=str(res.reply)))
                continue
            reply = why if res is None else f"{res.reply}; {why}"
            rcpts.append(dataclasses.replace(rcpt, status="deferred", last_reply=reply, next_try=self.next_try))
        return dataclasses.replace(self.record, rcpts=rcpts, state="journal")


class JournalLane:
    """The fast road (the rules above)."""

    def __init__(self, queue: QueueStore, agent: DeliveryAgent, domains: LocalDomains, clock: Clock,
                 finish: Callable[[QueueRecord, Results], Awaitable[None]],
                 submit: Callable[[QueueRecord], None], *, relay: DeliveryAgent | None = None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self._queue = queue
        # Rule 7: the agents by transport; without a relay agent, journaled relay mail is spilled.
        self._agents: dict[Transport, DeliveryAgent] = {"fastlane": agent}
        if relay is not None:
            self._agents["relay"] = relay
        self._domains = domains
        self._clock = clock
        self._finish = finish
        self._submit = submit
        self.max_inflight = max_inflight
        # Rule 6: being delivered or spilled now, and for which agent (Rule 3: counted per agent)
        self._tasks: dict[asyncio.Task[None], tuple[QueueId, Transport | None]] = {}
        self._busy: dict[Transport, int] = dict.fromkeys(self._agents, 0)
        self._running: set[QueueId] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.delivered = 0  # messages completed in the lane (tests, benchmarks)
        self.spilled = 0
        self._held: dict[QueueId, Held] = {}  # Rule 5
        self._stopping = False

    def route(self, record: QueueRecord) -> Transport | None:
        """Rule 7: the one agent for every recipient of a journaled message, or None (spill it
        untried)."""
        local = self._domains.is_local_domain
        kinds = {transport(True, local(r.address.domain)) for r in record.rcpts}
        if len(kinds) != 1:
            return None
        kind = kinds.pop()
        if kind not in self._agents:
            return None
        if kind == "relay" and any("SUCCESS" in r.notify for r in record.rcpts):
            return None
        return kind

    def take(self, record: QueueRecord) -> None:
        """A message just committed to the journal: deliver it (or spill it, Rules 3 and 7)."""
        kind = self.route(record)
        if kind is None or self._busy[kind] >= self.max_inflight:
            self._start(record.id, self._spill(record, None), None)
        else:
            self._start(record.id, self._run(record, kind), kind)

    def _start(self, qid: QueueId, work: Coroutine[object, object, None], kind: Transport | None) -> None:
        self._running.add(qid)
        task = asyncio.create_task(work)
        self._tasks[task] = (qid, kind)
        if kind is not None:
            self._busy[kind] += 1
        self._idle.clear()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        entry = self._tasks.pop(task, None)
        if entry is not None:
            qid, kind = entry
            self._running.discard(qid)
            if kind is not None:
                self._busy[kind] -= 1
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def stop(self, grace: float) -> None:
        """Let deliveries under way finish; what is cut short stays in the journal (Rule 2), and
        so do held messages (Rule 5)."""
        self._stopping = True
        for held in self._held.values():
            if held.timer is not None:
                held.timer.cancel()
                held.timer = None
        if self._held:
            log.warning("%d held message(s) stay in the intake journal; the next start moves them "
                        "into the queue", len(self._held))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)

    # -- one message -------------------------------------------------------------------------------

    async def _run(self, record: QueueRecord, kind: Transport) -> None:
        body = self._queue.body(record.id)
        rcpts = record.rcpts
        if kind == "relay":
            job: DeliveryJob = relay_job(record, rcpts, body)
        else:  # the fast agent needs the addresses alone (and this is the hot path)
            job = DeliveryJob(record.id, record.envelope.sender, tuple([r.address for r in rcpts]), body,
                              record.envelope.folder)
        results = await call_agent(self._agents[kind], job, rcpts)
        if complete(results):
            try:
                await self._queue.remove_async(record.id)
            except Exception:
                log.exception("%s: cannot mark the message done; moving it to the queue", record.id)
            else:
                self._held.pop(record.id, None)
                now = self._clock.now()
                for rcpt, res in results:
                    maillog.delivered(record.id, rcpt.address, res.host, now - record.created, res.reply,
                                      rcpt.original)
                maillog.removed(record.id)
                self.delivered += 1
                return
        await self._spill(record, results)

    async def _spill(self, record: QueueRecord, results: Results | None) -> None:
        """Rule 2: into the queue files, then ``finish`` or ``submit``; Rule 5 when that fails."""
        try:
            await self._queue.spill(record)
        except Exception as exc:
            self._hold(record, results, exc)
            return
        self._held.pop(record.id, None)
        self.spilled += 1
        if results is None:
            self._submit(record)
        else:
            await self._finish(record, results)

    # -- held messages (Rule 5) ------------------------------------------------------------------

    def _hold(self, record: QueueRecord, results: Results | None, exc: BaseException) -> None:
        prev = self._held.get(record.id)
        pause = HELD_RETRY_FIRST if prev is None else min(prev.pause * 2, HELD_RETRY_MAX)
        held = Held(record, results, str(exc), pause, self._clock.now() + pause)
        self._held[record.id] = held
        if self._stopping:
            log.error("%s: cannot move the message into the queue (%s); it stays in the intake "
                      "journal and is recovered at the next start", record.id, exc)
            return
        held.timer = asyncio.get_running_loop().call_later(pause, self._retry, record.id)
        log.error("%s: cannot move the message into the queue (%s); held in the intake journal, "
                  "next try in %.0f s", record.id, exc, pause)

    def _retry(self, qid: QueueId) -> None:
        held = self._held.get(qid)
        if held is None or self._stopping or qid in self._running:
            return
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        kind = self.route(held.record) if self._fresh(held) else None
        self._start(qid, self._try_again(held, kind), kind)

    @staticmethod
    def _fresh(held: Held) -> bool:
        """Nothing final yet: a fresh attempt delivers nothing twice."""
        return held.results is None or all(res.status == "deferred" for _, res in held.results)

    async def _try_again(self, held: Held, kind: Transport | None) -> None:
        if kind is not None:
            await self._run(held.record, kind)
        else:  # results to keep, or no agent for it here (Rule 7)
            await self._spill(held.record, held.results)

    def retry_now(self) -> int:
        """Rule 5 (``pigeon queue flush``): try every held message now; returns how many."""
        waiting = [qid for qid, held in self._held.items() if held.timer is not None]
        if waiting:
            log.info("trying %d held message(s) now", len(waiting))
        for qid in waiting:
            self._retry(qid)
        return len(waiting)

    def held(self) -> list[QueueRecord]:
        """Rule 5: the held messages, their recipients showing the last results and the next
        try (``pigeon queue list``)."""
        return [held.describe() for held in self._held.values()]

    # -- the admin's commands (Rule 6) -----------------------------------------------------------

    def owns(self, qid: QueueId) -> bool:
        """The message is this lane's: being delivered, or held."""
        return qid in self._running or qid in self._held

    def _idle_held(self, qid: QueueId) -> Held:
        if qid in self._running:
            raise MessageBusy(f"{qid} is being delivered right now; try again in a moment")
        held = self._held.get(qid)
        if held is None:
            raise KeyError(qid)
        return held

    async def delete(self, qid: QueueId) -> None:
        """``pigeon queue delete``: a held message's done entry; it is never delivered."""
        held = self._idle_held(qid)
        await self._queue.remove_async(qid)
        if held.timer is not None:
            held.timer.cancel()
        self._held.pop(qid, None)

    async def hold(self, qid: QueueId) -> None:
        """``pigeon queue hold``: a held message into ``hold/``, with its last results (its
        recipients delivered already stay delivered). QueueWriteError on a disk still full."""
        held = self._idle_held(qid)
        record = held.describe()
        await self._queue.spill(record, "hold")
        if held.timer is not None:
            held.timer.cancel()
        self._held.pop(qid, None)
