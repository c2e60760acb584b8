"""STORE, COPY and MOVE with their UID forms (RFC 3501 §6.4.6-7, RFC 6851, RFC 4315, RFC 7162).

Rules:
1. STORE changes flags of the named messages; \\Recent cannot be stored (RFC 3501 §2.3.2) and
   is ignored. Without .SILENT every named message gets ``* n FETCH (FLAGS ...)`` (UID for UID
   STORE, MODSEQ once CONDSTORE is on); with .SILENT and CONDSTORE the changed messages still get
   ``FETCH (MODSEQ ...)`` (RFC 7162 §3.1.3). UNCHANGEDSINCE failures are reported in
   ``OK [MODIFIED set]`` (message numbers, or UIDs for UID STORE).
2. A read-only mailbox (EXAMINE) refuses STORE and MOVE with ``NO [READ-ONLY]``.
3. COPY answers ``OK [COPYUID uidvalidity src dst]`` (RFC 4315 §3); MOVE sends it in an untagged
   OK before the expunges of the moved messages (RFC 6851 §4.3). A missing destination is
   ``NO [TRYCREATE]``. Source and destination UID sets are written in corresponding order.
4. Messages expunged by others meanwhile are skipped, with no FETCH of their old flags; the
   tagged OK then says EXPUNGEISSUED (RFC 2180 §4.2.1, RFC 5530 §3).
5. The FETCH of a STORE shows the flags the message has after it (RFC 3501 §6.4.6), also
   when another session changed it since this one last looked, even to the very flags
   stored (the STORE then writes nothing). The view takes such a change in during the STORE
   (``view`` Rule 11) and it is reported here, not by the next sync; with ``.SILENT`` too,
   since the client does not know of it (RFC 3501 §7.4.1: a server may send unsolicited
   FETCH responses of flag changes during STORE).
6. A STORE of at most ``INLINE_STORE`` messages runs on the event loop when nothing makes it
   wait (``view`` Rule 16: the account lock free, no scan due, no flush); otherwise
   (``WouldWait``, nothing changed) in a worker thread. Why: the thread hop cost more CPU
   than the STORE (issue 18, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from pigeon.imapd.replies import READ_ONLY, Done, bad, mailbox_error, ok
from pigeon.imapd.selected import RECENT, Selected
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import MailboxError, MessageMeta, WouldWait

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession


#: Rule 6: messages a STORE may change on the event loop: a rename (~10 µs) and an index row
#: each, so at most ~1 ms of the loop's time; a bigger STORE goes to a worker thread.
INLINE_STORE: Final = 64


def _selected(s: ImapSession) -> Selected:
    if s.sel is None:  # pragma: no cover - the state table guarantees it
        raise RuntimeError("no mailbox selected")
    return s.sel


def uid_list(nums: list[int]) -> str:
    """Rule 3: compact ranges when ascending, else the numbers in the given order."""
    if all(a < b for a, b in zip(nums, nums[1:], strict=False)):
        return compact(nums)
    return ",".join(str(n) for n in nums)


async def store(s: ImapSession, cmd: c.Store) -> Done:
    sel = _selected(s)
    if sel.readonly:
        return READ_ONLY
    uids = sel.resolve(cmd.sequence, cmd.uid, s.saved)
    if cmd.unchangedsince is not None:
        s.enable_condstore()
    flags = frozenset(f for f in cmd.flags if f != RECENT)
    live = [m.uid for m in sel.live(uids)]
    gone: list[int] = []
    refreshed: list[MessageMeta] = []  # rule 5
    try:
        if len(live) > INLINE_STORE:
            raise WouldWait("a big STORE")
        changed, failed = sel.mailbox.store(live, cmd.mode, flags, cmd.unchangedsince, gone, refreshed,
                                            wait=False)  # rule 6
    except WouldWait:
        changed, failed = await asyncio.to_thread(sel.mailbox.store, live, cmd.mode, flags,
                                                  cmd.unchangedsince, gone, refreshed)
    failed_set = set(failed) | set(gone)  # rule 4: no FETCH of stale flags for a gone message
    s.emit(sel.announce([*changed, *refreshed]))  # selected rule 5: before the FETCH showing it
    if not cmd.silent:
        for meta in sel.live(live):  # rule 5: the flags after the STORE, whoever set them
            if meta.uid not in failed_set:
                s.emit(sel.flag_fetch(meta, with_uid=cmd.uid))
        await s.drain()
    else:
        told = {m.uid for m in refreshed}
        for meta in refreshed:  # rule 5: another session's change, taken in by this STORE
            if sel.seq_of(meta.uid) is not None:
                s.emit(sel.flag_fetch(meta, with_uid=cmd.uid))
        for meta in changed if s.modes.condstore else ():
            seq = sel.seq_of(meta.uid)
            if seq is not None and meta.uid not in told:
                uid = b"UID %d " % meta.uid if cmd.uid or s.modes.qresync else b""
                s.emit(b"* %d FETCH (%sMODSEQ (%d))\r\n" % (seq, uid, meta.modseq))
    if failed:
        nums = failed if cmd.uid else [sel.seq_of(u) or 0 for u in failed]
        return ok("Some messages were modified meanwhile", f"MODIFIED {compact(nums)}")  # RFC 7162 §3.1.3
    if len(live) < len(uids) or gone:
        return ok("Some messages were expunged meanwhile", "EXPUNGEISSUED")  # RFC 2180 §4.2.1
    return ok("STORE completed")


async def _transfer(s: ImapSession, cmd: c.Copy | c.Move, move: bool) -> Done:
    sel = _selected(s)
    verb = "MOVE" if move else "COPY"
    if move and sel.readonly:
        return READ_ONLY
    uids = sel.resolve(cmd.sequence, cmd.uid, s.saved)
    live = [m.uid for m in sel.live(uids)]
    dest = s.name_in(cmd.mailbox)
    if not live:
        if uids:
            return ok("Messages were expunged meanwhile", "EXPUNGEISSUED")
        return ok(f"{verb} completed, no messages")  # RFC 4315 §3: no COPYUID for nothing
    fn = sel.mailbox.move if move else sel.mailbox.copy
    try:
        validity, pairs = await asyncio.to_thread(fn, live, dest)
    except MailboxError as exc:
        return mailbox_error(exc, trycreate=True)
    code = None
    if pairs:
        code = f"COPYUID {validity} {uid_list([p[0] for p in pairs])} {uid_list([p[1] for p in pairs])}"
    if not move:
        return ok("COPY completed", code)
    if code is not None:
        s.emit(f"* OK [{code}] Moved\r\n".encode("ascii"))
    s.emit(sel.expunged(p[0] for p in pairs))
    return ok("MOVE completed")


async def copy(s: ImapSession, cmd: c.Copy) -> Done:
    return await _transfer(s, cmd, move=False)


async def move(s: ImapSession, cmd: c.Move) -> Done:
    if s.sel is None:  # pragma: no cover
        return bad("No mailbox selected")
    return await _transfer(s, cmd, move=True)
