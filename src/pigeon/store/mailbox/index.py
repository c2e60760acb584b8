"""The per-account SQLite index: ``<maildir>/pigeon-index.sqlite3``.

What it holds: per folder its UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, the first UID no session
has seen yet (``\\Recent``), special-use and the ``new/`` and ``cur/`` mtimes of the last scan;
per message its UID, Maildir base name, info letters (flags as in the file name), keywords,
MODSEQ, INTERNALDATE and size; tombstones ``(uid, modseq)`` of expunged messages (QRESYNC,
RFC 7162 §3.2.10); subscriptions; a cache ``(folder, uid, key) → blob``.

Rules:
1. WAL mode and a busy timeout: readers never block the writer, and a second process (the
   admin command line) waits instead of failing. Every write runs in ``BEGIN IMMEDIATE``, so
   two writers (threads holding different ``Index`` objects, or processes) serialise.
2. ``synchronous=FULL``: a committed UID assignment survives a power loss, so a UID is never
   handed to a second message (RFC 3501 §2.3.1.1). Cache writes only run with ``NORMAL``
   (losing a cache entry costs a re-parse, nothing more).
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
   transaction. ``degraded`` logs a skipped write at most once a minute per account.

What can go wrong: ``sqlite3.Error`` (disk full, a corrupt file) propagates; the session
answers ``NO``. A deleted index is rebuilt from the Maildir with new UIDVALIDITY values.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INDEX_NAME = "pigeon-index.sqlite3"
UIDVALIDITY_FLOOR_NAME = "pigeon-uidvalidity"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000  # a second process's write transaction (a big COPY) can take seconds
EXCLUSIVE_RETRY = 60.0  # Rule 5: seconds before an index opened exclusively tries a normal open
DEGRADED_LOG_EVERY = 60.0  # Rule 5: seconds between two log lines about skipped index writes
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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
    cur_mtime INTEGER NOT NULL DEFAULT -1);
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


_FOLDER_COLS = ("id, name, uidvalidity, uidnext, highestmodseq, recent_uid, special_use, "
                "new_mtime, cur_mtime")


class Index:
    """One account's index connection (Rules 1-4)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._durable = True
        self._exclusive_until = 0.0  # Rule 5: time.monotonic() of the next normal open
        self._degraded_at = -DEGRADED_LOG_EVERY

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
                # Idempotent (IF NOT EXISTS), so two processes creating it at once is harmless.
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}"
                                   f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._exclusive_until = 0.0

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back on error."""
        conn = self.conn
        if durable != self._durable:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise

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
