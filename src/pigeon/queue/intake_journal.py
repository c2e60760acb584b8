"""The queue's intake journal: mail committed to ``durable.journal`` instead of the queue files.

``queue.store`` says when a message takes the journal (its rules 8-12); this module is how:
one process's journal while it runs (``IntakeJournal``), and every process's journal as it
lies on the disk (``pending_messages``, ``pending_entry``, ``drain``), for ``pigeon queue
list/show`` and for recovery.

Rules:
1. ``takes``: every recipient is pending and in a local domain, or, with ``relay``, none is:
   one lane of the fast road (local or relay) can take the message from memory. A message with
   both takes the queue files.
2. ``commit`` appends the record and the body to the journal and returns after the journal's
   group flush: that flush is the commit point of such a message (the 250 rests on it). The
   body is then kept in memory, by queue id, until the message leaves the journal; the record
   never carries it.
3. A caller cancelled while the flush runs leaves a callback: the flushed message is handed to
   ``on_orphan`` (the store hands it to the app for delivery), a failed flush marks the entry
   failed in the journal. Nothing is left undelivered until the next start.
4. A message leaves the journal by ``done`` (delivered, or spilled into the queue files by the
   store first): its done entry and its memory copy go. ``forget`` lets only the memory copy
   go (a failed spill): ``source`` then reads the body back from its segment.
5. Each process has its own journal, ``journal/<owner>/`` (``main`` for the server, ``w1``…
   for worker processes). A worker holds an exclusive lock on its journal directory while it
   runs; ``drain`` takes that lock first, so a journal is never drained while its owner still
   appends (``JournalBusy`` when it does).
6. On the disk, an entry whose message is already in a state directory (``known``) is left
   out: it was spilled, and its done entry had not reached the disk. A record that does not
   parse is left out of the listings and kept in ``corrupt/`` by ``drain``.

What can go wrong: ``QueueWriteError`` from ``commit`` (append or flush failed; nothing was
acknowledged); ``JournalBusy`` from ``drain``; ``OSError`` from ``drain`` (the journal stays).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.durable.commit import GroupCommit
from pigeon.durable.io import FileIO, makedirs_durable, write_file_synced
from pigeon.durable.journal import Journal, lock_journal, remove_segments
from pigeon.durable.journal import pending as journal_pending
from pigeon.queue.api import BodySource
from pigeon.queue.body import BodyWriter, QueueWriteError
from pigeon.queue.record import CorruptRecord, QueueRecord, RcptState, decode_record
from pigeon.queue.recovery import RecoveryReport
from pigeon.queue.source import MemoryBody, SegmentBody

log = logging.getLogger("pigeon.queue.store")  # the queue's log lines keep their logger

JOURNAL_DIR = "journal"
MAIN_JOURNAL = "main"  # the serving process's journal; worker processes have "w1", "w2"…
# Rule 5: how long start-up waits for a worker of a previous server to let go of its journal
# (it stops within its session grace period once its parent is gone).
JOURNAL_LOCK_WAIT = 30.0

Known = Callable[[QueueId], bool]  # Rule 6: the message is in a state directory


class IntakeJournal:
    """One process's intake journal while it runs (rules 1-5)."""

    def __init__(self, root: Path, owner: str, commits: GroupCommit, io: FileIO,
                 on_orphan: Callable[[QueueRecord], None]) -> None:
        jdir = root / JOURNAL_DIR / owner_dir(owner)
        makedirs_durable(jdir, io=io)
        self.io = io
        self._on_orphan = on_orphan
        self._lock = lock_journal(jdir, wait=0.0) if owner != MAIN_JOURNAL else None  # rule 5
        self.journal = Journal(jdir, commits, made_ahead=True)
        self._bodies: dict[QueueId, bytes] = {}  # rule 2

    @staticmethod
    def takes(rcpts: list[RcptState], local_domain: Callable[[str], bool] | None, relay: bool) -> bool:
        """Rule 1."""
        if local_domain is None or not rcpts or any(r.status != "pending" for r in rcpts):
            return False
        where = {local_domain(r.address.domain) for r in rcpts}
        return where == {True} or (relay and where == {False})

    def admit(self, size: int) -> bool:
        """The journal has room for ``size`` more octets (``durable.journal`` Rule 8)."""
        return self.journal.admit(size)

    async def commit(self, body: BodyWriter, record: QueueRecord, encoded: bytes) -> QueueRecord:
        """Rule 2, without a task of its own: the append is immediate, and a caller cancelled
        while the flush runs leaves a callback that hands the record on (rule 3)."""
        data = body.take()
        try:
            self.journal.append(record.id, encoded, data)
        except OSError as exc:
            log.error("queue: journal append of %s failed: %s", record.id, exc)
            raise QueueWriteError(f"queue write failed for {record.id}: {exc}") from exc
        flushed = self.journal.sync()
        try:
            await asyncio.shield(flushed)
        except asyncio.CancelledError:
            flushed.add_done_callback(lambda f: self._orphaned(f, record, data))
            raise
        except OSError as exc:
            self._failed(record, exc)
            raise QueueWriteError(f"queue write failed for {record.id}: {exc}") from exc
        self._bodies[record.id] = data
        return record

    def _failed(self, record: QueueRecord, exc: BaseException) -> None:
        log.error("queue: journal flush for %s failed: %s", record.id, exc)
        self.journal.failed([record.id])

    def _orphaned(self, flushed: asyncio.Future[None], record: QueueRecord, data: bytes) -> None:
        """Rule 3."""
        if flushed.cancelled():
            return
        exc = flushed.exception()
        if exc is not None:
            self._failed(record, exc)
            return
        self._bodies[record.id] = data
        log.info("queue: %s committed after its client went away (no 250 was sent)", record.id)
        self._on_orphan(record)

    def live(self, qid: QueueId) -> bool:
        """``qid`` is committed here and has not left (rule 4)."""
        if qid in self._bodies:
            return True
        try:
            self.journal.body_location(qid)
        except KeyError:
            return False
        return True

    def source(self, qid: QueueId) -> BodySource | None:
        """The body of a live message: in memory, else from its segment (rule 4); None when
        ``qid`` is not live here."""
        data = self._bodies.get(qid)
        if data is not None:
            return MemoryBody(data)
        try:
            path, offset, length = self.journal.body_location(qid)
        except KeyError:
            return None
        return SegmentBody(path, offset, length, self.io)

    def done(self, qid: QueueId) -> None:
        """Rule 4: the message leaves the journal."""
        self._bodies.pop(qid, None)
        self.journal.done(qid)

    def forget(self, qid: QueueId) -> None:
        """Rule 4: only the memory copy goes."""
        self._bodies.pop(qid, None)

    def close(self) -> None:
        """Bodies no lane took stay in the journal, for recovery (rule 4)."""
        self._bodies.clear()
        self.journal.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


