"""Operations that change messages: STORE, EXPUNGE/remove, COPY/MOVE (and RENAME INBOX).

Rules:
1. Each operation is one index transaction holding the account lock, committed without a
   flush (index Rule 2): a STORE is never flushed on its own (nor is its rename), while the
   callers of ``remove`` and ``transfer`` flush before they answer (``make_durable``); all its changes share
   one new MODSEQ per folder (RFC 7162 §3.1.1: MODSEQ grows with every change). The folder
   row (UIDNEXT, HIGHESTMODSEQ) is read again inside the transaction: the account lock covers
   this process only, and another process (``[imap] processes``) may have written since, so a
   row read before ``BEGIN IMMEDIATE`` would hand out its UID or MODSEQ a second time.
2. STORE renames the file when the Maildir letters change and only updates the index for
   keyword changes. ``unchangedsince`` refuses messages whose MODSEQ is higher (RFC 7162
   §3.1.3); they are returned as failed and left untouched.
3. EXPUNGE unlinks the file first, then deletes the row and writes a tombstone; a crash in
   between leaves a row whose file is gone, which the next scan expunges. Only messages
   carrying ``\\Deleted`` are expunged (RFC 3501 §6.4.3): they are found by one query on
   the index's letters, and each one's file name must still say ``\\Deleted`` (another
   program may have taken it off); ``remove`` ignores the flag (POP3 DELE, RFC 1939 §6).
4. COPY hard-links each file under a new unique base in the destination, keeping flags,
   keywords, INTERNALDATE and cached values; MOVE renames instead and expunges the source
   (RFC 6851 §3.3). Destination UIDs follow source UID order (UIDPLUS, RFC 4315 §3). The
   caller flushes the destination ``cur/`` (and, for MOVE, the source ``cur/``) and the index
   after releasing the account lock, before it answers (``AccountCore.make_durable``). A
   transfer whose index write fails (a full disk: ``NO [OVERQUOTA]``) puts its files back.
   The destination may be the source folder itself (RFC 6851 does not forbid it, Dovecot
   allows it): the messages get new UIDs there, and a MOVE expunges the old ones.
5. A file not found under its indexed name was renamed by another program: it is re-resolved
   by base name (``files.find_by_base``); when it is gone, the message is skipped here and
   the next scan expunges it. An EXPUNGE over more than ``BULK_ROWS`` messages lists ``cur/``
   once and finds every file by its base name there (the same answer, without a ``stat`` and
   a path per message).
6. A full disk (index Rule 5) must not stop a user from deleting mail to free it. The Maildir
   file name is the truth for flags and the file for existence (scan Rule 3), so: a STORE of
   flags that live in the name (``\\Seen``, ``\\Deleted``...) whose index write fails keeps
   its renames and returns the changed rows with their old MODSEQ (none is promised that the
   index has not given; the next scan records the change under a new one); a STORE of
   keywords (index only) is ``NO [OVERQUOTA]``. EXPUNGE takes ``\\Deleted`` from the file name
   when the index may lag behind it (``Index.lagging``: a write was skipped on a full disk;
   then every file of the folder is looked at, not only those the index marks), unlinks first (which frees the space), and when the
   tombstones still cannot be written the messages are expunged all the same: their files
   are gone, and the next scan removes their rows.
7. A STORE acts on the index as it is, not as the caller last saw it: another session or
   process may have changed the message since (even to the very flags being stored, when
   nothing is written). ``store`` hands back, on request, each row as it found it, so that
   the caller's view can take in that change and report the flags the message has after the
   STORE (RFC 3501 §6.4.6), not the ones it had at the view's last sync.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

from pigeon.durable.io import unlink_quietly
from pigeon.store.mailbox import files
from pigeon.store.mailbox.context import AccountCore
from pigeon.store.mailbox.flags import StoreMode, apply, cur_name, parse_flags, split_name
from pigeon.store.mailbox.index import FolderRow, WouldWait, disk_full
from pigeon.store.mailbox.model import MailboxError

log = logging.getLogger(__name__)


class Row(NamedTuple):
    """One message row of the index (a named tuple: an EXPUNGE or a sync builds thousands)."""

    uid: int
    base: str
    info: str
    keywords: str
    modseq: int
    internaldate: float
    size: int


ROW_COLS = "uid, base, info, keywords, modseq, internaldate, size"
#: Messages above which ``load_rows`` reads a UID range in one query and ``remove`` lists
#: ``cur/`` once instead of a ``stat`` per message (an EXPUNGE looks at every message).
BULK_ROWS = 32


def load_rows(conn: sqlite3.Connection, folder_id: int, uids: Sequence[int] | None) -> list[Row]:
    """The rows of ``uids`` in UID order; ``None`` means every message of the folder."""
    if uids is None:
        return [Row(*r) for r in conn.execute(
            f"SELECT {ROW_COLS} FROM message WHERE folder=? ORDER BY uid", (folder_id,))]
    wanted = sorted(set(uids))
    if len(wanted) > BULK_ROWS:  # one query over the UID range, not one per message
        keep = set(wanted)
        return [Row(*r) for r in conn.execute(
            f"SELECT {ROW_COLS} FROM message WHERE folder=? AND uid BETWEEN ? AND ? ORDER BY uid",
            (folder_id, wanted[0], wanted[-1])) if r[0] in keep]
    out: list[Row] = []
    for uid in wanted:
        r = conn.execute(f"SELECT {ROW_COLS} FROM message WHERE folder=? AND uid=?",
                         (folder_id, uid)).fetchone()
        if r is not None:
            out.append(Row(*r))
    return out


def locate(core: AccountCore, row: FolderRow, msg: Row) -> Path | None:
    """The message's current file (Rule 5)."""
    path = core.message_path(row, msg.base, msg.info)
    if os.path.exists(path):
        return path
    return files.find_by_base(path.parent, msg.base)


