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

What can go wrong: ``sqlite3.Error`` (disk full, a corrupt file) propagates; the session
answers ``NO``. A deleted index is rebuilt from the Maildir with new UIDVALIDITY values.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INDEX_NAME = "pigeon-index.sqlite3"
UIDVALIDITY_FLOOR_NAME = "pigeon-uidvalidity"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000  # a second process's write transaction (a big COPY) can take seconds

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

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
