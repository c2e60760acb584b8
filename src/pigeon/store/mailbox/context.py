"""What an account's operations share: paths, the index, the lock, and folder lookup.

Rules:
1. Every index access and every file rename of one account happens under ``lock`` (an RLock:
   sessions call from worker threads). Several ``Mailbox`` views share one ``AccountCore``.
2. A folder exists when its directory has ``cur/``; the directory is the truth, the index
   follows it. A folder directory without an index row (created by another tool, or after
   the index was deleted) gets a row with a fresh UIDVALIDITY; a row whose directory vanished
   is dropped and the folder reported ``NONEXISTENT``.
3. Folder directories are created 0700 with ``cur/ new/ tmp/`` and a ``maildirfolder`` marker
   (Maildir++, as Courier and Dovecot create it), then the parent directory is fsynced: the
   folder's name is durable before a message is committed into it. All file operations go
   through ``io``, the store's IO seam (``durable.io``).
4. The views of one folder share its latest message list (``snapshot``), kept weakly here
   and strongly, for a while, by the store-wide ``warm`` cache (``snapshot`` Rule 6).
5. Reads that need no consistency with a write of this process go through ``reading()``: a
   connection of its own to the same index (WAL: readers never wait for the writer), never
   the account lock. The read connections are a small pool (at most ``MAX_READERS``, made
   as needed): with one, every session's after-command check queued behind the others' (a
   py-spy profile with 10 clients: the sessions' threads spent more time waiting for that one
   connection than for the account lock). Inside ``reading()``, ``reader`` is the connection
   this thread holds. ``unchanged``
   (the check every session makes after every command: "did this folder change since?") and
   the FETCH cache reads use it, so a session with nothing new waits for nobody's commit.
   While the index is open exclusively (index Rule 5) they take the account's path instead.
   A third connection, ``loop_reader``, is the event loop's own (view Rule 13).
6. Views share scans: ``rescan(row, since=t)`` skips the scan when one of the same folder
   started at or after ``t`` (``monotonic``, taken when the caller decided to sync), because
   that scan saw every change made before ``t``. So the N IDLE sessions of a folder woken by
   one delivery cost one scan, not N (within ``scan``'s dirty window each would otherwise
   list ``new/`` and ``cur/`` again, in a write transaction, under the account lock).
7. The writes answered only once durable (APPEND, COPY/MOVE, EXPUNGE) commit without a flush
   under the lock, then call ``make_durable`` after releasing it: the folders' ``cur/`` and the
   index's WAL flushed through the store's group-commit engine (``durable.commit``,
   ``flush_blocking``), so the concurrent writers of an account share each flush, and neither
   readers nor the next writer wait for it (index Rule 2).
8. Pigeon's own changes of ``cur/`` (a STORE's rename, an APPEND's or COPY's link, an
   EXPUNGE's unlink: all in the index already) do not make the next scan list ``cur/`` again,
   in this process or another (``own_changes``, inside the write transaction: ``scan`` Rules 1
   and 8, the listing record in the folder's index row). Without this, every write of any
   session made the next sync of every session list the folder (1,000 names and rows, ~10 %
   of the server's CPU in the mixed benchmark), and with ``[imap] processes = 2`` every write
   of one process made the other list it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.store.changes import ChangeBus
from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import DirSync
from pigeon.durable.io import REAL, FileIO
from pigeon.store.maildir import DIR_MODE, FILE_MODE
from pigeon.store.mailbox import folders
from pigeon.store.mailbox.flags import cur_name
from pigeon.store.mailbox.index import INDEX_NAME, FolderRow, Index, read_boot_id
from pigeon.store.mailbox.model import MailboxError
from pigeon.store.mailbox.scan import own_change, scan, up_to_date
from pigeon.store.mailbox.snapshot import FlagTable, Snapshot, WarmSnapshots
from pigeon.store.names import UniqueNames

log = logging.getLogger(__name__)

DEFAULT_FOLDERS: tuple[tuple[str, str], ...] = (  # issue 5; attributes from RFC 6154 §2
    ("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
    ("Junk", "\\Junk"), ("Archive", "\\Archive"),
)
# RFC 6154 §2 minus \All and \Flagged, which name virtual mailboxes this store does not have.
SPECIAL_USES = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})
_DEFAULT_USE = dict(DEFAULT_FOLDERS)
# Rule 5: read connections per account (3 descriptors each with WAL); the threads that run
# the sessions' store calls (asyncio's default pool: 6 on this 2-core machine) rarely need more.
MAX_READERS = 4


class AccountCore:
    """Shared state of one account (Rule 1)."""

    def __init__(self, address: Address, maildir: Path, hostname: str, clock: Clock,
                 max_append: int, changes: ChangeBus | None = None,
                 warm: WarmSnapshots | None = None, io: FileIO = REAL,
                 monotonic: Callable[[], float] = time.monotonic,
                 group: GroupCommit | None = None,
                 boot: Callable[[], int | None] = read_boot_id) -> None:
        self.io = io  # Rule 3
        # Rule 7: the store's group-commit engine (the Maildir store's, ``durable.commit``)
        self.group = group if group is not None else GroupCommit(io, name="pigeon-mailbox-sync")
        self.monotonic = monotonic  # Rule 6
        # Rule 6: (folder id, name) → when its last scan started
        self.scanned: dict[tuple[int, str], float] = {}
        # view Rule 11: folder id → (state key, index rows, tombstone UIDs) of the last sync
        self.deltas: dict[int, tuple[tuple[int, int, int, int], list[Any], list[int]]] = {}
        self.changes = changes or ChangeBus()  # wakes IDLE sessions (store.changes)
        self.address = address
        self.maildir = maildir
        self.index = Index(maildir / INDEX_NAME, boot, self.group)
        self.lock = threading.RLock()
        self._boot = boot
        self._readers: list[Index] = []  # Rule 5: the free read connections
        self._readers_made = 0
        self._readers_cond = threading.Condition()
        self._held = threading.local()  # Rule 5: the read connection this thread holds
        # view Rule 13: a connection for the event loop's syncs, outside the pool, so that the
        # loop never waits for a worker thread to give one back (one loop per process)
        self.loop_reader = Index(maildir / INDEX_NAME, boot)
        self.loop_reader_lock = threading.Lock()
        self.names = UniqueNames(hostname)
        self.clock = clock
        self.max_append = max_append
        self.open_views = 0
        # Shared by the views (``snapshot`` Rules 2, 4): the latest snapshot of each folder id,
        # kept only while a view holds it.
        self.flag_table = FlagTable()
        self.snapshots: weakref.WeakValueDictionary[int, Snapshot] = weakref.WeakValueDictionary()
        self.warm = warm or WarmSnapshots()  # the MailStore's, shared by all accounts

    def path(self, name: str) -> Path:
        """The directory of a normalised mailbox name."""
        sub = folders.dir_name(name)
        return self.maildir if sub is None else self.maildir / sub

    def notify(self, name: str) -> None:
        """Tell waiting sessions (IMAP IDLE) that the folder changed."""
        self.changes.notify(self.path(name))

    def make_durable(self, *names: str) -> None:
        """Rule 7: flush the ``cur/`` of each folder named and the index's WAL; call it after
        releasing the account lock, so that nobody waits for the flush but the caller."""
        for name in names:
            self.group.flush_blocking(DirSync(self.path(name) / "cur"))
        self.index.sync()

    def own_changes(self, conn: sqlite3.Connection, folder_id: int,
                    name: str) -> AbstractContextManager[None]:
        """Rule 8, around a change of the folder's ``cur/`` by Pigeon, inside the index
        transaction ``conn`` that records it (``scan.own_change``)."""
        return own_change(conn, folder_id, self.path(name) / "cur")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Rule 5: a read connection of the pool, this thread's until the block ends (the
        caller checks ``can_read``)."""
        with self._readers_cond:
            while not self._readers and self._readers_made >= MAX_READERS:
                self._readers_cond.wait()
            if self._readers:
                index = self._readers.pop()
            else:
                index = Index(self.maildir / INDEX_NAME, self._boot)
                self._readers_made += 1
        self._held.index = index
        try:
            yield index.conn
        finally:
            self._held.index = None
            with self._readers_cond:
                self._readers.append(index)
                self._readers_cond.notify()

    @property
    def reader(self) -> Index:
        """Rule 5: the read connection this thread holds inside ``reading()``."""
        index: Index | None = getattr(self._held, "index", None)
        if index is None:
            raise RuntimeError("AccountCore.reader used outside reading()")
        return index

    @property
    def can_read(self) -> bool:
        """Rule 5: the read connection may be used (the index is not open exclusively)."""
        return not self.index.exclusive

    def close_index(self) -> None:
        """The write connection and the free read ones (they reopen on the next call); the caller
        holds ``lock``."""
        self.index.close()
        with self._readers_cond:
            for index in self._readers:  # one in use is closed when the account is next closed
                index.close()
        with self.loop_reader_lock:
            self.loop_reader.close()

    def unchanged(self, folder_id: int, highestmodseq: int, uidnext: int) -> bool:
        """Rule 5: True when a view at (``highestmodseq``, ``uidnext``) has nothing to sync:
        the index row says so and the folder needs no scan (``scan`` Rule 1, the same test).
        False means "look properly" (also on any error: the locked path reports it)."""
        if not self.can_read:
            return False
        try:
            with self.reading():
                row = self.reader.folder_by_id(folder_id)
            if row is None or row.highestmodseq != highestmodseq or row.uidnext != uidnext:
                return False
            path = self.path(row.name)
            st_new = os.stat(path / "new").st_mtime_ns
            st_cur = os.stat(path / "cur").st_mtime_ns
        except (OSError, sqlite3.Error):
            return False
        return up_to_date(row, st_new, st_cur) or self.index.writer_active()  # scan Rule 9

    def needs_scan(self, row: FolderRow, since: float | None = None) -> bool:
        """Would ``rescan(row, since=since)`` scan? The same tests (Rule 6, ``scan`` Rule 1),
        without writing anything: True also when the directories cannot be read."""
        if since is not None and self.scanned.get((row.id, row.name), -1.0) >= since:
            return False
        path = self.path(row.name)
        try:
            st_new = os.stat(path / "new").st_mtime_ns
            st_cur = os.stat(path / "cur").st_mtime_ns
        except OSError:
            return True
        return not (up_to_date(row, st_new, st_cur) or self.index.writer_active())  # scan Rule 9

    def exists(self, name: str) -> bool:
        return os.path.isdir(self.path(name) / "cur")

    def folder(self, name: str) -> FolderRow:
        """The row of an existing folder (Rule 2); ``name`` must be normalised."""
        row = self.index.folder_by_name(name)
        if not self.exists(name):
            if row is not None:
                log.info("folder %r of %s vanished from disk; dropping its index", name, self.address)
                with self.index.write() as conn:
                    self.index.drop_folder(conn, row.id)
            raise MailboxError("NONEXISTENT", f"mailbox {name!r} does not exist")
        if row is None:
            with self.index.write() as conn:
                row = self.index.folder_by_name(name)
                if row is None:
                    row = self.index.insert_folder(conn, name, _DEFAULT_USE.get(name), self.clock.now())
        return row

    def synced(self, name: str, force: bool = False) -> FolderRow:
        """``folder`` plus a scan of its directories (``scan`` Rule 1: cheap when unchanged)."""
        return self.rescan(self.folder(name), force)

    def rescan(self, row: FolderRow, force: bool = False, since: float | None = None) -> FolderRow:
        """``scan`` of the folder, unless one that started at or after ``since`` stands for it
        (Rule 6; ``row`` must then be fresh from the index). Under ``lock``."""
        if since is not None and not force and self.scanned.get((row.id, row.name), -1.0) >= since:
            return row
        started = self.monotonic()
        try:
            fresh = scan(self.index, row, self.path(row.name), force)
            self.scanned[(row.id, row.name)] = started
            return fresh
        except FileNotFoundError:
            if not self.exists(row.name):
                self.folder(row.name)  # drops the row and raises NONEXISTENT (Rule 2)
            raise

    def row_by_id(self, folder_id: int) -> FolderRow:
        row = self.index.folder_by_id(folder_id)
        if row is None:
            raise MailboxError("NONEXISTENT", "the selected mailbox was deleted or renamed")
        return row

    def message_path(self, row: FolderRow, base: str, info: str) -> Path:
        return self.path(row.name) / "cur" / cur_name(base, info)

    def make_dirs(self, name: str) -> None:
        """Rule 3."""
        path = self.path(name)
        os.makedirs(self.maildir, mode=DIR_MODE, exist_ok=True)
        created = False
        try:
            os.mkdir(path, DIR_MODE)
            created = True
        except FileExistsError:
            pass
        made_sub = False
        for sub in ("cur", "new", "tmp"):
            try:
                os.mkdir(path / sub, DIR_MODE)
                made_sub = True
            except FileExistsError:
                continue
        if made_sub:
            self.io.fsync_dir(path)  # Rule 3
        if name != folders.INBOX:
            marker = path / "maildirfolder"
            if not marker.exists():
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        if created:
            self.io.fsync_dir(path.parent)  # Rule 3
