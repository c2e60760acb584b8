"""Reading the original message back out of the queue for a notice, in bounded memory.

Rules:
1. Only the header section is ever held in memory, and at most ``MAX_RETURNED_HEADERS`` of it;
   a longer section is cut after its last complete line. The body is streamed in
   ``CHUNK_SIZE`` pieces (``iter_crlf``).
2. The header section ends as cleanup's scanner says (``pigeon.proto.message.headers``: the first
   empty line, or the first line that is neither a field nor a continuation), so the notice and
   cleanup agree on what a header is. The returned section excludes the empty line.
3. Returned text uses CRLF line ends, as MIME requires inside a message (RFC 5322 §2.1): bare
   LFs (a body queued by the local ``sendmail`` command) become CRLF; CRLF stays CRLF, whatever
   the chunk boundaries.

What can go wrong: OSError from reading the body file (the caller decides: the notice is then
not queued and the queue manager retries).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import BinaryIO

from pigeon.proto.message.headers import HeaderScanner

CHUNK_SIZE = 64 * 1024  # read size: amortises syscalls, bounds memory per notice
# The header section is held whole; cleanup refuses sections over 1 MiB
# (cleanup.intake.DEFAULT_MAX_HEADER_BYTES), so any queued message's headers fit.
MAX_RETURNED_HEADERS = 1024 * 1024


@dataclass(frozen=True, slots=True)
class OriginalHeaders:
    raw: bytes  # the header section, CRLF line ends, without the empty line that ends it
    truncated: bool  # cut at MAX_RETURNED_HEADERS (rule 1)

    def parsed(self) -> Message:
        """The fields, for reading a few of them (Message-ID, the double-bounce mark)."""
        return BytesHeaderParser(policy=compat32).parsebytes(self.raw)

    def get(self, name: str) -> str | None:
        value = self.parsed().get(name)
        return None if value is None else str(value)


def read_headers(body: BinaryIO, limit: int = MAX_RETURNED_HEADERS) -> OriginalHeaders:
    """Read the header section from the start of ``body`` (rules 1 and 2)."""
    scanner = HeaderScanner(limit)
    out = bytearray()
    truncated = False
    while True:
        chunk = body.read(CHUNK_SIZE)
        scanned = scanner.feed(chunk) if chunk else scanner.finish()
        out += scanned.header
        if scanner.too_big or len(out) > limit:
            del out[limit:]
            cut = out.rfind(b"\n")
            del out[cut + 1 :]
            truncated = True
            break
        if scanned.tail is not None or not chunk:
            break
    return OriginalHeaders(to_crlf(bytes(out)), truncated)


def to_crlf(data: bytes) -> bytes:
    """Bare LF → CRLF in one piece of text (rule 3)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class LfToCrlf:
    """Streaming bare-LF → CRLF (rule 3); an LF that starts a chunk after a CR that ended the
    previous one is left alone."""

    def __init__(self) -> None:
        self._after_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        skip_first = self._after_cr and chunk.startswith(b"\n")
        self._after_cr = chunk.endswith(b"\r")
        if skip_first:
            return b"\n" + to_crlf(chunk[1:])
        return to_crlf(chunk)


def iter_crlf(body: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The rest of ``body`` in chunks, with CRLF line ends (rules 1 and 3)."""
    conv = LfToCrlf()
    while True:
        chunk = body.read(chunk_size)
        if not chunk:
            return
        yield conv.feed(chunk)
