"""FETCH and UID FETCH (RFC 3501 §6.4.5, RFC 9051 §6.4.5, RFC 3516 BINARY, RFC 7162 CONDSTORE/QRESYNC).

Rules:
1. Items: FLAGS INTERNALDATE RFC822.SIZE UID MODSEQ (metadata: no file is read), ENVELOPE
   (the header only), BODY BODYSTRUCTURE (from the per-message cache, else the whole message),
   BODY[section]<partial>, BODY.PEEK, BINARY[...], BINARY.PEEK, BINARY.SIZE, RFC822,
   RFC822.HEADER, RFC822.TEXT. UID FETCH always includes UID (RFC 3501 §6.4.8).
2. BODY[...] without PEEK, BINARY[...] without PEEK, RFC822 and RFC822.TEXT set \\Seen first
   (unless read-only), and FLAGS is then part of the response (RFC 3501 §6.4.5), with MODSEQ
   once CONDSTORE is enabled (RFC 7162 §3.2: every FETCH reporting a flag change has it).
3. ENVELOPE and BODYSTRUCTURE/BODY are cached in the store index (``Mailbox.cache_get/put``),
   keyed with the UTF-8 mode (8-bit header text is shown differently, ``store.mime``).
4. Responses are built in batches in a worker thread: a batch ends after ``BATCH_OCTETS`` of
   output or ``BATCH_MESSAGES`` messages, then the session writes it. At most one message's
   content is held at a time besides the pending output, whatever the size of the request;
   metadata-only fetches (FETCH 1:* FLAGS) never touch the files, build no per-message
   objects (``Mailbox.rows`` columns, one cached FLAGS text per distinct flag set) and run in
   the event loop.
5. A message expunged by another session meanwhile is left out; the tagged OK then carries
   ``[EXPUNGEISSUED]`` (RFC 5530 §3). A BINARY of a part in an unknown transfer encoding is
   ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.3) after the other data.
6. CHANGEDSINCE (RFC 7162 §3.1.4) keeps only messages with a higher MODSEQ and adds MODSEQ;
   VANISHED (RFC 7162 §3.2.6, UID FETCH with CHANGEDSINCE after ENABLE QRESYNC) first reports
   ``* VANISHED (EARLIER)`` for the UIDs of the set expunged since.
7. A FETCH that reads at most ``INLINE_READ`` octets of files (by the messages' sizes; none
   for ENVELOPE and BODYSTRUCTURE found in the cache) is built on the event
   loop (``view`` Rule 15: the files the view knows, the loop's own read connection, no lock).
   Whatever would wait (a file renamed meanwhile, a value not cached, a busy connection)
   raises ``_Blocked`` and the batch is built again in a worker thread, as before: the result
   is the same, only the place differs. Why: under the mixed load of issue 18 the thread hop
   (futures, a context switch, two GIL hand-overs) cost more CPU than the work it moved.
8. ``BODY[]`` (no part, no text) is the file itself: no MIME parse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pigeon.imapd.replies import Done, bad, no, ok
from pigeon.imapd.selected import Selected
from pigeon.imapd.store import INLINE_STORE
from pigeon.proto.imap import commands as c
from pigeon.proto.imap import serialize
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import MailboxError, MessageMeta, WouldWait
from pigeon.store.mailbox.view import MetaRow
from pigeon.store.mime import (
    Message,
    NoSuchPart,
    binary,
    bodystructure,
    envelope,
    parse_message,
    partial,
    section,
)

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

log = logging.getLogger(__name__)

#: Rule 4: output built per worker-thread call before the session writes it.
BATCH_OCTETS: Final = 256 * 1024
#: Rule 4: messages per batch (a FETCH 1:* FLAGS of 10,000 messages is ten writes).
BATCH_MESSAGES: Final = 1000
#: Rule 7: files read on the event loop per FETCH, at most. Reading 10 KB from the page cache
#: takes ~15 µs, 128 KiB well under 0.1 ms: less than the thread hop it saves (~0.1-0.2 ms of
#: CPU under load, docs/benchmarks.md issue 18); a file not in the page cache costs a disk
#: read on the loop, and this bounds how much of that one FETCH can do.
INLINE_READ: Final = 128 * 1024
_META_ITEMS: Final = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
_SEEN: Final = frozenset({"\\Seen"})


class _Blocked(Exception):
    """Rule 7: building on the event loop would wait; build in a worker thread instead."""


@dataclass
class _Outcome:
    unknown_cte: bool = False
    expunged: bool = False


@dataclass
class _Content:
    """One message's content, read at most once per FETCH (rule 4)."""

    sel: Selected
    uid: int
    #: the batch's cache values read in bulk (``Mailbox.cache_many``); None: not read in bulk
    cached: dict[tuple[int, str], bytes | None] | None = None
    inline: bool = False  # rule 7: on the event loop, never waiting
    _header: bytes | None = None
    _whole: bytes | None = None
    _parsed: Message | None = field(default=None, repr=False)

    def header(self) -> bytes:
        if self._whole is not None:
            return self.parsed().header
        if self._header is None:
            if self.inline:
                self._header = self._nowait(header_only=True)
            else:
                self._header = self.sel.mailbox.read_header(self.uid)
        return self._header

    def whole(self) -> bytes:
        if self._whole is None:
            self._whole = self._nowait() if self.inline else self.sel.mailbox.read(self.uid)
        return self._whole

    def _nowait(self, header_only: bool = False) -> bytes:
        data = self.sel.mailbox.read_nowait(self.uid, header_only)
        if data is None:
            raise _Blocked  # rule 7: moved meanwhile; the worker thread looks it up again
        return data

    def parsed(self) -> Message:
        if self._parsed is None:
            self._parsed = parse_message(self.whole())
        return self._parsed


