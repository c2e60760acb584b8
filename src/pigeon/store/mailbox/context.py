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
   second connection to the same index (WAL: readers never wait for the writer) under its own
   small lock, never the account lock, which a writer holds through its fsyncs. ``unchanged``
   (the check every session makes after every command: "did this folder change since?") and
   the FETCH cache reads use it, so a session with nothing new waits for nobody's commit.
   While the index is open exclusively (index Rule 5) they take the account's path instead.
   A third connection, ``loop_reader``, is the event loop's own (view Rule 12).
6. Views share scans: ``rescan(row, since=t)`` skips the scan when one of the same folder
   started at or after ``t`` (``monotonic``, taken when the caller decided to sync), because
   that scan saw every change made before ``t``. So the N IDLE sessions of a folder woken by
   one delivery cost one scan, not N (within ``scan``'s dirty window each would otherwise
   list ``new/`` and ``cur/`` again, in a write transaction, under the account lock).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.store.changes import ChangeBus
from pigeon.durable.io import REAL, FileIO
from pigeon.store.maildir import DIR_MODE, FILE_MODE
from pigeon.store.mailbox import folders
from pigeon.store.mailbox.flags import cur_name
from pigeon.store.mailbox.index import INDEX_NAME, FolderRow, Index
from pigeon.store.mailbox.model import MailboxError
from pigeon.store.mailbox.scan import DIRTY_RELIST, ScanMemo, scan
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


class AccountCore:
    """Shared state of one account (Rule 1)."""

    def __init__(self, address: Address, maildir: Path, hostname: str, clock: Clock,
                 max_append: int, changes: ChangeBus | None = None,
                 warm: WarmSnapshots | None = None, io: FileIO = REAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.io = io  # Rule 3
        self.monotonic = monotonic  # Rule 6
        # Rule 6: (folder id, name) → when its last scan started
        self.scanned: dict[tuple[int, str], float] = {}
        # view Rule 11: folder id → (state key, index rows, tombstone UIDs) of the last sync
        self.deltas: dict[int, tuple[tuple[int, int, int, int], list[Any], list[int]]] = {}
        self.changes = changes or ChangeBus()  # wakes IDLE sessions (store.changes)
        self.address = address
        self.maildir = maildir
        self.index = Index(maildir / INDEX_NAME)
        self.lock = threading.RLock()
        self.reader = Index(maildir / INDEX_NAME)  # Rule 5
        self.reader_lock = threading.Lock()
        # view Rule 12: a third connection for the event loop's syncs, so that they never find
        # the reader's lock held by a worker thread (one loop per process: never contended)
        self.loop_reader = Index(maildir / INDEX_NAME)
        self.loop_reader_lock = threading.Lock()
        self.names = UniqueNames(hostname)
        self.clock = clock
        self.max_append = max_append
        self.open_views = 0
        self.scan_memo: ScanMemo = {}  # scan Rule 1: this process's last listing of each folder
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

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Rule 5: the read connection, under its own lock (the caller checks ``can_read``)."""
        with self.reader_lock:
            yield self.reader.conn

    @property
    def can_read(self) -> bool:
        """Rule 5: the read connection may be used (the index is not open exclusively)."""
        return not self.index.exclusive

    def close_index(self) -> None:
        """Both connections (they reopen on the next call); the caller holds ``lock``."""
        self.index.close()
        with self.reader_lock:
            self.reader.close()
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
        if st_new == row.new_mtime and st_cur == row.cur_mtime:
            return True
        last = self.scan_memo.get(folder_id)
        return (last is not None and last[0] == st_new and last[1] == st_cur
                and time.monotonic() - last[2] < DIRTY_RELIST)

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
        if st_new == row.new_mtime and st_cur == row.cur_mtime:
            return False
        last = self.scan_memo.get(row.id)
        return not (last is not None and last[0] == st_new and last[1] == st_cur
                    and time.monotonic() - last[2] < DIRTY_RELIST)

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
            fresh = scan(self.index, row, self.path(row.name), force, self.scan_memo)
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
