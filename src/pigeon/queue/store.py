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
8. The intake journal (``queue.intake_journal``, docs/queue.md "The intake journal"): with
   ``journal=True`` (the server and its worker processes) a body up to ``MEMORY_BODY`` stays in
   memory while it is received, and the queue decides which mail takes the journal (cleanup
   only commits): a body still in memory whose recipients are all pending and local
   (``local_domain``, the app's directory), or with ``relay_journal`` all remote; mixed mail
   takes the queue files; ``commit(fast=...)`` overrides the test. Its commit point is the
   journal's group flush; its body is kept in memory by queue id (``in_journal``) and handed
   to delivery as a ``MemoryBody`` (``body``) until it leaves the journal: ``remove``
   (delivered: its done entry) or ``spill`` (into ``active/`` or ``hold/``, then its done
   entry). ``recover`` moves whatever the journals hold into ``active/`` and deletes them.
9. A commit whose caller was cancelled still completes (rule 2) and is handed to ``orphans``
   (the app submits it for delivery), so it is not left undelivered until the next start.
10. Each process that accepts mail has its own journal, ``journal/<owner>/``, locked by its
   owner while it runs; ``drain_journal`` (start-up, or the server after a worker ended) takes
   the lock first (``intake_journal`` rule 5).
11. A full disk (docs/queue.md "A full disk"): a journal without room (``Journal.admit``)
   sends the message to the queue files, answered 452 if they cannot be written either. The
   250 always rests on a completed write and flush.
12. A message whose fast delivery and spill both failed stays live in the journal, retried in
   place by the fast road (``qmgr.lane``), its body read back from its segment. ``load``,
   ``open_body`` and ``journal_messages`` see every journal's messages (state ``journal``),
   for ``pigeon queue list/show`` whether the server runs or not. A start whose recovery
   cannot move a journal (still no room) logs it and goes on, the journal kept as it is: the
   server must run so that users can free space; the next start moves it.

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
from pigeon.durable.journal import Journal, JournalBusy
from pigeon.queue import api
from pigeon.queue.api import MOVABLE_STATES, BodySource, RecordNotFound
from pigeon.queue import intake_journal
from pigeon.queue.body import MEMORY_BODY, BodyWriter, QueueWriteError
from pigeon.queue.intake_journal import JOURNAL_DIR, JOURNAL_LOCK_WAIT, MAIN_JOURNAL, IntakeJournal
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
from pigeon.queue.source import FileBody, MemoryBody

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
    "JOURNAL_DIR",
    "MAIN_JOURNAL",
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
        self._tmp_dir = root / "tmp"
        self._pool_files = FilePool(self._tmp_dir, io=io)  # rule 7
        # Group commit (rule 4), shared with the Maildir store by the app; its syncfs flushes
        # are for the fast lane, whose Maildir files only the journal's messages have.
        self.commits = GroupCommit(io, whole_fs=journal and wants_syncfs(flush))
        self._dir_syncs = {name: DirSync(root / name) for name in ("msg", *STATES)}
        self.local_domain = local_domain  # rule 8: which mail the journal takes (the app's directory)
        self.relay_journal = relay_journal  # rule 8: mail for other domains takes it too
        self.orphans: Callable[[QueueRecord], None] | None = None  # rule 9
        # The intake journal (rules 8, 10), for the server and its workers; tools and tests use
        # the files alone.
        self.intake = IntakeJournal(root, journal_owner, self.commits, io, self._hand_orphan) if journal else None

    @property
    def journal(self) -> Journal | None:
        """This process's ``durable.journal.Journal`` (rule 8), None without one."""
        return self.intake.journal if self.intake is not None else None

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
        if self.intake is not None:
            self.intake.close()  # rule 8: bodies no lane took stay in the journal, for recovery

    # -- receiving ---------------------------------------------------------------------------

    def new_body(self) -> BodyWriter:
        qid = new_queue_id(self.clock.now(), secrets.randbits(ENTROPY_BITS))
        path = self._tmp_dir / qid
        memory = MEMORY_BODY if self.intake is not None else 0  # rule 8
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

    async def commit(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState], *,
                     fast: bool | None = None) -> QueueRecord:
        """Make the message durable (rule 1): in ``active/``, or in the intake journal (rule 8)
        when the body is still in memory and the message is local (``IntakeJournal.takes``; ``fast``
        overrides that test, for tests and tools). Raises QueueWriteError (rule 2)."""
        intake = self.intake
        if fast is None:
            fast = intake is not None and body.in_memory and intake.takes(rcpts, self.local_domain, self.relay_journal)
        if fast and intake is not None and body.in_memory:
            record = self._new_record(body, envelope, rcpts)
            data = encode_record(record)
            if intake.admit(len(data) + body.size):  # rule 11
                return await intake.commit(body, record, data)
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
        self._hand_orphan(record)

    def _hand_orphan(self, record: QueueRecord) -> None:
        if self.orphans is not None:
            self.orphans(record)

    def in_journal(self, qid: QueueId) -> bool:
        """Rule 8: ``qid`` is live in this process's intake journal (committed there, not yet
        delivered, removed or moved into a state)."""
        return self.intake is not None and self.intake.live(qid)

    def body(self, qid: QueueId) -> BodySource:
        """The body for a delivery agent (``queue.source``): the bytes still in memory for a
        journal commit, its journal segment for one whose memory copy was let go (rule 12),
        else the ``msg/`` file."""
        source = self.intake.source(qid) if self.intake is not None else None
        return source if source is not None else FileBody(self.body_path(qid))

    def _journal_done(self, qid: QueueId) -> None:
        """The message leaves this process's journal (rule 8): its done entry, its memory."""
        assert self.intake is not None
        self.intake.done(qid)

    def journal_messages(self) -> list[QueueRecord]:
        """Rule 12: every message an intake journal (any process's) still holds that is not in
        a state directory, oldest first, as read from the disk (``pigeon queue list``).
        Blocking; records that do not parse are left out (recovery keeps them in corrupt/)."""
        return intake_journal.pending_messages(self.root, self._known)

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
            self._forget(record.id)
            raise
        except OSError as exc:
            self._forget(record.id)
            raise QueueWriteError(f"moving {record.id} into the queue failed: {exc}") from exc
        self._journal_done(record.id)
        record.state = state

    def _forget(self, qid: QueueId) -> None:
        if self.intake is not None:
            self.intake.forget(qid)  # rule 12: read back from the segment from now on

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
        return intake_journal.pending_entry(self.root, qid, self._known)

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
        for owner in intake_journal.owners(self.root):
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
        return intake_journal.drain(self.root, owner, known=self._known, spill=self._spill_blocking,
                                    io=self.io, report=report, wait=wait)

    def _known(self, qid: QueueId) -> bool:
        return any(self._record_path(state, qid).exists() for state in STATES)


# The name the tools and tests construct; callers type against ``queue.api.QueueStore``.
QueueStore = FileQueueStore


def _conforms(store: FileQueueStore) -> api.QueueStore:
    return store  # mypy: the file-system store implements the seam


def _checked(qid: str) -> str:
    """Rule 6: only a queue id ever becomes part of a path."""
    if not is_queue_id(qid):
        raise ValueError(f"not a queue id: {qid!r}")
    return qid
