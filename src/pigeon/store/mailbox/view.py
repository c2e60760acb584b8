"""One selected view of a folder (one per IMAP or POP3 session).

Rules:
1. A view is a snapshot: ``messages()`` changes only when the view itself changes something
   or when ``sync()`` is called; sequence number = index + 1 in UID order (RFC 3501 §2.3.1.2).
2. ``sync()`` scans the folder (cheap when nothing changed), then reads only the index rows
   with a MODSEQ above the view's last one, and tombstones likewise. A row the view already
   has with the same MODSEQ is the view's own change and is not reported again. With
   ``since`` (from ``tick()``, taken when the caller decided to sync, before its thread hop),
   a scan another view of the account started after that time stands for this one's
   (context Rule 6).
3. ``highestmodseq`` and ``uidnext`` move only in ``sync()``: the view never claims to have
   seen changes by others that it has not yet reported (RFC 7162 §3.1.2.1).
4. ``\\Recent`` (RFC 3501 §2.3.2): the first read-write view to see a message gets it; the
   folder remembers the first UID no view has claimed (``recent_uid``). Read-only views
   (EXAMINE) see the same set without claiming it.
5. Read-only views refuse every change with ``MailboxError("CANNOT")``; COPY from them works.
6. All methods are safe to call from worker threads; the account lock serialises them.
7. Compact and shared (``snapshot``): a view starts from the folder's shared ``Snapshot`` and
   records its own changes and those ``sync()`` applies in a private overlay (UID → entry, or
   None when gone). ``MessageMeta`` objects are built only when asked for (``get``,
   ``messages``, ``Changes``); ``uids``, ``flags_of``, ``rows`` and ``summary`` answer from the
   arrays without building them.
8. A view whose overlay has grown past ``REBASE_SLACK + len/REBASE_FRACTION`` entries takes
   the shared snapshot of its current state at the end of ``sync`` (when one exists or can be
   made at exactly that state) and empties its overlay.
9. On a full disk (index Rule 5) the writes a view makes for itself degrade instead of
   failing: a cache entry is not stored (it is only a cache), and the ``\\Recent`` claim is
   not recorded (another session may see those messages as ``\\Recent`` too).

10. Reading a message (``read``, ``read_header``) never fails because its file was renamed:
   another session or process may change its flags (a rename in ``cur/``) at any time,
   whatever this process's lock says. The file is looked up again by its base name (which
   never changes) in ``cur/`` and ``new/``, then through the rescanned index; only a message
   that is really gone raises ``EXPUNGEISSUED`` (the IMAP session then serves the others and
   says so, RFC 2180 §4.1). Once open, a Maildir file's content never changes. The index is
   asked first (one query on a read connection): a message it no longer has is gone, and
   one whose flags changed is at the name it gives; only then is ``cur/`` listed (a message
   appended and expunged by other sessions cost a SEARCH two listings of a 1,000-file ``cur/``).
11. After a STORE, each message it named is in the view as in the index (``ops`` Rule 7),
   even when the STORE wrote nothing because another session had already set those flags:
   the untagged FETCH of a STORE shows the flags after it (RFC 3501 §6.4.6), never the view's
   older ones. Such a change by someone else, taken in by the STORE, carries its own MODSEQ,
   so ``sync`` (Rule 2) does not report it a second time; the caller reports it instead
   (``refreshed``), also for ``.SILENT`` (RFC 3501 §7.4.1).

11. Views at the same state share what ``sync`` reads (``_delta``): the rows with a MODSEQ
   above the view's and the tombstones, keyed by (UIDVALIDITY, the view's MODSEQ, the
   folder's HIGHESTMODSEQ and UIDNEXT, fresh from the index). Every change raises
   HIGHESTMODSEQ (RFC 7162 §3.1.1), so while it stands the same query gives the same rows: the
   100 sessions of one account woken by one delivery read the index once.
12. ``sync_views`` syncs many views of one folder (the IDLE sessions woken by one notice,
   ``imapd.idlewake``) under one lock, one read of the folder's row and one scan: each view
   then costs only its own bookkeeping. The ``\\Recent`` claim still goes to the first of them
   (Rule 4: the row is read again after a claim). An error of one view is that view's; an
   error of the folder (``NONEXISTENT``) is every view's.

14. Durability (index Rule 2): EXPUNGE, POP3's removal, COPY and MOVE return only once their
   change is flushed (``make_durable``, after the account lock is released, shared with the
   account's other writers); the ``\\Recent`` claim and cache entries are never flushed on
   their own (a power loss may undo them: a message may be ``\\Recent`` again).

13. ``sync_nowait`` is ``sync`` for the event loop, done only when it waits for nothing: it
   never takes the account lock (a writer holds it through its fsyncs: it was held ~90 % of
   the time under the mixed load) but reads the folder row and the delta through a
   connection of its own (``AccountCore.loop_reader``: WAL readers never wait for the writer),
   whose lock it takes only when free at once (it is, with one event loop); no scan due (``AccountCore.needs_scan``), no ``\\Recent`` claim
   to write, no rebase (Rule 8: left to the next ``sync``). Otherwise it answers None and the
   caller syncs in a worker thread. The view itself is its session's alone; what views share
   (the flag table, the delta cache) is safe without the account lock. Why: a thread hop per command (the sync after each one)
   cost more CPU in the hand-over of the GIL between the loop and the worker threads than the
   sync itself (docs/benchmarks.md, issue 18, "CPU per command").

15. ``read_nowait`` and ``cache_many_nowait`` are ``read`` and ``cache_many`` for the event
   loop (the FETCH of a few small messages, ``imapd.fetch`` rule 7): the file the view knows,
   the loop's own read connection (Rule 13), never the account lock; None whenever that is
   not enough (the file moved, the connection is busy, the index is open exclusively) and the
   caller goes to a worker thread. Why: the thread hop and its GIL hand-overs cost more than
   reading a 10 KB file (~15 µs) or a few cached values.
16. ``store(wait=False)`` is the event loop's STORE: it raises ``index.WouldWait``, having
   changed nothing, when it would wait for the account lock, a scan of the folder, another
   process's index lock or a flush (``ops.store``, ``Index.write``); the caller then stores in
   a worker thread. A STORE commits with ``synchronous=NORMAL`` and flushes nothing (index
   Rule 6), so what is left on the loop is a rename per message and one small transaction.

What can go wrong: ``MailboxError("NONEXISTENT")`` when the folder was deleted or renamed
away under the view (the IMAP session should then end with BYE); ``MailboxError
("EXPUNGEISSUED")`` from ``read`` when the message was expunged by someone else.
"""

