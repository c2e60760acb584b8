"""Compact, shared, immutable message lists of a folder (what ``Mailbox`` views are built on).

Rules:
1. A ``Snapshot`` is one folder's message rows at one index state, in parallel arrays (UIDs,
   flag-set ids, sizes, dates, MODSEQs) plus the Maildir base names: ~30 octets per message
   plus the shared name strings, against ~320 for a ``MessageMeta``. It never changes after
   ``build``; views keep it until their own changes (copy-on-write overlay, ``view``). The
   one thing filled in later is ``summary`` (keywords in use, first unseen), computed once
   by the first view that asks and the same for all.
2. The key of a snapshot is (folder id, name, HIGHESTMODSEQ, UIDNEXT): every change to a
   folder's message rows raises its HIGHESTMODSEQ (``ops`` Rule 1, ``scan`` Rule 3) and every
   new message its UIDNEXT, so two views at the same key see the same rows. ``AccountCore``
   keeps the latest snapshot of each folder weakly: every view of the folder selected at that
   state shares it, and it is freed with the last view.
3. ``build`` reads the folder row and its message rows in one read transaction (WAL snapshot):
   the key always describes exactly the rows read, even with a second process writing.
4. ``FlagTable`` interns each distinct (info letters, keywords) pair of an account to a small
   id with its IMAP flag set and its FETCH spelling; all views and snapshots of the account
   share it. It grows with the number of distinct flag combinations only (a handful in real
   mailboxes, at most one per message ever stored).
5. Callers hold the account lock around ``build``. ``FlagTable.intern`` takes its own lock
   for a new pair (the lists grow together), so a view may intern without the account lock
   (view Rule 13); an id, once given, never changes.
6. ``WarmSnapshots`` keeps the most recently used snapshots alive after their last view closed,
   store-wide, up to ``MAX_WARM_MESSAGES`` messages in all (least recently used dropped first),
   so that the next SELECT of a folder that did not change reads nothing from the index: what
   Dovecot's mmapped index gives it. A newer snapshot of a folder replaces the older one.
7. ``derive`` makes the snapshot of a later state from an earlier one and the index rows
   changed since (MODSEQ above the old HIGHESTMODSEQ, and the tombstones likewise: the same
   facts ``Mailbox.sync`` relies on), so a SELECT after a few deliveries costs those rows, not
   the whole folder. Past ``len // DERIVE_FRACTION + DERIVE_SLACK`` changed rows it gives up
   (``build`` is then cheaper).

What can go wrong: ``sqlite3.Error`` propagates from ``build``.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from pigeon.store.mailbox.flags import imap_flags
from pigeon.store.mailbox.index import FolderRow, Index

SnapshotKey = tuple[int, str, int, int]
#: Rule 6: ~30 octets of arrays plus a ~100-octet base name per message: ~25 MiB at most.
MAX_WARM_MESSAGES = 200_000
#: Rule 7: beyond a quarter of the folder changed, a full read beats patching arrays.
DERIVE_FRACTION = 4
DERIVE_SLACK = 100
#: The message columns read, in this order (the same as ``ops.ROW_COLS``, which imports us indirectly).
_COLS = "uid, base, info, keywords, modseq, internaldate, size"


class FlagTable:
    """Rule 4: (info, keywords) ⇄ small id, with the flag set and its FETCH text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # Rule 5: a new pair, also from the event loop (view Rule 13)
        self._ids: dict[tuple[str, str], int] = {}
        self.infos: list[str] = []
        self.flags: list[frozenset[str]] = []
        self.text: list[bytes] = []  # sorted flags, space-separated (FETCH FLAGS without parens)
        self.seen: list[bool] = []

    def intern(self, info: str, keywords: str) -> int:
        key = (info, keywords)
        fid = self._ids.get(key)
        if fid is not None:
            return fid
        with self._lock:
            fid = self._ids.get(key)
            if fid is not None:
                return fid
            flags = imap_flags(info, keywords)
            fid = len(self.infos)
            self.infos.append(info)
            self.flags.append(flags)
            self.text.append(" ".join(sorted(flags)).encode("utf-8"))
            self.seen.append("\\Seen" in flags)
            self._ids[key] = fid
        return fid

    def intern_all(self, infos: Sequence[str], keywords: Sequence[str]) -> array[int]:
        """The ids of many pairs; the distinct pairs first, then one C-level lookup each."""
        pairs = list(zip(infos, keywords, strict=True))
        for pair in set(pairs).difference(self._ids):
            self.intern(*pair)
        return array("I", map(self._ids.__getitem__, pairs))


