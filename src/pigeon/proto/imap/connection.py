"""The sans-IO IMAP server framing core: octets in, framed commands out.

Use::

    conn = ImapServerConnection(max_literal=50_000_000)
    conn.receive_data(sock.recv(65536))          # b"" at EOF
    while (ev := conn.next_event()) is not None:
        ...                                      # Command → parser.parse_command(ev); NeedContinuation → "+ Ready"
    conn.logged_in()                             # after LOGIN/AUTHENTICATE succeeded: lift the rule 3 limits

Rules:
1. Lazy: octets are examined only inside ``next_event``, one event at a time, so what the session
   does between two calls (``expect_line`` after AUTHENTICATE/IDLE, ``start_tls`` after STARTTLS)
   applies to the very next octets. ``None`` means "feed me more".
2. A command is a line that may end with a literal announcement ``{n}`` (synchronising),
   ``{n+}`` (non-synchronising, RFC 7888) or ``~{n}`` (literal8, RFC 3516); after the ``n``
   octets the command continues with another line (RFC 3501 §4.3, §7.5). For ``{n}`` the core
   emits ``NeedContinuation`` (the session sends ``+``); for ``{n+}`` it does not.
3. Limits (all explicit, all checked before octets are kept):
   - a line (between literals) is at most ``max_line`` octets; longer → ``BadCommand``, the line
     is dropped as it arrives and the core resynchronises at the end of the command;
   - before authentication (until ``logged_in()``) every literal is at most
     ``max_preauth_literal`` octets (``PREAUTH_MAX_LITERAL``, 8 KiB) and every command, APPEND
     included, at most ``SMALL_COMMAND_LINES × max_line``: a client that has not logged in cannot
     make the server hold more than that, nor spool anything;
   - after it, an APPEND literal is at most ``max_literal`` octets, any other command's literal
     at most ``max_line`` (a LOGIN password or SEARCH string has no business being megabytes);
   - with ``literal_plus=False`` the server offers LITERAL- and a non-synchronising literal is at
     most 4096 octets (RFC 7888 §4);
   - a whole command (lines + literals) is at most ``max_command`` octets (APPEND, MULTIAPPEND,
     after authentication) or ``SMALL_COMMAND_LINES × max_line`` (every other command); of an
     APPEND, at most ``SMALL_COMMAND_LINES × max_line`` octets are kept in memory (rule 4).
   A literal over its limit → ``LiteralTooBig`` without reading it: for ``{n}`` the client waits
   for a ``+`` that never comes and takes the tagged answer instead (RFC 3501 §7.5); for ``{n+}``
   the client sends the octets anyway, so the core counts them off without keeping them
   (RFC 7888 §4) — except, before authentication, one of more than ``max_preauth_literal``
   octets: then the core reads nothing more and the next event is ``ConnectionClosed`` with a
   reason (the session answers, says BYE and closes; RFC 7888 §4 lets a server close the
   connection rather than read a literal it refuses), so an anonymous client cannot make the
   server read gigabytes for nothing. The same holds for a non-synchronising literal at the end
   of a line that is being discarded. Either way the rest of that command is discarded,
   including any further non-synchronising literal in it.
4. After authentication an APPEND literal larger than ``literal_piece`` octets
   (``LITERAL_PIECE``, 64 KiB), or one that would take the octets kept for the command over
   ``SMALL_COMMAND_LINES × max_line``, is not kept: its octets come out as ``LiteralData``
   events of exactly ``literal_piece`` octets (the last one shorter, ``last=True``), and the
   ``Command`` has ``b""`` in its place and its index in ``spooled``. The session writes the
   pieces to a file. Pieces have a fixed size, so the events never depend on how the input was
   cut. Only APPEND literals are passed on: no other command takes a literal that large.
5. Memory is bounded whatever the client sends: the core keeps at most one line, the kept
   literals of the current command (within the limits above), one literal piece, and what
   ``receive_data`` was given and not yet examined (``input_buffered``, for the driver's
   back-pressure).
6. A tag is 1*<ASTRING-CHAR except "+"> (RFC 3501 §9); a first line without one is a
   ``BadCommand`` with ``tag=None`` (answer ``* BAD``). Empty lines are ignored.
7. ``start_tls`` drops every octet received after the STARTTLS line (RFC 3501 §6.2.1, the
   CVE-2011-0411 class of bug), so nothing sent in clear is read as if it came inside TLS.

What can go wrong: misuse by the application raises ``LocalProtocolError``; nothing the peer
sends raises.
"""