def _header_only(att: c.FetchAtt) -> bool:
    """BODY[HEADER...] of the whole message, or RFC822.HEADER: the header block is enough."""
    if att.name == "RFC822.HEADER":
        return True
    sec = att.section
    return (att.name == "BODY" and sec is not None and not sec.part
            and sec.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"))


def _cached(sel: Selected, content: _Content, key: str, make: _Maker) -> bytes:
    bulk = content.cached
    if bulk is None:
        value = sel.mailbox.cache_get(content.uid, key)
    elif (content.uid, key) in bulk:
        value = bulk[content.uid, key]
        if value is None:  # cached, but too large to be read in bulk
            if content.inline:
                raise _Blocked  # rule 7
            value = sel.mailbox.cache_get(content.uid, key)
    else:
        value = None  # the bulk read is the truth: not cached
    if value is None:
        if content.inline:
            raise _Blocked  # rule 7: computing and storing it is the worker thread's
        value = make(content)
        sel.mailbox.cache_put(content.uid, key, value)
    return value


class _Maker:
    def __init__(self, kind: str, utf8: bool) -> None:
        self.kind = kind
        self.utf8 = utf8

    def __call__(self, content: _Content) -> bytes:
        if self.kind == "ENVELOPE":
            return envelope(content.header(), utf8=self.utf8)
        return bodystructure(content.parsed(), extensible=self.kind == "BODYSTRUCTURE", utf8=self.utf8)


def _literal(data: bytes, binary8: bool = False) -> bytes:
    return serialize.literal(data, binary=binary8 and b"\x00" in data)


def _item(sel: Selected, meta: MessageMeta, content: _Content, att: c.FetchAtt, utf8: bool,
          outcome: _Outcome) -> bytes:
    name = att.name
    if name == "UID":
        return b"UID %d" % meta.uid
    if name == "FLAGS":
        return b"FLAGS " + sel.flags(meta)
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + serialize.internaldate(meta.internaldate)
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % meta.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % meta.modseq
    key = _cache_key(att, utf8)
    if key is not None:
        label = b"ENVELOPE" if name == "ENVELOPE" else serialize.fetch_label(att)
        return label + b" " + _cached(sel, content, key, _Maker(name, utf8))
    label = serialize.fetch_label(att)
    if name == "RFC822":
        return label + b" " + _literal(content.whole())
    if name == "RFC822.HEADER":
        return label + b" " + _literal(content.header())
    if name == "RFC822.TEXT":
        return label + b" " + _literal(content.parsed().body)
    sec = att.section or c.Section()
    data: bytes | None
    if name == "BODY":
        if not sec.part and not sec.text:  # rule 8: the whole message, as stored
            data = content.whole()
        elif _header_only(att):
            data = section(parse_message(content.header()), (), sec.text or "", sec.fields)
        else:
            data = section(content.parsed(), sec.part, sec.text or "", sec.fields)
    else:  # BINARY, BINARY.SIZE (RFC 3516 §4.2)
        try:
            data = binary(content.parsed(), sec.part)
        except NoSuchPart:
            return label + b" NIL"
        if data is None:
            outcome.unknown_cte = True
            return label + b" NIL"
        if name == "BINARY.SIZE":
            return label + b" %d" % len(data)
    if data is None:
        return label + b" NIL"
    if att.partial is not None:
        data = partial(data, att.partial[0], att.partial[1])
    return label + b" " + _literal(data, binary8=name == "BINARY")


def _inline_reads(items: tuple[c.FetchAtt, ...], metas: list[MessageMeta], utf8: bool) -> int:
    """Rule 7: the octets of files the FETCH reads (0 when the cache serves it all)."""
    if all(a.name in _META_ITEMS or _cache_key(a, utf8) is not None for a in items):
        return 0
    return sum(m.size for m in metas)


def _cache_key(att: c.FetchAtt, utf8: bool) -> str | None:
    """The index cache key of an item computed from the message (ENVELOPE, BODYSTRUCTURE)."""
    if att.name == "ENVELOPE" or (att.name in ("BODYSTRUCTURE", "BODY") and att.section is None):
        return att.name.lower() + (".utf8" if utf8 else "")
    return None


def _cache_keys(items: tuple[c.FetchAtt, ...], utf8: bool) -> list[str]:
    return sorted({k for k in (_cache_key(a, utf8) for a in items) if k is not None})


def _render(sel: Selected, metas: list[MessageMeta], start: int, items: tuple[c.FetchAtt, ...],
            utf8: bool, outcome: _Outcome, inline: bool = False) -> tuple[bytes, int]:
    """Rule 4: one batch, from ``metas[start]``; returns the output and the next index.
    ``inline``: on the event loop (rule 7), raising ``_Blocked`` rather than waiting."""
    out = bytearray()
    i = start
    keys = _cache_keys(items, utf8)
    bulk: dict[tuple[int, str], bytes | None] | None = None
    if keys:
        uids = [m.uid for m in metas[start:start + BATCH_MESSAGES]]
        if inline:
            bulk = sel.mailbox.cache_many_nowait(uids, keys)
            if bulk is None:
                raise _Blocked
        else:
            bulk = sel.mailbox.cache_many(uids, keys)
    while i < len(metas) and i - start < BATCH_MESSAGES and len(out) < BATCH_OCTETS:
        meta = metas[i]
        i += 1
        seq = sel.seq_of(meta.uid)
        if seq is None:
            continue
        content = _Content(sel, meta.uid, bulk, inline)
        try:
            parts = [_item(sel, meta, content, att, utf8, outcome) for att in items]
        except MailboxError as exc:
            if exc.code not in ("EXPUNGEISSUED", "NONEXISTENT"):
                raise
            outcome.expunged = True
            continue
        out += b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
    return bytes(out), i


_META_FORMAT: Final = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "INTERNALDATE": b"INTERNALDATE %s",
                       "RFC822.SIZE": b"RFC822.SIZE %d", "MODSEQ": b"MODSEQ (%d)"}