def store(core: AccountCore, folder_id: int, uids: Sequence[int], mode: StoreMode,
          flags: frozenset[str], unchangedsince: int | None,
          gone: list[int] | None = None,
          current: dict[int, Row] | None = None, wait: bool = True) -> tuple[list[Row], list[int]]:
    """Rules 1, 2, 5. Returns (rows that changed, uids refused by UNCHANGEDSINCE); ``gone``,
    when given, receives the uids no longer in the index (expunged by others meanwhile), and
    ``current`` every row found, as it was before this STORE (Rule 7). ``wait=False``: raise
    ``index.WouldWait``, having changed nothing, rather than wait for the account lock, a
    scan of the folder or the index (the event loop's STORE, ``view`` Rule 16)."""
    letters, keywords = parse_flags(sorted(flags))
    changed: list[Row] = []
    failed: list[int] = []
    before: dict[int, Row] = {}  # Rule 6: the rows as they were
    if not core.lock.acquire(blocking=wait):
        raise WouldWait("the account lock is held")
    try:
        row = core.row_by_id(folder_id)
        if not wait and core.needs_scan(row):
            raise WouldWait("the folder needs a scan")
        row = core.rescan(row)
        try:
            with core.index.write(durable=False, wait=wait) as conn, core.own_changes(conn, row.id, row.name):
                row = core.row_by_id(row.id)  # Rule 1: as of this transaction (other processes)
                modseq = row.highestmodseq + 1
                rows = load_rows(conn, row.id, uids)
                if gone is not None and len(rows) < len(set(uids)):
                    present = {r.uid for r in rows}
                    gone.extend(u for u in uids if u not in present)
                for msg in rows:
                    if current is not None:
                        current[msg.uid] = msg  # Rule 7
                    if unchangedsince is not None and msg.modseq > unchangedsince:
                        failed.append(msg.uid)
                        continue
                    info, kw = apply(msg.info, msg.keywords, mode, letters, keywords)
                    if info == msg.info and kw == msg.keywords:
                        continue
                    if info != msg.info:
                        src = locate(core, row, msg)
                        if src is None:
                            log.info("uid %d in %r vanished before STORE", msg.uid, row.name)
                            if gone is not None:
                                gone.append(msg.uid)
                            continue
                        os.rename(src, src.parent / cur_name(msg.base, info))
                    before[msg.uid] = msg  # listed before the UPDATE: its file is renamed (Rule 6)
                    changed.append(Row(msg.uid, msg.base, info, kw, modseq, msg.internaldate, msg.size))
                    conn.execute("UPDATE message SET info=?, keywords=?, modseq=? WHERE folder=? AND uid=?",
                                 (info, kw, modseq, row.id, msg.uid))
                if changed:
                    conn.execute("UPDATE folder SET highestmodseq=? WHERE id=?", (modseq, row.id))
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc):
                raise
            return _stored_in_names(core, changed, before, exc), failed
    finally:
        core.lock.release()
    return changed, failed


