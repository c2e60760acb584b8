"""Mailbox commands: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, NAMESPACE, STATUS.

Rules:
1. Names arrive in modified UTF-7 unless the client enabled UTF8=ACCEPT (RFC 3501 §5.1.3,
   RFC 6855 §3) and go out the same way; the store sees UTF-8 with "/" as the separator.
   A name the store refuses (``..``, paths, control characters) is ``NO`` with its code.
2. LIST (RFC 3501 §6.3.8, RFC 5258): ``*`` matches anything, ``%`` anything but the separator;
   INBOX matches case-insensitively. ``LIST "" ""`` answers the separator with a \\Noselect
   empty name. Every response carries \\HasChildren/\\HasNoChildren (RFC 3348) and the
   special-use attribute (RFC 6154 §2); \\Subscribed with RETURN (SUBSCRIBED) or the SUBSCRIBED
   selection, which also lists subscribed names that do not exist as \\NonExistent
   (RFC 5258 §3.1); RECURSIVEMATCH adds CHILDINFO for parents of subscribed names. RETURN
   (STATUS ...) follows each selectable name with its STATUS (RFC 5819 §2).
   Matching is ``proto.imap.listmatch`` (linear, no backtracking); reading the folders and
   matching them run in a worker thread, never on the event loop, and the work is bounded by
   the parser's pattern limits and the store's ``MAX_FOLDERS``/``MAX_SUBSCRIPTIONS``.
3. STATUS (RFC 3501 §6.3.10) answers the items in the client's order; SIZE (RFC 8438) and
   HIGHESTMODSEQ (RFC 7162 §3.1.6, which enables CONDSTORE) included.
4. DELETE of the selected mailbox first closes it (``* OK [CLOSED]``, RFC 7162 §3.2.11), so the
   session does not end with BYE at the next update.
5. A name that is not valid modified UTF-7 (``&`` not followed by a valid shift sequence)
   names no mailbox: every name Pigeon sends is valid. So SELECT, STATUS, DELETE... of one is
   ``NO [NONEXISTENT]`` and CREATE/RENAME to one ``NO [CANNOT]`` (``session``), never ``BAD``:
   the command is well formed (RFC 3501 §9: the name is an astring); LIST and LSUB drop such
   a pattern, which matches nothing, and answer normally (issue 18).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pigeon.imapd.replies import Done, no, ok
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.errors import MUtf7Error
from pigeon.proto.imap.listmatch import ListMatcher
from pigeon.store.mailbox import SEPARATOR, Account, MailboxInfo, MailboxStatus

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

_SEP = SEPARATOR.encode("ascii")


def status_items(st: MailboxStatus, items: tuple[str, ...]) -> bytes:
    values = {
        "MESSAGES": st.messages, "RECENT": st.recent, "UIDNEXT": st.uidnext,
        "UIDVALIDITY": st.uidvalidity, "UNSEEN": st.unseen, "SIZE": st.size,
        "HIGHESTMODSEQ": st.highestmodseq, "DELETED": st.deleted,
    }
    return b"(" + b" ".join(f"{i} {values[i]}".encode("ascii") for i in items if i in values) + b")"


async def create(s: ImapSession, cmd: c.Create) -> Done:
    name = s.name_in(cmd.mailbox)
    if len(cmd.special_use) > 1:
        return no("Only one special-use attribute per mailbox", "USEATTR")
    use = cmd.special_use[0] if cmd.special_use else None
    await asyncio.to_thread(s.acct().create, name, use)
    return ok("CREATE completed")


async def delete(s: ImapSession, cmd: c.Delete) -> Done:
    name = s.name_in(cmd.mailbox)
    if s.sel is not None and s.sel.mailbox.name == name:  # rule 4
        await s.deselect()
        s.emit(b"* OK [CLOSED] Previous mailbox closed\r\n")
    await asyncio.to_thread(s.acct().delete, name)
    return ok("DELETE completed")


async def rename(s: ImapSession, cmd: c.Rename) -> Done:
    old, new = s.name_in(cmd.old), s.name_in(cmd.new)
    await asyncio.to_thread(s.acct().rename, old, new)
    return ok("RENAME completed")


async def subscribe(s: ImapSession, cmd: c.Subscribe | c.Unsubscribe) -> Done:
    on = isinstance(cmd, c.Subscribe)
    await asyncio.to_thread(s.acct().subscribe, s.name_in(cmd.mailbox), on)
    return ok(f"{'SUBSCRIBE' if on else 'UNSUBSCRIBE'} completed")


async def namespace(s: ImapSession, cmd: c.Namespace) -> Done:
    s.emit(b'* NAMESPACE (("" "' + _SEP + b'")) NIL NIL\r\n')  # RFC 2342 §5: one personal namespace
    return ok("NAMESPACE completed")


def _line(s: ImapSession, verb: bytes, attrs: list[str], name: str, extra: bytes = b"") -> bytes:
    return (b"* " + verb + b" (" + " ".join(attrs).encode("ascii") + b') "' + _SEP + b'" '
            + s.name_out(name) + extra + b"\r\n")


def _attrs(info: MailboxInfo) -> list[str]:
    attrs = []
    if not info.selectable:
        attrs.append("\\Noselect")
    attrs.append("\\HasChildren" if info.has_children else "\\HasNoChildren")
    if info.special_use:
        attrs.append(info.special_use)
    return attrs


def _list_rows(account: Account, cmd: c.List, patterns: list[str]) -> list[tuple[str, list[str], bytes, bool]]:
    """Rule 2, in a worker thread: (name, attributes, extra data, STATUS wanted) per answer."""
    infos, subs = account.list(), set(account.subscriptions())
    subscribed_sel = "SUBSCRIBED" in cmd.selection
    show_subscribed = cmd.return_subscribed or subscribed_sel
    recursive = "RECURSIVEMATCH" in cmd.selection
    by_name = {i.name: i for i in infos}
    names = sorted(set(by_name) | (subs if subscribed_sel else set()), key=lambda n: (n != "INBOX", n))
    sub_parents = {n[: i] for n in subs for i in range(len(n)) if n[i] == SEPARATOR}
    matches = ListMatcher(patterns, SEPARATOR, longest=max(map(len, names), default=0))
    rows = []
    for name in names:
        if not matches(name):
            continue
        info = by_name.get(name)
        attrs = _attrs(info) if info is not None else ["\\NonExistent"]
        extra = b""
        if subscribed_sel:
            if name not in subs:
                if not (recursive and name in sub_parents):
                    continue
            if recursive and name in sub_parents:
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
        if "SPECIAL-USE" in cmd.selection and (info is None or not info.special_use):
            continue
        if show_subscribed and name in subs:
            attrs.append("\\Subscribed")
        rows.append((name, attrs, extra, cmd.return_status is not None and info is not None and info.selectable))
    return rows


def _patterns(s: ImapSession, reference: str, patterns: Sequence[str]) -> list[str]:
    """Rule 5: the reference + each pattern as store names; a pattern that is not valid
    modified UTF-7 matches no mailbox (every name is sent in valid modified UTF-7) and is
    dropped instead of failing the command."""
    try:
        ref = s.name_in(reference) if reference else ""
    except MUtf7Error:
        return []
    out = []
    for p in patterns:
        try:
            out.append(ref + s.name_in(p))
        except MUtf7Error:
            continue
    return out


async def list_(s: ImapSession, cmd: c.List) -> Done:
    account = s.acct()
    if len(cmd.patterns) == 1 and cmd.patterns[0] == "" and not cmd.selection:
        s.emit(b'* LIST (\\Noselect) "' + _SEP + b'" ""\r\n')  # RFC 3501 §6.3.8
        return ok("LIST completed")
    patterns = _patterns(s, cmd.reference, cmd.patterns)
    if not patterns:
        return ok("LIST completed")  # no name can match (rule 5)
    rows = await asyncio.to_thread(_list_rows, account, cmd, patterns)
    for name, attrs, extra, status in rows:
        s.emit(_line(s, b"LIST", attrs, name, extra))
        if status and cmd.return_status:
            await _status_line(s, name, cmd.return_status)
        await s.drain()
    return ok("LIST completed")


async def _status_line(s: ImapSession, name: str, items: tuple[str, ...]) -> None:
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()
    st = await asyncio.to_thread(s.acct().status, name)
    s.emit(b"* STATUS " + s.name_out(name) + b" " + status_items(st, items) + b"\r\n")


def _lsub_rows(account: Account, pattern: str) -> list[tuple[str, bool]]:
    """LSUB in a worker thread: (name, \\Noselect) per answer. RFC 3501 §6.3.9: with "%", a
    parent of a subscribed name is listed as \\Noselect; ``prefixes`` matches a name and all
    its parents in one pass."""
    subs = account.subscriptions()
    subset = set(subs)
    match = ListMatcher([pattern], SEPARATOR, longest=max(map(len, subs), default=0))
    shown: list[str] = []
    parents: set[str] = set()
    for name in sorted(subs, key=lambda n: (n != "INBOX", n)):
        hits = match.prefixes(name)
        if hits[-1]:
            shown.append(name)
        ends = [i for i, ch in enumerate(name) if ch == SEPARATOR]
        parents.update(name[:i] for i, hit in zip(ends, hits) if hit and name[:i] not in subset)
    return [(n, False) for n in shown] + [(n, True) for n in sorted(parents)]


async def lsub(s: ImapSession, cmd: c.Lsub) -> Done:
    patterns = _patterns(s, cmd.reference, (cmd.pattern,))
    if not patterns:
        return ok("LSUB completed")  # no name can match (rule 5)
    rows = await asyncio.to_thread(_lsub_rows, s.acct(), patterns[0])
    for name, noselect in rows:
        s.emit(_line(s, b"LSUB", ["\\Noselect"] if noselect else [], name))
        await s.drain()
    return ok("LSUB completed")


async def status(s: ImapSession, cmd: c.Status) -> Done:
    await _status_line(s, s.name_in(cmd.mailbox), cmd.items)
    return ok("STATUS completed")