from __future__ import annotations

import enum
from typing import Final

from pigeon.proto.imap.errors import LocalProtocolError
from pigeon.proto.linebuffer import LineBuffer
from pigeon.proto.imap.events import (
    BadCommand,
    Command,
    ConnectionClosed,
    ImapEvent,
    LiteralData,
    LiteralTooBig,
    NeedContinuation,
    RawLine,
)

__all__ = [
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_LITERAL",
    "LITERAL_MINUS_MAX",
    "LITERAL_PIECE",
    "PREAUTH_MAX_LITERAL",
    "SMALL_COMMAND_LINES",
    "ImapServerConnection",
]

#: Longest command line (between literals), CRLF included. RFC 7162 §4 asks servers to accept at
#: least 8192 octets; Dovecot's imap_max_line_length defaults to 64 KiB, which real clients (long
#: UID sets from sync tools) are known to fit in.
DEFAULT_MAX_LINE: Final = 65536
#: Largest APPEND literal by default: 50 MB, the usual APPENDLIMIT/message_size_limit of
#: providers; the composition root passes the configured message size limit.
DEFAULT_MAX_LITERAL: Final = 50 * 1024 * 1024
#: RFC 7888 §4: with LITERAL-, a non-synchronising literal may be at most 4096 octets.
LITERAL_MINUS_MAX: Final = 4096
#: Largest literal before authentication: a LOGIN with a long user name and a password of a few
#: KiB, or an ID value (RFC 2971 §3.3: 1024 octets) fit; SASL responses are lines, not literals.
#: Twice LITERAL-'s 4096 (RFC 7888 §4), the size that RFC deems harmless to read unasked.
PREAUTH_MAX_LITERAL: Final = 8192
#: An APPEND literal larger than this is passed on in pieces of this size (rule 4): the size
#: of one read (``net.listener.READ_SIZE``) and of the store's copy (``store.lineends.CHUNK_SIZE``).
LITERAL_PIECE: Final = 65536
#: A command other than APPEND may hold at most this many max_line worth of octets in total
#: (its lines and its literals): room for a LIST with many patterns or a SEARCH with literals.
SMALL_COMMAND_LINES: Final = 4
#: Digits of a literal size read exactly; more means "larger than anything we accept".
_MAX_SIZE_DIGITS: Final = 20
_HUGE: Final = 10**_MAX_SIZE_DIGITS

# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
# resp-specials; a tag is ASTRING-CHAR (atom chars and "]") except "+".
_TAG_FORBIDDEN: Final = frozenset(b'(){ %*"\\+') | frozenset(range(0x00, 0x20)) | frozenset(range(0x7F, 0x100))


class _Starved(enum.Enum):
    STARVED = "starved"  # the line is incomplete: more input needed


_STARVED: Final = _Starved.STARVED


class _Mode(enum.Enum):
    COMMAND = "command"  # at the start of a command
    CONTINUE = "continue"  # the line after a literal, same command
    LITERAL = "literal"  # reading a literal's octets
    SKIP_LITERAL = "skip-literal"  # dropping a refused non-synchronising literal
    SKIP_LINE = "skip-line"  # dropping an over-long line
    RAW_LINE = "raw-line"  # the session asked for one raw line
    CLOSED = "closed"


