"""SELECT, EXAMINE (with CONDSTORE and QRESYNC), CLOSE, UNSELECT, EXPUNGE and UID EXPUNGE.

Rules:
1. SELECT/EXAMINE first leave the selected mailbox (``* OK [CLOSED]``, RFC 7162 §3.2.11 and
   RFC 9051 §6.3.2); when the new one cannot be opened the session stays authenticated
   (RFC 3501 §6.3.1).
2. The answer (RFC 3501 §6.3.1, RFC 9051 §6.3.2): FLAGS, PERMANENTFLAGS (``\\*``: keywords may
   be created; empty when read-only), EXISTS, RECENT (IMAP4rev1 only), UNSEEN (IMAP4rev1 only),
   UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ (RFC 7162 §3.1.2.1), then ``[READ-WRITE]`` or
   ``[READ-ONLY]`` in the tagged OK.
3. QRESYNC (RFC 7162 §3.2.5): when the client's UIDVALIDITY matches, ``* VANISHED (EARLIER)``
   for the UIDs expunged since its MODSEQ (only those among its known UIDs when given) and
   ``FETCH (UID FLAGS MODSEQ)`` for every message changed since.
4. CLOSE expunges silently (no untagged EXPUNGE, RFC 3501 §6.4.2) unless read-only; UNSELECT
   (RFC 3691) does not expunge.
5. EXPUNGE reports what it removed plus what others removed (``selected`` rule 3); UID EXPUNGE
   (RFC 4315 §2.1) removes only the named \\Deleted messages.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pigeon.imapd.replies import READ_ONLY, Done, bad, ok
from pigeon.imapd.selected import SYSTEM_FLAGS, Selected
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import Mailbox

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

def _summary(mailbox: Mailbox) -> tuple[list[str], int | None]:
    """In a worker thread: the flags in use and the first unseen sequence number."""
    keywords, first_unseen = mailbox.summary()
    return list(SYSTEM_FLAGS) + keywords, first_unseen


async def select(s: ImapSession, cmd: c.Select) -> Done:
    name = s.name_in(cmd.mailbox)
    if cmd.qresync is not None and not s.modes.qresync:
        return bad("QRESYNC must be enabled first")  # RFC 7162 §3.2.5
    if cmd.condstore:
        s.enable_condstore()
    old = s.detach()
    if old is not None:
        s.emit(b"* OK [CLOSED] Previous mailbox closed\r\n")  # rule 1
    account, modes = s.acct(), s.modes

    def open_() -> tuple[Mailbox, list[str], int | None, Selected]:
        """One worker-thread call: close the old view, open the new one, summarise it."""
        if old is not None:
            old.mailbox.close()
        mailbox = account.select(name, cmd.readonly)
        try:
            flags, first_unseen = _summary(mailbox)
            return mailbox, flags, first_unseen, Selected(mailbox, modes)
        except BaseException:
            mailbox.close()
            raise

    mailbox, flags, first_unseen, sel = await asyncio.to_thread(open_)
    s.select(sel)
    sel.keywords = {f for f in flags if not f.startswith("\\")}  # selected rule 5
    s.emit(sel.flags_lines())
    s.emit(sel.exists_lines())
    if first_unseen is not None and not s.modes.rev2:
        s.emit(b"* OK [UNSEEN %d] First unseen\r\n" % first_unseen)
    s.emit(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % mailbox.uidvalidity)
    s.emit(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % mailbox.uidnext)
    s.emit(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % mailbox.highestmodseq)
    if cmd.qresync is not None and cmd.qresync.uidvalidity == mailbox.uidvalidity:
        await _qresync(s, sel, cmd.qresync)
    verb = "EXAMINE" if cmd.readonly else "SELECT"
    return ok(f"{verb} completed", "READ-ONLY" if mailbox.readonly else "READ-WRITE")


async def _qresync(s: ImapSession, sel: Selected, params: c.QresyncParams) -> None:
    """Rule 3."""
    gone = await asyncio.to_thread(sel.mailbox.expunged_since, params.modseq)
    known = params.known_uids
    if known is not None and gone:
        star = max(gone)
        gone = [u for u in gone if known.contains(u, star)]
    if gone:
        s.emit(b"* VANISHED (EARLIER) " + compact(gone).encode("ascii") + b"\r\n")
    for meta in await asyncio.to_thread(sel.mailbox.changed_since, params.modseq):
        s.emit(sel.flag_fetch(meta, with_uid=True))
        await s.drain()


async def close(s: ImapSession, cmd: c.Close) -> Done:
    sel = s.sel
    if sel is not None and not sel.readonly:
        await asyncio.to_thread(sel.mailbox.expunge)  # rule 4: silently
    await s.deselect()
    return ok("CLOSE completed")


async def unselect(s: ImapSession, cmd: c.Unselect) -> Done:
    await s.deselect()
    return ok("UNSELECT completed")


async def expunge(s: ImapSession, cmd: c.Expunge) -> Done:
    sel = s.sel
    if sel is None:  # pragma: no cover - the state table guarantees it
        return bad("No mailbox selected")
    if sel.readonly:
        return READ_ONLY
    uids = None if cmd.uids is None else sel.resolve(cmd.uids, True, s.saved)
    gone = await asyncio.to_thread(sel.mailbox.expunge, uids)
    s.emit(sel.expunged(gone))
    return ok("EXPUNGE completed")
