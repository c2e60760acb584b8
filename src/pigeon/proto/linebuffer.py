"""Bounded line input, shared by the sans-IO server cores (SMTP, IMAP, POP3).

Use::

    buf = LineBuffer()
    buf.data += octets                  # receive_data; DATA, BDAT and literals read buf.data in place
    line = buf.line(limit)              # b"EHLO x\\r\\n" (LF included), or None
    if line is None and buf.overlong:   # `limit` octets came without an LF: "line too long"
        while not buf.drop_line(): ...  # (as input arrives) True at the line's LF; head and tail kept

Rules:
1. ``line(limit)`` takes the next line, its LF included (and any CR before it: the caller strips
   what it does not want), when the LF is among the first ``limit`` octets; otherwise it takes
   nothing and returns None.
2. A line is over-long when ``limit`` octets are buffered without an LF among them: ``line`` then
   sets ``overlong`` and keeps the line's first ``HEAD`` octets (``head``: for the log, and the
   tag of an IMAP command). From then on the caller calls ``drop_line`` instead of ``line``: it
   drops the octets as they arrive, so the line is never buffered whole, keeps the last ``TAIL``
   octets before the LF (``tail``: an IMAP literal announcement at the end of a dropped line),
   and returns True once the LF came (it takes the LF and clears ``overlong``).
3. ``clear`` forgets everything, an over-long line under way included (STARTTLS, a closed
   connection).

What can go wrong: nothing raises.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEAD", "TAIL", "LineBuffer"]

HEAD: Final = 256  # octets kept of an over-long line's start (an IMAP tag, a log excerpt)
TAIL: Final = 32  # octets kept of its end (an IMAP literal announcement: "{" 20 digits "+}" and CR)


class LineBuffer:
    """Received octets not yet consumed (see the module rules)."""

    __slots__ = ("data", "overlong", "head", "tail")

    def __init__(self) -> None:
        self.data = bytearray()
        self.overlong = False
        self.head = b""
        self.tail = b""

    def __len__(self) -> int:
        return len(self.data)

    def line(self, limit: int) -> bytes | None:
        """Rule 1; rule 2 when the line is over ``limit``."""
        buf = self.data
        lf = buf.find(b"\n", 0, limit)
        if lf >= 0:
            line = bytes(buf[: lf + 1])
            del buf[: lf + 1]
            return line
        if len(buf) >= limit:
            self.overlong = True
            self.head = bytes(buf[:HEAD])
            self.tail = b""
        return None

    def drop_line(self) -> bool:
        """Rule 2: drop the over-long line's octets; True once its LF is taken."""
        buf = self.data
        lf = buf.find(b"\n")
        if lf < 0:
            if buf:
                self.tail = (self.tail + bytes(buf[-TAIL:]))[-TAIL:]
                buf.clear()
            return False
        self.tail = (self.tail + bytes(buf[max(0, lf - TAIL) : lf]))[-TAIL:]
        del buf[: lf + 1]
        self.overlong = False
        return True

    def clear(self) -> None:
        """Rule 3."""
        self.data.clear()
        self.overlong = False
