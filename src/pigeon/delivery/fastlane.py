"""The fast agent: local delivery of small journaled mail, written on the event loop.

``FastLocalDelivery`` is the ``DeliveryAgent`` (``delivery.base``) that the queue manager chooses
for a message live in the intake journal (``qmgr.manager.transport``; the fast road,
``qmgr.lane``), as Postfix's qmgr chooses a transport. Its body comes from memory
(``queue.source.MemoryBody``; or a journal segment for a message tried again), so no queue file
is read or written: each recipient's Maildir file is written on the event loop, and the flushes
(every file's fsync, then each ``new/`` directory's) are group-committed with every other
delivery under way (``durable.commit``), so a message costs no thread hop of its own. The steps
and their order are local delivery's (``delivery.local``, ``store.maildir`` Rule 2): file
written, file fsynced, linked into ``new/``, ``new/`` fsynced. With ``[queue] flush =
"filesystem"`` (``durable.flushes.FsSync``) each flush is the batch's one ``syncfs``: files
written, file system flushed, linked into ``new/``, file system flushed. Why each flush: the
files' (or the first ``syncfs``), their bytes are on disk before their names appear in
``new/``; ``new/``'s (or the second ``syncfs``), the names are durable before the recipient
counts as delivered and the queue manager lets the journal forget the message.

Rules:
1. ``deliver(job)`` returns one result per job recipient, in order (``delivery.base`` Rule 2),
   ``host="local"``; it writes nothing else: what the results mean for the message (done,
   deferred, bounced) is the queue manager's to apply (``qmgr.lane``).
2. Recipients are handled by ``delivery.local``'s own functions (``delivery.local`` Rule 7):
   unknown user → ``550 5.1.1``; a name the store refuses → ``553``; an ``OSError`` → deferred
   ``451``/``452``; one copy per mailbox. Only the writing and the batched flushes are this
   agent's. Every recipient is expected in a local domain (the queue manager checks before it
   chooses this agent).
3. With a file-system flush (``durable.flushes.FsSync``), both of a message's flushes (its
   files, then its ``new/`` entries) wait up to ``NEW_FLUSH_WITHIN`` for one ``syncfs`` shared
   with every other delivery under way (``durable.commit`` Rule 4): under load a message costs a
   small share of two flushes, and none of this delays the client's ``250``, which waited only
   for the journal's ``fdatasync`` (``durable.journal`` Rule 2). The order is still the Maildir one:
   no file is linked into ``new/`` before a flush that began after it was written completed.

What can go wrong: a recipient's failure is its result (Rule 2); an unexpected exception escapes
to the queue manager, which defers the job's recipients (``delivery.base`` Rule 3).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pigeon.core.address import Address
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryJob
from pigeon.delivery.local import Outcome, UserLookup, delivered, delivery_prefix, failure, in_order, mailboxes
from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import DirSync, FileSync
from pigeon.durable.io import unlink_quietly
from pigeon.store.changes import ChangeNotifier
from pigeon.store.maildir import MaildirStore, PendingFile

# Rule 3: how long a delivery's flushes may wait to be shared with other deliveries. The client
# has had its 250 already (the message is safe in the journal); this only delays the file's
# arrival in new/, the "delivered" line, the done entry and the IMAP IDLE notice, by at most
# twice this when the server is idle.
NEW_FLUSH_WITHIN = 0.01

Files = dict[str, tuple[Address, PendingFile]]  # by mailbox key: written, not yet in new/


class FastLocalDelivery:
    """The fast ``DeliveryAgent`` for small local mail (the rules above)."""

    def __init__(self, store: MaildirStore, users: UserLookup, commits: GroupCommit,
                 changes: ChangeNotifier | None) -> None:
        self._store = store
        self._users = users
        self._sync = commits  # the engine the store and the queue share (one per process)
        self._changes = changes

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        body = await job.body.read()  # memory: no thread hop (queue.source Rule 2)
        outcome, files = self._write_files(job, body)
        if files:
            await self._flush_files(job.queue_id, files, outcome)
        if files:
            await self._link(job.queue_id, files, outcome)
        return in_order(job.recipients, outcome)

    def _write_files(self, job: DeliveryJob, body: bytes) -> tuple[Outcome, Files]:
        """Each mailbox's ``tmp/`` file, written, not flushed; failures become outcomes."""
        qid = job.queue_id
        sender = job.sender
        todo, outcome = mailboxes(self._users, qid, job.recipients)  # Rule 2
        files: Files = {}
        for key, addr in todo.items():
            try:
                files[key] = (addr, self._store.write_tmp(addr, delivery_prefix(sender, addr), body,
                                                          job.folder))
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
        (Rule 3)."""
        if self._sync.whole_fs:
            self._close_files(qid, files, outcome)
            flushes = [self._sync.flush_fs(p.maildir, within=NEW_FLUSH_WITHIN) for _, p in files.values()]
        else:  # the engine closes each file after its fsync
            flushes = [self._sync.flush(FileSync(p.release(), close=True)) for _, p in files.values()]
        done = await _settled(flushes)
        for (key, (addr, pending)), err in zip(list(files.items()), done, strict=True):
            if isinstance(err, BaseException):
                pending.discard()
                del files[key]
                outcome[key] = failure(qid, addr, _as_exception(err))

    async def _link(self, qid: str, files: Files, outcome: Outcome) -> None:
        """Link into ``new/``, then each ``new/`` fsynced once for the whole batch. The Maildirs
        are the store's own path objects (``MaildirStore.ensure``): no path made per file."""
        linked: dict[str, tuple[Address, Path, Path]] = {}  # key: (addr, file in new/, its Maildir)
        for key, (addr, pending) in files.items():
            try:
                linked[key] = (addr, self._store.link_new(pending), pending.maildir)
            except Exception as exc:
                outcome[key] = failure(qid, addr, exc)
        syncs: dict[Path, asyncio.Future[None]] = {}
        for _, path, maildir in linked.values():
            if maildir not in syncs:
                if self._sync.whole_fs:  # Rule 3: shared with the other deliveries under way
                    syncs[maildir] = self._sync.flush_fs(maildir, within=NEW_FLUSH_WITHIN)
                else:
                    syncs[maildir] = self._sync.flush(DirSync(path.parent))
        errors: dict[Path, Exception] = {}
        for d, fut in syncs.items():
            try:
                await fut
            except Exception as exc:
                errors[d] = exc
        for key, (addr, path, maildir) in linked.items():
            err = errors.get(maildir)
            if err is not None:
                unlink_quietly(path, self._store.io)  # not durable, so not delivered (store.maildir Rule 6)
                outcome[key] = failure(qid, addr, err)
                continue
            outcome[key] = delivered(qid, addr, path, self._changes, maildir)


async def _settled(futures: list[asyncio.Future[None]]) -> list[BaseException | None]:
    """``gather(..., return_exceptions=True)``; one recipient (the usual case) without a
    gathering future of its own."""
    if len(futures) == 1:
        try:
            await futures[0]
        except Exception as exc:
            return [exc]
        return [None]
    return await asyncio.gather(*futures, return_exceptions=True)


def _as_exception(err: BaseException) -> Exception:
    return err if isinstance(err, Exception) else RuntimeError(str(err))
