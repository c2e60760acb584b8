"""SEARCH and UID SEARCH (RFC 3501 §6.4.4) with ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and MODSEQ.

Rules:
1. Every RFC 3501 key: flags and keywords, NEW/OLD/RECENT, dates on INTERNALDATE (BEFORE/ON/
   SINCE, the server's local calendar date) and on the Date: header (SENT*), sizes, header
   fields, BODY and TEXT, sequence sets and UID sets, ``$``, OR, NOT and groups; MODSEQ
   (RFC 7162 §3.1.5, which enables CONDSTORE and appends ``(MODSEQ n)`` to the result).
2. Cost order: keys on metadata are tried before header keys, and header keys before content
   keys, inside every AND; header keys read only the header block (``Mailbox.read_header``);
   the message file is read at most once per message.
3. CHARSET: US-ASCII and UTF-8 only; any other is ``NO [BADCHARSET (UTF-8 US-ASCII)]``
   (raised by the parser as ``CharsetError``, answered by the session).
4. Results: ``* SEARCH n...`` (message numbers, or UIDs for UID SEARCH); with RETURN (...) or
   after ENABLE IMAP4rev2 ``* ESEARCH (TAG "t") [UID] MIN/MAX/COUNT/ALL`` (RFC 4731 §3.1);
   ``RETURN ()`` means ALL. SAVE keeps the result (as UIDs) for ``$``; with MIN and/or MAX only
   those are saved (RFC 5182 §2.4); SAVE alone gives no ESEARCH response. The ESEARCH MODSEQ
   is the highest of the messages returned: with only MIN and/or MAX, of those (RFC 4731 §3.2).
5. The search runs in a worker thread over a snapshot of the map; expunged-meanwhile messages
   never match.
6. Header keys (FROM, TO, SUBJECT, HEADER ...) match the decoded values of the field, which are
   cached per message in the index (``HEADER_CACHE`` + field name, JSON; a message's content
   never changes, so neither does the entry): read for the whole search in one query, the
   missing ones computed from the header block and stored in one transaction at the end. A
   repeated header search reads no message file (Dovecot answers it from its index cache too).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pigeon.imapd.replies import Done, bad, ok
from pigeon.imapd.selected import RECENT, Selected
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import MailboxError, MessageMeta
from pigeon.store.mime import (
    Message,
    body_contains,
    header_values,
    parse_message,
    sent_date,
    text_contains,
    values_contain,
)

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

_META, _HEADER, _CONTENT = 0, 1, 2
HEADER_CACHE = "search-header:"  # rule 6: cache key prefix, then the field name in lower case
Cached = dict[tuple[int, str], "bytes | None"]


def cost(key: c.SearchKey) -> int:
    """Rule 2: 0 metadata, 1 header block, 2 whole message."""
    if isinstance(key, c.SearchHeader):
        return _HEADER
    if isinstance(key, c.SearchDate):
        return _HEADER if key.sent else _META
    if isinstance(key, c.SearchText):
        return _CONTENT
    if isinstance(key, c.SearchNot):
        return cost(key.key)
    if isinstance(key, c.SearchOr):
        return max(cost(key.left), cost(key.right))
    if isinstance(key, c.SearchAnd):
        return max((cost(k) for k in key.keys), default=_META)
    return _META


@dataclass
class _Candidate:
    sel: Selected
    meta: MessageMeta
    seq: int
    cached: Cached
    puts: list[tuple[int, str, bytes]]
    _header: bytes | None = None
    _message: Message | None = None

    def values(self, field: str) -> list[str]:
        """Rule 6: the decoded values of ``field``, from the cache when there."""
        key = (self.meta.uid, HEADER_CACHE + field.lower())
        raw = self.cached.get(key)
        if raw is not None:
            got = json.loads(raw)
            if isinstance(got, list) and all(isinstance(v, str) for v in got):
                return got
        values = header_values(self.header(), field)
        if key not in self.cached:  # absent (a value too large for the bulk read is there)
            self.puts.append((key[0], key[1], json.dumps(values).encode()))
        return values

    def header(self) -> bytes:
        if self._message is not None:
            return self._message.header
        if self._header is None:
            self._header = self.sel.mailbox.read_header(self.meta.uid)
        return self._header

    def message(self) -> Message:
        if self._message is None:
            self._message = parse_message(self.sel.mailbox.read(self.meta.uid))
        return self._message


class Matcher:
    """Evaluates a key tree against one message at a time (rules 1-2)."""

    def __init__(self, sel: Selected, saved: list[int] | None, count: int, max_uid: int) -> None:
        self.sel = sel
        self.saved = frozenset(saved or ())
        self.count = count
        self.max_uid = max_uid

    def match(self, key: c.SearchKey, m: _Candidate) -> bool:
        if isinstance(key, c.SearchAnd):
            return all(self.match(k, m) for k in sorted(key.keys, key=cost))
        if isinstance(key, c.SearchAll):
            return True
        if isinstance(key, c.SearchFlag):
            if key.flag == RECENT:
                has = self.sel.mailbox.is_recent(m.meta.uid)
            elif key.flag.startswith("\\"):
                has = key.flag in m.meta.flags
            else:  # keywords compare case-insensitively (RFC 3501 §2.3.2 atoms)
                want = key.flag.lower()
                has = any(f.lower() == want for f in m.meta.flags)
            return has == key.present
        if isinstance(key, c.SearchSet):
            if key.sequence.saved:
                return m.meta.uid in self.saved
            if key.uid:
                return key.sequence.contains(m.meta.uid, self.max_uid)
            return key.sequence.contains(m.seq, self.count)
        if isinstance(key, c.SearchSize):
            return m.meta.size > key.size if key.op == "LARGER" else m.meta.size < key.size
        if isinstance(key, c.SearchModseq):
            return m.meta.modseq >= key.modseq
        if isinstance(key, c.SearchDate):
            if key.sent:
                day = sent_date(m.header())
                if day is None:
                    return False
            else:
                day = dt.datetime.fromtimestamp(m.meta.internaldate).date()
            if key.op == "BEFORE":
                return day < key.date
            if key.op == "ON":
                return day == key.date
            return day >= key.date
        if isinstance(key, c.SearchHeader):
            return values_contain(m.values(key.field), key.value)
        if isinstance(key, c.SearchText):
            check: Callable[[Message, str], bool] = body_contains if key.where == "BODY" else text_contains
            return check(m.message(), key.value)
        if isinstance(key, c.SearchNot):
            return not self.match(key.key, m)
        if isinstance(key, c.SearchOr):
            first, second = sorted((key.left, key.right), key=cost)
            return self.match(first, m) or self.match(second, m)
        raise ValueError(f"unknown search key {type(key).__name__}")  # pragma: no cover


def _run(sel: Selected, uids: list[int], criteria: c.SearchAnd, saved: list[int] | None) -> list[MessageMeta]:
    """In a worker thread (rule 5)."""
    matcher = Matcher(sel, saved, len(uids), uids[-1] if uids else 0)
    fields = _header_fields(criteria)
    cached: Cached = sel.mailbox.cache_many(uids, [HEADER_CACHE + f for f in sorted(fields)]) if fields else {}
    puts: list[tuple[int, str, bytes]] = []
    found = []
    for seq, uid in enumerate(uids, start=1):
        meta = sel.meta(uid)
        if meta is None:
            continue
        try:
            if matcher.match(criteria, _Candidate(sel, meta, seq, cached, puts)):
                found.append(meta)
        except MailboxError as exc:
            if exc.code not in ("EXPUNGEISSUED", "NONEXISTENT"):
                raise
    if puts:
        sel.mailbox.cache_put_many(puts)
    return found


def _header_fields(key: c.SearchKey) -> set[str]:
    """Rule 6: the header fields the key tree searches, in lower case."""
    if isinstance(key, c.SearchHeader):
        return {key.field.lower()}
    if isinstance(key, c.SearchNot):
        return _header_fields(key.key)
    if isinstance(key, c.SearchOr):
        return _header_fields(key.left) | _header_fields(key.right)
    if isinstance(key, c.SearchAnd):
        return set().union(*(_header_fields(k) for k in key.keys))
    return set()


def _uses_modseq(key: c.SearchKey) -> bool:
    if isinstance(key, c.SearchModseq):
        return True
    if isinstance(key, c.SearchNot):
        return _uses_modseq(key.key)
    if isinstance(key, c.SearchOr):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, c.SearchAnd):
        return any(_uses_modseq(k) for k in key.keys)
    return False


async def search(s: ImapSession, cmd: c.Search) -> Done:
    sel = s.sel
    if sel is None:  # pragma: no cover - the state table guarantees it
        return bad("No mailbox selected")
    modseq = _uses_modseq(cmd.criteria)
    if modseq:
        s.enable_condstore()
    uids = list(sel.uids)
    found = await asyncio.to_thread(_run, sel, uids, cmd.criteria, s.saved)
    numbers = [m.uid if cmd.uid else (sel.seq_of(m.uid) or 0) for m in found]
    top = max((m.modseq for m in found), default=0)
    opts = cmd.return_opts
    if opts is None and s.modes.rev2:
        opts = ("ALL",)  # RFC 9051 §6.4.4: IMAP4rev2 answers with ESEARCH
    if opts is None:
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if modseq and found:
            line += b" (MODSEQ %d)" % top  # RFC 7162 §3.1.5
        s.emit(line + b"\r\n")
        return ok("SEARCH completed")
    wanted = set(opts) or {"ALL"}  # RFC 4731 §3.1: RETURN () is ALL
    if "SAVE" in wanted:  # rule 4
        keep = [m.uid for m in found]
        if keep and ({"MIN", "MAX"} & wanted):
            ends = ([keep[0]] if "MIN" in wanted else []) + ([keep[-1]] if "MAX" in wanted else [])
            keep = sorted(set(ends))
        s.saved = keep
        wanted.discard("SAVE")
        if not wanted:
            return ok("SEARCH completed, result saved")
    parts = [b'* ESEARCH (TAG "' + cmd.tag.encode("ascii", "replace") + b'")']
    if cmd.uid:
        parts.append(b"UID")
    if numbers:
        if "MIN" in wanted:
            parts.append(b"MIN %d" % numbers[0])
        if "MAX" in wanted:
            parts.append(b"MAX %d" % numbers[-1])
        if "ALL" in wanted:
            parts.append(b"ALL " + compact(numbers).encode("ascii"))
    if "COUNT" in wanted:
        parts.append(b"COUNT %d" % len(numbers))
    if modseq and found:
        if not ({"ALL", "COUNT"} & wanted):
            # RFC 4731 §3.2, RFC 7162 §3.1.5: with only MIN and/or MAX, the MODSEQ is that of
            # the message(s) returned, not of every message that matched.
            returned = ([found[0]] if "MIN" in wanted else []) + ([found[-1]] if "MAX" in wanted else [])
            top = max((m.modseq for m in returned), default=top)
        parts.append(b"MODSEQ %d" % top)
    s.emit(b" ".join(parts) + b"\r\n")
    return ok("SEARCH completed")
