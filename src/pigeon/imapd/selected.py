"""The selected mailbox of a session: the client's sequence-number map and untagged updates.

Rules:
1. ``uids`` is the mailbox as the client has been told it: message sequence number n is
   ``uids[n-1]`` (RFC 3501 §2.3.1.2). It changes only when an EXISTS, EXPUNGE or VANISHED
   response is written, so every number the client sends or receives means what it thinks.
2. The store's view (``Mailbox``) applies others' expunges as soon as ``sync()`` sees them; the
   session may not tell the client during FETCH, STORE and SEARCH (RFC 3501 §7.4.1, RFC 9051
   §7.5.1). Such UIDs wait in ``pending`` (still in ``uids``, their data gone: ``meta`` is None)
   until a command that may report them.
3. Expunges are reported as ``* n EXPUNGE`` in descending order (each response shifts only the
   numbers above it, RFC 3501 §7.4.1), or as one ``* VANISHED uid-set`` when QRESYNC is enabled
   (RFC 7162 §3.2.10). New messages: ``* n EXISTS`` (+ ``* n RECENT`` for IMAP4rev1). Flag
   changes by others: ``* n FETCH (FLAGS (...))``, with UID when QRESYNC is on (RFC 7162 §3.2.4)
   and MODSEQ when CONDSTORE is (RFC 7162 §3.1.4.1).
4. Every store call that may block runs in a worker thread (``asyncio.to_thread``); the sync
   after a command runs in the event loop when it cannot block (``Mailbox.sync_nowait``, view
   Rule 13), else in a worker thread with the other sessions of the folder (``syncbatch``).
5. A keyword the client has not been told of (``keywords``, first set by SELECT) is announced
   with ``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` before any FETCH or EXISTS that could show
   it, whether this session stored it or another session, process or APPEND did (RFC 3501
   §7.2.6: FLAGS lists the flags applicable to the mailbox).

What can go wrong: ``MailboxError("NONEXISTENT")`` from ``sync`` when the folder was deleted or
renamed away; the session then ends with ``* BYE`` (RFC 3501 §7.1.5).
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pigeon.imapd.syncbatch import SyncBatches
from pigeon.proto.imap.errors import SeqSetError
from pigeon.proto.imap.seqset import SeqSet, compact
from pigeon.store.mailbox import Changes, Mailbox, MessageMeta

#: \Recent is a session flag, never stored (RFC 3501 §2.3.2).
RECENT = "\\Recent"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@dataclass
class Modes:
    """What the client enabled or implied (RFC 5161 ENABLE, RFC 7162 §3.1 / §3.2.3)."""

    condstore: bool = False
    qresync: bool = False
    utf8: bool = False  # UTF8=ACCEPT (RFC 6855)
    rev2: bool = False  # IMAP4rev2 (RFC 9051 §6.3.1)


class Selected:
    """One selected mailbox (rules 1-3)."""

    def __init__(self, mailbox: Mailbox, modes: Modes) -> None:
        self.mailbox = mailbox
        self.modes = modes
        self.readonly = mailbox.readonly
        self.uids: array[int] = mailbox.uids()  # 4 octets per message (rule 1)
        self.pending: set[int] = set()
        self._flag_bytes: dict[int, bytes] = {}  # flag-set id * 2 + recent → b"(...)"
        self.keywords: set[str] = set()  # rule 5: the keywords the client has been told of

    # -- numbers ----------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def seqs_of(self, uids: Sequence[int]) -> Sequence[int | None]:
        """``seq_of`` of ascending UIDs; a run of the map (FETCH 1:*) costs two lookups."""
        if uids:
            first = self.seq_of(uids[0])
            if first is not None:
                last = first + len(uids) - 1
                if last <= len(self.uids) and self.uids[last - 1] == uids[-1]:
                    return range(first, last + 1)
        return [self.seq_of(u) for u in uids]

    def resolve(self, sequence: SeqSet, uid: bool, saved: Sequence[int] | None) -> list[int]:
        """The UIDs a set names, ascending. ``saved``: the SEARCHRES result (RFC 5182), as UIDs.

        Message numbers over the count are an error (``SeqSetError``, the session answers BAD);
        unknown UIDs are ignored (RFC 3501 §6.4.8)."""
        if sequence.saved:
            if saved is None:
                return []
            present = set(self.uids)
            return sorted(u for u in saved if u in present)
        if uid:
            return sequence.resolve_uids(self.uids)
        if not self.uids:
            raise SeqSetError("the mailbox is empty")
        uids = self.uids
        return [uids[n - 1] for n in sequence.resolve_seq(len(uids))]

    def meta(self, uid: int) -> MessageMeta | None:
        """The message's data, None when it has been expunged (rule 2)."""
        if uid in self.pending:
            return None
        return self.mailbox.get(uid)

    def live(self, uids: Iterable[int]) -> list[MessageMeta]:
        out = []
        for u in uids:
            m = self.meta(u)
            if m is not None:
                out.append(m)
        return out

    # -- responses --------------------------------------------------------------------------

    def flags(self, meta: MessageMeta) -> bytes:
        flags = sorted(meta.flags)
        if self.mailbox.is_recent(meta.uid):
            flags.append(RECENT)
        return b"(" + " ".join(flags).encode("utf-8") + b")"

    def flag_bytes(self, uid: int, flag_id: int) -> bytes:
        """``flags`` from a flag-set id (``Mailbox.rows``): one cached value per distinct set."""
        recent = self.mailbox.is_recent(uid)
        key = flag_id * 2 + recent
        out = self._flag_bytes.get(key)
        if out is None:
            text = self.mailbox.flag_text(flag_id)
            if recent:
                text = text + b" " + RECENT.encode() if text else RECENT.encode()
            out = self._flag_bytes[key] = b"(" + text + b")"
        return out

    def flag_fetch(self, meta: MessageMeta, with_uid: bool) -> bytes:
        """``* n FETCH (FLAGS (...))`` for a changed message (rule 3)."""
        seq = self.seq_of(meta.uid) or 0
        items = []
        if with_uid or self.modes.qresync:
            items.append(b"UID %d" % meta.uid)
        items.append(b"FLAGS " + self.flags(meta))
        if self.modes.condstore:
            items.append(b"MODSEQ (%d)" % meta.modseq)
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items))

    def flags_lines(self) -> bytes:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` for the flags known to the client (rule 5)."""
        flags = list(SYSTEM_FLAGS) + sorted(self.keywords)
        perm = "" if self.readonly else " ".join(flags + ["\\*"])
        return (b"* FLAGS (" + " ".join(flags).encode("utf-8") + b")\r\n"
                + f"* OK [PERMANENTFLAGS ({perm})] Flags permitted\r\n".encode())

    def announce(self, metas: Iterable[MessageMeta]) -> bytes:
        """Rule 5: the FLAGS lines when ``metas`` carry a keyword the client was not told of."""
        fresh = {f for m in metas for f in m.flags if not f.startswith("\\")} - self.keywords
        if not fresh:
            return b""
        self.keywords |= fresh
        return self.flags_lines()

    def expunged(self, gone: Iterable[int]) -> bytes:
        """Report ``gone`` (and every pending expunge) and drop them from the map (rule 3)."""
        dead = self.pending | set(gone)
        self.pending = set()
        dead &= set(self.uids)
        if not dead:
            return b""
        if self.modes.qresync:
            out = b"* VANISHED " + compact(dead).encode("ascii") + b"\r\n"
        else:
            parts = []
            for uid in sorted(dead, reverse=True):
                seq = self.seq_of(uid)
                if seq is not None:
                    parts.append(b"* %d EXPUNGE\r\n" % seq)
                    del self.uids[seq - 1]
            return b"".join(parts)
        self.uids = array("I", [u for u in self.uids if u not in dead])
        return out

    def exists_lines(self) -> bytes:
        out = b"* %d EXISTS\r\n" % len(self.uids)
        if not self.modes.rev2:  # RFC 9051 §7.4: no RECENT in IMAP4rev2
            out += b"* %d RECENT\r\n" % self.mailbox.recent
        return out

    async def updates(self, allow_expunge: bool, syncs: SyncBatches | None = None) -> bytes:
        """Pick up deliveries and others' changes; the untagged responses allowed now. With
        ``syncs``, in one thread hop with the other sessions of the folder (``syncbatch``)."""
        got = self.mailbox.sync_nowait(self.mailbox.tick()) if syncs is not None else None
        if got is not None:  # rule 4: on the loop when nothing can block (view Rule 13)
            changes = got
        elif syncs is not None:
            changes = await syncs.sync(self.mailbox)
        else:
            changes = await asyncio.to_thread(self.mailbox.sync, self.mailbox.tick())
        return self.apply(changes, allow_expunge)

    def apply(self, changes: Changes, allow_expunge: bool) -> bytes:
        """The untagged responses for ``changes`` (what ``mailbox.sync`` returned), with the
        client's map moved along (rules 1-3, 5); on the loop, never while a command of this
        session runs (``idlewake`` calls it for a session waiting in IDLE)."""
        self.pending.update(u for u in changes.expunged if self.seq_of(u) is not None)
        out = bytearray()
        if allow_expunge and self.pending:
            out += self.expunged(())
        out += self.announce([*changes.new, *changes.changed])  # rule 5: before any FETCH
        if changes.new:
            known = set(self.uids)
            fresh = [m.uid for m in changes.new if m.uid not in known]
            if fresh:
                fresh.sort()
                if self.uids and fresh[0] < self.uids[-1]:
                    self.uids = array("I", sorted([*self.uids, *fresh]))
                else:
                    self.uids.extend(fresh)
                out += self.exists_lines()
        for meta in changes.changed:
            if meta.uid not in self.pending and self.seq_of(meta.uid) is not None:
                out += self.flag_fetch(meta, with_uid=False)
        return bytes(out)

    async def close(self) -> None:
        await asyncio.to_thread(self.mailbox.close)