def _meta_lines(sel: Selected, rows: list[MetaRow], names: tuple[str, ...]) -> bytes:
    """Rule 4: the responses of metadata-only items, one column per item, one join."""
    template = b"* %d FETCH (" + b" ".join(_META_FORMAT[n] for n in names) + b")\r\n"
    seqs = sel.seqs_of([r[0] for r in rows])
    if not isinstance(seqs, range) and None in seqs:  # not in the client's map: leave out (cannot happen after resolve)
        rows = [r for r, q in zip(rows, seqs, strict=True) if q is not None]
        seqs = [q for q in seqs if q is not None]
    columns: list[Sequence[int] | list[bytes] | Sequence[int | None]] = [seqs]
    for name in names:
        if name == "UID":
            columns.append([r[0] for r in rows])
        elif name == "FLAGS":
            flag_bytes = sel.flag_bytes
            if sel.mailbox.recent:
                columns.append([flag_bytes(r[0], r[1]) for r in rows])
            else:  # nothing \Recent: one cached text per flag set
                by_id: dict[int, bytes] = {}
                columns.append([by_id.get(r[1]) or by_id.setdefault(r[1], flag_bytes(r[0], r[1]))
                                for r in rows])
        elif name == "INTERNALDATE":
            dates: dict[float, bytes] = {}
            columns.append([dates.get(r[3]) or dates.setdefault(r[3], serialize.internaldate(r[3]))
                            for r in rows])
        elif name == "RFC822.SIZE":
            columns.append([r[2] for r in rows])
        else:  # MODSEQ
            columns.append([r[4] for r in rows])
    return b"".join([template % args for args in zip(*columns, strict=True)])