class Snapshot:
    """Rule 1: one folder's messages at one state, in UID order."""

    __slots__ = ("__weakref__", "bases", "cur", "dates", "flag_ids", "key", "modseqs", "row",
                 "sizes", "summary", "uids")

    def __init__(self, row: FolderRow, cur: Path, uids: array[int], flag_ids: array[int],
                 sizes: array[int], dates: array[float], modseqs: array[int],
                 bases: tuple[str, ...]) -> None:
        self.row = row
        self.key: SnapshotKey = key_of(row)
        self.cur = cur
        self.uids = uids
        self.flag_ids = flag_ids
        self.sizes = sizes
        self.dates = dates
        self.modseqs = modseqs
        self.bases = bases
        #: (keywords in use, first unseen sequence number), filled by the first view that asks
        self.summary: tuple[list[str], int | None] | None = None


def key_of(row: FolderRow) -> SnapshotKey:
    """Rule 2."""
    return (row.id, row.name, row.highestmodseq, row.uidnext)


def build(index: Index, folder_id: int, cur_of: Callable[[str], Path], table: FlagTable) -> Snapshot | None:
    """Rule 3: None when the folder row is gone."""
    conn = index.conn
    conn.execute("BEGIN")
    try:
        row = index.folder_by_id(folder_id)
        rows = [] if row is None else conn.execute(
            f"SELECT {_COLS} FROM message WHERE folder=? ORDER BY uid", (folder_id,)).fetchall()
    finally:
        conn.execute("COMMIT")
    if row is None:
        return None
    if rows:
        uids, bases, infos, keywords, modseqs, dates, sizes = zip(*rows, strict=True)
    else:
        uids = bases = infos = keywords = modseqs = dates = sizes = ()
    flag_ids = table.intern_all(infos, keywords)
    return Snapshot(row, cur_of(row.name), array("I", uids), flag_ids, array("Q", sizes),
                    array("d", dates), array("Q", modseqs), bases)



def derive(index: Index, old: Snapshot, table: FlagTable) -> Snapshot | None:
    """Rule 7: the folder's current snapshot from ``old``; None when a full ``build`` is due."""
    conn = index.conn
    folder_id, since = old.row.id, old.row.highestmodseq
    conn.execute("BEGIN")
    try:
        row = index.folder_by_id(folder_id)
        if row is None or row.name != old.row.name:
            return None
        if key_of(row) == old.key:
            return old
        changed = conn.execute(f"SELECT {_COLS} FROM message WHERE folder=? AND modseq>? ORDER BY uid",
                               (folder_id, since)).fetchall()
        gone = {u for (u,) in conn.execute("SELECT uid FROM expunged WHERE folder=? AND modseq>?",
                                           (folder_id, since))}
    finally:
        conn.execute("COMMIT")
    if len(changed) + len(gone) > len(old.uids) // DERIVE_FRACTION + DERIVE_SLACK:
        return None
    uids, fids, sizes = array("I", old.uids), array("I", old.flag_ids), array("Q", old.sizes)
    dates, modseqs, bases = array("d", old.dates), array("Q", old.modseqs), list(old.bases)
    columns: tuple[array[int] | array[float] | list[str], ...] = (uids, fids, sizes, dates, modseqs, bases)
    if gone:
        for i in sorted((i for i, u in enumerate(old.uids) if u in gone), reverse=True):
            for col in columns:
                del col[i]
    for uid, base, info, keywords, modseq, date, size in changed:
        values = (uid, table.intern(info, keywords), size, date, modseq, base)
        i = bisect.bisect_left(uids, uid)
        if i < len(uids) and uids[i] == uid:
            for col, value in zip(columns, values, strict=True):
                col[i] = value
        else:
            for col, value in zip(columns, values, strict=True):
                col.insert(i, value)
    return Snapshot(row, old.cur, uids, fids, sizes, dates, modseqs, tuple(bases))


class WarmSnapshots:
    """Rule 6: a store-wide LRU of strong references; thread-safe."""

    def __init__(self, max_messages: int = MAX_WARM_MESSAGES) -> None:
        self._max = max_messages
        self._lru: OrderedDict[tuple[str, int], Snapshot] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def keep(self, account: str, snap: Snapshot) -> None:
        key = (account, snap.row.id)
        with self._lock:
            old = self._lru.pop(key, None)
            if old is not None:
                self._count -= len(old.uids)
            if len(snap.uids) > self._max:
                return
            self._lru[key] = snap
            self._count += len(snap.uids)
            while self._count > self._max:
                _, dropped = self._lru.popitem(last=False)
                self._count -= len(dropped.uids)

    def forget(self, account: str) -> None:
        """Drop an account's snapshots (its index was closed or rebuilt)."""
        with self._lock:
            for key in [k for k in self._lru if k[0] == account]:
                self._count -= len(self._lru.pop(key).uids)
