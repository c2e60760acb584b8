"""Readers for the message body on the server side: DATA (dot-terminated) and BDAT (counted).

Rules:
1. DATA content ends ONLY at ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4); the first CRLF may be the one
   that ended the DATA command line. ``<LF>.<LF>``, ``<LF>.<CRLF>``, ``<CRLF>.<LF>``, ``<CR>.<CR>``
   and the like never end the data: that makes SMTP smuggling (CVE-2023-51764 class) impossible,
   because what follows such a sequence is read as message text, never as commands.
2. A bare CR or bare LF anywhere in the content sets ``bare_newline`` (RFC 5321 §2.3.8); the
   application refuses such a message with ``C550_BARE_NEWLINE``.
3. Dot-unstuffing (RFC 5321 §4.5.2): a line that starts with ``.`` loses that first dot. Line ends
   are preserved exactly as received.
4. Size is counted on the unstuffed octets. Once over ``max_size`` (0 = unlimited) or once an error
   is set, nothing more is returned but input is still consumed up to the end of data, so that the
   message text is never read as commands; the error is reported at the end.
5. Memory stays bounded: only an incomplete last line is held back, and a line longer than
   ``hard_line_limit`` is discarded as it arrives (error ``C552_LINE_TOO_LONG``).
6. Performance: complete lines are processed in bulk with ``bytes.find``/``count``/``replace``
   (C loops); no per-byte or per-line Python loop on the common path.
7. BDAT content is raw (no unstuffing, no end marker); ``BareNewlineScan`` applies rule 2 to it
   across the chunks of a transaction, where a CR that ends one chunk and the LF that starts
   the next are one CRLF.
"""

from __future__ import annotations

from pigeon.proto.smtp.reply import C552_LINE_TOO_LONG, C552_MESSAGE_TOO_BIG, Reply

_DOT = 0x2E
_CR = 0x0D
_LF = 0x0A
_END = b"\r\n.\r\n"