async def _fetch_meta(s: ImapSession, sel: Selected, uids: list[int], items: tuple[c.FetchAtt, ...],
                      changedsince: int | None) -> Done:
    """Rule 4, metadata only: no file, no ``MessageMeta``; rules 5 and 6 as for the rest."""
    pending = sel.pending
    rows = sel.mailbox.rows([u for u in uids if u not in pending] if pending else uids)
    expunged = len(rows) < len(uids)
    if changedsince is not None:
        rows = [r for r in rows if r[4] > changedsince]
    names = tuple(a.name for a in items)
    for i in range(0, len(rows), BATCH_MESSAGES):
        s.emit(_meta_lines(sel, rows[i:i + BATCH_MESSAGES], names))
        await s.drain()
    if expunged:
        return ok("Some messages were expunged meanwhile", "EXPUNGEISSUED")
    return ok("FETCH completed")


async def fetch(s: ImapSession, cmd: c.Fetch) -> Done:
    sel = s.sel
    if sel is None:  # pragma: no cover - the state table guarantees it
        return bad("No mailbox selected")
    items = list(cmd.items)
    names = {a.name for a in items}
    if cmd.uid and "UID" not in names:
        items.insert(0, c.FetchAtt("UID"))
    if cmd.changedsince is not None or "MODSEQ" in names:
        s.enable_condstore()  # RFC 7162 §3.1
        if "MODSEQ" not in names:
            items.append(c.FetchAtt("MODSEQ"))
    uids = sel.resolve(cmd.sequence, cmd.uid, s.saved)
    if cmd.vanished:
        if not (cmd.uid and s.modes.qresync and cmd.changedsince is not None):
            return bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")  # RFC 7162 §3.2.6
        gone = await asyncio.to_thread(sel.mailbox.expunged_since, cmd.changedsince)
        star = max(sel.uids[-1] if sel.uids else 0, max(gone, default=0))
        gone = [u for u in gone if cmd.sequence.contains(u, star)]
        if gone:
            s.emit(b"* VANISHED (EARLIER) " + compact(gone).encode("ascii") + b"\r\n")
    frozen = tuple(items)
    if all(a.name in _META_ITEMS for a in frozen):  # rule 4: none of these sets \Seen
        return await _fetch_meta(s, sel, uids, frozen, cmd.changedsince)
    metas = sel.live(uids)
    outcome = _Outcome(expunged=len(metas) < len(uids))
    if cmd.changedsince is not None:
        since = cmd.changedsince
        metas = [m for m in metas if m.modseq > since]
    if any(a.sets_seen for a in items) and not sel.readonly:  # rule 2
        unseen = [m.uid for m in metas if "\\Seen" not in m.flags]
        if unseen:
            refreshed: list[MessageMeta] = []  # others' changes taken in (view Rule 11)
            try:  # on the loop when nothing waits, as STORE (``store`` rule 6)
                if len(unseen) > INLINE_STORE:
                    raise WouldWait("a big STORE")
                sel.mailbox.store(unseen, "add", _SEEN, None, None, refreshed, wait=False)
            except WouldWait:
                await asyncio.to_thread(sel.mailbox.store, unseen, "add", _SEEN, None, None, refreshed)
            s.emit(sel.announce(refreshed))  # selected rule 5: a keyword before a FETCH shows it
            metas = sel.live(m.uid for m in metas)
            if "FLAGS" not in names:
                items.append(c.FetchAtt("FLAGS"))
            if s.modes.condstore and not any(a.name == "MODSEQ" for a in items):
                items.append(c.FetchAtt("MODSEQ"))  # RFC 7162 §3.2: a flag change carries MODSEQ
    frozen = tuple(items)
    utf8 = s.modes.utf8
    inline = len(metas) <= BATCH_MESSAGES and _inline_reads(frozen, metas, utf8) <= INLINE_READ
    i = 0
    while i < len(metas):
        if inline:  # rule 7
            try:
                chunk, i = _render(sel, metas, i, frozen, utf8, outcome, inline=True)
            except _Blocked:
                inline = False
                continue
        else:
            chunk, i = await asyncio.to_thread(_render, sel, metas, i, frozen, utf8, outcome)
        s.emit(chunk)
        await s.drain()
    if outcome.unknown_cte:
        return no("Unknown content transfer encoding", "UNKNOWN-CTE")
    if outcome.expunged:
        return ok("Some messages were expunged meanwhile", "EXPUNGEISSUED")
    return ok("FETCH completed")
