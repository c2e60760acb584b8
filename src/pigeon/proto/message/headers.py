"""A streaming scanner for the header section of a message (RFC 5322 §2.1, §2.2).

The message arrives in chunks of any size (DATA lines, BDAT chunks); a header line may be split
across chunks. The scanner holds back only the unfinished last line, reports each complete
header line to pass on, and says where the header section ends, so cleanup can count
``Received:`` fields and insert missing fields before the body without holding the message;
the bounce stage reads a queued message's header section and submission checks ``From:``
with the same scanner.

Rules:
1. The header section ends at the first empty line (RFC 5322 §2.1) or at the first line that
   is neither a header field (``name:``, RFC 5322 §2.2: printable ASCII name without colon) nor
   a continuation (starts with SP or HTAB, RFC 5322 §2.2.3). Everything from that line on is
   body and passes untouched (``tail``).
2. Field names are compared case-insensitively (RFC 5322 §1.2.2).
3. At most ``max_header_bytes`` are examined; past that, ``too_big`` is set (the caller decides:
   cleanup refuses the message) and the scanner stops holding anything back.
4. Lines may end in CRLF (the wire form) or bare LF (local submission); both are accepted.

What can go wrong: nothing raises; limits are reported through ``too_big``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 5322 §3.6.1: ftext is printable US-ASCII except ":"; WSP may precede the colon (obs-).
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
INTERESTING = frozenset({"received", "message-id", "date", "authentication-results"})


@dataclass(slots=True)
class Scanned:
    """What one ``feed`` let through."""

    header: bytes  # complete header lines, ready to write
    tail: bytes | None = None  # set when the header section ended: the rest (body side)


@dataclass(slots=True)
class HeaderScanner:
    max_header_bytes: int
    in_headers: bool = True
    received: int = 0  # Received: fields seen
    seen: set[str] = field(default_factory=set)  # lower-cased INTERESTING names seen
    header_bytes: int = 0
    too_big: bool = False
    ends_with_newline: bool = True  # whether the last header byte let through ends a line
    _partial: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> Scanned:
        if not self.in_headers:
            return Scanned(b"", chunk)
        if self.too_big:
            return Scanned(chunk)
        self._partial += chunk
        data = bytes(self._partial)
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            line = data[start : nl + 1]
            if self._ends_headers(line):
                self.in_headers = False
                self._partial.clear()
                return self._emit(data[:start], data[start:])
            self._note(line)
            start = nl + 1
        del self._partial[:start]
        if self.header_bytes + len(data) > self.max_header_bytes:  # rule 3
            self.too_big = True
            self._partial.clear()
            return self._emit(data, None)
        return self._emit(data[:start], None)

    def finish(self) -> Scanned:
        """End of message: the unfinished last line, if any, is classified like any other."""
        if not self.in_headers or not self._partial:
            return Scanned(b"")
        line = bytes(self._partial)
        self._partial.clear()
        if self._ends_headers(line):
            self.in_headers = False
            return self._emit(b"", line)
        self._note(line)
        return self._emit(line, None)

    def _emit(self, header: bytes, tail: bytes | None) -> Scanned:
        self.header_bytes += len(header)
        if header:
            self.ends_with_newline = header.endswith(b"\n")
        return Scanned(header, tail)

    def _ends_headers(self, line: bytes) -> bool:
        if line in (b"\r\n", b"\n", b"\r"):  # rule 1: the empty line
            return True
        if line[:1] in (b" ", b"\t"):
            return False  # continuation
        return _FIELD.match(line) is None

    def _note(self, line: bytes) -> None:
        m = _FIELD.match(line)
        if m is None:
            return
        name = m.group(1).decode("ascii").lower()
        if name == "received":
            self.received += 1
        if name in INTERESTING:
            self.seen.add(name)
