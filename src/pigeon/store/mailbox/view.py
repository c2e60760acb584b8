"""One selected view of a folder (one per IMAP or POP3 session).

Rules:
1. A view is a snapshot: ``messages()`` changes only when the view itself changes something
   or when ``sync()`` is called; sequence number = index + 1 in UID order (RFC 3501 §2.3.1.2).
2. ``sync()`` scans the folder (cheap when nothing changed), then reads only the index rows
   with a MODSEQ above the view's last one, and tombstones likewise. A row the view already
   has with the same MODSEQ is the view's own change and is not reported again.
3. ``highestmodseq`` and ``uidnext`` move only in ``sync()``: the view never claims to have
   seen changes by others that it has not yet reported (RFC 7162 §3.1.2.1).
4. ``\\Recent`` (RFC 3501 §2.3.2): the first read-write view to see a message gets it; the
   folder remembers the first UID no view has claimed (``recent_uid``). Read-only views
   (EXAMINE) see the same set without claiming it.
5. Read-only views refuse every change with ``MailboxError("CANNOT")``; COPY from them works.
6. All methods are safe to call from worker threads; the account lock serialises them.

What can go wrong: ``MailboxError("NONEXISTENT")`` when the folder was deleted or renamed
away under the view (the IMAP session should then end with BYE); ``MailboxError
("EXPUNGEISSUED")`` from ``read`` when the message was expunged by someone else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pigeon.store.mailbox import files, ops
from pigeon.store.mailbox.context import AccountCore
from pigeon.store.mailbox.flags import imap_flags
from pigeon.store.mailbox.folders import normalize
from pigeon.store.mailbox.index import FolderRow
from pigeon.store.mailbox.model import Changes, MailboxError, MessageMeta, make_meta

log = logging.getLogger(__name__)

MAX_CACHE_VALUE = 1024 * 1024  # octets; an ENVELOPE/BODYSTRUCTURE of a sane message is far smaller


class Mailbox:
    """A selected view (Rules 1-6)."""

    def __init__(self, core: AccountCore, row: FolderRow, readonly: bool) -> None:
        self._core = core
        self._id = row.id
        self.name = row.name
        self.readonly = readonly
        self.uidvalidity = row.uidvalidity
        self.uidnext = row.uidnext
        self.highestmodseq = row.highestmodseq
        self._flags_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._meta: dict[int, MessageMeta] = {}
        self._list: list[MessageMeta] | None = None
        self._recent: set[int] = set()
        self._closed = False
        cur = core.path(row.name) / "cur"
        rows = core.index.conn.execute(
            f"SELECT {ops.ROW_COLS} FROM message WHERE folder=? ORDER BY uid", (row.id,)).fetchall()
        to_meta = self._meta_of
        self._meta = {r[0]: to_meta(cur, *r) for r in rows}
        self._claim_recent(list(self._meta))
        core.open_views += 1

    # -- the view ----------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The folder's directory (the key of its change notices, ``store.changes``)."""
        return self._core.path(self.name)

    def messages(self) -> list[MessageMeta]:
        if self._list is None:
            self._list = [self._meta[u] for u in sorted(self._meta)]
        return list(self._list)

    def get(self, uid: int) -> MessageMeta | None:
        """The view's metadata of one message (added to the contract)."""
        return self._meta.get(uid)

    @property
    def recent(self) -> int:
        """How many messages of the view are \\Recent to this session (Rule 4)."""
        return len(self._recent)

    def is_recent(self, uid: int) -> bool:
        return uid in self._recent

    def sync(self) -> Changes:
        """Rule 2."""
        core = self._core
        with core.lock:
            row = core.rescan(core.row_by_id(self._id))
            if row.highestmodseq == self.highestmodseq and row.uidnext == self.uidnext:
                return Changes([], [], [])
            conn = core.index.conn
            cur = core.path(row.name) / "cur"
            new: list[MessageMeta] = []
            changed: list[MessageMeta] = []
            for r in conn.execute(f"SELECT {ops.ROW_COLS} FROM message WHERE folder=? AND modseq>? "
                                  "ORDER BY uid", (self._id, self.highestmodseq)):
                msg = ops.Row(*r)
                have = self._meta.get(msg.uid)
                if have is not None:
                    if have.modseq == msg.modseq:
                        continue  # Rule 2: our own change
                    meta = self._to_meta(cur, msg)
                    self._meta[msg.uid] = meta
                    if meta.flags != have.flags:
                        changed.append(meta)
                elif msg.uid >= self.uidnext:
                    meta = self._to_meta(cur, msg)
                    self._meta[msg.uid] = meta
                    new.append(meta)
            expunged = [u for (u,) in conn.execute(
                "SELECT uid FROM expunged WHERE folder=? AND modseq>? ORDER BY uid",
                (self._id, self.highestmodseq)) if u in self._meta]
            for uid in expunged:
                del self._meta[uid]
                self._recent.discard(uid)
            self._claim_recent([m.uid for m in new])
            self.highestmodseq = row.highestmodseq
            self.uidnext = row.uidnext
            if new or expunged or changed:
                self._list = None
            return Changes(new, expunged, changed)

    # -- changes -----------------------------------------------------------------------------

    def store(self, uids: Sequence[int], mode: Literal["set", "add", "remove"], flags: frozenset[str],
              unchangedsince: int | None = None) -> tuple[list[MessageMeta], list[int]]:
        """STORE on messages of the view; returns (changed, failed UNCHANGEDSINCE uids).

        Messages not in the view, or expunged by others meanwhile, are skipped silently.
        """
        self._writable()
        with self._core.lock:
            mine = [u for u in uids if u in self._meta]
            rows, failed = ops.store(self._core, self._id, mine, mode, flags, unchangedsince)
            changed = self._apply_rows(rows)
        if changed:
            self._core.notify(self.name)
        return changed, failed

    def expunge(self, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the view's messages flagged \\Deleted (of ``uids`` when given); ascending UIDs."""
        self._writable()
        with self._core.lock:
            mine = sorted(self._meta) if uids is None else [u for u in uids if u in self._meta]
            gone = self._drop(ops.remove(self._core, self._id, mine, only_deleted=True))
        if gone:
            self._core.notify(self.name)
        return gone

    def remove(self, uids: Sequence[int]) -> list[int]:
        """Remove messages whatever their flags (POP3 DELE at QUIT)."""
        self._writable()
        with self._core.lock:
            mine = [u for u in uids if u in self._meta]
            gone = self._drop(ops.remove(self._core, self._id, mine, only_deleted=False))
        if gone:
            self._core.notify(self.name)
        return gone

    def copy(self, uids: Sequence[int], dest: str) -> tuple[int, list[tuple[int, int]]]:
        with self._core.lock:
            mine = [u for u in uids if u in self._meta]
            result = ops.transfer(self._core, self._id, mine, normalize(dest), move=False)
        self._core.notify(normalize(dest))
        return result

    def move(self, uids: Sequence[int], dest: str) -> tuple[int, list[tuple[int, int]]]:
        """MOVE (RFC 6851): the moved UIDs leave this view at once (they are the expunges)."""
        self._writable()
        with self._core.lock:
            mine = [u for u in uids if u in self._meta]
            result = ops.transfer(self._core, self._id, mine, normalize(dest), move=True)
            self._drop([s for s, _ in result[1]])
        self._core.notify(self.name)
        self._core.notify(normalize(dest))
        return result

    # -- content -----------------------------------------------------------------------------

    def read(self, uid: int) -> bytes:
        path, ours = self._resolve(uid)
        try:
            return files.read_all(path, ours)
        except FileNotFoundError:
            path, ours = self._resolve(uid, force=True)
            return files.read_all(path, ours)

    def read_header(self, uid: int) -> bytes:
        path, ours = self._resolve(uid)
        try:
            return files.read_header(path, ours)
        except FileNotFoundError:
            path, ours = self._resolve(uid, force=True)
            return files.read_header(path, ours)

    def cache_get(self, uid: int, key: str) -> bytes | None:
        with self._core.lock:
            r = self._core.index.conn.execute(
                "SELECT value FROM cache WHERE folder=? AND uid=? AND key=?", (self._id, uid, key)).fetchone()
        return bytes(r[0]) if r else None

    def cache_put(self, uid: int, key: str, value: bytes) -> None:
        if len(value) > MAX_CACHE_VALUE:
            log.info("not caching %s of uid %d: %d octets", key, uid, len(value))
            return
        with self._core.lock, self._core.index.write(durable=False) as conn:
            conn.execute("INSERT OR REPLACE INTO cache(folder, uid, key, value) SELECT ?,?,?,? "
                         "WHERE EXISTS (SELECT 1 FROM message WHERE folder=? AND uid=?)",
                         (self._id, uid, key, value, self._id, uid))

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

    def _to_meta(self, cur: Path, msg: ops.Row) -> MessageMeta:
        return self._meta_of(cur, msg.uid, msg.base, msg.info, msg.keywords, msg.modseq,
                             msg.internaldate, msg.size)

    def _meta_of(self, cur: Path, uid: int, base: str, info: str, keywords: str, modseq: int,
                 internaldate: float, size: int) -> MessageMeta:
        key = (info, keywords)
        flags = self._flags_cache.get(key)
        if flags is None:
            flags = self._flags_cache[key] = imap_flags(info, keywords)
        return make_meta(uid, flags, size, internaldate, modseq, cur, f"{base}:2,{info}")

    def _apply_rows(self, rows: list[ops.Row]) -> list[MessageMeta]:
        cur = self._core.path(self.name) / "cur"
        out = []
        for msg in rows:
            meta = self._to_meta(cur, msg)
            self._meta[msg.uid] = meta
            out.append(meta)
        if out:
            self._list = None
        return out

    def _drop(self, uids: list[int]) -> list[int]:
        for uid in uids:
            self._meta.pop(uid, None)
            self._recent.discard(uid)
        if uids:
            self._list = None
        return sorted(uids)

    def _claim_recent(self, uids: list[int]) -> None:
        if not uids:
            return
        with self._core.lock:
            row = self._core.row_by_id(self._id)
            fresh = [u for u in uids if u >= row.recent_uid]
            self._recent.update(fresh)
            if fresh and not self.readonly:
                with self._core.index.write() as conn:
                    conn.execute("UPDATE folder SET recent_uid=max(recent_uid, ?) WHERE id=?",
                                 (max(fresh) + 1, self._id))

    def _resolve(self, uid: int, force: bool = False) -> tuple[Path, bool]:
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
        return path, files.has_crlf_size(base)
