"""The durable queue: a spool directory where the state of a message is where its record is.

Layout under ``root`` (``data_dir/queue``)::

    tmp/        scratch: bodies being received, records being written (cleared at start-up)
    msg/<id>    message bodies: the exact bytes delivery sends
    incoming/   records of messages not yet committed (unused for now; cleared at start-up)
    active/ deferred/ hold/   envelope records (JSON, see record.py), one file per message
    corrupt/    records (and their bodies) that could not be read, kept for the operator

Rules:
1. The commit point (docs/queue.md): the body is fsynced and renamed into ``msg/``, ``msg/`` is
   fsynced; the record is written to ``tmp/`` and fsynced, renamed into ``active/``, and
   ``active/`` is fsynced. Only then does ``commit`` return, and only then may the SMTP server
   say 250. A record in ``active/``, ``deferred/`` or ``hold/`` therefore always has its body.
   Each fsync's reason: the body's and the record's, their bytes are on disk before a name
   points at them; ``msg/``'s, the body's name is durable before the record can appear;
   ``active/``'s, the record's name is durable: the commit point.
2. ``commit`` either completes or raises ``QueueWriteError`` (452 4.3.1) having removed every
   file it made: nothing is ever half-queued. A commit whose caller is cancelled still runs to
   the end (the message is then queued and found by the next scan; delivery is at least once).
3. Records are only ever replaced by rename (write tmp, fsync, rename, fsync the directory):
   the new version's bytes are durable before its name replaces the old one, and the rename is
   durable before the caller goes on (a removal or a move that follows can then never be
   undone by a crash while the update is). A move between states links the record into the
   new state, fsyncs that directory, then unlinks the old name and fsyncs the old directory:
   a crash leaves the record in one state or in both (recovery rule 6 keeps one), never in
   neither, even where a file system writes two directories independently (a rename's two
   directory changes are not atomic on ext4 without its journal).
4. Directory fsyncs are group-committed by the engine (``durable.commit``), shared with every
   commit under way; blocking I/O of the async methods runs in the store's thread pool so
   that many commits proceed at once. ``commit``, ``update`` and ``remove_async`` each run as
   ONE call in that pool (body, record, renames and the shared directory fsyncs,
   ``flush_blocking``), so a message costs one hop to a thread and back, not five; their
   blocking twins (``commit_sync``, ``update_sync``, ``remove``, recovery) are the same code
   in the caller's thread. ``move_async`` asks the engine from the event loop (``flush``).
   Every system call goes through the store's IO seam (``durable.io``).
5. Removing a message removes the record first, then the body: a crash in between leaves an
   orphan body, which ``recover`` deletes; it never leaves a record without a body. The fsync
   of the record's directory comes before the body goes, for the same reason.
6. Names that fail ``is_queue_id`` are never opened as records.
7. Removed bodies and records are not unlinked but kept in ``tmp/`` for the next message
   (``recycle.FilePool``): a rename takes the name out of its directory exactly as an unlink
   would, and no inode is allocated or freed per message. The next body or record overwrites
   the file in place and cuts it to its own length before its fsync (recycle rule 3).
   Recovery clears them with the rest of ``tmp/``.
8. The intake journal (``durable.journal``, docs/queue.md "The intake journal"): with
   ``journal=True`` (the server), a body up to ``MEMORY_BODY`` stays in memory while it is
   received. The queue decides which mail takes the journal (cleanup only commits): a body
   still in memory whose recipients are all pending and local (the ``local_domain`` predicate
   the app hands the store; without one, none; ``commit(fast=...)`` overrides the test). With
   ``relay_journal=True`` (the server and its SMTP workers, whose fast road, ``qmgr.lane``, hands
   journaled relay mail to the relay agent, which sends it from memory) a message none of whose recipients is local takes the
   journal too; a message with both local and remote recipients takes the queue files. Its
   ``commit`` appends record and body to the journal and returns
   after the journal's group flush: that flush is the commit point of such a message. The
   store keeps its body in memory, by queue id (``in_journal``; the record never carries it),
   and hands it to delivery as a ``queue.source.MemoryBody`` (``body``) until the message
   leaves the journal: ``remove`` (delivered: its done entry, nothing else is written) or
   ``spill`` (moved into ``active/`` or ``hold/``, then its done entry). ``recover`` moves
   whatever the journal still holds into ``active/`` and deletes the journal.
9. A commit whose caller was cancelled still completes (rule 2) and is handed to ``orphans``
   (the app submits it for delivery), so it is not left undelivered until the next start.
10. Each process that accepts mail has its own journal, ``journal/<owner>/`` (``main`` for the
   server, ``w1``… for SMTP worker processes). A worker holds an exclusive lock on its journal
   directory while it runs; draining a journal (``recover``, or the server after a worker
   ended) takes that lock first, so a journal is never drained while its owner still appends.
11. A full disk (docs/queue.md "A full disk"): ``commit(fast=True)`` asks the journal first
   (``Journal.admit``, journal Rule 8); when the journal has no room, the message takes the
   queue files as any other, and is answered 452 if they cannot be written. The 250 always
   rests on a completed write and flush: a journal entry written into blocks a made-ahead
   segment already holds, or the queue files.
12. A message whose fast delivery and spill both failed stays live in the journal, retried in
   place by the fast road (``qmgr.lane``); its memory copy is let go and ``body`` reads it
   back from its segment (``SegmentBody``). ``journal_messages`` lists what every journal
   holds, and ``load``/``open_body`` find a message there (state ``journal``), for ``pigeon
   queue list/show`` (running or stopped server).
   A start whose recovery cannot move a journal into the queue files (still no room) logs it,
   leaves that journal's segments as they are and goes on: the server must run so that users
   can free space; the messages stay listed and the next start moves them (the messages moved
   before the failure are in ``active/`` already and scheduled as any other).

What can go wrong: ``QueueWriteError`` (disk full, I/O error) from commit/update;
``RecordNotFound`` when an id is not queued; ``CorruptRecord`` from ``load``/``move``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from pigeon.core.clock import Clock
from pigeon.core.envelope import Envelope
from pigeon.core.queueid import ENTROPY_BITS, QueueId, is_queue_id, new_queue_id
from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import DirSync, wants_syncfs
from pigeon.durable.io import REAL, FileIO, makedirs_durable, unlink_quietly, write_all, write_file_synced
from pigeon.durable.journal import Journal, JournalBusy, lock_journal, read_at, remove_segments
from pigeon.durable.journal import pending as journal_pending
from pigeon.queue import api
from pigeon.queue.api import MOVABLE_STATES, BodySource, RecordNotFound
from pigeon.queue.body import MEMORY_BODY, BodyWriter, QueueWriteError
from pigeon.queue.record import (
    STATES,
    Attempt,
    CorruptRecord,
    QueueError,
    QueueRecord,
    RcptState,
    State,
    decode_record,
    encode_record,
)
from pigeon.queue.recovery import RecoveryReport, recover_queue
from pigeon.queue.recycle import FilePool
from pigeon.queue.source import FileBody, MemoryBody, SegmentBody

__all__ = [  # the record types are re-exported: callers import the queue's API from here
    "Attempt",
    "BodyWriter",
    "CorruptRecord",
    "QueueError",
    "QueueRecord",
    "FileQueueStore",
    "QueueStore",
    "QueueWriteError",
    "RcptState",
    "JournalBusy",
    "RecordNotFound",
    "RecoveryReport",
    "State",
]

log = logging.getLogger(__name__)

# Worker threads for fsync/write/rename. fsync blocks a thread for a whole journal commit, and
# the file system batches the fsyncs that arrive together, so throughput grows with the number
# of fsyncs in flight. Each commit now holds one thread for its whole sequence (rule 4); with
# more threads the GIL hand-offs between them cost more than the extra batching gains: 16 and
# 64 measured alike at 50 SMTP sessions on 2 cores (docs/benchmarks.md), 32 leaves room.
DEFAULT_IO_THREADS = 32

JOURNAL_DIR = "journal"
MAIN_JOURNAL = "main"  # the serving process's journal; SMTP worker processes have "w1", "w2"…
# Rule 10: how long start-up waits for a worker of a previous server to let go of its journal
# (it stops within its session grace period once its parent is gone).
JOURNAL_LOCK_WAIT = 30.0


class FileQueueStore:
    """The queue in the file system (the rules above): implements ``queue.api.QueueStore``."""

    def __init__(self, root: Path, clock: Clock, *, io_threads: int = DEFAULT_IO_THREADS,
                 journal: bool = False, journal_owner: str = MAIN_JOURNAL,
                 flush: str = "file", io: FileIO = REAL,
                 local_domain: Callable[[str], bool] | None = None, relay_journal: bool = False) -> None:
        self.root = root
        self.clock = clock
        self.io = io  # rule 4: the IO seam (tests inject faults through it)
        self._io_threads = io_threads
        self._pool: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Task[QueueRecord]] = set()
        for sub in ("tmp", "msg", *STATES):
            makedirs_durable(root / sub, io=io)
        self._pool_files = FilePool(root / "tmp", io=io)  # rule 7
        # Group commit (rule 4), shared with the Maildir store by the app; its syncfs flushes
        # are for the fast lane, whose Maildir files only the journal's messages have.
        self.commits = GroupCommit(io, whole_fs=journal and wants_syncfs(flush))
        self._dir_syncs = {name: DirSync(root / name) for name in ("msg", *STATES)}
        # The intake journal (rule 8), for the server; tools and tests use the files alone.
        self.journal: Journal | None = None
        self.local_domain = local_domain  # rule 8: which mail the journal takes (the app's directory)
        self.relay_journal = relay_journal  # rule 8: mail for other domains takes it too
        self.orphans: Callable[[QueueRecord], None] | None = None  # rule 9
        # Rule 8: the bodies of journal commits, in memory until their delivery takes them.
        self._bodies: dict[QueueId, bytes] = {}
        self._journal_lock: int | None = None
        if journal:
            jdir = root / JOURNAL_DIR / _owner(journal_owner)
            makedirs_durable(jdir, io=io)
            if journal_owner != MAIN_JOURNAL:  # rule 10: a worker's journal is locked while in use
                self._journal_lock = lock_journal(jdir, wait=0.0)
            self.journal = Journal(jdir, self.commits, made_ahead=True)

    # -- paths -------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / name

    def body_path(self, qid: QueueId) -> Path:
        return self.root / "msg" / _checked(qid)

    def _record_path(self, state: str, qid: QueueId) -> Path:
        return self.root / state / _checked(qid)

    def state_of(self, qid: QueueId) -> State:
        """Which state directory holds the record; raises RecordNotFound."""
        for state in STATES:
            if self._record_path(state, qid).exists():
                return state
        raise RecordNotFound(qid)

    # -- threads and group commit ------------------------------------------------------------

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._io_threads, thread_name_prefix="pigeon-queue-io")
        return self._pool

    def _dir_sync(self, name: str) -> DirSync:
        return self._dir_syncs[name]

    def dir_fsyncs(self, name: str) -> int:
        """How many group fsyncs ran for one directory so far (tests, benchmark)."""
        return self.commits.runs_of(self._dir_sync(name))

    def close(self) -> None:
        """Stop the I/O threads (after the last commit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.commits.close()  # runs every pending flush first
        self._bodies.clear()  # rule 8: bodies no lane took stay in the journal, for recovery
        if self.journal is not None:
            self.journal.close()
        if self._journal_lock is not None:
            os.close(self._journal_lock)
            self._journal_lock = None

    # -- receiving ---------------------------------------------------------------------------

    def new_body(self) -> BodyWriter:
        qid = new_queue_id(self.clock.now(), secrets.randbits(ENTROPY_BITS))
        path = self._dir("tmp") / qid
        memory = MEMORY_BODY if self.journal is not None else 0  # rule 8
        try:
            return BodyWriter(qid, path, pool=self._pool_files, memory=memory, io=self.io)
        except OSError as exc:
            raise QueueWriteError(f"creating body {qid}: {exc}") from exc

    def _new_record(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState]) -> QueueRecord:
        return QueueRecord(body.id, envelope, self.clock.now(), body.size, "active", list(rcpts))

    def _tmp_record(self, qid: QueueId) -> Path:
        return self._dir("tmp") / f"{qid}.rec"

    def _seal_body(self, body: BodyWriter) -> None:
        body.seal()
        self.io.rename(body.path, self.body_path(body.id))

    def _takes_journal(self, rcpts: list[RcptState]) -> bool:
        """Rule 8: every recipient is pending and in a local domain (``local_domain``), or, with
        ``relay_journal``, none is: one lane (local or relay) can take the message from memory."""
        local = self.local_domain
        if local is None or not rcpts or any(r.status != "pending" for r in rcpts):
            return False
        where = {local(r.address.domain) for r in rcpts}
        return where == {True} or (self.relay_journal and where == {False})

    async def commit(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState], *,
                     fast: bool | None = None) -> QueueRecord:
        """Make the message durable (rule 1): in ``active/``, or in the intake journal (rule 8)
        when the body is still in memory and the message is local (``_takes_journal``; ``fast``
        overrides that test, for tests and tools). Raises QueueWriteError (rule 2)."""
        if fast is None:
            fast = self.journal is not None and body.in_memory and self._takes_journal(rcpts)
        if fast and self.journal is not None and body.in_memory:
            record = self._new_record(body, envelope, rcpts)
            data = encode_record(record)
            if self.journal.admit(len(data) + body.size):  # rule 11
                return await self._commit_journal(body, record, data)
            log.debug("queue: the journal has no room for %s; it takes the queue files", record.id)
        task = asyncio.ensure_future(self._commit(body, envelope, rcpts))
        self._background.add(task)
        task.add_done_callback(self._commit_done)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._orphaned)  # rule 9
            raise

    def _commit_done(self, task: asyncio.Task[QueueRecord]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("queue: commit failed: %s", task.exception())

    def _orphaned(self, task: asyncio.Task[QueueRecord]) -> None:
        """Rule 9: the committer went away, the commit completed: deliver it all the same."""
        if task.cancelled() or task.exception() is not None:
            return
        record = task.result()
        log.info("queue: %s committed after its client went away (no 250 was sent)", record.id)
        if self.orphans is not None:
            self.orphans(record)

    async def _commit_journal(self, body: BodyWriter, record: QueueRecord, encoded: bytes) -> QueueRecord:
        """Rule 8, without a task of its own: the append is immediate, and a caller cancelled
        while the flush runs leaves a callback that hands the record on (rule 9)."""
        journal = self.journal
        assert journal is not None
        data = body.take()
        try:
            journal.append(record.id, encoded, data)
        except OSError as exc:
            log.error("queue: journal append of %s failed: %s", record.id, exc)
            raise QueueWriteError(f"queue write failed for {record.id}: {exc}") from exc
        flushed = journal.sync()
        try:
            await asyncio.shield(flushed)
        except asyncio.CancelledError:
            flushed.add_done_callback(lambda f: self._journal_orphan(f, record, data))
            raise
        except OSError as exc:
            self._journal_failed(record, exc)
            raise QueueWriteError(f"queue write failed for {record.id}: {exc}") from exc
        self._bodies[record.id] = data
        return record

    def _journal_failed(self, record: QueueRecord, exc: BaseException) -> None:
        log.error("queue: journal flush for %s failed: %s", record.id, exc)
        assert self.journal is not None
        self.journal.failed([record.id])

    def _journal_orphan(self, flushed: asyncio.Future[None], record: QueueRecord, data: bytes) -> None:
        if flushed.cancelled():
            return
        exc = flushed.exception()
        if exc is not None:
            self._journal_failed(record, exc)
            return
        self._bodies[record.id] = data
        log.info("queue: %s committed after its client went away (no 250 was sent)", record.id)
        if self.orphans is not None:
            self.orphans(record)

    def in_journal(self, qid: QueueId) -> bool:
        """Rule 8: ``qid`` is live in this process's intake journal (committed there, not yet
        delivered, removed or moved into a state)."""
        if qid in self._bodies:
            return True
        if self.journal is None:
            return False
        try:
            self.journal.body_location(qid)
        except KeyError:
            return False
        return True

    def body(self, qid: QueueId) -> BodySource:
        """The body for a delivery agent (``queue.source``): the bytes still in memory for a
        journal commit, its journal segment for one whose memory copy was let go (rule 12),
        else the ``msg/`` file."""
        data = self._bodies.get(qid)
        if data is not None:
            return MemoryBody(data)
        if self.journal is not None:
            try:
                path, offset, length = self.journal.body_location(qid)
            except KeyError:
                pass
            else:
                return SegmentBody(path, offset, length, self.io)
        return FileBody(self.body_path(qid))

    def _journal_done(self, qid: QueueId) -> None:
        """The message leaves this process's journal (rule 8): its done entry, its memory."""
        self._bodies.pop(qid, None)
        assert self.journal is not None
        self.journal.done(qid)

    def journal_messages(self) -> list[QueueRecord]:
        """Rule 12: every message an intake journal (any process's) still holds that is not in
        a state directory, oldest first, as read from the disk (``pigeon queue list``).
        Blocking; records that do not parse are left out (recovery keeps them in corrupt/)."""
        base = self.root / JOURNAL_DIR
        if not base.is_dir():
            return []
        out: list[QueueRecord] = []
        for owner in sorted(p for p in base.iterdir() if p.is_dir()):
            for entry in journal_pending(owner, quiet=True):
                if self._known(entry.id):
                    continue  # spilled; its done entry is not written yet
                try:
                    out.append(decode_record(entry.record, entry.id, "journal"))
                except CorruptRecord:
                    continue
        return sorted(out, key=lambda r: r.created)

    async def spill(self, record: QueueRecord, state: State = "active") -> None:
        """Move a message live in this process's journal into the queue files (``active/``, or
        ``hold/`` for ``pigeon queue hold``), durable on return, then write its done entry.
        Raises QueueWriteError: the message then stays live in the journal, its memory copy let
        go (its body is read back from the segment from then on, rule 12)."""
        loop = asyncio.get_running_loop()
        try:
            body = await self.body(record.id).read()
            await loop.run_in_executor(self._executor(), self._spill_blocking, record, body)
            if state != "active":
                await loop.run_in_executor(self._executor(), self.move, record.id, state)
        except QueueWriteError:
            self._bodies.pop(record.id, None)
            raise
        except OSError as exc:
            self._bodies.pop(record.id, None)
            raise QueueWriteError(f"moving {record.id} into the queue failed: {exc}") from exc
        self._journal_done(record.id)
        record.state = state

    def _spill_blocking(self, record: QueueRecord, body: bytes) -> None:
        writer = BodyWriter(record.id, self._dir("tmp") / record.id, pool=self._pool_files, io=self.io)
        try:
            writer.write(body)
        except QueueWriteError:
            writer.abort()
            raise
        record.state = "active"
        record.size = writer.size
        self._commit_blocking(writer, encode_record(record))

    async def _commit(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState]) -> QueueRecord:
        record = self._new_record(body, envelope, rcpts)
        data = encode_record(record)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor(), self._commit_blocking, body, data)
        except OSError as exc:
            log.error("queue: commit of %s failed: %s", body.id, exc)
            raise QueueWriteError(f"queue write failed for {body.id}: {exc}") from exc
        return record

    def _commit_blocking(self, body: BodyWriter, data: bytes) -> None:
        """Rule 1 in one call (a worker thread's, or the caller's without a loop), the directory
        fsyncs shared with concurrent commits. Undoes everything on failure (rule 2)."""
        tmp_rec = self._tmp_record(body.id)
        sync = self.commits.flush_blocking
        try:
            self._seal_body(body)
            self._write_synced(tmp_rec, data)
            sync(self._dir_sync("msg"))  # the body's name is durable before the record's
            self.io.rename(tmp_rec, self._record_path("active", body.id))
            sync(self._dir_sync("active"))  # the commit point
        except OSError:
            self._undo_commit(body)
            raise

    def commit_sync(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState]) -> QueueRecord:
        """``commit`` without an event loop (the offline sendmail path, tests). Blocking."""
        record = self._new_record(body, envelope, rcpts)
        try:
            self._commit_blocking(body, encode_record(record))
        except OSError as exc:
            log.error("queue: commit of %s failed: %s", body.id, exc)
            raise QueueWriteError(f"queue write failed for {body.id}: {exc}") from exc
        return record

    def _write_synced(self, path: Path, data: bytes) -> None:
        """``write_file_synced`` into a recycled file when one is free (rule 7). Blocking."""
        io = self.io
        if not self._pool_files.take(path):
            write_file_synced(path, data, io)
            return
        fd = io.open(path, os.O_WRONLY | os.O_CLOEXEC)  # overwritten in place, then cut (recycle.py rule 3)
        try:
            try:
                write_all(io, fd, data)
                io.ftruncate(fd, len(data))
                io.fsync(fd)  # rule 1: the record's bytes on disk before its name is
            finally:
                io.close(fd)
        except OSError:
            unlink_quietly(path, io)
            raise

    def _undo_commit(self, body: BodyWriter) -> None:
        """Remove every file a failed commit made (rule 2): record first, then body (rule 5)."""
        io = self.io
        removed = unlink_quietly(self._record_path("active", body.id), io)
        unlink_quietly(self._tmp_record(body.id), io)
        body.abort()
        unlink_quietly(self.body_path(body.id), io)
        if removed:  # the record had been renamed in: make its removal durable, best effort
            try:
                io.fsync_dir(self._dir("active"))
            except OSError as exc:
                log.error("queue: fsync of active/ after undoing %s failed: %s", body.id, exc)

    # -- reading -----------------------------------------------------------------------------

    def load(self, qid: QueueId) -> QueueRecord:
        """Read a record from whichever state holds it. RecordNotFound, CorruptRecord."""
        for state in STATES:
            try:
                data = self._record_path(state, qid).read_bytes()
            except FileNotFoundError:
                continue
            return decode_record(data, qid, state)
        found = self._journal_entry(qid)
        if found is None:
            raise RecordNotFound(qid)
        return found[0]

    def open_body(self, qid: QueueId) -> BinaryIO:
        """The body from the start (the caller closes it): a journal's or the ``msg/`` file."""
        if not self.in_journal(qid) and not self.body_path(qid).exists():
            found = self._journal_entry(qid)  # another process's journal, or a stopped server's
            if found is not None:
                return MemoryBody(found[1]).open()
        return self.body(qid).open()

    def _journal_entry(self, qid: QueueId) -> tuple[QueueRecord, bytes] | None:
        """Rule 12: the record (state ``journal``) and body of a message some intake journal
        holds and no state directory does, read from the disk; None when there is none."""
        base = self.root / JOURNAL_DIR
        if not is_queue_id(qid) or not base.is_dir():
            return None
        for owner in sorted(p for p in base.iterdir() if p.is_dir()):
            for entry in journal_pending(owner, quiet=True):
                if entry.id != qid or self._known(qid):
                    continue
                try:
                    return decode_record(entry.record, qid, "journal"), entry.body
                except CorruptRecord:
                    return None
        return None

    def scan(self, states: Iterable[State] = MOVABLE_STATES) -> Iterator[QueueRecord]:
        """Every readable record in the given states, oldest first within a state. Unreadable
        records and foreign file names are logged and skipped (``recover`` moves them aside)."""
        for state in states:
            if state not in STATES:
                raise ValueError(f"unknown queue state {state!r}")
            for name in sorted(os.listdir(self._dir(state))):
                if not is_queue_id(name):
                    log.warning("queue: ignoring foreign file %s/%s", state, name)
                    continue
                qid = QueueId(name)
                try:
                    data = self._record_path(state, qid).read_bytes()
                    yield decode_record(data, qid, state)
                except FileNotFoundError:
                    log.debug("queue: %s left %s/ during the scan", qid, state)
                except (OSError, CorruptRecord) as exc:
                    log.warning("queue: skipping unreadable record %s/%s: %s", state, qid, exc)

    # -- changing ----------------------------------------------------------------------------

    def _write_update(self, record: QueueRecord) -> Path:
        """Write the new record version to tmp/ and fsync it; return the tmp path. Blocking."""
        target = self._record_path(record.state, record.id)
        if not target.exists():
            raise RecordNotFound(f"{record.id} is not in {record.state}/")
        tmp = self._dir("tmp") / f"{record.id}.{secrets.token_hex(4)}.upd"
        write_file_synced(tmp, encode_record(record), self.io)
        return tmp

    async def update(self, record: QueueRecord) -> None:
        """Atomically rewrite the record in its current state directory (rule 3), in one
        worker-thread call (rule 4)."""
        await asyncio.get_running_loop().run_in_executor(self._executor(), self.update_sync, record)

    def update_sync(self, record: QueueRecord) -> None:
        """``update``, blocking."""
        tmp: Path | None = None
        try:
            tmp = self._write_update(record)
            self.io.rename(tmp, self._record_path(record.state, record.id))
            tmp = None
            self.commits.flush_blocking(self._dir_sync(record.state))  # rule 3
        except RecordNotFound:
            raise
        except OSError as exc:
            if tmp is not None:
                unlink_quietly(tmp, self.io)
            raise QueueWriteError(f"updating {record.id}: {exc}") from exc

    def _link_state(self, qid: QueueId, state: State) -> tuple[QueueRecord, State]:
        """Rule 3, first half of a move: the record's new name, beside the old one."""
        if state not in MOVABLE_STATES:
            raise ValueError(f"cannot move a record to {state!r}")
        record = self.load(qid)  # CorruptRecord stops the move before anything changes
        old = record.state
        if old != state:
            try:
                self.io.link(self._record_path(old, qid), self._record_path(state, qid))
            except FileExistsError:  # a name left there by a crash (recovery rule 6 not run): replace it
                self.io.rename(self._record_path(old, qid), self._record_path(state, qid))
            record.state = state
        return record, old

    def _unlink_old(self, qid: QueueId, old: State) -> None:
        """Rule 3, second half of a move, once the new name is durable."""
        try:
            self.io.unlink(self._record_path(old, qid))
        except FileNotFoundError:
            pass  # replaced by a rename above

    def move(self, qid: QueueId, state: State) -> QueueRecord:
        """Move a record between active/, deferred/ and hold/ (hold and release use this)."""
        record, old = self._link_state(qid, state)
        if old != state:  # rule 3: the new name durable before the old one goes
            self.commits.flush_blocking(self._dir_sync(state))
            self._unlink_old(qid, old)
            self.commits.flush_blocking(self._dir_sync(old))
        return record

    async def move_async(self, qid: QueueId, state: State) -> QueueRecord:
        """``move`` with the directory fsyncs group-committed (for the queue manager)."""
        record, old = self._link_state(qid, state)
        if old != state:  # rule 3
            await self.commits.flush(self._dir_sync(state))
            self._unlink_old(qid, old)
            await self.commits.flush(self._dir_sync(old))
        return record

    def _unlink_record(self, qid: QueueId) -> State:
        state = self.state_of(qid)
        self._pool_files.give(self._record_path(state, qid))  # rule 7: the unlink, recycled
        return state

    def _drop_body(self, qid: QueueId) -> None:
        try:
            self._pool_files.give(self.body_path(qid))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("queue: could not remove the body of %s: %s", qid, exc)

    async def remove_async(self, qid: QueueId) -> None:
        """``remove`` in one worker-thread call, the directory fsync shared (rule 4); a message
        live in this process's journal gets its done entry, on the event loop (rule 8)."""
        if self.in_journal(qid):
            self._journal_done(qid)
            return
        await asyncio.get_running_loop().run_in_executor(self._executor(), self.remove, qid)

    def remove(self, qid: QueueId) -> None:
        """Delete a message: the record first, then the body (rule 5). Blocking; from the event
        loop's thread for a message live in this process's journal (its done entry, rule 8)."""
        if self.in_journal(qid):
            self._journal_done(qid)
            return
        state = self._unlink_record(qid)
        self.commits.flush_blocking(self._dir_sync(state))  # rule 5
        self._drop_body(qid)

    # -- start-up ----------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Run at start-up, before any listener opens: see recovery.py and docs/queue.md.
        Then every message an intake journal still holds is moved into ``active/`` and the
        journals' segments are deleted (rules 8 and 10)."""
        report = recover_queue(self.root, self.io)
        base = self.root / JOURNAL_DIR
        owners = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        for owner in owners:
            try:
                moved = self.drain_journal(owner, report=report, wait=JOURNAL_LOCK_WAIT)
            except JournalBusy:
                raise
            except (OSError, QueueWriteError) as exc:  # rule 11: a full disk must not stop the start
                log.error("queue: cannot move what the intake journal %s holds into the queue (%s); it "
                          "stays there (pigeon queue list shows it) and the next start moves it", owner, exc)
                continue
            report.active.extend(moved)
            report.journal.extend(moved)
        if report.journal:
            log.info("queue: %d messages recovered from the intake journal", len(report.journal))
        return report

    def drain_journal(self, owner: str, *, report: RecoveryReport | None = None,
                      wait: float = JOURNAL_LOCK_WAIT) -> list[QueueId]:
        """Move what ``owner``'s journal still holds into ``active/`` and delete its segments
        (start-up, or after an SMTP worker process ended). Returns the ids moved. Blocking.
        Raises JournalBusy when the owner still runs (rule 10)."""
        root = self.root / JOURNAL_DIR / _owner(owner)
        if not root.is_dir():
            return []
        lock = lock_journal(root, wait=wait) if owner != MAIN_JOURNAL else None
        try:
            moved: list[QueueId] = []
            for entry in journal_pending(root):
                if self._known(entry.id):
                    continue  # spilled before the crash; its done entry did not reach the disk
                try:
                    record = decode_record(entry.record, entry.id, "active")
                except CorruptRecord as exc:
                    self._keep_corrupt(entry.id, entry.record, entry.body, str(exc))
                    if report is not None:
                        report.corrupt.append(f"journal:{entry.id}")
                    continue
                self._spill_blocking(record, entry.body)
                moved.append(entry.id)
            remove_segments(root, spare=lock is not None, io=self.io)  # the main journal's is in use here
            return moved
        finally:
            if lock is not None:
                os.close(lock)

    def _known(self, qid: QueueId) -> bool:
        return any(self._record_path(state, qid).exists() for state in STATES)

    def _keep_corrupt(self, qid: QueueId, record: bytes, body: bytes, why: str) -> None:
        log.error("queue: journal entry %s is unreadable (%s); kept in corrupt/", qid, why)
        corrupt = self._dir("corrupt")
        corrupt.mkdir(mode=0o700, exist_ok=True)
        for suffix, data in ((".journal", record), (".body", body)):
            # Written aside and renamed: a recovery cut short and run again replaces its copy.
            tmp = self._dir("tmp") / f"{qid}{suffix}.{secrets.token_hex(4)}"
            write_file_synced(tmp, data, self.io)
            self.io.rename(tmp, corrupt / f"{qid}{suffix}")
        self.io.fsync_dir(corrupt)  # kept before the journal that held it is deleted


# The name the tools and tests construct; callers type against ``queue.api.QueueStore``.
QueueStore = FileQueueStore


def _conforms(store: FileQueueStore) -> api.QueueStore:
    return store  # mypy: the file-system store implements the seam


def _owner(name: str) -> str:
    if not name or not all(c.isalnum() for c in name) or not name.isascii():
        raise ValueError(f"not a journal owner name: {name!r}")
    return name


def _checked(qid: str) -> str:
    """Rule 6: only a queue id ever becomes part of a path."""
    if not is_queue_id(qid):
        raise ValueError(f"not a queue id: {qid!r}")
    return qid
