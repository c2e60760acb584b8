"""File operations on message files: write (APPEND), link (COPY), read with CRLF line ends.

Rules:
1. A new message (octets, or a stream copied in ``lineends.CHUNK_SIZE`` pieces, so a big one is
   never in memory whole) is written to ``tmp/<unique>`` (O_EXCL, 0600), fsynced, its mtime set to the
   INTERNALDATE, then ``link()``-ed to ``cur/<unique>,S=<n>,W=<n>:2,<info>`` (never overwrites),
   the tmp name unlinked and ``cur/`` fsynced (http://cr.yp.to/proto/maildir.html; the same
   commit point as ``pigeon.store.maildir`` delivery).
2. Files on disk use LF line ends (CRLF → LF on write, ``pigeon.store.lineends``). Reading
   inverts that exactly for our own files (marked by ``W=`` in the name): every LF becomes
   CRLF, so the length read equals ``W=``. A file without ``W=`` (written by another tool) may
   already hold CRLF: only bare LFs are converted, and its size is computed the same way.
3. A copy is a hard link under a new unique name (the content of a Maildir file never changes);
   file systems without hard links get a byte copy, fsynced.
4. Why each fsync: the file's, its bytes are on disk before its name appears in ``cur/``;
   ``cur/``'s (``fsync_cur``, or ``AccountCore.make_durable`` through the group-commit engine),
   the name is durable before the client is told (APPEND's UID, COPY/MOVE's COPYUID); the
   index row may be committed before (index Rule 2: a crash in between leaves a row without
   its file, which the next scan expunges, and the UID is never given again). Every one goes
   through the account's IO seam (``durable.io``).
5. A BINARY APPEND (``~{n}``, RFC 3516 §4.4) keeps its octets exactly, NUL and bare LF and
   CR included, so that ``BINARY[...]`` and ``BINARY.SIZE`` give back what was appended: the
   file holds the octets unchanged and its name says so with ``S=`` equal to ``W=`` (form
   "verbatim"). No other file of ours has S = W unless it holds no LF at all, in which case
   there is nothing to convert either: the marker needs no new field in the name.

What can go wrong: OSError propagates (ENOSPC, EDQUOT, EIO); FileNotFoundError means the file
was renamed or removed by someone else, and the caller re-resolves it by base name.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pigeon.durable.io import FileIO, FileWriter, unlink_quietly
from pigeon.store.lineends import CHUNK_SIZE, ByteSource, CrlfToLf, copy_crlf_to_lf
from pigeon.store.maildir import FILE_MODE
from pigeon.store.mailbox.flags import cur_name, split_name
from pigeon.store.names import UniqueNames, final_name, parse_sizes

log = logging.getLogger(__name__)

MAX_NAME_CLASHES = 8  # as in pigeon.store.maildir: one clash already means a shared counter
#: How many times an operation follows a file renamed under it by another program before it
#: takes the message as gone; one flag change is one rename, a race of several is rare.
MAX_RELOCATE = 8
HEADER_CHUNK = 8192  # read_header reads this much at a time until the blank line
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV})
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True)
class TmpMessage:
    tmp: Path
    base: str  # the final base name: unique part plus ,S= and ,W=
    size: int  # W=: octets with CRLF line ends


def write_tmp(io: FileIO, folder: Path, names: UniqueNames, data: bytes | ByteSource, mtime: float,
              verbatim: bool = False) -> TmpMessage:
    """Rule 1, up to and including the fsync and the mtime; the caller then calls ``publish``.
    ``verbatim``: keep the octets as they are (Rule 5)."""
    for _ in range(MAX_NAME_CLASHES):
        unique = names.next()
        tmp = folder / "tmp" / unique
        try:
            fd = io.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            log.warning("maildir tmp name clash %s, choosing another", tmp)
            continue
        try:
            try:
                out = FileWriter(io, fd, CHUNK_SIZE)
                if verbatim:
                    size = _copy_verbatim(data, out.write)
                    sizes = (size, size)
                elif isinstance(data, bytes):
                    conv = CrlfToLf()
                    out.write(conv.feed(data) + conv.finish())
                    sizes = (conv.size, conv.crlf_size)
                else:
                    conv = copy_crlf_to_lf(b"", data, out.write)
                    sizes = (conv.size, conv.crlf_size)
                out.flush()
                io.fsync(fd)  # Rule 4
            finally:
                io.close(fd)
            os.utime(tmp, (mtime, mtime))
        except BaseException:
            unlink_quietly(tmp, io)
            raise
        return TmpMessage(tmp, final_name(unique, *sizes), sizes[1])
    raise OSError(errno.EEXIST, "could not find a unique tmp name", str(folder / "tmp"))


def _copy_verbatim(data: bytes | ByteSource, write: Callable[[bytes], object]) -> int:
    """Rule 5: the octets unchanged, in ``CHUNK_SIZE`` pieces; returns how many."""
    if isinstance(data, bytes):
        write(data)
        return len(data)
    total = 0
    while chunk := data.read(CHUNK_SIZE):
        write(chunk)
        total += len(chunk)
    return total


def publish(io: FileIO, msg: TmpMessage, folder: Path, info: str) -> None:
    """Link the tmp file into ``cur/`` under its base name and drop the tmp name (Rule 1).

    The caller fsyncs ``cur/`` (once for a batch) before it reports success.
    """
    try:
        link_or_copy(io, msg.tmp, folder / "cur" / cur_name(msg.base, info))
    finally:
        unlink_quietly(msg.tmp, io)


def link_or_copy(io: FileIO, src: Path, dst: Path) -> None:
    """Rule 3. Raises FileExistsError if ``dst`` exists, FileNotFoundError if ``src`` does not."""
    try:
        io.link(src, dst)
        return
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        log.info("no hard link %s -> %s (%s); copying", src, dst, exc)
    fd = io.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            out = FileWriter(io, fd, CHUNK_SIZE)
            with open(src, "rb") as inp:
                while chunk := inp.read(CHUNK_SIZE):
                    out.write(chunk)
            out.flush()
            io.fsync(fd)  # Rule 4
        finally:
            io.close(fd)
        shutil.copystat(src, dst)
    except BaseException:
        unlink_quietly(dst, io)
        raise


def new_base(names: UniqueNames, old_base: str, path: Path, size: int) -> str:
    """A fresh base for a copy, keeping the ``S=``/``W=`` fields of the original."""
    s_size, w_size = parse_sizes(old_base)
    if s_size is None:
        s_size = os.stat(path).st_size
    return final_name(names.next(), s_size, w_size if w_size is not None else size)


#: How a file's octets become the message's (Rules 2 and 5): "lf", ours with LF line ends;
#: "foreign", another tool's; "verbatim", the octets as they were appended (BINARY).
Form = Literal["lf", "foreign", "verbatim"]


def form_of(base: str) -> Form:
    """Rules 2 and 5, from the base name's ``S=``/``W=`` fields."""
    if ",W=" not in base:  # the cheap test first
        return "foreign"
    s_size, w_size = parse_sizes(base)
    if w_size is None:
        return "foreign"
    # S = W: no LF in the file (nothing to convert), or a verbatim file (nothing to convert).
    return "verbatim" if s_size == w_size else "lf"


