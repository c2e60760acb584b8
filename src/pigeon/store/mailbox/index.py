"""The per-account SQLite index: ``<maildir>/pigeon-index.sqlite3``.

What it holds: per folder its UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, the first UID no session
has seen yet (``\\Recent``), special-use, the ``new/`` and ``cur/`` mtimes of the last scan and
the record of the last listing (``scan`` Rule 1);
per message its UID, Maildir base name, info letters (flags as in the file name), keywords,
MODSEQ, INTERNALDATE and size; tombstones ``(uid, modseq)`` of expunged messages (QRESYNC,
RFC 7162 §3.2.10); subscriptions; a cache ``(folder, uid, key) → blob``.

Rules:
1. WAL mode and a busy timeout: readers never block the writer, and a second process (the
   admin command line) waits instead of failing. Every write runs in ``BEGIN IMMEDIATE``, so
   two writers (threads holding different ``Index`` objects, or processes) serialise. Before
   ``BEGIN IMMEDIATE`` a writer takes an ``fcntl`` lock on ``pigeon-index.lock`` (Rule 8).
2. Durability (docs/architecture.md, "Mailbox index durability"). A write commits with
   ``synchronous=NORMAL``: in WAL mode a process crash (``kill -9``) loses nothing; only an
   OS crash or a power loss can drop the WAL's tail, the commits made since its last flush.
   ``write(durable=True)`` (folder changes, subscriptions, imports: rare) commits with
   ``FULL``, flushed before the lock is released. The hot writes that must be durable before
   they are answered (APPEND, COPY/MOVE, EXPUNGE) commit with ``NORMAL`` and then call
   ``sync``, outside the account lock: one ``fdatasync`` of the WAL, shared by every writer
   of the account that asks meanwhile (``durable.commit`` group commit), so readers and the
   next writer never wait for it. Flag changes (STORE, the implicit ``\\Seen``, scans) and
   cache entries are never flushed on their own: like their Maildir rename, a power loss may
   undo them (the trade Dovecot's default ``mail_fsync = optimized`` is described as making).
3. Folder ids come from AUTOINCREMENT and UIDVALIDITY from ``_new_uidvalidity`` (time-based,
   strictly increasing per account, remembered in ``meta`` and in ``pigeon-uidvalidity`` next
   to the index): neither is ever reused, even after a folder is deleted and created again,
   and a rebuilt index (file deleted) continues above the last value handed out.
4. One ``Index`` (one connection) is used by one thread at a time: the owner (``Account``)
   holds its lock around every call. The connection is opened lazily and may be closed
   and reopened (``close``), so an idle account costs no file descriptors.
5. A full disk (``disk_full``: ``ENOSPC``/``EDQUOT``, ``SQLITE_FULL``) must not lock a user
   out of the mail that would free it: reading always works, and the callers make the writes
   that only follow the Maildir degrade (``scan``, ``ops``, ``view``: the file names stay the
   truth and the index catches up at the next scan). Opening needs the WAL's shared-memory
   file, which SQLite cannot size on a full disk (``SQLITE_IOERR_SHMSIZE``): the index is then
   opened with ``locking_mode=EXCLUSIVE``, which keeps the WAL index in this process's memory
   (other processes wait, Rule 1), and opened normally again after ``EXCLUSIVE_RETRY``.
   A ``COMMIT`` that fails is rolled back, so the connection is never left inside a
   transaction. ``degraded`` logs a skipped write at most once a minute per account and
   sets ``lagging`` (the Maildir names may now say more than the index, ``ops`` Rule 6).
6. What a lost tail must never cause is a MODSEQ (RFC 7162 §3.1.1: strictly increasing) or
   a UID (RFC 3501 §2.3.1.1) handed out twice. Each folder row carries reservations:
   ``modseq_reserved`` (HIGHESTMODSEQ may grow up to it) and ``uid_reserved`` (UIDNEXT may
   grow up to it). Before a non-durable write begins, a folder with less than
   ``MODSEQ_HEADROOM`` / ``UID_HEADROOM`` left gets its reservations raised by
   ``MODSEQ_RESERVE`` / ``UID_RESERVE`` in a transaction of their own committed with ``FULL``
   (SQLite cannot change ``synchronous`` inside a transaction): every value a commit hands out
   is covered by a durable reservation before anyone can see it. A transaction that still
   goes past one (a COPY of many messages, a scan finding many new ones) raises it itself and
   flushes the WAL right after its commit, before the locks are released (``_flush_now``);
   only a reader in another process that looks in that instant can see its values before
   they are durable. The index remembers the boot (``/proc/sys/kernel/random/boot_id``,
   injected) of its last open; the first open after a different boot (``_after_reboot``)
   raises every folder's HIGHESTMODSEQ above its reservation, gives every message that new
   MODSEQ (a CONDSTORE client that saw a lost flag change is told the flags again) and raises
   UIDNEXT to its reservation: a reboot costs at most ``UID_RESERVE`` UIDs per folder and a
   full flag resynchronisation for CONDSTORE clients. Without a boot id (not Linux) every
   write commits with ``FULL``, as before.
7. Schema 2 added the reservation columns (Rule 6), schema 3 the listing record (``listed_*``,
   ``scan`` Rule 1); an older index is upgraded in place when opened (schema 1's commits were
   all ``FULL``: nothing to recover; an empty listing record only means one more listing).
8. Writers of several processes (``[imap] processes``) queue on an ``fcntl`` lock of
   ``pigeon-index.lock`` taken before ``BEGIN IMMEDIATE`` and released after the commit: the
   kernel wakes the next waiter when it is released, where SQLite's busy handler sleeps and
   polls (1, 2, 5 ... 100 ms). POSIX locks belong to the process, so within one process the
   account lock (the caller's) does the queueing; only ``write`` takes it, and its descriptor
   is closed only with the connection. A second ``Index`` of the same file in one process
   (two stores) would release the first's lock when closed: SQLite's own lock still holds.
   ``writer_active`` tells a reader that a write is under way (this connection's transaction,
   or the lock held by another process: ``F_GETLK``), so that it can wait for its commit
   instead of taking a half-done change for another program's (``scan`` Rule 9).

What can go wrong: ``sqlite3.Error`` (disk full, a corrupt file) propagates; the session
answers ``NO``. A deleted index is rebuilt from the Maildir with new UIDVALIDITY values.
``sync`` raises the ``OSError`` of the flush (EIO): the change is committed but may not
survive a power loss, and the caller answers ``NO``. A clock of boots that lies (the same
boot id after a reboot: a container sharing a stale ``/proc``) defeats Rule 6.
``writer_active`` packs Linux's 64-bit ``struct flock``; where ``F_GETLK`` refuses it, it says
False, and readers list ``cur/`` as they did before (Rule 8).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import PathDataSync

log = logging.getLogger(__name__)

INDEX_NAME = "pigeon-index.sqlite3"
UIDVALIDITY_FLOOR_NAME = "pigeon-uidvalidity"
LOCK_NAME = "pigeon-index.lock"  # Rule 8
SCHEMA_VERSION = 3  # Rule 7
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # Rule 6 (Linux)
# Rule 6: values handed out per durable reservation. A FULL commit every 10,000 flag changes
# of a folder; a reboot skips at most that many MODSEQs (63-bit: room for 10^14 reboots).
MODSEQ_RESERVE = 10_000
# Rule 6: UIDs are 32-bit (RFC 3501 nz-number) and a reboot skips up to this many per folder;
# the UID-assigning writes are flushed anyway (Rule 2), so the reservation only covers the
# moment between their commit and their flush: a FULL commit every 100 new messages.
UID_RESERVE = 100
UID_MAX = 0xFFFFFFFF
# Rule 6: new reservations are made, before a transaction begins, once fewer values than this
# are left: one transaction raises a folder's MODSEQ by one (ops Rule 1, scan Rule 3) and
# hands out a UID per message it adds (an APPEND one, a COPY usually a few).
MODSEQ_HEADROOM = 16
UID_HEADROOM = 32
_NEAR_RESERVE = ("SELECT 1 FROM folder WHERE highestmodseq + ? > modseq_reserved "
                 "OR uidnext + ? > uid_reserved LIMIT 1")
BUSY_TIMEOUT_MS = 10_000  # a second process's write transaction (a big COPY) can take seconds
EXCLUSIVE_RETRY = 60.0  # Rule 5: seconds before an index opened exclusively tries a normal open
DEGRADED_LOG_EVERY = 60.0  # Rule 5: seconds between two log lines about skipped index writes
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FLOCK = struct.Struct("@hhqqi4x")  # Rule 8: Linux's struct flock (F_GETLK), with its padding


class WouldWait(Exception):
    """``write(wait=False)``: the write would wait (another process's lock, a flush); nothing
    was written (the IMAP STORE on the event loop then goes to a worker thread)."""


def disk_full(exc: BaseException) -> bool:
    """Rule 5: the error says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_SHMSIZE)
    return False

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folder(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    recent_uid INTEGER NOT NULL DEFAULT 1,
    special_use TEXT,
    new_mtime INTEGER NOT NULL DEFAULT -1,
    cur_mtime INTEGER NOT NULL DEFAULT -1,
    modseq_reserved INTEGER NOT NULL DEFAULT 0,
    uid_reserved INTEGER NOT NULL DEFAULT 0,
    listed_new INTEGER NOT NULL DEFAULT -1,
    listed_cur INTEGER NOT NULL DEFAULT -1,
    listed_at INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS message(
    folder INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    base TEXT NOT NULL,
    info TEXT NOT NULL,
    keywords TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL,
    internaldate REAL NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY(folder, uid)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS message_base ON message(folder, base);
CREATE INDEX IF NOT EXISTS message_modseq ON message(folder, modseq);
CREATE TABLE IF NOT EXISTS expunged(
    folder INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL,
    PRIMARY KEY(folder, uid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged(folder, modseq);
CREATE TABLE IF NOT EXISTS subscription(name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache(
    folder INTEGER NOT NULL, uid INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY(folder, uid, key)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class FolderRow:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    recent_uid: int
    special_use: str | None
    new_mtime: int
    cur_mtime: int
    # scan Rule 1: the mtimes of new/ and cur/ the last listing saw (cur/ moved on by Pigeon's own
    # changes since), and when it ran (time.time_ns()); shared by every process
    listed_new: int = -1
    listed_cur: int = -1
    listed_at: int = 0


_UPGRADES = {  # Rule 7: from schema N to N + 1
    1: ("ALTER TABLE folder ADD COLUMN modseq_reserved INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE folder ADD COLUMN uid_reserved INTEGER NOT NULL DEFAULT 0;"),
    2: ("ALTER TABLE folder ADD COLUMN listed_new INTEGER NOT NULL DEFAULT -1;"
        "ALTER TABLE folder ADD COLUMN listed_cur INTEGER NOT NULL DEFAULT -1;"
        "ALTER TABLE folder ADD COLUMN listed_at INTEGER NOT NULL DEFAULT 0;"),
}


def read_boot_id() -> int | None:
    """Rule 6: this boot of the kernel, as a 60-bit number (None where there is no boot id)."""
    try:
        text = BOOT_ID.read_text().strip()
    except OSError:
        return None
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) if text else None


_FOLDER_COLS = ("id, name, uidvalidity, uidnext, highestmodseq, recent_uid, special_use, "
                "new_mtime, cur_mtime, listed_new, listed_cur, listed_at")


class Index:
    """One account's index connection (Rules 1-4)."""

    def __init__(self, path: Path, boot: Callable[[], int | None] = read_boot_id,
                 group: GroupCommit | None = None) -> None:
        self.path = path
        self._boot = boot  # Rule 6, injected by tests
        self._group = group if group is not None else GroupCommit()  # Rule 2: the WAL's flushes
        self._conn: sqlite3.Connection | None = None
        self._durable = True
        self._volatile_ok = False  # Rule 6: a boot id is known, NORMAL commits are allowed
        self._lock_fd: int | None = None  # Rule 8
        self._exclusive_until = 0.0  # Rule 5: time.monotonic() of the next normal open
        self._degraded_at = -DEGRADED_LOG_EVERY
        self.lagging = False  # Rule 5: a write was skipped on a full disk
        self.full_commits = 0  # commits flushed by SQLite itself (tests, benchmarks)

    @property
    def conn(self) -> sqlite3.Connection:
        conn = self._conn
        if (conn is not None and self._exclusive_until and not conn.in_transaction
                and time.monotonic() >= self._exclusive_until):
            self.close()  # Rule 5: try a normal open again (never inside a transaction)
        if self._conn is None:
            self._conn = self._open_or_exclusive()
        return self._conn

    @property
    def exclusive(self) -> bool:
        """Rule 5: opened with ``locking_mode=EXCLUSIVE`` (other connections would wait)."""
        return bool(self._exclusive_until)

    def _open_or_exclusive(self) -> sqlite3.Connection:
        self._exclusive_until = 0.0
        try:
            return self._open()
        except sqlite3.OperationalError as exc:
            if not disk_full(exc):
                raise
            log.warning("index %s: cannot open it shared on a full disk (%s); opening it exclusively "
                        "(other processes wait) for %.0f s", self.path, exc, EXCLUSIVE_RETRY)
        conn = self._open(exclusive=True)
        self._exclusive_until = time.monotonic() + EXCLUSIVE_RETRY
        return conn

    def degraded(self, what: str, exc: BaseException) -> None:
        """Rule 5: log a write skipped on a full disk (at most once a minute)."""
        self.lagging = True
        now = time.monotonic()
        if now - self._degraded_at >= DEGRADED_LOG_EVERY:
            self._degraded_at = now
            log.warning("index %s: the disk is full (%s); %s (the index catches up with the Maildir "
                        "once there is room)", self.path, exc, what)

    def _open(self, exclusive: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if exclusive:  # before the first access: no shared-memory WAL index (Rule 5)
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._durable = True
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if version > SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f"index {self.path} has schema {version}, newer than {SCHEMA_VERSION}")
                self._create_or_upgrade(conn)
            self._check_boot(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_or_upgrade(self, conn: sqlite3.Connection) -> None:
        """Rule 7, in one transaction: the version is read again under the write lock, so two
        processes opening a new or old index at once create or upgrade it once."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            else:
                while version < SCHEMA_VERSION:
                    for statement in _UPGRADES[version].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    version += 1
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_boot(self, conn: sqlite3.Connection) -> None:
        """Rule 6: the first open after another boot recovers from a possibly lost WAL tail."""
        boot = self._boot()
        self._volatile_ok = boot is not None
        if boot is None or self.meta_of(conn, "boot") == boot:
            return
        conn.execute("BEGIN IMMEDIATE")  # synchronous=FULL here (set by _open)
        try:
            last = self.meta_of(conn, "boot")
            if last != boot:
                if last is not None:
                    self._after_reboot(conn)
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('boot', ?)", (boot,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _after_reboot(self, conn: sqlite3.Connection) -> None:
        """Rule 6: nothing handed out before the reboot is handed out again."""
        folders = conn.execute("SELECT id, highestmodseq, modseq_reserved, uidnext, uid_reserved "
                               "FROM folder").fetchall()
        for folder_id, highest, modseq_reserved, uidnext, uid_reserved in folders:
            modseq = max(highest, modseq_reserved) + 1
            conn.execute("UPDATE message SET modseq=? WHERE folder=?", (modseq, folder_id))
            conn.execute("UPDATE folder SET highestmodseq=?, uidnext=? WHERE id=?",
                         (modseq, min(max(uidnext, uid_reserved), UID_MAX), folder_id))
        log.info("index %s: first open since a reboot; %d folder(s) moved past their reserved "
                 "MODSEQ and UID (a lost WAL tail cannot make them repeat)", self.path, len(folders))

    @staticmethod
    def meta_of(conn: sqlite3.Connection, key: str) -> int | None:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._exclusive_until = 0.0

    @contextmanager
    def write(self, durable: bool = True, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back on error.
        ``durable``: flushed before this returns (Rule 2); else the caller may ``sync``.
        ``wait=False`` (with ``durable=False``): ``WouldWait`` instead of queueing for another
        process's lock (Rule 8) or of a flush (a FULL commit, a new reservation: Rule 6)."""
        conn = self.conn
        full = durable or not self._volatile_ok
        if not wait and (full or conn.execute(_NEAR_RESERVE, (MODSEQ_HEADROOM, UID_HEADROOM)).fetchone()):
            raise WouldWait("the write needs a flush")
        locked = self._lock(wait)
        try:
            if not full:
                self._ensure_reserve(conn)  # Rule 6, before any value is handed out
            self._synchronous(conn, full)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                overrun = not full and self._reserve(conn, 0, 0)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise
            if full:
                self.full_commits += 1
            elif overrun:
                self._flush_now()  # Rule 6: went past its reservation; flushed before unlocking
        finally:
            if locked:
                self._unlock()

    def _synchronous(self, conn: sqlite3.Connection, full: bool) -> None:
        if full != self._durable:  # SQLite refuses to change it inside a transaction
            conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._durable = full

    def _ensure_reserve(self, conn: sqlite3.Connection) -> None:
        """Rule 6: a folder with little room left below its reservations gets new ones, in a
        transaction of their own committed with ``FULL`` before the caller's begins."""
        if not conn.execute(_NEAR_RESERVE, (MODSEQ_HEADROOM, UID_HEADROOM)).fetchone():
            return
        self._synchronous(conn, True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._reserve(conn, MODSEQ_HEADROOM, UID_HEADROOM)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.full_commits += 1

    def _reserve(self, conn: sqlite3.Connection, modseq_room: int, uid_room: int) -> bool:
        """Rule 6: raise the reservations of the folders with less than the given room left;
        True when one was raised."""
        over = conn.execute("SELECT id, highestmodseq, uidnext FROM folder WHERE "
                            "highestmodseq + ? > modseq_reserved OR uidnext + ? > uid_reserved",
                            (modseq_room, uid_room)).fetchall()
        for folder_id, highest, uidnext in over:
            conn.execute("UPDATE folder SET modseq_reserved=max(modseq_reserved, ?), "
                         "uid_reserved=max(uid_reserved, ?) WHERE id=?",
                         (highest + MODSEQ_RESERVE, min(uidnext + UID_RESERVE, UID_MAX), folder_id))
        return bool(over)

    def _flush_now(self) -> None:
        """Rule 6: the WAL flushed here, under the caller's locks (a rare overrun)."""
        self._group.flush_blocking(self._wal_flush())
        self.full_commits += 1

    def _wal_flush(self) -> PathDataSync:
        return PathDataSync(self.path.with_name(self.path.name + "-wal"))

    def sync(self) -> None:
        """Rule 2: make every commit of this index so far durable (one ``fdatasync`` of the WAL,
        shared with the account's other writers). Call it without holding the account lock."""
        if not self._volatile_ok:
            return  # every commit was FULL
        try:
            self._group.flush_blocking(self._wal_flush())
        except FileNotFoundError:
            # No WAL: the last connection checkpointed it into the database file (SQLite
            # flushes the database after a checkpoint) and removed it.
            pass

    def _lock_file(self) -> int | None:
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self.path.with_name(LOCK_NAME),
                                        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a full disk cannot create it: SQLite's own lock still holds
                log.debug("index %s: no lock file (%s); SQLite's busy handler queues", self.path, exc)
        return self._lock_fd

    def _lock(self, wait: bool = True) -> bool:
        """Rule 8: queue for the write lock of the index among processes (``WouldWait`` when
        it is held and ``wait`` is False)."""
        fd = self._lock_file()
        if fd is None:
            return False
        if wait:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            return True
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError) as exc:  # EAGAIN or EACCES: held elsewhere
            raise WouldWait("another process is writing the index") from exc
        return True

    def writer_active(self) -> bool:
        """Rule 8: a write transaction of this connection, or of another process, is under way
        (False when that cannot be told)."""
        conn = self._conn
        if conn is not None and conn.in_transaction:
            return True
        fd = self._lock_fd  # not opened here: the writers' thread may be opening it
        if fd is None:
            return False
        try:  # struct flock: l_type, l_whence, l_start, l_len, l_pid; F_WRLCK over the whole file
            got = fcntl.fcntl(fd, fcntl.F_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        except OSError:
            return False
        return _FLOCK.unpack(got[:_FLOCK.size])[0] in (fcntl.F_WRLCK, fcntl.F_RDLCK)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    # -- folders ---------------------------------------------------------------------------

    def folder_by_name(self, name: str) -> FolderRow | None:
        row = self.conn.execute(f"SELECT {_FOLDER_COLS} FROM folder WHERE name=?", (name,)).fetchone()
        return FolderRow(*row) if row else None

    def folder_by_id(self, folder_id: int) -> FolderRow | None:
        row = self.conn.execute(f"SELECT {_FOLDER_COLS} FROM folder WHERE id=?", (folder_id,)).fetchone()
        return FolderRow(*row) if row else None

    def folders(self) -> dict[str, FolderRow]:
        rows = self.conn.execute(f"SELECT {_FOLDER_COLS} FROM folder").fetchall()
        return {r[1]: FolderRow(*r) for r in rows}

    def insert_folder(self, conn: sqlite3.Connection, name: str, special_use: str | None,
                      now: float) -> FolderRow:
        """Create the row inside the caller's write transaction (Rule 3)."""
        uidvalidity = self._new_uidvalidity(conn, now)
        cur = conn.execute("INSERT INTO folder(name, uidvalidity, special_use) VALUES (?,?,?)",
                           (name, uidvalidity, special_use))
        folder_id = cur.lastrowid
        if folder_id is None:  # pragma: no cover - sqlite always sets it after an INSERT
            raise sqlite3.DatabaseError("no rowid after INSERT")
        row = self.folder_by_id(folder_id)
        if row is None:  # pragma: no cover
            raise sqlite3.DatabaseError("folder row vanished inside its transaction")
        return row

    def drop_folder(self, conn: sqlite3.Connection, folder_id: int) -> None:
        for table in ("message", "expunged", "cache"):
            conn.execute(f"DELETE FROM {table} WHERE folder=?", (folder_id,))
        conn.execute("DELETE FROM folder WHERE id=?", (folder_id,))

    def _new_uidvalidity(self, conn: sqlite3.Connection, now: float) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key='last_uidvalidity'").fetchone()
        last = max(int(row[0]) if row else 0, self._floor_file_value())
        # Time-based so a rebuilt index does not reuse old values; +1 keeps it strictly increasing.
        value = min(max(int(now), last + 1), 0xFFFFFFFF)  # RFC 3501 nz-number is 32-bit
        if value <= last:
            raise sqlite3.DatabaseError("UIDVALIDITY space exhausted")
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_uidvalidity', ?)", (value,))
        try:
            self._floor_file().write_text(f"{value}\n")
        except OSError as exc:
            log.warning("could not record UIDVALIDITY floor in %s: %s", self._floor_file(), exc)
        return value

    def _floor_file(self) -> Path:
        """Rule 3: the last UIDVALIDITY, kept outside the index so a rebuilt index skips it."""
        return self.path.with_name(UIDVALIDITY_FLOOR_NAME)

    def _floor_file_value(self) -> int:
        try:
            return int(self._floor_file().read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._floor_file(), exc)
            return 0

    def meta(self, key: str) -> int | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else None

    # -- subscriptions -----------------------------------------------------------------------

    def subscriptions(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM subscription")}