def _stored_in_names(core: AccountCore, changed: list[Row], before: dict[int, Row],
                     exc: BaseException) -> list[Row]:
    """Rule 6: the index write of a STORE failed on a full disk; what the file names hold."""
    if not changed or any(r.keywords != before[r.uid].keywords for r in changed):
        raise MailboxError("OVERQUOTA", "The disk is full: only flags kept in the message's "
                                        "file name (such as \\Deleted) can be stored now") from exc
    core.index.degraded(f"flags of {len(changed)} message(s) kept in their file names only", exc)
    return [r._replace(modseq=before[r.uid].modseq) for r in changed]


def remove(core: AccountCore, folder_id: int, uids: Sequence[int] | None,
           only_deleted: bool) -> list[int]:
    """Rules 1, 3, 5. ``uids=None`` means every message of the folder. Returns removed UIDs."""
    removed: list[int] = []
    with core.lock:
        row = core.rescan(core.row_by_id(folder_id))
        try:
            with core.index.write(durable=False) as conn, core.own_changes(conn, row.id, row.name):
                row = core.row_by_id(row.id)  # Rule 1: as of this transaction (other processes)
                if only_deleted and not core.index.lagging:
                    rows = _deleted_rows(conn, row.id, uids)  # Rule 3
                else:
                    rows = load_rows(conn, row.id, uids)  # Rule 6: the names may say more
                listing = _listing(core, row) if len(rows) > BULK_ROWS else None
                cur = core.path(row.name) / "cur"
                for msg in rows:
                    if listing is None:
                        path = locate(core, row, msg)
                    else:
                        name = listing.get(msg.base)
                        if only_deleted and "T" not in (msg.info if name is None else split_name(name)[1]):
                            continue  # the common case, without building a path (Rule 6 as below)
                        path = None if name is None else cur / name
                    # Rule 6: the name's letters, when the index lags behind them.
                    info = msg.info if path is None else split_name(path.name)[1]
                    if only_deleted and "T" not in info:
                        continue
                    if path is not None:
                        unlink_quietly(path, core.io)
                    removed.append(msg.uid)
                if removed:
                    tombstone(conn, row, removed)
        except (OSError, sqlite3.Error) as exc:
            if not (disk_full(exc) and removed):
                raise
            core.index.degraded(f"{len(removed)} expunged message(s) left for the next scan to drop", exc)
    return removed


def _deleted_rows(conn: sqlite3.Connection, folder_id: int, uids: Sequence[int] | None) -> list[Row]:
    """Rule 3: the rows of ``uids`` (None: all) whose index letters hold ``\\Deleted`` (T),
    in one query: an EXPUNGE of a big folder looks at the few it removes, not at every file."""
    rows = [Row(*r) for r in conn.execute(
        f"SELECT {ROW_COLS} FROM message WHERE folder=? AND instr(info, 'T') > 0 ORDER BY uid",
        (folder_id,))]
    if uids is None:
        return rows
    wanted = set(uids)
    return [r for r in rows if r.uid in wanted]


def _listing(core: AccountCore, row: FolderRow) -> dict[str, str]:
    """Base name → the name of its file now in ``cur/`` (what ``locate`` finds, for every
    message at once)."""
    try:
        names = os.listdir(core.path(row.name) / "cur")
    except FileNotFoundError:
        return {}
    return {name.partition(":")[0]: name for name in names}


