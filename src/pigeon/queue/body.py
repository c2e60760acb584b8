"""A message body as it arrives: in memory while small, then streamed to ``tmp/<id>``.

The first step of the queue's commit point (``queue.store`` rule 1) happens here: ``seal``
writes what is left, cuts a recycled file to the body's length and fsyncs it; the store then
renames it into ``msg/``.

Rules:
1. At most ``memory`` bytes are held (``MEMORY_BODY`` with the intake journal, so that the
   journal can take a small body in one write; 0 without); past that the body goes to its file
   in writes of ``BODY_BUFFER``, whatever the message size.
2. A recycled file (``queue.recycle`` rule 3) is overwritten from offset 0 without
   ``O_TRUNC`` and cut to the body's length in ``seal``, before its fsync.
3. ``seal``'s fsync: the body's bytes are on disk before a name in ``msg/`` points at them.
   Every call goes through the IO seam given (``durable.io``).
4. ``abort`` closes and removes the file; it is safe to call more than once.
5. What was written can be read back before ``seal`` (``chunks``: the checks at the end of
   DATA, DKIM and milters) and its first octets replaced (``splice``: header fields known only
   at the end, such as Authentication-Results). In memory that is a slice; in a file it is a
   new file (head, then the rest copied in ``BODY_BUFFER`` pieces) renamed over the old one, so
   memory stays bounded for any size, at the price of one copy of a large message.

What can go wrong: ``write`` raises ``QueueWriteError`` (a full disk: 452 4.3.1); ``seal``
raises ``OSError``, which the store turns into ``QueueWriteError`` after undoing its commit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from pigeon.core.queueid import QueueId
from pigeon.core.results import TemporaryError
from pigeon.durable.io import REAL, FileIO, unlink_quietly, write_all
from pigeon.proto.smtp.reply import C452_INSUFFICIENT_STORAGE, Reply
from pigeon.queue.record import QueueError
from pigeon.queue.recycle import FilePool

log = logging.getLogger(__name__)

# The body's write buffer: most mail (a few KiB to a few tens of KiB) reaches the file in one or
# two writes; held only while a message is received, so memory per session stays bounded.
BODY_BUFFER = 32 * 1024
# Rule 1: a body up to this size is kept in memory while it is received, so that the intake
# journal can take it with one write; a larger one goes to its file as it arrives. Per session,
# so 1,000 sessions in DATA at once hold at most 128 MiB.
MEMORY_BODY = 128 * 1024


class QueueWriteError(TemporaryError, QueueError):
    """The queue could not store the message (ENOSPC, EIO...): the client should try later."""

    def __init__(self, message: str, reply: Reply = C452_INSUFFICIENT_STORAGE) -> None:
        super().__init__(reply, message)


class BodyWriter:
    """A message body being received: in memory up to ``memory`` bytes, then streamed to
    ``tmp/<id>`` in writes of ``BODY_BUFFER``; never more than ``memory`` bytes held, whatever
    the message size."""

    def __init__(self, qid: QueueId, path: Path, *, pool: FilePool | None = None, memory: int = 0,
                 io: FileIO = REAL) -> None:
        self.id = qid
        self.path = path
        self.size = 0
        self._pool = pool
        self._io = io
        self._memory = memory
        self._mem: bytearray | None = bytearray() if memory > 0 else None
        self._fd = -1
        self._buf = bytearray()  # written to the file when it reaches BODY_BUFFER
        self._reused = False
        self._opened = False  # a file exists at ``path`` (abort removes it)
        self._finished = False
        if self._mem is None:
            self._open()

    def _open(self) -> None:
        # Rule 2: a recycled file already has the name.
        reuse = self._pool.take(self.path) if self._pool is not None else False
        flags = os.O_WRONLY | os.O_CLOEXEC | (0 if reuse else os.O_CREAT | os.O_EXCL)
        self._fd = self._io.open(self.path, flags, 0o600)
        self._reused = reuse
        self._opened = True

    def _spill(self) -> None:
        """The body outgrew memory (or must become a file): move it to ``tmp/<id>``."""
        mem = self._mem
        if mem is None:
            return
        self._open()  # on failure the body is still in memory, and the error is the caller's
        self._mem = None
        self._buf = mem

    def _flush_buffer(self) -> None:
        buf, self._buf = self._buf, bytearray()
        if buf:
            write_all(self._io, self._fd, buf)

    @property
    def closed(self) -> bool:
        return self._finished

    @property
    def in_memory(self) -> bool:
        """Still entirely in memory (the journal can take it without a file)."""
        return self._mem is not None and not self._finished

    def write(self, data: bytes) -> None:
        if self._finished:
            raise ValueError("write to a finished body")
        mem = self._mem
        if mem is not None and len(mem) + len(data) <= self._memory:
            mem += data
            self.size += len(data)
            return
        try:
            if mem is not None:
                self._spill()
            self._buf += data
            if len(self._buf) >= BODY_BUFFER:
                self._flush_buffer()
        except OSError as exc:
            raise QueueWriteError(f"writing body {self.id}: {exc}") from exc
        self.size += len(data)

    def chunks(self, start: int = 0, size: int = BODY_BUFFER) -> Iterator[bytes]:
        """Rule 5: the octets written so far from ``start``, in pieces of at most ``size``."""
        if self._finished:
            raise ValueError("the body is finished")
        mem = self._mem
        if mem is not None:
            for pos in range(start, len(mem), size):
                yield bytes(mem[pos : pos + size])
            return
        try:
            self._flush_buffer()
            fd = self._io.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise QueueWriteError(f"reading back body {self.id}: {exc}") from exc
        try:
            pos, end = start, self.size
            while pos < end:
                data = self._io.pread(fd, min(size, end - pos), pos)
                if not data:
                    break
                pos += len(data)
                yield data
        finally:
            self._io.close(fd)

    def splice(self, head: bytes, drop: int) -> None:
        """Rule 5: replace the first ``drop`` octets written with ``head``."""
        if self._finished:
            raise ValueError("the body is finished")
        if not 0 <= drop <= self.size:
            raise ValueError(f"cannot drop {drop} of {self.size} octets")
        mem = self._mem
        if mem is not None and len(mem) - drop + len(head) <= self._memory:
            mem[0:drop] = head
            self.size = len(mem)
            return
        if mem is not None:
            if drop:
                del mem[0:drop]
            mem[0:0] = head
            self.size = len(mem)
            try:
                self._spill()
            except OSError as exc:
                raise QueueWriteError(f"writing body {self.id}: {exc}") from exc
            return
        new = self.path.with_name(self.path.name + ".splice")
        nfd = -1
        try:
            nfd = self._io.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            write_all(self._io, nfd, head)
            for piece in self.chunks(drop):
                write_all(self._io, nfd, piece)
            self._io.rename(new, self.path)
        except OSError as exc:
            if nfd >= 0:
                self._io.close(nfd)
            unlink_quietly(new, self._io)
            raise QueueWriteError(f"rewriting body {self.id}: {exc}") from exc
        self._io.close(self._fd)
        self._fd = nfd
        self._reused = False  # a new file: nothing of an older content follows
        self.size = self.size - drop + len(head)

    def take(self) -> bytes:
        """The whole body, for a body still in memory; the writer is finished after this."""
        if self._mem is None or self._finished:
            raise ValueError("the body is not in memory")
        data = bytes(self._mem)
        self._mem = None
        self._finished = True
        return data

    def seal(self) -> None:
        """Write, fsync and close the file (the first step of the commit point). Blocking."""
        if self._finished:
            raise ValueError("body already finished")
        self._finished = True
        self._spill()
        try:
            self._flush_buffer()
        except BaseException:
            self._io.close(self._fd)
            self._fd = -1
            raise
        fd, self._fd = self._fd, -1
        try:
            if self._reused:
                self._io.ftruncate(fd, self.size)  # what is left of the previous content
            self._io.fsync(fd)  # rule 3
        finally:
            self._io.close(fd)

    def abort(self) -> None:
        """Forget the body: close and delete the file. Safe to call more than once."""
        self._finished = True
        self._mem = None
        self._buf = bytearray()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                self._io.close(fd)
            except OSError as exc:
                log.warning("queue: closing aborted body %s: %s", self.id, exc)
        if self._opened:
            self._opened = False
            unlink_quietly(self.path, self._io)
