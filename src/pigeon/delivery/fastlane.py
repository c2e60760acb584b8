"""The fast lane: local delivery of journaled messages, straight from memory.

A message committed to the intake journal (``durable.journal``; small, every recipient local)
is delivered here without touching the queue files: each recipient's Maildir file is written on
the event loop, and the flushes (every file's fsync, then each ``new/`` directory's) are group-
committed with every other delivery under way (``durable.commit``), so a message costs no
thread hop of its own. The steps and their order are local delivery's (``delivery.local``,
``store.maildir`` Rule 2): file written, file fsynced, linked into ``new/``, ``new/`` fsynced.
With ``[queue] flush = "filesystem"`` (``durable.flushes.FsSync``) each flush is the batch's one
``syncfs``: files written, file system flushed, linked into ``new/``, file system flushed. Why
each flush: the files' (or the first ``syncfs``), their bytes are on disk before their names
appear in ``new/``; ``new/``'s (or the second ``syncfs``), the names are durable before the
message counts as delivered and its done entry lets the journal forget it.

Rules:
1. A message every recipient of which is delivered, none asking for a success DSN, is done:
   the log says ``delivered`` and ``removed`` as for any message, and the journal gets its done
   entry. Nothing else is written.
2. Any other outcome (a recipient deferred or failed, a success DSN to send, a recipient that
   is no longer local, an unexpected error) *spills* the message: it is moved into the queue
   files (``QueueStore.spill``), its done entry written, and the queue manager takes it from
   there with the results of this attempt (``finish``) — the same retries, bounces and DSNs
   as any message. A spill that fails leaves the message live in the journal: the next start
   recovers it (delivered at least once, never lost).
3. At most ``max_inflight`` messages are in the lane; past that, new ones are spilled at once
   and wait in the queue like any other (memory stays bounded when the disk is slow).
4. Recipients are handled by ``LocalDelivery``'s own functions (``delivery.local`` Rule 7):
   unknown user → ``550 5.1.1``; a name the store refuses → ``553``; an ``OSError`` → deferred
   ``451``/``452``; one copy per mailbox. Only the writing and the batched flushes are the lane's.

5. With a file-system flush (``durable.flushes.FsSync``), both of a message's flushes (its
   files, then its ``new/`` entries) wait up to ``NEW_FLUSH_WITHIN`` for one ``syncfs`` shared
   with every other delivery under way (``durable.commit`` Rule 4): under load a message costs a
   small share of two flushes, and none of this delays the client's ``250``, which waited only
   for the journal's ``fdatasync`` (``durable.journal`` Rule 2). The order is still the Maildir one:
   no file is linked into ``new/`` before a flush that began after it was written completed.
6. A message whose spill fails (the queue's file system is full, or failing) is *held*: it
   stays live in the journal, which is where its 250 came from, and the lane tries it again
   after ``HELD_RETRY_FIRST`` seconds, doubling up to ``HELD_RETRY_MAX``, without a restart
   (docs/queue.md "A full disk"). A try delivers it again when none of its recipients got a
   final result (nothing was delivered, so nothing is delivered twice), else spills it with
   the results it has. Its body is not kept in memory: each try reads it back from its
   segment (``QueueStore.journal_body``). ``retry_now`` (``pigeon queue flush``) tries every
   held message at once; ``held`` describes them for ``pigeon queue list``. At ``stop`` they
   stay in the journal, and the next start's recovery moves them into the queue.

What can go wrong: nothing raises out of the lane; every failure ends in a spill (Rule 2) or,
when the spill fails, in a held message (Rule 6).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pigeon import maillog
from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.delivery.local import Outcome, UserLookup, delivered, delivery_prefix, failure, mailboxes
from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import DirSync, FileSync
from pigeon.durable.io import unlink_quietly
from pigeon.durable.journal import Journal
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import FileQueueStore
from pigeon.store.changes import ChangeNotifier
from pigeon.store.maildir import MaildirStore, PendingFile

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 512
# Rule 5: how long a delivery's flushes may wait to be shared with other deliveries. The client
# has had its 250 already (the message is safe in the journal); this only delays the file's
# arrival in new/, the "delivered" line, the done entry and the IMAP IDLE notice, by at most
# twice this when the server is idle.
NEW_FLUSH_WITHIN = 0.01

# Rule 6: a held message is tried again this soon, then after twice as long each time, up to
# the maximum: once space is freed, held mail moves within a minute (at once with
# ``pigeon queue flush``), and a disk that stays full costs one small write attempt a minute.
HELD_RETRY_FIRST = 2.0  # seconds
HELD_RETRY_MAX = 60.0  # seconds

Results = list[tuple[RcptState, RecipientResult]]
Files = dict[str, tuple[Address, PendingFile]]  # by mailbox key: written, not yet in new/


class LocalDomains(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...


@dataclass(slots=True)
class Held:
    """Rule 6: a message the lane could neither deliver nor move into the queue files."""

    record: QueueRecord  # without its body (read back from the journal for each try)
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
        return dataclasses.replace(self.record, rcpts=rcpts)


class FastLane:
    """The ``MessageAgent`` (``delivery.base`` Rule 4) for mail in the intake journal."""

    def __init__(self, queue: FileQueueStore, store: MaildirStore, users: UserLookup, domains: LocalDomains,
                 clock: Clock, changes: ChangeNotifier | None,
                 finish: Callable[[QueueRecord, Results], Awaitable[None]],
                 submit: Callable[[QueueRecord], None], *, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        if queue.journal is None:
            raise ValueError("the fast lane needs a queue with its intake journal")
        self._queue = queue
        self._journal: Journal = queue.journal
        self._sync: GroupCommit = queue.commits
        self._store = store
        self._users = users
        self._domains = domains
        self._clock = clock
        self._changes = changes
        self._finish = finish
        self._submit = submit
        self.max_inflight = max_inflight
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.delivered = 0  # messages completed in the lane (tests, benchmarks)
        self.spilled = 0
        self._held: dict[QueueId, Held] = {}  # Rule 6
        self._stopping = False

    def take(self, record: QueueRecord) -> None:
        """A message just committed to the journal: its body is taken from the queue, which
        held it in memory (``FileQueueStore.take_body``)."""
        try:
            body = self._queue.take_body(record.id)
        except KeyError:
            raise ValueError(f"{record.id} has no body in memory") from None
        crowded = len(self._tasks) >= self.max_inflight  # Rule 3
        task = asyncio.create_task(self._spill(record, body, None) if crowded else self._run(record, body))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def stop(self, grace: float) -> None:
        """Let deliveries under way finish; what is cut short stays in the journal (Rule 2), and
        so do held messages (Rule 6)."""
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

    async def _run(self, record: QueueRecord, body: bytes) -> None:
        try:
            results = await self._deliver(record, body)
        except Exception:
            log.exception("%s: fast delivery failed; moving it to the queue", record.id)
            results = None
        if results is not None and self._complete(results):
            self._held.pop(record.id, None)
            now = self._clock.now()
            for rcpt, res in results:
                maillog.delivered(record.id, rcpt.address, res.host, now - record.created, res.reply, rcpt.original)
            self._journal.done(record.id)
            maillog.removed(record.id)
            self.delivered += 1
            return
        await self._spill(record, body, results)

    @staticmethod
    def _complete(results: Results) -> bool:
        """Rule 1: all delivered, and no success DSN asked for."""
        return all(res.status == "delivered" and "SUCCESS" not in rcpt.notify for rcpt, res in results)

    async def _spill(self, record: QueueRecord, body: bytes, results: Results | None) -> None:
        """Rule 2: into the queue files, then the queue manager's hands; Rule 6 when that fails."""
        try:
            await self._queue.spill(record, body)
        except Exception as exc:
            self._hold(record, results, exc)
            return
        self._held.pop(record.id, None)
        self._journal.done(record.id)
        self.spilled += 1
        if results is None:
            self._submit(record)
        else:
            await self._finish(record, results)

    # -- held messages (Rule 6) ------------------------------------------------------------------

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
        if held is None or self._stopping:
            return
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        task = asyncio.create_task(self._try_again(held))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_done)

    async def _try_again(self, held: Held) -> None:
        record = held.record
        try:
            body = await self._queue.journal_body(record.id)
        except Exception as exc:
            log.exception("%s: cannot read the held message back from the intake journal", record.id)
            self._hold(record, held.results, exc)
            return
        if held.results is None or all(res.status == "deferred" for _, res in held.results):
            await self._run(record, body)  # nothing final yet: a fresh attempt delivers nothing twice
        else:
            await self._spill(record, body, held.results)

    def retry_now(self) -> int:
        """Rule 6 (``pigeon queue flush``): try every held message now; returns how many."""
        waiting = [qid for qid, held in self._held.items() if held.timer is not None]
        if waiting:
            log.info("trying %d held message(s) now", len(waiting))
        for qid in waiting:
            self._retry(qid)
        return len(waiting)

    def held(self) -> list[QueueRecord]:
        """Rule 6: the held messages, their recipients showing the last results and the next
        try (``pigeon queue list``)."""
        return [held.describe() for held in self._held.values()]

    def _all_local(self, record: QueueRecord) -> bool:
        return all(self._domains.is_local_domain(r.address.domain) for r in record.rcpts)

    async def _deliver(self, record: QueueRecord, body: bytes) -> Results | None:
        """Deliver to every recipient; None (nothing written) when one is not local (Rule 2)."""
        if not self._all_local(record):
            return None
        outcome, files = self._write_files(record, body)
        if files:
            await self._flush_files(record.id, files, outcome)
        if files:
            await self._link(record.id, files, outcome)
        return [(rcpt, outcome[rcpt.address.key]) for rcpt in record.rcpts]

    def _write_files(self, record: QueueRecord, body: bytes) -> tuple[Outcome, Files]:
        """Each mailbox's ``tmp/`` file, written, not flushed; failures become outcomes."""
        qid = record.id
        sender = record.envelope.sender
        todo, outcome = mailboxes(self._users, qid, (r.address for r in record.rcpts))  # Rule 4
        files: Files = {}
        for key, addr in todo.items():
            try:
                files[key] = (addr, self._store.write_tmp(addr, delivery_prefix(sender, addr), body,
                                                          record.envelope.folder))
            except Exception as exc:
                outcome[key] = failure(qid, addr, exc)
        return outcome, files

    @staticmethod
    def _close_files(qid: str, files: Files, outcome: Outcome) -> None:
        """Close without an fsync (the file system's flush covers them); a failure fails that
        recipient's delivery."""
        for key, (addr, pending) in list(files.items()):
            try:
                pending.close()
            except OSError as exc:
                pending.discard()
                del files[key]
                outcome[key] = failure(qid, addr, exc)

    async def _flush_files(self, qid: str, files: Files, outcome: Outcome) -> None:
        """Every file's fsync, group-committed with the other deliveries under way; with a
        ``whole_fs`` group, one ``syncfs`` per file system, shared within ``NEW_FLUSH_WITHIN``
        (Rule 5)."""
        if self._sync.whole_fs:
            self._close_files(qid, files, outcome)
            flushes = [self._sync.flush_fs(p.maildir, within=NEW_FLUSH_WITHIN) for _, p in files.values()]
        else:  # the engine closes each file after its fsync
            flushes = [self._sync.flush(FileSync(p.release(), close=True)) for _, p in files.values()]
        done = await asyncio.gather(*flushes, return_exceptions=True)
        for (key, (addr, pending)), err in zip(list(files.items()), done, strict=True):
            if isinstance(err, BaseException):
                pending.discard()
                del files[key]
                outcome[key] = failure(qid, addr, _as_exception(err))

    async def _link(self, qid: str, files: Files, outcome: Outcome) -> None:
        """Link into ``new/``, then each ``new/`` fsynced once for the whole batch."""
        linked: dict[str, tuple[Address, Path]] = {}
        for key, (addr, pending) in files.items():
            try:
                linked[key] = (addr, self._store.link_new(pending))
            except Exception as exc:
                outcome[key] = failure(qid, addr, exc)
        dirs = {path.parent for _, path in linked.values()}
        if self._sync.whole_fs:  # Rule 5: shared with the other deliveries under way
            syncs = {d: self._sync.flush_fs(d, within=NEW_FLUSH_WITHIN) for d in dirs}
        else:
            syncs = {d: self._sync.flush(DirSync(d)) for d in dirs}
        errors: dict[Path, Exception] = {}
        for d, fut in syncs.items():
            try:
                await fut
            except Exception as exc:
                errors[d] = exc
        for key, (addr, path) in linked.items():
            err = errors.get(path.parent)
            if err is not None:
                unlink_quietly(path, self._store.io)  # not durable, so not delivered (store.maildir Rule 6)
                outcome[key] = failure(qid, addr, err)
                continue
            outcome[key] = delivered(qid, addr, path, self._changes)


def _as_exception(err: BaseException) -> Exception:
    return err if isinstance(err, Exception) else RuntimeError(str(err))