def tombstone(conn: sqlite3.Connection, row: FolderRow, uids: list[int]) -> int:
    """Delete rows + cache, record ``(uid, modseq)`` for QRESYNC; returns the new MODSEQ."""
    modseq = row.highestmodseq + 1
    conn.executemany("DELETE FROM message WHERE folder=? AND uid=?", [(row.id, u) for u in uids])
    conn.executemany("DELETE FROM cache WHERE folder=? AND uid=?", [(row.id, u) for u in uids])
    conn.executemany("INSERT OR REPLACE INTO expunged(folder, uid, modseq) VALUES (?,?,?)",
                     [(row.id, u, modseq) for u in uids])
    conn.execute("UPDATE folder SET highestmodseq=? WHERE id=?", (modseq, row.id))
    return modseq


def transfer(core: AccountCore, src_id: int, uids: Sequence[int] | None, dest_name: str,
             move: bool) -> tuple[int, list[tuple[int, int]]]:
    """COPY or MOVE (Rule 4): ``(dest uidvalidity, [(src uid, dest uid)])``."""
    mapping: list[tuple[int, int]] = []
    with core.lock:
        src = core.rescan(core.row_by_id(src_id))
        dest = core.synced(dest_name)  # Rule 2 of scan: earlier arrivals get lower UIDs
        dest_cur = core.path(dest.name) / "cur"
        placed: list[tuple[Path, Path]] = []  # (source, target) of the files linked or moved
        try:
            with (core.index.write(durable=False) as conn,
                  core.own_changes(conn, dest.id, dest.name),
                  core.own_changes(conn, src.id, src.name) if move and src.id != dest.id else nullcontext()):
                src, dest = core.row_by_id(src.id), core.row_by_id(dest.id)  # Rule 1
                rows = load_rows(conn, src.id, uids)
                uid = dest.uidnext
                modseq = dest.highestmodseq + 1
                inserts = []
                for msg in rows:
                    path = locate(core, src, msg)
                    if path is None:
                        log.info("uid %d in %r vanished before COPY/MOVE", msg.uid, src.name)
                        continue
                    base = files.new_base(core.names, msg.base, path, msg.size)
                    target = dest_cur / cur_name(base, msg.info)
                    path = _place(core, src, msg, path, target, move)
                    if path is None:
                        log.info("uid %d in %r vanished during COPY/MOVE", msg.uid, src.name)
                        continue
                    placed.append((path, target))
                    inserts.append((dest.id, uid, base, msg.info, msg.keywords, modseq,
                                    msg.internaldate, msg.size))
                    conn.execute("INSERT OR REPLACE INTO cache(folder, uid, key, value) "
                                 "SELECT ?, ?, key, value FROM cache WHERE folder=? AND uid=?",
                                 (dest.id, uid, src.id, msg.uid))
                    mapping.append((msg.uid, uid))
                    uid += 1
                if inserts:
                    conn.executemany("INSERT INTO message(folder, uid, base, info, keywords, modseq, "
                                     "internaldate, size) VALUES (?,?,?,?,?,?,?,?)", inserts)
                    conn.execute("UPDATE folder SET uidnext=?, highestmodseq=? WHERE id=?",
                                 (uid, modseq, dest.id))
                    if move:
                        tombstone(conn, src, [s for s, _ in mapping])
        except BaseException:
            _undo_transfer(placed, move)  # Rule 4: a COPY or MOVE that fails leaves no trace
            raise
    return dest.uidvalidity, mapping


def _place(core: AccountCore, src: FolderRow, msg: Row, path: Path, target: Path,
           move: bool) -> Path | None:
    """Link (COPY) or rename (MOVE) one file to ``target``; a file renamed meanwhile by another
    program is looked up again (Rule 5). Returns the source path used, None when it is gone."""
    for _ in range(files.MAX_RELOCATE):
        try:
            if move:
                os.rename(path, target)
            else:
                files.link_or_copy(core.io, path, target)
            return path
        except FileNotFoundError:
            found = locate(core, src, msg)
            if found is None:
                return None
            path = found
    return None


def _undo_transfer(placed: list[tuple[Path, Path]], move: bool) -> None:
    """A failed transfer (the index write failed, often on a full disk): its files go back,
    so that the ``NO`` is true and no later scan finds half a COPY or MOVE."""
    for source, target in reversed(placed):
        try:
            if move:
                os.rename(target, source)
            else:
                os.unlink(target)
        except OSError as exc:
            log.error("could not undo the %s of %s (the next scans take it as it is): %s",
                      "MOVE" if move else "COPY", source.name, exc)