# -- the journals on the disk (any process's, running or stopped) --------------------------------

def owners(root: Path) -> list[str]:
    """The owners of the journals under the queue ``root``, sorted."""
    base = root / JOURNAL_DIR
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def pending_messages(root: Path, known: Known) -> list[QueueRecord]:
    """Every message a journal still holds that is not in a state directory (rule 6), oldest
    first, as read from the disk, in state ``journal``. Blocking."""
    out: list[QueueRecord] = []
    for owner in owners(root):
        for entry in journal_pending(root / JOURNAL_DIR / owner, quiet=True):
            if known(entry.id):
                continue
            try:
                out.append(decode_record(entry.record, entry.id, "journal"))
            except CorruptRecord:
                continue
    return sorted(out, key=lambda r: r.created)


def pending_entry(root: Path, qid: QueueId, known: Known) -> tuple[QueueRecord, bytes] | None:
    """The record (state ``journal``) and body of ``qid`` if some journal holds it and no state
    directory does (rule 6); None otherwise. Blocking."""
    if not is_queue_id(qid):
        return None
    for owner in owners(root):
        for entry in journal_pending(root / JOURNAL_DIR / owner, quiet=True):
            if entry.id != qid or known(qid):
                continue
            try:
                return decode_record(entry.record, qid, "journal"), entry.body
            except CorruptRecord:
                return None
    return None


def drain(root: Path, owner: str, *, known: Known, spill: Callable[[QueueRecord, bytes], None],
          io: FileIO, report: RecoveryReport | None = None, wait: float = JOURNAL_LOCK_WAIT) -> list[QueueId]:
    """Hand what ``owner``'s journal still holds to ``spill`` (into ``active/``) and delete its
    segments; the ids moved. Blocking. ``JournalBusy`` while the owner runs (rule 5)."""
    jdir = root / JOURNAL_DIR / owner_dir(owner)
    if not jdir.is_dir():
        return []
    lock = lock_journal(jdir, wait=wait) if owner != MAIN_JOURNAL else None
    try:
        moved: list[QueueId] = []
        for entry in journal_pending(jdir):
            if known(entry.id):
                continue  # rule 6
            try:
                record = decode_record(entry.record, entry.id, "active")
            except CorruptRecord as exc:
                keep_corrupt(root, entry.id, entry.record, entry.body, str(exc), io)
                if report is not None:
                    report.corrupt.append(f"journal:{entry.id}")
                continue
            spill(record, entry.body)
            moved.append(entry.id)
        remove_segments(jdir, spare=lock is not None, io=io)  # the main journal's is in use here
        return moved
    finally:
        if lock is not None:
            os.close(lock)


def keep_corrupt(root: Path, qid: QueueId, record: bytes, body: bytes, why: str, io: FileIO) -> None:
    """Rule 6: an unreadable entry's record and body, kept in ``corrupt/`` before its journal goes."""
    log.error("queue: journal entry %s is unreadable (%s); kept in corrupt/", qid, why)
    corrupt = root / "corrupt"
    corrupt.mkdir(mode=0o700, exist_ok=True)
    for suffix, data in ((".journal", record), (".body", body)):
        # Written aside and renamed: a recovery cut short and run again replaces its copy.
        tmp = root / "tmp" / f"{qid}{suffix}.{secrets.token_hex(4)}"
        write_file_synced(tmp, data, io)
        io.rename(tmp, corrupt / f"{qid}{suffix}")
    io.fsync_dir(corrupt)  # kept before the journal that held it is deleted


def owner_dir(name: str) -> str:
    """A journal owner's name as a directory name: letters and digits only."""
    if not name or not all(c.isalnum() for c in name) or not name.isascii():
        raise ValueError(f"not a journal owner name: {name!r}")
    return name