def to_crlf(data: bytes, form: Form) -> bytes:
    """Rules 2 and 5."""
    if form == "lf":
        return data.replace(b"\n", b"\r\n")
    if form == "verbatim":
        return data
    return _BARE_LF.sub(b"\r\n", data)


def crlf_size_of(path: Path | str) -> int:
    """The size ``read`` will return for a file without ``W=`` (Rule 2)."""
    with open(path, "rb", buffering=0) as f:
        data = f.read()
    if b"\r" not in data:  # the usual case (LF line ends as stored): one pass, not two
        return len(data) + data.count(b"\n")
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def read_all(path: Path | str, form: Form) -> bytes:
    with open(path, "rb") as f:
        return to_crlf(f.read(), form)


def read_header(path: Path | str, form: Form) -> bytes:
    """The header block including the empty line (the whole file when there is none)."""
    buf = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(HEADER_CHUNK)
            if not chunk:
                break
            start = max(0, len(buf) - 3)
            buf += chunk
            end = _header_end(buf, start)
            if end >= 0:
                buf = buf[:end]
                break
    return to_crlf(buf, form)


def _header_end(buf: bytes, start: int) -> int:
    if buf.startswith(b"\n"):
        return 1
    if buf.startswith(b"\r\n"):
        return 2
    best = -1
    for sep in (b"\n\n", b"\n\r\n"):
        i = buf.find(sep, start)
        if i >= 0 and (best < 0 or i + len(sep) < best):
            best = i + len(sep)
    return best


def find_by_base(cur_dir: Path, base: str) -> Path | None:
    """Re-resolve a file renamed by another session or tool (its base never changes)."""
    try:
        names = os.listdir(cur_dir)
    except FileNotFoundError:
        return None
    for name in names:
        if split_name(name)[0] == base:
            return cur_dir / name
    return None


def fsync_cur(io: FileIO, folder: Path) -> None:
    """Rule 4."""
    io.fsync_dir(folder / "cur")