from __future__ import annotations

import bisect
import logging
import os
import sqlite3
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pigeon.store.mailbox import files, ops
from pigeon.store.mailbox.context import AccountCore
from pigeon.store.mailbox.folders import normalize
from pigeon.store.mailbox.flags import cur_name
from pigeon.store.mailbox.index import FolderRow, WouldWait, disk_full
from pigeon.store.mailbox.model import Changes, MailboxError, MessageMeta, make_meta
from pigeon.store.mailbox.snapshot import Snapshot, build, derive, key_of

log = logging.getLogger(__name__)

MAX_CACHE_VALUE = 1024 * 1024  # octets; an ENVELOPE/BODYSTRUCTURE of a sane message is far smaller
#: Rule 8: a view rebases when its overlay outgrows this share of its snapshot.
REBASE_FRACTION = 8
REBASE_SLACK = 64
#: Rule 11: a change of up to this many rows is kept for the other views (a few hundred KB at
#: most); a bigger one (a STORE over a whole large folder) each view reads for itself.
DELTA_SHARED_MAX = 1000
#: ``rows`` of more than 1/4 of the view's messages reads the whole view in one pass.
BULK_ROWS_FRACTION = 4
PREFETCH_VALUE = 4096  # octets: larger cached values are not read in bulk by ``cache_many``

#: One message in a view's overlay: (flag-set id, size, internaldate, modseq, Maildir base).
Entry = tuple[int, int, float, int, str]
#: What ``Mailbox.rows`` gives per message: (uid, flag-set id, size, internaldate, modseq).
MetaRow = tuple[int, int, int, float, int]


