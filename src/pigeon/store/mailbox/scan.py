"""Reconcile one folder's ``new/`` and ``cur/`` directories with the index.

Rules:
1. Cheap when nothing changed: two ``stat`` calls compared with the mtimes recorded at the last
   scan (IMAP IDLE polls every ~0.5 s). A directory whose mtime is within ``DIRTY_WINDOW_NS``
   of now is recorded as "unknown" (-1), because a change in the same timestamp tick would not
   move the mtime (Linux file times are jiffy-granular; FAT's are 2 s). It is rescanned until
   it has been quiet for that long.
   While a directory is "unknown", the folder row's listing record (``listed_new``,
   ``listed_cur``, ``listed_at``: the mtimes the last listing saw and when it ran) lets a scan
   skip the listing when the mtimes are still those and the listing is less than
   ``DIRTY_RELIST`` old: the sessions of a busy mailbox (every STORE renames a file, so
   ``cur/`` is always unknown) do not each list ``cur/`` after every command. The record is in
   the index, so it is shared by every process (``[imap] processes``), and Pigeon's own
   changes of ``cur/``, in any process, move it on (``own_change``, Rule 8). Only another
   program's change made within the same timestamp tick as the last listing or Pigeon change
   waits, up to ``DIRTY_RELIST`` after the listing.
2. Files in ``new/`` move to ``cur/<base>:2,<info>`` (maildir spec) and get UIDs in arrival
   order: file mtime, then name. A file that reappears in ``new/`` under a base the index
   knows (a rename lost in a crash) goes back to ``cur/`` with its indexed flags, same UID.
3. A full ``cur/`` listing runs only when ``cur/``'s mtime moved. Against the index: a base
   gone from disk is an expunge by another tool (tombstone); different info letters are a
   flag change by another tool (mutt); an unknown base is a new message (a tool moved it from
   ``new/`` before we looked). Each change gets the folder's next MODSEQ (one per scan,
   RFC 7162 §3.1.1 allows several messages to share one).
4. The whole scan, renames included, runs in one ``BEGIN IMMEDIATE`` transaction: two scanners
   (threads with their own Index, or processes) never assign two UIDs to one file.
5. The index commits only after the renames; a crash in between leaves files the next scan
   recognises by base name (Rules 2 and 3), so no message is lost or indexed twice.
6. On a full disk (``index.disk_full``) a scan whose write fails is rolled back and the old
   row returned (index Rule 5): the view goes on with what the index knew, and whatever the
   scan found (new messages, changes by other programs) is found again by the next scan
   that can write — Rule 5 covers the files it had moved.
7. A scan's commit is not flushed (index Rule 2): a power loss may undo it, and the next scan
   finds the same files again; the UIDs and MODSEQs it gave are never given again (index
   Rule 6).
8. ``own_change`` wraps a change of ``cur/`` by Pigeon (a STORE's rename, an APPEND's or COPY's
   link, an EXPUNGE's unlink), inside the index transaction that records it (index Rule 1:
   every Pigeon writer of the account, in every process, holds the index's write lock, so
   no other Pigeon change interleaves): when ``cur/``'s mtime was the listing record's just
   before the change, the record takes the mtime after it, in the same transaction, keeping
   the time of the listing. Before, the record was per process and another process's change
   made this one list ``cur/`` (1,000+ names and rows) on its next sync. A change by another
   program in the same instant is taken for Pigeon's and is seen at the next listing, at most
   ``DIRTY_RELIST`` after the last one (the bound of Rule 1). A record moved on by a
   transaction that rolls back is rolled back with it. A scan stats the directories again
   once it holds the write lock: what it lists and records is what the index has.
9. Between a Pigeon writer's rename and its commit, the directory has moved and the record
   not yet (another process, or this one's event loop, reads the committed row): a reader
   that finds the record behind while a write is under way (``Index.writer_active``) takes
   the folder as up to date (``AccountCore.unchanged``, ``needs_scan``) and looks again at
   its next sync, after that commit; a change by another program is then found as Rule 1
   says. (Measured with ``[imap] processes = 2``, 10 clients: one sync in ten listed cur/
   because it looked inside that window.)

What can go wrong: FileNotFoundError when the folder's directories are gone (the caller treats
the folder as deleted); other OSError and sqlite3.Error propagate.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pigeon.store.mailbox.files import crlf_size_of
from pigeon.store.mailbox.flags import cur_name, split_name
from pigeon.store.mailbox.index import FolderRow, Index, disk_full
from pigeon.store.names import parse_sizes

log = logging.getLogger(__name__)

DIRTY_WINDOW_NS = 2_000_000_000  # Rule 1: covers coarse (jiffy) and FAT (2 s) timestamps
# Rule 1: another program's change in the same timestamp tick as our last listing is seen this
# late at most; 10 listings a second per busy folder (all processes together) instead of one
# per command.
DIRTY_RELIST = 0.1
DIRTY_RELIST_NS = int(DIRTY_RELIST * 1e9)
BULK_LOOKUP = 64  # files in new/ above which the index's known bases are read in one query


@dataclass
class _Arrival:
    mtime: float
    base: str
    info: str
    name: str  # the file name in cur/


def up_to_date(row: FolderRow, st_new: int, st_cur: int, now_ns: int | None = None) -> bool:
    """Rule 1: the index has every change of directories whose mtimes are ``st_new`` and
    ``st_cur``: the mtimes of the last scan, settled, or those of a listing less than
    ``DIRTY_RELIST`` old (``now_ns``: ``time.time_ns()``)."""
    if st_new == row.new_mtime and st_cur == row.cur_mtime:
        return True
    if st_new != row.listed_new or st_cur != row.listed_cur:
        return False
    age = (time.time_ns() if now_ns is None else now_ns) - row.listed_at
    return 0 <= age < DIRTY_RELIST_NS  # a clock set back: list again


@contextmanager
def own_change(conn: sqlite3.Connection, folder_id: int, cur_dir: Path) -> Iterator[None]:
    """Rule 8, inside the write transaction that records the change (``conn``)."""
    try:
        before = os.stat(cur_dir).st_mtime_ns
    except OSError:
        before = None
    yield
    if before is None:
        return
    try:
        after = os.stat(cur_dir).st_mtime_ns
    except OSError:
        return
    if after != before:
        conn.execute("UPDATE folder SET listed_cur=? WHERE id=? AND listed_cur=?", (after, folder_id, before))


def scan(index: Index, row: FolderRow, folder: Path, force: bool = False) -> FolderRow:
    """Bring the index up to date with ``folder``; returns the refreshed row (Rules 1-6)."""
    new_dir, cur_dir = folder / "new", folder / "cur"
    now_ns = time.time_ns()  # before the stats: a listing is never recorded as later than it ran
    st_new = os.stat(new_dir).st_mtime_ns
    st_cur = os.stat(cur_dir).st_mtime_ns
    if not force and up_to_date(row, st_new, st_cur):
        return row
    try:
        return _scan(index, row, new_dir, cur_dir, st_new, st_cur, force, now_ns)
    except (OSError, sqlite3.Error) as exc:
        if not disk_full(exc):
            raise
        index.degraded(f"folder {row.name!r} was not rescanned", exc)  # Rule 6
        return row


def _scan(index: Index, row: FolderRow, new_dir: Path, cur_dir: Path, st_new: int, st_cur: int,
          force: bool, listed_at: int) -> FolderRow:
    with index.write(durable=False) as conn:  # Rule 7
        fresh = index.folder_by_id(row.id)
        if fresh is None:
            raise FileNotFoundError(f"folder {row.name!r} was deleted")
        row = fresh
        # Rule 8: again under the index's write lock, which every Pigeon change of the folder
        # holds: what is listed and recorded below is then exactly what the index has, even
        # when another process changed cur/ since the caller's look (then the record, were it
        # the earlier mtime, would never match again and every sync would list).
        st_new = os.stat(new_dir).st_mtime_ns
        st_cur = os.stat(cur_dir).st_mtime_ns
        if not force and up_to_date(row, st_new, st_cur):
            return row  # another scanner (or process) got here first
        arrivals: dict[str, _Arrival] = {}
        if force or st_new != row.new_mtime:
            _take_new(conn, row.id, new_dir, cur_dir, arrivals)
        gone: list[int] = []
        changed: list[tuple[str, int]] = []
        if force or st_cur != row.cur_mtime:
            on_disk = _list_cur(cur_dir)
            for uid, base, info in conn.execute(
                    "SELECT uid, base, info FROM message WHERE folder=?", (row.id,)):
                disk_info = on_disk.pop(base, None)
                if disk_info is None:
                    gone.append(uid)
                elif disk_info != info:
                    changed.append((disk_info, uid))
            for base, info in on_disk.items():
                if base not in arrivals:
                    name = cur_name(base, info)
                    try:
                        mtime = os.stat(cur_dir / name).st_mtime
                    except FileNotFoundError:
                        continue  # renamed again meanwhile; the next scan sees it
                    arrivals[base] = _Arrival(mtime, base, info, name)
        modseq = row.highestmodseq
        uidnext = row.uidnext
        if arrivals or gone or changed:
            modseq += 1
        if arrivals:
            ordered = sorted(arrivals.values(), key=lambda a: (a.mtime, a.base))
            rows = []
            cur_s = os.fspath(cur_dir)
            for a in ordered:
                size = parse_sizes(a.base)[1]
                if size is None:
                    try:
                        size = crlf_size_of(f"{cur_s}/{a.name}")
                    except FileNotFoundError:
                        continue
                rows.append((row.id, uidnext, a.base, a.info, modseq, a.mtime, size))
                uidnext += 1
            conn.executemany("INSERT INTO message(folder, uid, base, info, keywords, modseq, "
                             "internaldate, size) VALUES (?,?,?,?,'',?,?,?)", rows)
        if gone:
            log.info("folder %r: %d message(s) removed by another program", row.name, len(gone))
            conn.executemany("DELETE FROM message WHERE folder=? AND uid=?",
                             [(row.id, u) for u in gone])
            conn.executemany("DELETE FROM cache WHERE folder=? AND uid=?", [(row.id, u) for u in gone])
            conn.executemany("INSERT OR REPLACE INTO expunged(folder, uid, modseq) VALUES (?,?,?)",
                             [(row.id, u, modseq) for u in gone])
        if changed:
            conn.executemany("UPDATE message SET info=?, modseq=? WHERE folder=? AND uid=?",
                             [(info, modseq, row.id, uid) for info, uid in changed])
        now_ns = time.time_ns()
        conn.execute("UPDATE folder SET uidnext=?, highestmodseq=?, new_mtime=?, cur_mtime=?, "
                     "listed_new=?, listed_cur=?, listed_at=? WHERE id=?",
                     (uidnext, modseq, _settled(st_new, now_ns), _settled(st_cur, now_ns),
                      st_new, st_cur, listed_at, row.id))
    refreshed = index.folder_by_id(row.id)
    if refreshed is None:  # pragma: no cover - we hold the only writer that could delete it
        raise FileNotFoundError(f"folder {row.name!r} was deleted")
    return refreshed


def _settled(mtime_ns: int, now_ns: int) -> int:
    return mtime_ns if now_ns - mtime_ns > DIRTY_WINDOW_NS else -1


def _take_new(conn: sqlite3.Connection, folder_id: int, new_dir: Path, cur_dir: Path,
              arrivals: dict[str, _Arrival]) -> None:
    """Rule 2: move every file of ``new/`` into ``cur/``.

    Paths are plain strings here (a Maildir dropped in holds thousands of files; ``pathlib``
    objects cost more than the ``stat`` they name). Which bases the index already knows is
    asked once for the whole folder when ``new/`` is large, else once per file."""
    names = [n for n in os.listdir(new_dir) if not n.startswith(".")]
    if not names:
        return
    known_info: dict[str, str] | None = None
    if len(names) > BULK_LOOKUP:
        known_info = {str(b): str(i) for b, i in conn.execute(
            "SELECT base, info FROM message WHERE folder=?", (folder_id,))}
    new_s, cur_s = os.fspath(new_dir), os.fspath(cur_dir)
    for name in names:
        base, info = split_name(name)
        if known_info is not None:
            known = known_info.get(base)
        else:
            r = conn.execute("SELECT info FROM message WHERE folder=? AND base=?", (folder_id, base)).fetchone()
            known = None if r is None else str(r[0])
        target_info = info if known is None else known
        target = cur_name(base, target_info)
        source = f"{new_s}/{name}"
        try:
            st = os.stat(source)
            os.rename(source, f"{cur_s}/{target}")
        except FileNotFoundError:
            continue  # another reader took it first
        if known is None:
            arrivals[base] = _Arrival(st.st_mtime, base, target_info, target)


def _list_cur(cur_dir: Path) -> dict[str, str]:
    """``base → info`` of every message file in ``cur/``; adds a missing ``:2,`` (Rule 3)."""
    out: dict[str, str] = {}
    for name in os.listdir(cur_dir):
        if name.startswith("."):
            continue
        base, info = split_name(name)
        if name != cur_name(base, info):
            try:
                os.rename(cur_dir / name, cur_dir / cur_name(base, info))
            except FileNotFoundError:
                continue
        if base in out:
            log.warning("two files with base %s in %s; keeping one", base, cur_dir)
            continue
        out[base] = info
    return out

