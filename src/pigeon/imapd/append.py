"""APPEND with MULTIAPPEND (RFC 3501 §6.3.11, RFC 3502), UIDPLUS (RFC 4315) and APPENDLIMIT (RFC 7889).

Rules:
1. Each message is committed by the store (fsynced, indexed) before the next is written; the
   tagged OK carries ``[APPENDUID uidvalidity uid-set]`` (RFC 4315 §3).
2. MULTIAPPEND is all or nothing (RFC 3502 §6.3.11): when one message fails, those already
   appended by this command are removed again before the NO.
3. A message over the limit is ``NO [TOOBIG]`` (RFC 7889 §4; literals over the limit are refused
   by the core before they are read); a missing mailbox ``NO [TRYCREATE]``; an empty message
   ``NO`` (it cannot be a valid RFC 5322 message). \\Recent in the flags is ignored.
4. A big message never sits in memory whole. The framing core passes on an APPEND literal of
   more than 64 KiB in pieces (``proto.imap.connection`` rule 4); the session writes them to
   one ``LiteralSpool`` per command, an anonymous file in the account's Maildir ``tmp/``
   (``Account.temporary_file``), written on the event loop as SMTP's queue writes are, and the
   store copies the message from it in pieces. The file is gone when the command ends, however
   it ends. A passed-on ``{n}`` literal (not literal8) holding NUL is ``BAD``, as the parser
   answers for one kept in memory (RFC 3501 §9 CHAR8); these checks come before anything is
   appended. A spool that could not be written (disk full) is ``NO``, ``[OVERQUOTA]`` for
   ENOSPC/EDQUOT (RFC 9051 §7.1), and the rest of the literal is read and dropped.
5. A literal8 (``~{n}``, RFC 3516 §4.4) is stored byte for byte, NUL octets and bare LFs
   included (``store.mailbox.files`` rule 5), so that ``BINARY[1]`` and ``BINARY.SIZE[1]``
   give back exactly what was appended.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from pigeon.imapd.replies import Done, bad, mailbox_error, no, ok
from pigeon.imapd.selected import RECENT
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.reader import SpooledLiteral
from pigeon.proto.imap.seqset import compact
from pigeon.store.mailbox import Account, MailboxError

if TYPE_CHECKING:
    from pigeon.imapd.session import ImapSession

log = logging.getLogger(__name__)

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class LiteralSpool:
    """Rule 4: the passed-on literals of the command being received, one after another in one
    file opened at the first piece; ``clear`` when the command ends."""

    def __init__(self, open_file: Callable[[], BinaryIO]) -> None:
        self._open = open_file
        self._file: BinaryIO | None = None
        self._done: list[tuple[int, int, bool]] = []  # (offset, size, holds NUL) per literal
        self._offset = self._size = 0
        self._nul = False
        self.error: OSError | None = None

    @property
    def pieces(self) -> int:
        """Literals completely received (for tests and logs)."""
        return len(self._done)

    def write(self, data: bytes, last: bool) -> None:
        """One ``LiteralData`` piece; after a write error the rest is only counted."""
        if self.error is None:
            try:
                if self._file is None:
                    self._file = self._open()
                self._file.write(data)
            except OSError as exc:
                log.error("imap: could not spool an APPEND literal: %s", exc)
                self.error = exc
        self._size += len(data)
        self._nul = self._nul or b"\x00" in data
        if last:
            self._done.append((self._offset, self._size, self._nul))
            self._offset += self._size
            self._size, self._nul = 0, False

    def has_nul(self, index: int) -> bool:
        return self._done[index][2]

    def reader(self, index: int) -> _Segment:
        """The ``index``-th literal, to read (and close) in a worker thread: its own descriptor
        and ``os.pread``, so neither a shared file position nor ``clear`` can disturb it."""
        if self._file is None or self.error is not None:
            raise RuntimeError("no spooled literal to read")
        self._file.flush()
        offset, size, _ = self._done[index]
        return _Segment(os.dup(self._file.fileno()), offset, size)

    def clear(self) -> None:
        """The command ended: close (and so remove) the file."""
        f, self._file = self._file, None
        self._done = []
        self._offset = self._size = 0
        self._nul = False
        self.error = None
        if f is not None:
            try:
                f.close()
            except OSError as exc:
                log.warning("imap: closing an APPEND spool failed: %s", exc)


class _Segment:
    """``size`` octets of a file from ``offset``, as a stream for ``Account.append``; it owns
    ``fd``."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._pos = offset
        self._left = size

    def close(self) -> None:
        os.close(self._fd)

    def read(self, n: int = -1, /) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._pos)
        if not data:
            raise OSError(errno.EIO, "APPEND spool file shorter than expected")
        self._pos += len(data)
        self._left -= len(data)
        return data


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


def _store(account: Account, name: str, data: bytes | _Segment, flags: frozenset[str],
           when: float | None, binary: bool) -> tuple[int, int]:
    """In a worker thread: append, then close the spool descriptor there (rule 4)."""
    try:
        return account.append(name, data, flags, when, verbatim=binary)  # rule 5
    finally:
        if isinstance(data, _Segment):
            data.close()


def _spool_failure(exc: OSError) -> Done:
    """Rule 4."""
    code = "OVERQUOTA" if exc.errno in _NO_SPACE else None
    return no(f"Could not receive the message: {exc.strerror or exc}", code)


async def append(s: ImapSession, cmd: c.Append) -> Done:
    name = s.name_in(cmd.mailbox)
    account = s.acct()
    limit = account.max_append()
    spool = s.literals
    if spool.error is not None:
        return _spool_failure(spool.error)
    for msg in cmd.messages:  # rule 4: before anything is appended
        if isinstance(msg.data, SpooledLiteral) and not msg.binary and spool.has_nul(msg.data.index):
            return bad("NUL in literal (use literal8)")
    uids: list[int] = []
    validity = 0
    for msg in cmd.messages:
        failure = None
        size = msg.data.size if isinstance(msg.data, SpooledLiteral) else len(msg.data)
        if not size:
            failure = no("Empty message")
        elif size > limit:
            failure = no(f"Message larger than {limit} octets", "TOOBIG")  # RFC 7889
        else:
            flags = frozenset(f for f in msg.flags if f != RECENT)
            when = msg.internaldate.timestamp() if msg.internaldate is not None else None
            data = spool.reader(msg.data.index) if isinstance(msg.data, SpooledLiteral) else msg.data
            try:
                validity, uid = await asyncio.to_thread(_store, account, name, data, flags, when, msg.binary)
                uids.append(uid)
                continue
            except MailboxError as exc:
                failure = no(exc.text, "TOOBIG") if exc.code == "LIMIT" else mailbox_error(exc, trycreate=True)
        if uids:
            await asyncio.to_thread(_undo, account, name, uids)
        return failure
    return ok("APPEND completed", f"APPENDUID {validity} {compact(uids)}")
