"""Bringing existing mail into a folder, keeping what clients remember of it (``pigeon import``).

Rules:
1. Messages are written and committed as APPEND commits them (``files`` Rule 1, the account's
   IO seam): each file is written to ``tmp/`` and fsynced, then a batch of at most ``BATCH``
   files is linked into ``cur/``, ``cur/`` fsynced, and the batch's rows committed in one index
   transaction. A crash loses at most the batch under way, never a committed one, and never
   leaves a row without its file.
2. UIDs and UIDVALIDITY are kept only when that cannot break a promise made to a client
   (RFC 3501 §2.3.1.1: a UID is never reused within a UIDVALIDITY): the folder's UIDVALIDITY
   becomes the imported one only while the folder has never held a message (``uidnext == 1``)
   and no other folder of the account has that value; a message keeps its UID only when it is
   at least the folder's UIDNEXT and not taken. Otherwise the message gets the next UID and the
   result counts it in ``renumbered``, so the caller can say the clients will download it again.
3. Messages are appended in the order given (the caller sorts by UID, so UIDs keep growing
   with arrival as RFC 3501 expects); the iterable is consumed batch by batch, so an mbox of any
   size is never in memory whole: a batch also ends once it holds ``BATCH_BYTES`` of octets.
4. Flags are IMAP flags (``\\Seen``, keywords); ``\\Recent`` is dropped and an invalid keyword
   skipped with a warning, never failing the import.

What can go wrong: ``MailboxError`` for a refused folder name; OSError and sqlite3.Error
propagate (the batch under way is undone: its files are unlinked).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pigeon.durable.io import unlink_quietly
from pigeon.store.mailbox import files
from pigeon.store.mailbox.context import AccountCore
from pigeon.store.mailbox.flags import cur_name, parse_flags
from pigeon.store.mailbox.model import MailboxError

log = logging.getLogger(__name__)

BATCH = 256  # messages per index transaction and cur/ fsync (Rule 1): bounds a crash's loss
BATCH_BYTES = 32 << 20  # octets held in memory by one batch of in-memory messages (Rule 3)


@dataclass(frozen=True)
class ImportedMessage:
    source: Path | bytes  # the message, or a file holding it (LF or CRLF line ends)
    flags: frozenset[str]
    internaldate: float
    uid: int | None = None


@dataclass
class ImportResult:
    imported: int = 0
    renumbered: int = 0
    uidvalidity_kept: bool = False


def import_into(core: AccountCore, name: str, messages: Iterable[ImportedMessage],
                uidvalidity: int | None = None) -> ImportResult:
    """Rules 1-4: add ``messages`` to the existing folder ``name`` (normalised)."""
    result = ImportResult()
    with core.lock:
        row = core.synced(name)
        if uidvalidity is not None and row.uidnext == 1 and 0 < uidvalidity <= 0xFFFFFFFF:
            taken = {r.uidvalidity for n, r in core.index.folders().items() if n != name}
            if uidvalidity not in taken:
                with core.index.write() as conn:
                    conn.execute("UPDATE folder SET uidvalidity=? WHERE id=?", (uidvalidity, row.id))
                    last = conn.execute("SELECT value FROM meta WHERE key='last_uidvalidity'").fetchone()
                    if last is None or int(last[0]) < uidvalidity:
                        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_uidvalidity', ?)",
                                     (uidvalidity,))
                result.uidvalidity_kept = True
    path = core.path(name)
    batch: list[ImportedMessage] = []
    held = 0
    for msg in messages:  # Rule 3
        batch.append(msg)
        held += len(msg.source) if isinstance(msg.source, bytes) else 0
        if len(batch) >= BATCH or held >= BATCH_BYTES:
            _batch(core, name, path, batch, result)
            batch, held = [], 0
    if batch:
        _batch(core, name, path, batch, result)
    core.notify(name)
    return result


def _letters(flags: frozenset[str], where: Path | bytes) -> tuple[str, list[str]]:
    good: list[str] = []
    for flag in flags:
        try:
            parse_flags([flag])
            good.append(flag)
        except MailboxError as exc:
            what = "a message" if isinstance(where, bytes) else str(where)
            log.warning("import of %s: flag %r skipped (%s)", what, flag[:40], exc.text)
    return parse_flags(sorted(good))


def _batch(core: AccountCore, name: str, path: Path, batch: list[ImportedMessage],
           result: ImportResult) -> None:
    written: list[tuple[ImportedMessage, files.TmpMessage]] = []
    try:
        for msg in batch:
            if isinstance(msg.source, bytes):
                tmp = files.write_tmp(core.io, path, core.names, msg.source, msg.internaldate)
            else:
                with open(msg.source, "rb") as src:
                    tmp = files.write_tmp(core.io, path, core.names, src, msg.internaldate)
            written.append((msg, tmp))
        with core.lock:
            row = core.synced(name)
            linked: list[Path] = []
            try:
                with core.index.write() as conn:
                    uidnext, modseq = row.uidnext, row.highestmodseq
                    for msg, tmp in written:
                        letters, keywords = _letters(msg.flags, msg.source)
                        if msg.uid is not None and uidnext <= msg.uid <= 0xFFFFFFFF:
                            uid = msg.uid
                        else:
                            uid = uidnext
                            if msg.uid is not None:
                                result.renumbered += 1
                        files.publish(core.io, tmp, path, letters)
                        linked.append(path / "cur" / cur_name(tmp.base, letters))
                        modseq += 1
                        conn.execute("INSERT INTO message(folder, uid, base, info, keywords, modseq, "
                                     "internaldate, size) VALUES (?,?,?,?,?,?,?,?)",
                                     (row.id, uid, tmp.base, letters, " ".join(keywords), modseq,
                                      msg.internaldate, tmp.size))
                        uidnext = uid + 1
                    files.fsync_cur(core.io, path)  # Rule 1: names durable before the rows
                    conn.execute("UPDATE folder SET uidnext=?, highestmodseq=? WHERE id=?",
                                 (uidnext, modseq, row.id))
            except BaseException:
                for done in linked:  # Rule 1: no file without its row
                    unlink_quietly(done, core.io)
                raise
        result.imported += len(written)
    finally:
        for _, tmp in written:
            unlink_quietly(tmp.tmp, core.io)

