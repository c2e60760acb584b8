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
5. The search runs over a snapshot of the map (the view's rows, ``Mailbox.rows``: no
   per-message objects); expunged-meanwhile messages never match. It runs in a worker thread,
   or in the event loop when it needs no message file and no index read (metadata keys only,
   at most ``INLINE_MAX`` messages): the thread hop would cost more than the search.
7. Metadata keys are evaluated over all candidates at once (``Matcher.filter``): a flag key
   once per distinct flag set, INTERNALDATE keys against the local day's first instant
   (``_day_start``); inside an AND they narrow the candidates before the header and content
   keys, which are evaluated one message at a time (``Matcher.match``), each message once.
8. A header key with a plain needle (printable ASCII, no ``"`` or ``\\``) first rules out the
   messages whose cached JSON (rule 6) is pure ASCII (no ``\\u`` escape) and does not contain
   the needle, case-insensitively, without decoding it: such a value is written verbatim in
   the JSON, and its casefold is its lower case. Only the rest are decoded and matched. For
   the header keys of the top-level AND whose field no other key needs, the values come from
   the process's ``HeaderMemo`` (rule 9), else SQLite makes that test
   (``Mailbox.cache_filter``): only the values that may match are read out of the index.
9. ``headermemo.HeaderMemo`` keeps those fields' cached values in memory, per process: a
   header search of a 1,000-message folder read them out of SQLite every time (~1 ms, the
   most expensive command of the mixed load of issue 18).
6. Header keys (FROM, TO, SUBJECT, HEADER ...) match the decoded values of the field, which are
   cached per message in the index (``HEADER_CACHE`` + field name, JSON; a message's content
   never changes, so neither does the entry): read for the whole search in one query, the
   missing ones computed from the header block and stored in one transaction at the end. A
   repeated header search reads no message file (Dovecot answers it from its index cache too).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from pigeon.imapd.headermemo import HeaderMemo
from pigeon.imapd.replies import Done, bad, ok
from pigeon.imapd.selected import RECENT, Selected
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import MailboxError
from pigeon.store.mailbox.view import MetaRow
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
#: Rule 5: a search on metadata only, over at most this many messages, runs in the event loop
#: (~0.2 µs a message and key: 10,000 messages are a few ms, less than the thread hop's wait).
INLINE_MAX = 10_000
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


Found = tuple[int, int]  # (UID, MODSEQ) of a message that matched


class _Candidate:
    """One message for the per-message keys (header, content), lazily read (rule 2)."""

    __slots__ = ("_header", "_message", "cached", "puts", "row", "sel", "seq")

    def __init__(self, sel: Selected, row: MetaRow, seq: int, cached: Cached,
                 puts: list[tuple[int, str, bytes]]) -> None:
        self.sel = sel
        self.row = row  # (uid, flag-set id, size, internaldate, modseq): ``Mailbox.rows``
        self.seq = seq
        self.cached = cached
        self.puts = puts
        self._header: bytes | None = None
        self._message: Message | None = None

    @property
    def uid(self) -> int:
        return self.row[0]

    @property
    def flags(self) -> frozenset[str]:
        return self.sel.mailbox.flag_set(self.row[1])

    def values(self, field: str) -> list[str]:
        """Rule 6: the decoded values of ``field``, from the cache when there."""
        key = (self.row[0], HEADER_CACHE + field.lower())
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
            self._header = self.sel.mailbox.read_header(self.row[0])
        return self._header

    def message(self) -> Message:
        if self._message is None:
            self._message = parse_message(self.sel.mailbox.read(self.row[0]))
        return self._message


def _plain(needle: str) -> bool:
    """Rule 8: a needle that JSON writes as it is (printable ASCII, no quote or backslash)."""
    return needle.isascii() and needle.isprintable() and '"' not in needle and "\\" not in needle


def _day_start(day: dt.date) -> float | None:
    """The first instant of ``day`` in the server's local time, as a timestamp; None when the
    zone makes it ambiguous (then every message's date is converted instead)."""
    try:
        t = dt.datetime.combine(day, dt.time()).timestamp()
        if dt.datetime.fromtimestamp(t).date() == day and dt.datetime.fromtimestamp(t - 0.001).date() < day:
            return t
    except (OverflowError, OSError, ValueError):
        pass
    return None


class Matcher:
    """Evaluates a key tree (rules 1-2, 7): ``filter`` over many messages at once for the
    metadata keys, ``match`` one message at a time for header and content keys."""

    def __init__(self, sel: Selected, saved: list[int] | None, count: int, max_uid: int,
                 cached: Cached | None = None) -> None:
        self.sel = sel
        self.cached: Cached = cached or {}
        self.saved = frozenset(saved or ())
        self.count = count
        self.max_uid = max_uid
        self._order: dict[int, list[c.SearchKey]] = {}  # id(SearchAnd) → its keys by cost
        self._flag_memo: dict[tuple[str, int], bool] = {}  # (flag, flag-set id) → has it
        self._splits: dict[int, tuple[list[c.SearchKey], c.SearchKey | None]] = {}
        self._bounds: dict[dt.date, tuple[float, float] | None] = {}
        self.ruled: dict[int, set[int]] = {}  # rule 8: id(header key) → UIDs it rules out

    def ordered(self, key: c.SearchAnd) -> list[c.SearchKey]:
        got = self._order.get(id(key))
        if got is None:
            got = self._order[id(key)] = sorted(key.keys, key=cost)
        return got

    def _split(self, key: c.SearchAnd) -> tuple[list[c.SearchKey], c.SearchKey | None]:
        """An AND's metadata keys, and the rest as one key for ``each`` (so that each message
        is looked at once, its header and content read at most once: rule 2)."""
        got = self._splits.get(id(key))
        if got is None:
            keys = self.ordered(key)
            rest = [k for k in keys if cost(k) != _META]
            got = self._splits[id(key)] = ([k for k in keys if cost(k) == _META],
                                           None if not rest else rest[0] if len(rest) == 1
                                           else c.SearchAnd(tuple(rest)))
        return got

    def _heads(self, key: c.SearchKey) -> list[c.SearchHeader]:
        """The header keys that ``key`` needs to match (itself, or directly under its AND)
        and that ``ruled_out`` can test."""
        keys = key.keys if isinstance(key, c.SearchAnd) else (key,)
        return [k for k in keys if isinstance(k, c.SearchHeader) and _plain(k.value)]

    def ruled_out(self, key: c.SearchHeader, uid: int) -> bool:
        """Rule 8: True when the cached JSON of the field's values proves that none contains
        ``key.value`` (a plain ASCII needle, ``_plain``); False means "decode and look"."""
        ruled = self.ruled.get(id(key))
        if ruled is not None:
            return uid in ruled
        raw = self.cached.get((uid, HEADER_CACHE + key.field.lower()))
        if raw is None or b"\\u" in raw:  # not cached, or non-ASCII text (casefold may differ)
            return False
        return key.value.lower().encode("ascii") not in raw.lower()

    # -- many messages at once (metadata keys) ----------------------------------------------

    def filter(self, key: c.SearchKey, rows: list[MetaRow], seqs: list[int], idx: list[int],
               each: Callable[[c.SearchKey, int], bool]) -> list[int]:
        """The positions of ``idx`` (ascending, into ``rows``/``seqs``) whose message matches
        ``key``; keys that need the message itself go to ``each(key, position)``."""
        if not idx:
            return idx
        if isinstance(key, c.SearchAnd):
            meta, rest = self._split(key)
            for k in meta:
                idx = self.filter(k, rows, seqs, idx, each)
            if rest is None or not idx:
                return idx
            heads = self._heads(rest)
            if heads:  # rule 8: most messages are ruled out without decoding their values
                known = [self.ruled[id(h)] for h in heads if id(h) in self.ruled]
                if known:
                    out = known[0].union(*known[1:]) if len(known) > 1 else known[0]
                    idx = [i for i in idx if rows[i][0] not in out]
                    heads = [h for h in heads if id(h) not in self.ruled]
                if heads:
                    ruled_out = self.ruled_out
                    idx = [i for i in idx if not any(ruled_out(h, rows[i][0]) for h in heads)]
            return [i for i in idx if each(rest, i)]
        if cost(key) != _META:
            return [i for i in idx if each(key, i)]
        if isinstance(key, c.SearchAll):
            return idx
        if isinstance(key, c.SearchNot):
            drop = set(self.filter(key.key, rows, seqs, idx, each))
            return [i for i in idx if i not in drop]
        if isinstance(key, c.SearchOr):
            first = self.filter(key.left, rows, seqs, idx, each)
            taken = set(first)
            second = self.filter(key.right, rows, seqs, [i for i in idx if i not in taken], each)
            return sorted(first + second) if second else first
        if isinstance(key, c.SearchFlag) and key.flag == RECENT:
            recent = self.sel.mailbox.is_recent
            return [i for i in idx if recent(rows[i][0]) == key.present]
        if isinstance(key, c.SearchSet):
            if key.sequence.saved:
                saved = self.saved
                return [i for i in idx if rows[i][0] in saved]
            contains = key.sequence.contains
            if key.uid:
                return [i for i in idx if contains(rows[i][0], self.max_uid)]
            return [i for i in idx if contains(seqs[i], self.count)]
        if isinstance(key, c.SearchFlag):
            good = {f for f in {rows[i][1] for i in idx} if self._has_flag(key.flag, f) == key.present}
            return [i for i in idx if rows[i][1] in good]
        if isinstance(key, c.SearchDate) and not key.sent:
            bounds = self._day_bounds(key.date)
            if bounds is not None:
                lo, hi = bounds
                if key.op == "BEFORE":
                    return [i for i in idx if rows[i][3] < lo]
                if key.op == "ON":
                    return [i for i in idx if lo <= rows[i][3] < hi]
                return [i for i in idx if rows[i][3] >= lo]
        if isinstance(key, c.SearchSize):
            size = key.size
            if key.op == "LARGER":
                return [i for i in idx if rows[i][2] > size]
            return [i for i in idx if rows[i][2] < size]
        if isinstance(key, c.SearchModseq):
            modseq = key.modseq
            return [i for i in idx if rows[i][4] >= modseq]
        return [i for i in idx if each(key, i)]

    def _has_flag(self, flag: str, flag_id: int) -> bool:
        memo = self._flag_memo.get((flag, flag_id))
        if memo is None:
            flags = self.sel.mailbox.flag_set(flag_id)
            if flag.startswith("\\"):
                memo = flag in flags
            else:  # keywords compare case-insensitively (RFC 3501 §2.3.2 atoms)
                want = flag.lower()
                memo = any(f.lower() == want for f in flags)
            self._flag_memo[flag, flag_id] = memo
        return memo

    def _day_bounds(self, day: dt.date) -> tuple[float, float] | None:
        if day not in self._bounds:
            lo = _day_start(day)
            hi = _day_start(day + dt.timedelta(days=1)) if lo is not None else None
            self._bounds[day] = None if lo is None or hi is None else (lo, hi)
        return self._bounds[day]

    # -- one message at a time --------------------------------------------------------------

    def match(self, key: c.SearchKey, m: _Candidate) -> bool:
        if isinstance(key, c.SearchAnd):
            return all(self.match(k, m) for k in self.ordered(key))
        if isinstance(key, c.SearchAll):
            return True
        if isinstance(key, c.SearchFlag):
            if key.flag == RECENT:
                has = self.sel.mailbox.is_recent(m.uid)
            else:
                has = self._has_flag(key.flag, m.row[1])
            return has == key.present
        if isinstance(key, c.SearchSet):
            if key.sequence.saved:
                return m.uid in self.saved
            if key.uid:
                return key.sequence.contains(m.uid, self.max_uid)
            return key.sequence.contains(m.seq, self.count)
        if isinstance(key, c.SearchSize):
            return m.row[2] > key.size if key.op == "LARGER" else m.row[2] < key.size
        if isinstance(key, c.SearchModseq):
            return m.row[4] >= key.modseq
        if isinstance(key, c.SearchDate):
            if key.sent:
                day = sent_date(m.header())
                if day is None:
                    return False
            else:
                day = dt.datetime.fromtimestamp(m.row[3]).date()
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


def _run(sel: Selected, uids: list[int], criteria: c.SearchAnd, saved: list[int] | None,
         memo: HeaderMemo | None = None) -> list[Found]:
    """In a worker thread, or on the loop for metadata keys (rule 5); ``memo``: rule 9."""
    pending = sel.pending
    rows = sel.mailbox.rows([u for u in uids if u not in pending] if pending else uids)
    if len(rows) == len(uids):
        seqs = list(range(1, len(uids) + 1))
    else:
        seqs = [bisect.bisect_left(uids, r[0]) + 1 for r in rows]
    # rule 8: the plain header keys of the top-level AND whose field no other key needs are
    # tested by SQLite; the other fields' values are read in bulk
    heads = [k for k in criteria.keys if isinstance(k, c.SearchHeader) and _plain(k.value)]
    fields = set().union(*(_header_fields(k) for k in criteria.keys if not any(k is h for h in heads)))
    heads = [h for h in heads if h.field.lower() not in fields]
    fields |= {h.field.lower() for h in heads if not h.value}  # an empty needle matches all: no filter
    heads = [h for h in heads if h.value]
    cached: Cached = sel.mailbox.cache_many(uids, [HEADER_CACHE + f for f in sorted(fields)]) if fields else {}
    puts: list[tuple[int, str, bytes]] = []
    matcher = Matcher(sel, saved, len(uids), uids[-1] if uids else 0, cached)
    for h in heads:
        key = HEADER_CACHE + h.field.lower()
        # rule 9; maybe more UIDs than asked for: harmless, only those of ``rows`` are looked
        # up; UIDs in neither are not cached: ``_Candidate.values`` decodes and caches them
        got = (memo.rule_out(sel.mailbox, uids, key, h.value.lower().encode("ascii"))
               if memo is not None else None)
        ruled, values = got if got is not None else sel.mailbox.cache_filter(uids, key, h.value.lower())
        cached.update({(uid, key): v for uid, v in values.items()})
        matcher.ruled[id(h)] = ruled  # never looked at again (``Matcher.filter``)

    def each(key: c.SearchKey, i: int) -> bool:
        try:  # called once per message at most (``Matcher._split``): one read of its file
            return matcher.match(key, _Candidate(sel, rows[i], seqs[i], cached, puts))
        except MailboxError as exc:  # expunged meanwhile: never matches (rule 5)
            if exc.code not in ("EXPUNGEISSUED", "NONEXISTENT"):
                raise
            return False

    idx = matcher.filter(criteria, rows, seqs, list(range(len(rows))), each)
    if puts:
        sel.mailbox.cache_put_many(puts)
    return [(rows[i][0], rows[i][4]) for i in idx]


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
    if cost(cmd.criteria) == _META and len(uids) <= INLINE_MAX:  # rule 5
        found = _run(sel, uids, cmd.criteria, s.saved)
    else:
        found = await asyncio.to_thread(_run, sel, uids, cmd.criteria, s.saved, s.ctx.header_memo)
    numbers = [uid for uid, _ in found] if cmd.uid else [sel.seq_of(uid) or 0 for uid, _ in found]
    top = max((m for _, m in found), default=0)
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
        keep = [uid for uid, _ in found]
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
            top = max((m for _, m in returned), default=top)
        parts.append(b"MODSEQ %d" % top)
    s.emit(b" ".join(parts) + b"\r\n")
    return ok("SEARCH completed")