class DotReader:
    """Consumes DATA content from a shared input buffer."""

    __slots__ = (
        "max_size",
        "hard_line_limit",
        "size",
        "error",
        "bare_newline",
        "done",
        "_prev_crlf",
        "_skipping",
        "_skip_last_cr",
    )

    def __init__(self, max_size: int, hard_line_limit: int, prev_crlf: bool = True) -> None:
        self.max_size = max_size
        self.hard_line_limit = hard_line_limit
        self.size = 0
        self.error: Reply | None = None
        self.bare_newline = False
        self.done = False
        self._prev_crlf = prev_crlf  # the line before the current position ended with CRLF
        self._skipping = False  # inside an over-long line, discarding up to its LF
        self._skip_last_cr = False

    def discard(self, reply: Reply) -> None:
        """Stop returning content; report ``reply`` at the end (the first error wins)."""
        if self.error is None:
            self.error = reply

    def feed(self, buf: bytearray) -> bytes:
        """Consume what can be consumed from ``buf`` (deleting it from the front).

        Returns the unstuffed content to hand on (``b""`` when none); sets ``done`` at the end.
        """
        if self._skipping and not self._skip_long_line(buf):
            return b""
        if not buf:
            return b""
        if buf[0] == _DOT and self._prev_crlf:
            if len(buf) < 3 and (buf == b"." or buf == b".\r"):
                return b""  # could be the end marker; wait for more
            if buf.startswith(b".\r\n"):
                del buf[:3]
                self.done = True
                return b""
        # Rule 6: one scan finds the first line that starts with a dot, a stuffed one or the end
        # marker's; the end marker can only be at or after it, and without it (the usual message)
        # there is no second scan for dot-stuffing.
        first = buf.find(b"\n.")
        idx = -1 if first < 0 else buf.find(_END, first - 1 if first else 0)
        if idx >= 0:
            seg_end, consumed = idx + 2, idx + 5
            self.done = True
        else:
            last_lf = buf.rfind(b"\n")
            if last_lf < 0:
                self._check_tail(buf)
                return b""
            seg_end = consumed = last_lf + 1
        seg = bytes(buf[:seg_end])
        del buf[:consumed]
        out = self._process(seg, 0 <= first and first + 1 < seg_end)
        if not self.done:
            self._check_tail(buf)
        return out

    def _process(self, seg: bytes, stuffed: bool) -> bytes:
        """``seg`` is whole lines, starting at a line start and ending with LF; ``stuffed``: a
        line after the first starts with a dot."""
        if not self.bare_newline:
            crlf = seg.count(b"\r\n")
            if seg.count(b"\n") != crlf or seg.count(b"\r") != crlf:
                self.bare_newline = True  # RFC 5321 §2.3.8
        if len(seg) > self.hard_line_limit and self.error is None:
            # Only a segment longer than the limit can hold an over-long line.
            if max(map(len, seg.split(b"\n"))) > self.hard_line_limit + 1:
                self.error = C552_LINE_TOO_LONG
        self._prev_crlf = seg.endswith(b"\r\n")
        if self.error is not None:
            self.size += len(seg)
            return b""
        # RFC 5321 §4.5.2: remove the first dot of every line that starts with one.
        if seg[0] == _DOT:
            seg = seg[1:]
        if stuffed:
            seg = seg.replace(b"\n.", b"\n")
        self.size += len(seg)
        if self.max_size and self.size > self.max_size:
            self.error = C552_MESSAGE_TOO_BIG  # RFC 1870 §6
            return b""
        return seg

    def _check_tail(self, buf: bytearray) -> None:
        """The incomplete last line: if it is already too long, start discarding it."""
        if len(buf) > self.hard_line_limit + 1:
            if self.error is None:
                self.error = C552_LINE_TOO_LONG
            self._skipping = True
            self._skip_last_cr = buf[-1] == _CR
            del buf[:]

    def _skip_long_line(self, buf: bytearray) -> bool:
        """Discard up to the end of an over-long line; True once it is gone."""
        lf = buf.find(b"\n")
        if lf < 0:
            if buf:
                self._skip_last_cr = buf[-1] == _CR
                del buf[:]
            return False
        self._prev_crlf = buf[lf - 1] == _CR if lf > 0 else self._skip_last_cr
        if not self._prev_crlf:
            self.bare_newline = True
        del buf[: lf + 1]
        self._skipping = False
        return True


class ChunkReader:
    """Consumes exactly ``remaining`` octets of a BDAT chunk (RFC 3030 §2): raw, no unstuffing."""

    __slots__ = ("remaining",)

    def __init__(self, size: int) -> None:
        self.remaining = size

    def feed(self, buf: bytearray) -> bytes:
        take = min(len(buf), self.remaining)
        if take == 0:
            return b""
        data = bytes(buf[:take])
        del buf[:take]
        self.remaining -= take
        return data


class BareNewlineScan:
    """Rule 7: bare CR or LF in the octets of consecutive BDAT chunks (RFC 5321 §2.3.8)."""

    __slots__ = ("seen", "_cr_pending")

    def __init__(self) -> None:
        self.seen = False
        self._cr_pending = False  # the last octet fed was a CR: its LF may start the next feed

    def feed(self, data: bytes) -> None:
        if self.seen or not data:
            return
        start = 0
        if self._cr_pending:
            if data[0] != _LF:
                self.seen = True
                return
            start = 1
        self._cr_pending = data[-1] == _CR
        end = len(data) - 1 if self._cr_pending else len(data)
        crlf = data.count(b"\r\n", start, end)
        if data.count(b"\n", start, end) != crlf or data.count(b"\r", start, end) != crlf:
            self.seen = True

    def end(self) -> bool:
        """True when a bare CR or LF was seen; a CR at the very end is bare."""
        if self._cr_pending:
            self.seen = True
            self._cr_pending = False
        return self.seen
