"""APPEND with MULTIAPPEND (RFC 3501 §6.3.11, RFC 3502), UIDPLUS (RFC 4315) and APPENDLIMIT (RFC 7889).

Rules:
1. Each message is committed by the store (fsynced, indexed) before the next is written; the
   tagged OK carries ``[APPENDUID uidvalidity uid-set]`` (RFC 4315 §3).
2. MULTIAPPEND is all or nothing (RFC 3502 §6.3.11): when one message fails, those already
   appended by this command are removed again before the NO.
3. A message over the limit is ``NO [TOOBIG]`` (RFC 7889 §4; literals over the limit are refused
   by the core before they are read); a missing mailbox ``NO [TRYCREATE]``; an empty message
   ``NO`` (it cannot be a valid RFC 5322 message). \\Recent in the flags is ignored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pigeon.imapd.replies import Done, mailbox_error, no, ok
from pigeon.imapd.selected import RECENT
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import Account, MailboxError

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

log = logging.getLogger(__name__)


def _undo(account: Account, name: str, uids: list[int]) -> None:
    """Rule 2, in a worker thread: best effort, logged when it fails."""
    try:
        box = account.select(name)
        try:
            box.remove(uids)
        finally:
            box.close()
    except Exception:
        log.exception("imap: could not undo a partial MULTIAPPEND of %d messages to %r", len(uids), name)


async def append(s: ImapSession, cmd: c.Append) -> Done:
    name = s.name_in(cmd.mailbox)
    account = s.acct()
    limit = account.max_append()
    uids: list[int] = []
    validity = 0
    for msg in cmd.messages:
        failure = None
        if not msg.data:
            failure = no("Empty message")
        elif len(msg.data) > limit:
            failure = no(f"Message larger than {limit} octets", "TOOBIG")  # RFC 7889
        else:
            flags = frozenset(f for f in msg.flags if f != RECENT)
            when = msg.internaldate.timestamp() if msg.internaldate is not None else None
            try:
                validity, uid = await asyncio.to_thread(account.append, name, msg.data, flags, when)
                uids.append(uid)
                continue
            except MailboxError as exc:
                failure = no(exc.text, "TOOBIG") if exc.code == "LIMIT" else mailbox_error(exc, trycreate=True)
        if uids:
            await asyncio.to_thread(_undo, account, name, uids)
        return failure
    return ok("APPEND completed", f"APPENDUID {validity} {compact(uids)}")
