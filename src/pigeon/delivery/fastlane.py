"""The fast lane: local delivery of journaled messages, straight from memory.

A message committed to the intake journal (``queue.journal``; small, every recipient local) is
delivered here without touching the queue files: each recipient's Maildir file is written on the
event loop, and the flushes (every file's fsync, then each ``new/`` directory's) are group-
committed with every other delivery under way (``store.groupsync``), so a message costs no
thread hop of its own. The steps and their order are local delivery's (``delivery.local``,
``store.maildir`` Rule 2): file written, file fsynced, linked into ``new/``, ``new/`` fsynced.
With ``[queue] flush = "filesystem"`` (``store.fssync``) each flush is the batch's one
``syncfs``: files written, file system flushed, linked into ``new/``, file system flushed.

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
4. Recipients are handled as ``LocalDelivery`` does: unknown user → ``550 5.1.1``; a name the
   store refuses → ``553``; an ``OSError`` → deferred ``451``/``452``; one copy per mailbox.

5. With a file-system flush (``store.fssync``), both of a message's flushes (its files, then
   its ``new/`` entries) wait up to ``NEW_FLUSH_WITHIN`` for one ``syncfs`` shared with every
   other delivery under way (``store.groupsync`` Rule 8): under load a message costs a small
   share of two flushes, and none of this delays the client's ``250``, which waited only for
   the journal's ``fdatasync`` (``queue.journal`` Rule 2). The order is still the Maildir one:
   no file is linked into ``new/`` before a flush that began after it was written completed.

What can go wrong: nothing raises out of the lane; every failure ends in a spill (Rule 2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Protocol

from pigeon import maillog
from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.core.results import RecipientResult
from pigeon.delivery.local import HOST, R250_DELIVERED, UserLookup, delivered, delivery_prefix, failure, unknown_user
from pigeon.queue.journal import Journal
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore
from pigeon.queue.syncer import fsync_dir
from pigeon.store.changes import ChangeNotifier
from pigeon.store.groupsync import GroupSync
from pigeon.store.maildir import MaildirStore, PendingFile, unlink_quietly

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 512
# Rule 5: how long a delivery's flushes may wait to be shared with other deliveries. The client
# has had its 250 already (the message is safe in the journal); this only delays the file's
# arrival in new/, the "delivered" line, the done entry and the IMAP IDLE notice, by at most
# twice this when the server is idle.
NEW_FLUSH_WITHIN = 0.01

Results = list[tuple[RcptState, RecipientResult]]
Outcome = dict[str, RecipientResult]  # by mailbox key
Files = dict[str, tuple[Address, PendingFile]]  # by mailbox key: written, not yet in new/


class LocalDomains(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...


class FastLane:
    def __init__(self, queue: QueueStore, store: MaildirStore, users: UserLookup, domains: LocalDomains,
                 clock: Clock, changes: ChangeNotifier | None,
                 finish: Callable[[QueueRecord, Results], Awaitable[None]],
                 submit: Callable[[QueueRecord], None], *, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        if queue.journal is None or queue.groupsync is None:
            raise ValueError("the fast lane needs a queue with its intake journal")
        self._queue = queue
        self._journal: Journal = queue.journal
        self._sync: GroupSync = queue.groupsync
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

    def take(self, record: QueueRecord) -> None:
        """A message just committed to the journal (``record.body_data`` set)."""
        body = record.body_data
        record.body_data = None
        if body is None:
            raise ValueError(f"{record.id} has no body in memory")
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
        """Let deliveries under way finish; what is cut short stays in the journal (Rule 2)."""
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
        """Rule 2: into the queue files, then the queue manager's hands."""
        try:
            await self._queue.spill(record, body)
        except Exception as exc:
            log.error("%s: cannot move the message into the queue (%s); it stays in the intake "
                      "journal and is recovered at the next start", record.id, exc)
            return
        self._journal.done(record.id)
        self.spilled += 1
        if results is None:
            self._submit(record)
        else:
            await self._finish(record, results)

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
        outcome: Outcome = {}
        files: Files = {}
        for rcpt in record.rcpts:
            addr = rcpt.address
            key = addr.key
            if key in outcome or key in files:
                continue  # Rule 4: one copy per mailbox
            try:
                result = unknown_user(self._users, qid, addr)
                if result is not None:
                    outcome[key] = result
                    continue
                files[key] = (addr, self._store.write_tmp(addr, delivery_prefix(sender, addr), body))
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
            flushes = [self._sync.flush_fs_soon(p.maildir, NEW_FLUSH_WITHIN) for _, p in files.values()]
        else:
            flushes = [self._sync.sync(("fsync", id(p)), p.flush_and_close) for _, p in files.values()]
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
            syncs = {d: self._sync.flush_fs_soon(d, NEW_FLUSH_WITHIN) for d in dirs}
        else:
            syncs = {d: self._sync.sync(("dir", str(d)), partial(fsync_dir, d)) for d in dirs}
        errors: dict[Path, Exception] = {}
        for d, fut in syncs.items():
            try:
                await fut
            except Exception as exc:
                errors[d] = exc
        for key, (addr, path) in linked.items():
            err = errors.get(path.parent)
            if err is not None:
                unlink_quietly(path)  # not durable, so not delivered (store.maildir Rule 6)
                outcome[key] = failure(qid, addr, err)
                continue
            delivered(qid, addr, path, self._changes)
            outcome[key] = RecipientResult(addr, "delivered", R250_DELIVERED, HOST)


def _as_exception(err: BaseException) -> Exception:
    return err if isinstance(err, Exception) else RuntimeError(str(err))