def literal_announcement(line: bytes) -> tuple[int, bool] | None:
    """``(size, non_synchronising)`` when ``line`` (without CRLF) ends with ``{n}``/``{n+}``.

    ``~{n}`` (literal8) is framed the same way; the parser checks where it is allowed. A size of
    more than 20 digits is reported as 10**20 (over every limit) instead of being converted.
    """
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    inner = line[start + 1 : -1]
    plus = inner.endswith(b"+")
    if plus:
        inner = inner[:-1]
    if not inner or not inner.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    size = int(inner) if len(inner) <= _MAX_SIZE_DIGITS else _HUGE
    return size, plus


def _split_tag(line: bytes) -> tuple[str | None, str, bool]:
    """(tag or None, upper-cased command word, is-APPEND) read from a command's first line."""
    parts = line.split(b" ", 3)
    tag_b = parts[0]
    tag = None
    if tag_b and not any(c in _TAG_FORBIDDEN for c in tag_b):
        tag = tag_b.decode("ascii")
    name = parts[1].upper().decode("ascii", "replace") if len(parts) > 1 else ""
    sub = parts[2].upper() if len(parts) > 2 else b""
    is_append = name == "APPEND" or (name == "UID" and sub == b"APPEND")
    return tag, name, is_append


class ImapServerConnection:
    """Framing state of one IMAP server connection (see the module rules)."""

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        literal_plus: bool = True,
        *,
        max_command: int | None = None,
        authenticated: bool = False,
        max_preauth_literal: int = PREAUTH_MAX_LITERAL,
        literal_piece: int = LITERAL_PIECE,
    ) -> None:
        """``literal_plus``: True when LITERAL+ is offered (any ``{n+}`` within ``max_literal``),
        False for LITERAL- (``{n+}`` at most 4096 octets). ``max_command``: cap on a whole
        APPEND/MULTIAPPEND command; default ``max_literal + 16 × max_line`` (one message plus
        room for flags and dates; a MULTIAPPEND beyond it is refused as too big).
        ``authenticated``: start with the limits of rule 3 lifted (as after ``logged_in()``)."""
        if max_line < 64 or max_literal < 0 or max_preauth_literal < 0 or literal_piece < 1:
            raise ValueError("max_line must be at least 64, literal_piece positive, the others non-negative")
        self.max_line = max_line
        self.max_literal = max_literal
        self.literal_plus = literal_plus
        self.max_command = max_command if max_command is not None else max_literal + 16 * max_line
        self.max_preauth_literal = max_preauth_literal
        self.literal_piece = literal_piece
        self.authenticated = authenticated
        self._close_reason: str | None = None
        self._in = LineBuffer()  # an over-long line is dropped as it arrives (linebuffer rule 2)
        self._eof = False
        self._mode = _Mode.COMMAND
        self._reset_command()
        # over-long line being dropped (its first and last octets: LineBuffer.head and .tail)
        self._skip_raw = False  # the dropped line was a raw line: no literal at its end
        self._skip_left = 0  # octets of a refused {n+} literal still to drop

    def _reset_command(self) -> None:
        self._tag: str | None = None
        self._name = ""
        self._append = False
        self._frags: list[bytes] = []
        self._spooled: list[int] = []  # indexes in _frags of literals passed on (rule 4)
        self._total = 0  # octets of the command, kept or passed on
        self._kept = 0  # octets of the command kept in _frags
        self._discarding = False  # the rest of the command is dropped (already answered)
        self._lit_left = 0  # octets of the literal being read still to come
        self._lit_pass = False  # that literal is passed on as LiteralData (rule 4)

    # --- input -------------------------------------------------------------------------------

    @property
    def input_buffered(self) -> int:
        """Octets received and not yet examined, plus a literal being read."""
        return len(self._in.data)

    @property
    def in_command(self) -> bool:
        """True while a command has started and is not complete (a literal is being read)."""
        return self._mode is not _Mode.COMMAND and self._mode is not _Mode.RAW_LINE

    def receive_data(self, data: bytes) -> None:
        """Feed octets from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after EOF")
            return
        if not data:
            self._eof = True
        elif self._mode is not _Mode.CLOSED:
            self._in.data += data

    def logged_in(self) -> None:
        """The session has authenticated: lift the limits of rule 3 for the next commands."""
        if self._mode is not _Mode.COMMAND and self._mode is not _Mode.CLOSED:
            raise LocalProtocolError(f"logged_in() between commands only (now {self._mode.value})")
        self.authenticated = True

    def expect_line(self) -> None:
        """The next event is ``RawLine`` (an AUTHENTICATE response or IDLE's ``DONE``)."""
        if self._mode is not _Mode.COMMAND:
            raise LocalProtocolError(f"expect_line() between commands only (now {self._mode.value})")
        self._mode = _Mode.RAW_LINE

    def cancel_line(self) -> None:
        """Undo ``expect_line`` (e.g. the session ended IDLE itself); no-op otherwise."""
        if self._mode is _Mode.RAW_LINE:
            self._mode = _Mode.COMMAND

    def start_tls(self) -> None:
        """After answering OK to STARTTLS: forget everything received in clear (RFC 3501 §6.2.1)."""
        if self._mode is not _Mode.COMMAND:
            raise LocalProtocolError("start_tls() between commands only")
        self._in.clear()

    # --- events ------------------------------------------------------------------------------

    def next_event(self) -> ImapEvent | None:
        """The next event, or None when more input is needed (see the module rules)."""
        while True:
            mode = self._mode
            if mode is _Mode.CLOSED:
                return ConnectionClosed(self._close_reason)
            if mode is _Mode.LITERAL:
                got = self._read_literal()
                if got is _STARVED:
                    return self._starved()
                if got is not None:
                    return got
                continue
            if mode is _Mode.SKIP_LITERAL:
                if not self._skip_literal():
                    return self._starved()
                continue
            if mode is _Mode.SKIP_LINE:
                line = self._skip_line()
                if line is None:
                    return self._starved()
                self._after_line(line)
                continue
            ev = self._next_line_event()
            if isinstance(ev, _Starved):
                return self._starved()
            if ev is not None:
                return ev

    def _starved(self) -> ConnectionClosed | None:
        if self._eof:
            self._mode = _Mode.CLOSED
            self._in.clear()
            self._reset_command()
            return ConnectionClosed()
        return None

    def _read_literal(self) -> LiteralData | None | _Starved:
        """The literal being read: kept whole once all of it is here, or passed on one piece at
        a time (rule 4)."""
        n = min(self._lit_left, self.literal_piece) if self._lit_pass else self._lit_left
        buf = self._in.data
        if len(buf) < n:
            return _STARVED
        data = bytes(buf[:n])
        del buf[:n]
        self._lit_left -= n
        if not self._lit_pass:
            self._frags.append(data)
            self._mode = _Mode.CONTINUE
            return None
        last = not self._lit_left
        if last:
            self._spooled.append(len(self._frags))
            self._frags.append(b"")
            self._mode = _Mode.CONTINUE
        return LiteralData(self._tag or "", data, last)

    def _skip_literal(self) -> bool:
        buf = self._in.data
        take = min(self._skip_left, len(buf))
        del buf[:take]
        self._skip_left -= take
        if self._skip_left:
            return False
        self._mode = _Mode.CONTINUE
        return True

    def _take_line(self) -> bytes | None:
        """One line without its CRLF (bare LF tolerated); None if incomplete. An over-long line
        switches to SKIP_LINE and returns None."""
        line = self._in.line(self.max_line)
        if line is None:
            if self._in.overlong:
                self._skip_raw = self._mode is _Mode.RAW_LINE
                self._mode = _Mode.SKIP_LINE  # _skip_line drops the octets, up to the LF
            return None
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    def _skip_line(self) -> bytes | None:
        """Drop the over-long line; at its end return its last octets (for a literal at its end)."""
        if not self._in.drop_line():
            return None
        tail = self._in.tail
        return tail[:-1] if tail.endswith(b"\r") else tail

    def _next_line_event(self) -> ImapEvent | None | _Starved:
        mode = self._mode
        line = self._take_line()
        if line is None:
            if self._mode is _Mode.SKIP_LINE:
                return self._overlong(mode)
            return _STARVED
        if mode is _Mode.RAW_LINE:
            self._mode = _Mode.COMMAND
            return RawLine(line)
        if mode is _Mode.COMMAND:
            if not line:
                return None  # an empty line between commands is ignored
            self._reset_command()
            tag, self._name, self._append = _split_tag(line)
            if tag is None:
                self._discarding = True
                self._after_line(line)
                return BadCommand(None, "missing or invalid tag")
            self._tag = tag
        if self._discarding:
            self._after_line(line)
            return None
        return self._add_line(line)

    def _overlong(self, mode: _Mode) -> ImapEvent | None:
        """The line being read is over max_line: report once, then drop it."""
        if mode is _Mode.RAW_LINE:
            return BadCommand(None, "line too long")
        if mode is _Mode.COMMAND:
            self._reset_command()
            tag, self._name, self._append = _split_tag(self._in.head)
            self._tag = tag
        already = self._discarding
        self._discarding = True
        self._frags = []
        if already:
            return None
        return BadCommand(self._tag, "line too long")

    def _add_line(self, line: bytes) -> ImapEvent | None:
        tag = self._tag or ""
        kept_limit = SMALL_COMMAND_LINES * self.max_line
        append = self._append and self.authenticated  # rule 3: before it, APPEND is small too
        limit = self.max_command if append else kept_limit
        self._total += len(line)
        self._kept += len(line)
        if self._total > limit or self._kept > kept_limit:
            return self._refuse(line, BadCommand(tag, "command too long"))
        ann = literal_announcement(line)
        if ann is None:
            frags = tuple(self._frags) + (line,)
            name, spooled = self._name, tuple(self._spooled)
            self._reset_command()
            self._mode = _Mode.COMMAND
            return Command(tag, name, frags, spooled)
        size, plus = ann
        if not self.authenticated:
            lit_limit = min(self.max_preauth_literal, self.max_literal, self.max_line)
        elif append:
            lit_limit = self.max_literal
        else:
            lit_limit = min(self.max_literal, self.max_line)
        if plus and not self.literal_plus:
            lit_limit = min(lit_limit, LITERAL_MINUS_MAX)  # RFC 7888 §4
        if size > lit_limit or self._total + size > limit:
            return self._refuse(line, LiteralTooBig(tag, size, not plus))
        self._frags.append(line)
        self._total += size
        self._lit_left = size
        self._lit_pass = append and (size > self.literal_piece or self._kept + size > kept_limit)
        if not self._lit_pass:
            self._kept += size
        self._mode = _Mode.LITERAL
        if not plus:
            return NeedContinuation(tag, size)
        return None

    def _refuse(self, line: bytes, answer: ImapEvent) -> ImapEvent:
        """The command is answered now (``answer``); drop the rest of it (rule 3)."""
        self._discarding = True
        self._frags = []
        self._spooled = []
        self._after_line(line)
        return answer

    def _after_line(self, line: bytes) -> None:
        """A line of a command being discarded (or a dropped over-long line) ended: skip the
        octets of a non-synchronising literal at its end, or end the command."""
        ann = None if (self._mode is _Mode.SKIP_LINE and self._skip_raw) else literal_announcement(line)
        if ann is not None and ann[1] and not self.authenticated and ann[0] > self.max_preauth_literal:
            # rule 3: before authentication, never read a big refused literal; stop reading instead
            self._mode = _Mode.CLOSED
            self._close_reason = f"Refused a literal of {ann[0]} octets before authentication"
            self._in.clear()
            self._reset_command()
            return
        if ann is not None and ann[1]:
            self._skip_left = ann[0]
            self._mode = _Mode.SKIP_LITERAL  # RFC 7888 §4: the client sends them anyway
            self._discarding = True
            return
        # no literal, or a synchronising one the client will not send without our "+"
        self._reset_command()
        self._mode = _Mode.COMMAND

