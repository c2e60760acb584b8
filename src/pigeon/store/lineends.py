"""Streaming CRLF → LF conversion, with the two sizes a Maildir file name records.

Rules:
1. Every CR LF pair becomes LF; every other byte (a bare CR, a bare LF, NUL, 8-bit data) is
   copied unchanged. A CR that ends one chunk is held back until the next chunk shows whether
   an LF follows, so the result never depends on where the chunks were cut.
2. ``size`` counts the bytes written (``S=``); ``crlf_size`` counts them as if every LF were
   CRLF (``W=``, what IMAP RFC822.SIZE and POP3 LIST report; RFC 1939 §11, RFC 3501 §2.3.4).
3. Memory is bounded by one chunk plus one held-back byte, whatever the message size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

class ByteSource(Protocol):
    """What ``copy_crlf_to_lf`` reads from: a binary file, or anything with its ``read``."""

    def read(self, n: int = -1, /) -> bytes: ...


CHUNK_SIZE = 64 * 1024  # bytes per read: large enough to amortise syscalls, small enough to bound memory


class CrlfToLf:
    """Stateful converter: feed chunks, then call ``finish`` once."""

    def __init__(self) -> None:
        self._held_cr = False
        self.size = 0
        self.crlf_size = 0

    def feed(self, chunk: bytes) -> bytes:
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            # Rule 1: wait for the next chunk before deciding what this CR is.
            chunk = chunk[:-1]
            self._held_cr = True
        out = chunk.replace(b"\r\n", b"\n")
        self._count(out)
        return out

    def finish(self) -> bytes:
        if self._held_cr:
            self._held_cr = False
            self._count(b"\r")
            return b"\r"
        return b""

    def _count(self, out: bytes) -> None:
        self.size += len(out)
        self.crlf_size += len(out) + out.count(b"\n")


def copy_crlf_to_lf(prefix: bytes, body: ByteSource, write: Callable[[bytes], object]) -> CrlfToLf:
    """Convert ``prefix`` then ``body`` (read in CHUNK_SIZE pieces) into ``write``."""
    conv = CrlfToLf()
    if prefix:
        out = conv.feed(prefix)
        if out:
            write(out)
    while True:
        chunk = body.read(CHUNK_SIZE)
        if not chunk:
            break
        out = conv.feed(chunk)
        if out:
            write(out)
    tail = conv.finish()
    if tail:
        write(tail)
    return conv

