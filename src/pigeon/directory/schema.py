"""The directory's SQLite schema, and opening the database safely.

Rules:
1. The file is created with mode 0600 before SQLite opens it: it holds password hashes. SQLite
   gives its ``-wal`` and ``-shm`` files the same mode.
2. WAL journal mode, so the server's readers never block on the CLI's writer and see its
   commits without a restart; ``synchronous=FULL`` because the directory is small and written
   rarely, and a lost ``user add`` after a power cut would surprise the operator.
3. The schema carries a version (table ``schema_version``); a database written by a newer
   Pigeon is refused rather than misread. Creation is idempotent and runs inside
   ``BEGIN IMMEDIATE``, so two processes opening a fresh data directory at once are safe.
4. Connections run in autocommit mode (``isolation_level=None``); every multi-statement change
   is wrapped in an explicit ``BEGIN IMMEDIATE ... COMMIT`` by the caller.

What can go wrong: an unreadable file, a corrupt database or a newer schema raise
``DirectoryError`` naming the path.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from pigeon.directory.errors import DirectoryError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# How long a writer waits for another process's write transaction (the CLI against the server's
# rare password rehash, or two CLIs): 5 s is far beyond any transaction here.
BUSY_TIMEOUT_SECONDS = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS domains (
    name    TEXT PRIMARY KEY,          -- lower-case, no trailing dot
    created REAL NOT NULL              -- Unix time
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    id                INTEGER PRIMARY KEY,    -- creation order: the first user is the default postmaster
    address           TEXT NOT NULL UNIQUE,   -- folded local@domain
    domain            TEXT NOT NULL,
    password_hash     TEXT NOT NULL,          -- argon2id PHC string
    created           REAL NOT NULL,
    forward           TEXT NOT NULL DEFAULT '[]',  -- JSON array of target addresses
    keep_copy         INTEGER NOT NULL DEFAULT 0,  -- with a forward: deliver here too
    sender_identities TEXT NOT NULL DEFAULT '[]'   -- JSON array: extra MAIL FROM addresses (later)
);
CREATE INDEX IF NOT EXISTS users_domain ON users (domain);
CREATE TABLE IF NOT EXISTS aliases (
    address  TEXT NOT NULL,            -- folded local@domain, or @domain for a catch-all
    domain   TEXT NOT NULL,
    target   TEXT NOT NULL,            -- as written (domain lower-cased)
    position INTEGER NOT NULL,         -- order of the targets
    PRIMARY KEY (address, target)
);
CREATE INDEX IF NOT EXISTS aliases_domain ON aliases (domain);
"""


def _create_private(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot open the directory database: {exc.strerror or exc}") from None
    os.close(fd)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the directory database at ``path`` and bring its schema up."""
    if not path.exists():
        _create_private(path)
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise DirectoryError(f"{path}: cannot open the directory database: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise DirectoryError(f"{path}: unusable directory database: {exc}") from None
    except DirectoryError:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # One statement at a time: executescript() would COMMIT the transaction first.
        for statement in _SCHEMA.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            log.info("created directory database %s (schema %d)", path, SCHEMA_VERSION)
        elif int(row[0]) > SCHEMA_VERSION:
            raise DirectoryError(
                f"{path}: schema version {row[0]} is newer than this Pigeon understands ({SCHEMA_VERSION})"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
