"""Reading SMTP replies off the wire (the client role): bytes → ``Reply`` values.

Rules:
1. A reply is one or more lines ``ddd-text`` ending with one ``ddd text`` (or bare ``ddd``), all
   with the same code (RFC 5321 §4.2.1). Lines end in CRLF; a bare LF is tolerated.
2. An enhanced status code (RFC 3463, RFC 2034 §3) is taken from the first line when it has the
   form ``c.s.d`` with ``c`` equal to the reply's first digit; it is removed from every line that
   repeats it. Otherwise ``enhanced`` is "".
3. Limits: a reply line may be ``MAX_REPLY_LINE`` octets and a reply ``MAX_REPLY_LINES`` lines;
   beyond that the peer is broken.

What can go wrong: a malformed line, mixed codes, or a limit exceeded raise
``RemoteProtocolError`` (broken framing: no reply can repair it).
"""

from __future__ import annotations

import re
from typing import Final

from pigeon.proto.smtp.errors import RemoteProtocolError
from pigeon.proto.smtp.reply import Reply

MAX_REPLY_LINE: Final = 2048  # RFC 5321 §4.5.3.1.5 says 512; real servers send longer, so ×4
MAX_REPLY_LINES: Final = 256  # no real reply (an EHLO list, a HELP text) comes near this
_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]|$)")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class ReplyParser:
    """Accumulates bytes and yields complete replies in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[str] = []
        self._code = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        """Forget everything buffered (used at STARTTLS)."""
        self._buf.clear()
        self._lines = []
        self._code = 0

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more input is needed."""
        while True:
            lf = self._buf.find(b"\n", 0, MAX_REPLY_LINE)
            if lf < 0:
                if len(self._buf) >= MAX_REPLY_LINE:
                    raise RemoteProtocolError("reply line too long")
                return None
            raw = bytes(self._buf[:lf])
            del self._buf[: lf + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            m = _LINE.match(raw)
            if m is None:
                raise RemoteProtocolError(f"malformed reply line: {raw[:64]!r}")
            code = int(m.group(1))
            if self._lines and code != self._code:
                raise RemoteProtocolError("reply lines with different codes")
            self._code = code
            self._lines.append(raw[4:].decode("utf-8", "replace"))
            if len(self._lines) > MAX_REPLY_LINES:
                raise RemoteProtocolError("reply has too many lines")
            if m.group(2) != b"-":
                lines, self._lines = self._lines, []
                return make_reply(code, lines)


def make_reply(code: int, lines: list[str]) -> Reply:
    """Build a Reply, lifting an enhanced status code out of the lines (RFC 2034 §3)."""
    enhanced = ""
    m = _ENHANCED.match(lines[0]) if lines else None
    if m is not None and int(m.group(1)) == code // 100:
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        prefix = enhanced
        lines = [
            (ln[len(prefix) :].lstrip(" ") if ln.startswith(prefix) else ln) for ln in lines
        ]
    text: str | tuple[str, ...] = lines[0] if len(lines) == 1 else tuple(lines)
    return Reply(code, enhanced, text)


def parse_reply(data: bytes) -> Reply:
    """Parse exactly one complete reply (convenience for tests and tools)."""
    p = ReplyParser()
    p.feed(data)
    reply = p.next_reply()
    if reply is None or p.buffered:
        raise RemoteProtocolError("not exactly one complete reply")
    return reply