class Mailbox:
    """A selected view (Rules 1-8)."""

    def __init__(self, core: AccountCore, row: FolderRow, readonly: bool) -> None:
        self._core = core
        self._id = row.id
        self.name = row.name
        self.readonly = readonly
        self.uidvalidity = row.uidvalidity
        snap = self._shared(row, None)
        if snap is None:
            raise MailboxError("NONEXISTENT", f"mailbox {row.name!r} does not exist")
        core.warm.keep(str(core.maildir), snap)  # snapshot Rule 6 (and LRU order)
        self._snap: Snapshot = snap
        self.uidnext = snap.row.uidnext
        self.highestmodseq = snap.row.highestmodseq
        self._over: dict[int, Entry | None] = {}  # Rule 7
        self._uid_cache: array[int] | None = None  # the merged UIDs while the overlay is not empty
        self._recent: set[int] = set()
        self._closed = False
        first = bisect.bisect_left(snap.uids, snap.row.recent_uid)
        self._claim_recent(list(snap.uids[first:]))
        core.open_views += 1

    # -- the view ----------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The folder's directory (the key of its change notices, ``store.changes``)."""
        return self._core.path(self.name)

    def messages(self) -> list[MessageMeta]:
        """Every message of the view, UID order (builds them all: prefer ``uids``/``rows``)."""
        out = []
        for uid in self._merged():
            entry = self._entry(uid)
            if entry is not None:
                out.append(self._meta(uid, entry))
        return out

    def uids(self) -> array[int]:
        """The view's UIDs, ascending; a new array the caller owns (Rule 7)."""
        return array("I", self._merged())

    def get(self, uid: int) -> MessageMeta | None:
        """The view's metadata of one message (added to the contract)."""
        entry = self._entry(uid)
        return None if entry is None else self._meta(uid, entry)

    def flags_of(self, uid: int) -> frozenset[str] | None:
        entry = self._entry(uid)
        return None if entry is None else self._core.flag_table.flags[entry[0]]

    def rows(self, uids: Iterable[int]) -> list[MetaRow]:
        """``(uid, flag id, size, internaldate, modseq)`` of the given UIDs (ascending) in the view (Rule 7).

        The flag id names an entry of ``flag_text``/``flag_set``; missing UIDs are left out."""
        snap = self._snap
        suids, fids, sizes, dates, modseqs = snap.uids, snap.flag_ids, snap.sizes, snap.dates, snap.modseqs
        n = len(suids)
        over = self._over
        find = bisect.bisect_left
        if not over and isinstance(uids, Sequence) and uids:
            # A run of the snapshot (FETCH 1:*, or any range without gaps): sorted unique UIDs
            # whose first and last sit len-1 places apart are exactly that slice.
            i = find(suids, uids[0])
            j = i + len(uids)
            if j <= n and suids[i] == uids[0] and suids[j - 1] == uids[-1]:
                return list(zip(suids[i:j], fids[i:j], sizes[i:j], dates[i:j], modseqs[i:j], strict=True))
        if over and isinstance(uids, Sequence) and len(uids) > n // BULK_ROWS_FRACTION:
            # Many UIDs (a SEARCH, FETCH 1:*) of a view with an overlay: the whole view at C
            # speed, the overlay patched in, then only the UIDs asked for.
            # The overlay (at most ~1/8 of the view, Rule 8) is patched in place by position.
            every: list[MetaRow | None] = list(zip(suids, fids, sizes, dates, modseqs, strict=True))
            added: list[MetaRow] = []
            dropped = False
            for u, e in over.items():
                i = find(suids, u)
                if i < n and suids[i] == u:
                    every[i] = None if e is None else (u, e[0], e[1], e[2], e[3])
                    dropped = dropped or e is None
                elif e is not None:
                    added.append((u, e[0], e[1], e[2], e[3]))
            rows: list[MetaRow] = ([r for r in every if r is not None] if dropped
                                   else cast("list[MetaRow]", every))
            if added:
                added.sort()
                if rows and added[0][0] < rows[-1][0]:
                    rows = sorted([*rows, *added])
                else:
                    rows += added
            wanted = set(uids)
            if len(rows) != len(wanted) or not wanted.issuperset([r[0] for r in rows]):
                rows = [r for r in rows if r[0] in wanted]
            return rows
        out: list[MetaRow] = []
        for uid in uids:
            if over and uid in over:
                e = over[uid]
                if e is not None:
                    out.append((uid, e[0], e[1], e[2], e[3]))
                continue
            i = find(suids, uid)
            if i < n and suids[i] == uid:
                out.append((uid, fids[i], sizes[i], dates[i], modseqs[i]))
        return out

    def flag_text(self, flag_id: int) -> bytes:
        """The FETCH spelling of a flag set: sorted flags, space-separated, no parentheses."""
        return self._core.flag_table.text[flag_id]

    def flag_set(self, flag_id: int) -> frozenset[str]:
        return self._core.flag_table.flags[flag_id]

    def summary(self) -> tuple[list[str], int | None]:
        """(keywords in use, sorted; sequence number of the first message without \\Seen)."""
        table = self._core.flag_table
        if self._over:
            ids: Sequence[int] = [e[0] for e in map(self._entry, self._merged()) if e is not None]
        else:
            if self._snap.summary is not None:  # the snapshot never changes: computed once
                keywords, first = self._snap.summary
                return list(keywords), first
            ids = self._snap.flag_ids
        distinct = set(ids)
        keywords = sorted({f for i in distinct for f in table.flags[i] if not f.startswith("\\")})
        unseen = {i for i in distinct if not table.seen[i]}
        first = next((n for n, i in enumerate(ids, start=1) if i in unseen), None) if unseen else None
        if not self._over:
            self._snap.summary = (keywords, first)
        return list(keywords), first

    def changed_since(self, modseq: int) -> list[MessageMeta]:
        """Messages of the view with a MODSEQ above ``modseq``, UID order (QRESYNC)."""
        snap = self._snap
        if not self._over:
            return [self._meta(snap.uids[i], self._at(i))
                    for i, m in enumerate(snap.modseqs) if m > modseq]
        return [m for m in self.messages() if m.modseq > modseq]

    @property
    def recent(self) -> int:
        """How many messages of the view are \\Recent to this session (Rule 4)."""
        return len(self._recent)

    def is_recent(self, uid: int) -> bool:
        return uid in self._recent

    def tick(self) -> float:
        """The account's monotonic clock, for ``sync(since=...)`` (Rule 2, context Rule 6)."""
        return self._core.monotonic()

    def sync(self, since: float | None = None) -> Changes:
        """Rule 2."""
        core = self._core
        if core.unchanged(self._id, self.highestmodseq, self.uidnext):  # context Rule 5
            return Changes([], [], [])
        with core.lock:
            return self._sync_at(core.rescan(core.row_by_id(self._id), since=since))[0]

    def sync_nowait(self, since: float) -> Changes | None:
        """Rule 13: ``sync(since)`` when it can be done without waiting for anything (no lock
        held by another thread, no scan, no write to the index); None when it cannot (the
        caller then calls ``sync`` in a worker thread). For the event loop."""
        core = self._core
        if not core.can_read or not core.loop_reader_lock.acquire(blocking=False):
            return None
        try:
            row = core.loop_reader.folder_by_id(self._id)
            if row is None or core.needs_scan(row, since):
                return None  # gone (the worker thread's sync says so), or a scan is due
            if row.highestmodseq == self.highestmodseq and row.uidnext == self.uidnext:
                return Changes([], [], [])
            delta = self._delta(row, core.loop_reader.conn)
        finally:
            core.loop_reader_lock.release()
        if not self.readonly and any(r[0] >= self.uidnext and r[0] >= row.recent_uid for r in delta[0]):
            return None  # a \Recent claim to write (Rule 4)
        return self._apply_delta(row, delta, rebase=False)[0]

    def _sync_at(self, row: FolderRow) -> tuple[Changes, bool]:
        """Rule 2 once the folder is scanned: the view brought to ``row`` (fresh from the index);
        and whether it claimed ``\\Recent`` (``row.recent_uid`` is then stale). Under the lock."""
        if row.highestmodseq == self.highestmodseq and row.uidnext == self.uidnext:
            return Changes([], [], []), False
        return self._apply_delta(row, self._delta(row, self._core.index.conn))

    def _apply_delta(self, row: FolderRow, delta: tuple[list[Any], list[int]],
                     rebase: bool = True) -> tuple[Changes, bool]:
        """Rule 2, the rows ``_delta`` read; ``rebase`` (Rule 8) under the account lock only;
        and whether the view claimed ``\\Recent``."""
        core = self._core
        flags = core.flag_table.flags
        new: list[MessageMeta] = []
        changed: list[MessageMeta] = []
        rows, gone = delta
        for r in rows:
            msg = ops.Row(*r)
            have = self._entry(msg.uid)
            if have is not None:
                if have[3] == msg.modseq:
                    continue  # Rule 2: our own change
                entry = self._entry_of(msg)
                self._set(msg.uid, entry)
                if flags[entry[0]] != flags[have[0]]:
                    changed.append(self._meta(msg.uid, entry))
            elif msg.uid >= self.uidnext:
                entry = self._entry_of(msg)
                self._set(msg.uid, entry)
                new.append(self._meta(msg.uid, entry))
        expunged = [u for u in gone if self._entry(u) is not None]
        for uid in expunged:
            self._unset(uid)
            self._recent.discard(uid)
        claimed = self._claim_recent([m.uid for m in new], row)
        self.highestmodseq = row.highestmodseq
        self.uidnext = row.uidnext
        if rebase and len(self._over) > REBASE_SLACK + len(self._snap.uids) // REBASE_FRACTION:
            self._rebase(row)
        return Changes(new, expunged, changed), claimed

    def _sync_with(self, views: Sequence[Mailbox], since: float) -> list[Changes | Exception]:
        """Rule 12: ``sync(since)`` of this view and ``views`` (views of the same folder of the
        same account core), with the lock taken, the folder's row read and scanned once for all."""
        core = self._core
        try:
            with core.lock:
                row = core.rescan(core.row_by_id(self._id), since=since)
                out: list[Changes | Exception] = []
                for view in (self, *views):
                    try:
                        changes, claimed = view._sync_at(row)
                    except Exception as exc:  # noqa: BLE001 — that view's own (Rule 12)
                        out.append(exc)
                        continue
                    out.append(changes)
                    if claimed:
                        row = core.row_by_id(self._id)  # the new recent_uid (Rule 4)
                return out
        except Exception as exc:  # noqa: BLE001 — the folder's (NONEXISTENT), for every view
            return [exc] * (1 + len(views))

    def _rebase(self, row: FolderRow) -> None:
        """Rule 8: after ``sync`` the view is the index at ``row``'s state; take the shared
        snapshot of that state and drop the overlay (a long IDLE session would otherwise end
        up holding a private copy of the whole folder). Under the account lock."""
        snap = self._shared(row, self._snap)
        if snap is not None and snap.key == (self._id, self.name, self.highestmodseq, self.uidnext):
            self._snap = snap
            self._over.clear()
            self._uid_cache = None

    # -- changes -----------------------------------------------------------------------------

    def store(self, uids: Sequence[int], mode: Literal["set", "add", "remove"], flags: frozenset[str],
              unchangedsince: int | None = None, gone: list[int] | None = None,
              refreshed: list[MessageMeta] | None = None, wait: bool = True) -> tuple[list[MessageMeta], list[int]]:
        """STORE on messages of the view; returns (changed, failed UNCHANGEDSINCE uids).

        Messages not in the view, or expunged by others meanwhile, are skipped; ``gone``,
        when given, receives the latter (the view drops them at its next ``sync``).
        Rule 11: afterwards every stored message of the view is as the index has it;
        ``refreshed``, when given, receives those that had been changed by someone else
        since the view last saw them (their change is taken in here, not by ``sync``).
        ``wait=False`` (Rule 16): ``index.WouldWait``, with nothing changed, rather than wait.
        """
        self._writable()
        if not self._core.lock.acquire(blocking=wait):
            raise WouldWait("the account lock is held")
        try:
            mine = [u for u in uids if self._entry(u) is not None]
            found: dict[int, ops.Row] = {}
            rows, failed = ops.store(self._core, self._id, mine, mode, flags, unchangedsince, gone, found, wait)
            stale = self._stale(found, failed)
            for msg in stale:  # Rule 11: before our own rows, which are newer
                self._set(msg.uid, self._entry_of(msg))
            changed = self._apply_rows(rows)
            if refreshed is not None:
                refreshed.extend(m for m in map(self.get, [r.uid for r in stale]) if m is not None)
        finally:
            self._core.lock.release()
        if changed:
            self._core.notify(self.name)
        return changed, failed

    def expunge(self, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the view's messages flagged \\Deleted (of ``uids`` when given); ascending UIDs."""
        self._writable()
        with self._core.lock:
            mine = (list(self._merged()) if uids is None
                    else [u for u in uids if self._entry(u) is not None])
            gone = self._drop(ops.remove(self._core, self._id, mine, only_deleted=True))
        if gone:
            self._core.make_durable()  # Rule 14
            self._core.notify(self.name)
        return gone

    def remove(self, uids: Sequence[int]) -> list[int]:
        """Remove messages whatever their flags (POP3 DELE at QUIT)."""
        self._writable()
        with self._core.lock:
            mine = [u for u in uids if self._entry(u) is not None]
            gone = self._drop(ops.remove(self._core, self._id, mine, only_deleted=False))
        if gone:
            self._core.make_durable()  # Rule 14
            self._core.notify(self.name)
        return gone

    def copy(self, uids: Sequence[int], dest: str) -> tuple[int, list[tuple[int, int]]]:
        with self._core.lock:
            mine = [u for u in uids if self._entry(u) is not None]
            result = ops.transfer(self._core, self._id, mine, normalize(dest), move=False)
        if result[1]:
            self._core.make_durable(normalize(dest))  # Rule 14
        self._core.notify(normalize(dest))
        return result

    def move(self, uids: Sequence[int], dest: str) -> tuple[int, list[tuple[int, int]]]:
        """MOVE (RFC 6851): the moved UIDs leave this view at once (they are the expunges)."""
        self._writable()
        with self._core.lock:
            mine = [u for u in uids if self._entry(u) is not None]
            result = ops.transfer(self._core, self._id, mine, normalize(dest), move=True)
            self._drop([s for s, _ in result[1]])
        if result[1]:
            self._core.make_durable(normalize(dest), self.name)  # Rule 14
        self._core.notify(self.name)
        self._core.notify(normalize(dest))
        return result

    # -- content -----------------------------------------------------------------------------

    def read(self, uid: int) -> bytes:
        """The message with CRLF line ends (Rule 10)."""
        return self._read(uid, files.read_all)

    def read_header(self, uid: int) -> bytes:
        """The header block with CRLF line ends (Rule 10)."""
        return self._read(uid, files.read_header)

    def _read(self, uid: int, reader: Callable[[str | Path, files.Form], bytes]) -> bytes:
        """Rule 10: open the file the view knows; when it was renamed or removed meanwhile
        (another session or process changed its flags, or expunged it), find it again by its
        base name in ``cur/`` and ``new/``, then from the rescanned index; give up only when
        the message is gone (``EXPUNGEISSUED``, RFC 2180 §4.1)."""
        path, form = self._resolve(uid)
        asked = False
        for _ in range(files.MAX_RELOCATE):
            try:
                return reader(path, form)
            except FileNotFoundError:
                pass
            if not asked:  # the index first: one query rather than a listing of cur/
                asked = True
                where = self._indexed(uid)  # raises EXPUNGEISSUED when the index has it no more
                if where is not None and where[0] != path:
                    path, form = where
                    continue
            again = self._find(uid)
            if again is None:
                path, form = self._resolve(uid, force=True)  # raises EXPUNGEISSUED when gone
            else:
                path, form = again
        # Renamed under us MAX_RELOCATE times in a row: another program is racing on this file.
        raise MailboxError("EXPUNGEISSUED", f"message {uid} kept moving while it was read")

    def _indexed(self, uid: int) -> tuple[str, files.Form] | None:
        """Rule 10: the message's file as the index names it now, through a read connection
        (no lock); ``EXPUNGEISSUED`` when the index no longer has it (expunged by a session or
        process of this server, or found gone by a scan); None when the index cannot be read
        now (opened exclusively)."""
        core = self._core
        if not core.can_read:
            return None
        with core.reading():
            r = core.reader.conn.execute("SELECT base, info FROM message WHERE folder=? AND uid=?",
                                         (self._id, uid)).fetchone()
        if r is None:
            raise MailboxError("EXPUNGEISSUED", f"message {uid} has been expunged")
        base = str(r[0])
        return os.path.join(self._snap.cur, cur_name(base, str(r[1]))), files.form_of(base)

    def read_nowait(self, uid: int, header_only: bool = False) -> bytes | None:
        """Rule 15: ``read`` (``read_header`` with ``header_only``) for the event loop: the file
        the view knows, with no lock and no lookup; None when it is not there (renamed or
        removed meanwhile, or the message left the view): the caller then reads in a worker
        thread, where Rule 10 finds it again or says it is gone."""
        if self._entry(uid) is None:
            return None
        path, form = self._resolve(uid)
        try:
            return files.read_header(path, form) if header_only else files.read_all(path, form)
        except FileNotFoundError:
            return None

    def _find(self, uid: int) -> tuple[Path, files.Form] | None:
        """The message's file found by its base name in ``cur/`` or ``new/`` (Rule 10)."""
        entry = self._entry(uid)
        if entry is None:
            return None
        base = entry[4]
        folder = self._core.path(self.name)
        for sub in ("cur", "new"):
            found = files.find_by_base(folder / sub, base)
            if found is not None:
                return found, files.form_of(base)
        return None

    def cache_get(self, uid: int, key: str) -> bytes | None:
        core = self._core
        shared = core.can_read
        with core.reading() if shared else core.lock:  # context Rule 5
            r = (core.reader if shared else core.index).conn.execute(
                "SELECT value FROM cache WHERE folder=? AND uid=? AND key=?", (self._id, uid, key)).fetchone()
        return bytes(r[0]) if r else None

    def cache_many(self, uids: Sequence[int], keys: Sequence[str]) -> dict[tuple[int, str], bytes | None]:
        """The cached values of ``keys`` for the ascending ``uids``, in one query (FETCH batches).

        A value over ``PREFETCH_VALUE`` octets is given as None (ask ``cache_get`` for it), so
        a batch never pulls in more than a few MiB; a (uid, key) that is absent is not cached."""
        if not uids or not keys:
            return {}
        core = self._core
        shared = core.can_read
        with core.reading() if shared else core.lock:  # context Rule 5
            return self._cache_rows((core.reader if shared else core.index).conn, uids, keys)

    def cache_many_nowait(self, uids: Sequence[int],
                          keys: Sequence[str]) -> dict[tuple[int, str], bytes | None] | None:
        """Rule 15: ``cache_many`` for the event loop, through its own read connection (Rule 13);
        None when that cannot be done at once (the caller then reads in a worker thread)."""
        if not uids or not keys:
            return {}
        core = self._core
        if not core.can_read or not core.loop_reader_lock.acquire(blocking=False):
            return None
        try:
            return self._cache_rows(core.loop_reader.conn, uids, keys)
        finally:
            core.loop_reader_lock.release()

    def cache_filter(self, uids: Sequence[int], key: str, needle: str) -> tuple[set[int], dict[int, bytes]]:
        """For the ascending ``uids``: those whose cached ``key`` value (JSON, ASCII) contains
        neither ``needle`` (lower-case printable ASCII), ASCII case ignored, nor a ``\\u``
        escape, and the cached values of the others; uids in neither are not cached. One
        query, the test made by SQLite (``imapd.search`` rule 8): the caller decodes only the
        few values that may match, instead of receiving every value."""
        if not uids:
            return set(), {}
        core = self._core
        shared = core.can_read
        with core.reading() if shared else core.lock:  # context Rule 5
            rows = (core.reader if shared else core.index).conn.execute(
                "SELECT uid, CASE WHEN instr(value, X'5C75') = 0 AND instr(lower(value), ?) = 0 "
                "THEN NULL ELSE value END FROM cache WHERE folder=? AND key=? AND uid BETWEEN ? AND ?",
                (needle, self._id, key, uids[0], uids[-1])).fetchall()
        wanted = set(uids)
        out = {u for u, v in rows if v is None}
        out &= wanted
        return out, {u: bytes(v) for u, v in rows if v is not None and u in wanted}

    def _cache_rows(self, conn: sqlite3.Connection, uids: Sequence[int],
                    keys: Sequence[str]) -> dict[tuple[int, str], bytes | None]:
        wanted = set(uids)
        marks = ",".join("?" * len(keys))
        rows = conn.execute("SELECT uid, key, CASE WHEN length(value) <= ? THEN value END FROM cache "
                            f"WHERE folder=? AND uid BETWEEN ? AND ? AND key IN ({marks})",
                            (PREFETCH_VALUE, self._id, uids[0], uids[-1], *keys)).fetchall()
        return {(u, k): None if v is None else bytes(v) for u, k, v in rows if u in wanted}

    def cache_put(self, uid: int, key: str, value: bytes) -> None:
        if len(value) > MAX_CACHE_VALUE:
            log.info("not caching %s of uid %d: %d octets", key, uid, len(value))
            return
        try:
            with self._core.lock, self._core.index.write(durable=False) as conn:
                conn.execute("INSERT OR REPLACE INTO cache(folder, uid, key, value) SELECT ?,?,?,? "
                             "WHERE EXISTS (SELECT 1 FROM message WHERE folder=? AND uid=?)",
                             (self._id, uid, key, value, self._id, uid))
        except sqlite3.Error as exc:
            if not disk_full(exc):
                raise
            self._core.index.degraded("a FETCH result was not cached", exc)  # Rule 9

    def cache_put_many(self, items: Sequence[tuple[int, str, bytes]]) -> None:
        """``cache_put`` for many (uid, key, value) in one transaction."""
        rows = [(self._id, uid, key, value, self._id, uid) for uid, key, value in items
                if len(value) <= MAX_CACHE_VALUE]
        if not rows:
            return
        try:
            with self._core.lock, self._core.index.write(durable=False) as conn:
                conn.executemany("INSERT OR REPLACE INTO cache(folder, uid, key, value) SELECT ?,?,?,? "
                                 "WHERE EXISTS (SELECT 1 FROM message WHERE folder=? AND uid=?)", rows)
        except sqlite3.Error as exc:
            if not disk_full(exc):
                raise
            self._core.index.degraded("search values were not cached", exc)  # Rule 9

    def expunged_since(self, modseq: int) -> list[int]:
        """UIDs expunged with a MODSEQ above ``modseq`` (QRESYNC VANISHED (EARLIER), RFC 7162 §3.2.5.1)."""
        with self._core.lock:
            return [u for (u,) in self._core.index.conn.execute(
                "SELECT uid FROM expunged WHERE folder=? AND modseq>? ORDER BY uid", (self._id, modseq))]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._core.lock:
                self._core.open_views -= 1

    # -- internals ---------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise MailboxError("CANNOT", "mailbox is read-only (EXAMINE)")  # Rule 5

    def _shared(self, row: FolderRow, base: Snapshot | None) -> Snapshot | None:
        """The folder's shared snapshot at ``row``'s state (snapshot Rule 2): the one other
        views hold, else derived from ``base`` (or from that older shared one), else built;
        None when the folder is gone. Under the account lock."""
        core = self._core
        shared = core.snapshots.get(row.id)
        if shared is not None and shared.key == key_of(row):
            return shared
        start = base if base is not None else shared
        snap = None if start is None else derive(core.index, start, core.flag_table)
        if snap is None:
            snap = build(core.index, row.id, self._cur_of, core.flag_table)
        if snap is not None:
            core.snapshots[row.id] = snap
        return snap

    def _cur_of(self, name: str) -> Path:
        return self._core.path(name) / "cur"

    def _at(self, i: int) -> Entry:
        snap = self._snap
        return (snap.flag_ids[i], snap.sizes[i], snap.dates[i], snap.modseqs[i], snap.bases[i])

    def _index(self, uid: int) -> int | None:
        suids = self._snap.uids
        i = bisect.bisect_left(suids, uid)
        return i if i < len(suids) and suids[i] == uid else None

    def _entry(self, uid: int) -> Entry | None:
        if uid in self._over:
            return self._over[uid]
        i = self._index(uid)
        return None if i is None else self._at(i)

    def _set(self, uid: int, entry: Entry) -> None:
        self._over[uid] = entry
        self._uid_cache = None

    def _unset(self, uid: int) -> None:
        if self._index(uid) is None:
            self._over.pop(uid, None)
        else:
            self._over[uid] = None
        self._uid_cache = None

    def _merged(self) -> Sequence[int]:
        """The view's UIDs (the snapshot's array itself while the overlay is empty: read only)."""
        if not self._over:
            return self._snap.uids
        if self._uid_cache is None:
            over = self._over
            kept = array("I", [u for u in self._snap.uids if over.get(u, ()) is not None])
            added = sorted(u for u, e in over.items() if e is not None and self._index(u) is None)
            if added and kept and added[0] < kept[-1]:
                kept = array("I", sorted([*kept, *added]))
            else:
                kept.extend(added)
            self._uid_cache = kept
        return self._uid_cache

    def _entry_of(self, msg: ops.Row) -> Entry:
        fid = self._core.flag_table.intern(msg.info, msg.keywords)
        return (fid, msg.size, msg.internaldate, msg.modseq, msg.base)

    def _meta(self, uid: int, entry: Entry) -> MessageMeta:
        fid, size, date, modseq, base = entry
        table = self._core.flag_table
        return make_meta(uid, table.flags[fid], size, date, modseq, self._snap.cur,
                         f"{base}:2,{table.infos[fid]}")

    def _stale(self, found: dict[int, ops.Row], failed: list[int]) -> list[ops.Row]:
        """Rule 11: the rows (as a STORE found them) the view had an older state of; those
        refused by UNCHANGEDSINCE are left for ``sync`` to report."""
        refused = set(failed)
        out = []
        for uid, msg in sorted(found.items()):
            have = self._entry(uid)
            if have is not None and have[3] != msg.modseq and uid not in refused:
                out.append(msg)
        return out

    def _apply_rows(self, rows: list[ops.Row]) -> list[MessageMeta]:
        out = []
        for msg in rows:
            entry = self._entry_of(msg)
            self._set(msg.uid, entry)
            out.append(self._meta(msg.uid, entry))
        return out

    def _drop(self, uids: list[int]) -> list[int]:
        for uid in uids:
            self._unset(uid)
            self._recent.discard(uid)
        return sorted(uids)

    def _delta(self, row: FolderRow, conn: sqlite3.Connection) -> tuple[list[Any], list[int]]:
        """The index rows and tombstones above the view's MODSEQ, up to ``row`` (fresh from the
        index), shared by the views at the same state (Rule 11). Under the account lock with
        the index's connection, or under the reader's lock with its own (Rule 13)."""
        core = self._core
        key = (row.uidvalidity, self.highestmodseq, row.highestmodseq, row.uidnext)
        got = core.deltas.get(self._id)
        if got is not None and got[0] == key:
            return got[1], got[2]
        rows = conn.execute(f"SELECT {ops.ROW_COLS} FROM message WHERE folder=? AND modseq>? "
                            "ORDER BY uid", (self._id, self.highestmodseq)).fetchall()
        gone = [int(u) for (u,) in conn.execute(
            "SELECT uid FROM expunged WHERE folder=? AND modseq>? ORDER BY uid", (self._id, self.highestmodseq))]
        if len(rows) + len(gone) <= DELTA_SHARED_MAX:
            core.deltas[self._id] = (key, rows, gone)
        return rows, gone

    def _claim_recent(self, uids: list[int], row: FolderRow | None = None) -> bool:
        """Rule 4; ``row``: the folder's row, read under the lock held since (else read now).
        True when this view claimed some (the folder's ``recent_uid`` moved)."""
        if not uids:
            return False
        if row is not None and (self.readonly or max(uids) < row.recent_uid):  # nothing to write: no lock
            self._recent.update(u for u in uids if u >= row.recent_uid)
            return False
        with self._core.lock:
            row = row or self._core.row_by_id(self._id)
            fresh = [u for u in uids if u >= row.recent_uid]
            self._recent.update(fresh)
            if fresh and not self.readonly:
                try:
                    with self._core.index.write(durable=False) as conn:  # Rule 14
                        conn.execute("UPDATE folder SET recent_uid=max(recent_uid, ?) WHERE id=?",
                                     (max(fresh) + 1, self._id))
                except sqlite3.Error as exc:
                    if not disk_full(exc):
                        raise
                    self._core.index.degraded("the \\Recent claim was not recorded", exc)  # Rule 9
            return bool(fresh) and not self.readonly

    def _resolve(self, uid: int, force: bool = False) -> tuple[Path | str, files.Form]:
        """The file of a message and how to read it (``files`` Rules 2 and 5).

        First from the view itself (no lock, no query): the name it last knew. Callers retry
        with ``force`` on ``FileNotFoundError``: the file was renamed (flags changed by another
        session, the folder renamed) or removed, and the index, rescanned, has the truth."""
        if not force:
            entry = self._entry(uid)
            if entry is not None:
                base = entry[4]
                name = cur_name(base, self._core.flag_table.infos[entry[0]])
                return os.path.join(self._snap.cur, name), files.form_of(base)
        core = self._core
        with core.lock:
            row = core.row_by_id(self._id)
            if force:
                row = core.rescan(row, force=True)
            r = core.index.conn.execute("SELECT base, info FROM message WHERE folder=? AND uid=?",
                                        (self._id, uid)).fetchone()
            if r is None:
                raise MailboxError("EXPUNGEISSUED", f"message {uid} has been expunged")
            base, info = str(r[0]), str(r[1])
            path = core.message_path(row, base, info)
        return path, files.form_of(base)


def sync_views(views: Sequence[Mailbox], since: float) -> list[Changes | Exception]:
    """Rule 12: ``sync(since)`` of each view, in order; the views of one folder (runs of
    ``views`` with the same account core and folder) share the lock, the row and the scan."""
    out: list[Changes | Exception] = []
    i = 0
    while i < len(views):
        first = views[i]
        j = i + 1
        while j < len(views) and views[j]._core is first._core and views[j]._id == first._id:
            j += 1
        out.extend(first._sync_with(views[i + 1:j], since))
        i = j
    return out
