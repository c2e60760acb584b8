"""The sans-IO SMTP server core: bytes in, typed events out (like h11).

Use::

    conn = ServerConnection(max_message_size=50_000_000)
    conn.send(greeting)                      # the 220 banner answers the connection
    out.write(conn.data_to_send())
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA: out.write(conn.data_to_send()); conn.receive_data(sock.recv(...)); continue
        ...                                  # act, then conn.send(reply) for events that need one
        if isinstance(ev, ConnectionClosed): break

Rules:
1. ``next_event`` returns at most one command at a time and parses nothing more until the
   application has ``send``-ed the reply to it (RFC 2920 §3.1: replies in order). Events that need
   a reply: every command, ``EndOfData``, ``BdatChunkEnd``, and the connection itself (the
   greeting, before the first ``next_event``). ``DataChunk``, ``Bdat``, ``CommandRejected`` and
   ``ConnectionClosed`` need none. On ``ConnectionClosed`` the application still sends
   ``data_to_send()`` one last time: it may hold the replies to pipelined commands answered
   before the end, a committed message's ``250`` among them, and the closing ``421``.
2. Sequence is a table keyed by (phase, verb) in ``sequence.py``; a missing entry is ``503 5.5.1``
   (RFC 5321 §4.1.4).
   The core learns what the application accepted from the reply codes it sends: 2xx to HELO/EHLO
   → greeted (and any transaction reset, RFC 5321 §4.1.4); 2xx to MAIL → transaction open; 2xx to
   RCPT → one more recipient; 354 to DATA → data mode; 2xx to RSET → reset; any reply to the end of
   data or to BDAT LAST → transaction over; 220 to STARTTLS → ``start_tls()`` allowed; 334 to AUTH
   → the next line is an ``AuthResponse``; 235 → authenticated; 221 to QUIT or any 421 → closed.
3. Peer mistakes never raise: the core queues the reply itself and emits ``CommandRejected``.
4. Command lines are limited to ``max_command_line`` octets with CRLF (RFC 5321 §4.5.3.1.4); after
   EHLO, MAIL and RCPT get ``ESMTP_LINE_ALLOWANCE`` more (RFC 1870, RFC 3461, RFC 4954 each raise
   the limit for their parameters). A longer line is discarded as it arrives, never buffered whole.
5. DATA and BDAT bodies go through ``body.DotReader``/``body.ChunkReader`` (see there for the
   smuggling rules). A rejected BDAT with a readable size still has its octets read and dropped
   (RFC 3030 §2), so chunk data is never parsed as commands. A BDAT whose size cannot be read is
   fatal: the octets that follow cannot be located (rule 8).
   After a 4xx/5xx to a BDAT chunk, later chunks of the transaction are read and dropped and their
   ``BdatChunkEnd`` carries that reply (RFC 3030 §2: pipelined chunks after a failure are discarded).
6. ``start_tls`` drops every octet received after the STARTTLS line (CVE-2011-0411 class) and
   forgets the greeting, the transaction and any authentication (RFC 3207 §4.2).
7. A 554 greeting (RFC 5321 §3.1) leaves the session refusing every command except QUIT with 503.
8. Fatal input (a BDAT size that cannot be read, a web request line such as ``GET / HTTP/1.1``)
   is answered with a ``421`` queued after every reply already due, and the core closes: input
   after it is dropped. 421 is the one code with which a server may close the channel on its own
   (RFC 5321 §3.8); nothing pending is lost, so a client never retries a message we committed.
9. BDAT content follows DATA's rule on line ends (RFC 5321 §2.3.8): a bare CR or LF anywhere in
   the transaction's chunks sets ``bare_newline`` on the ``BdatChunkEnd`` of the LAST chunk; a
   CR that ends one chunk and the LF that starts the next are one CRLF. BODY=BINARYMIME content
   has no lines (RFC 3030 §3) and is not checked.

What can go wrong: application misuse raises ``LocalProtocolError``; nothing the peer sends raises.
"""

from __future__ import annotations

import collections
import enum
from typing import Final

from pigeon.proto.linebuffer import LineBuffer
from pigeon.proto.smtp import commands, sequence
from pigeon.proto.smtp.body import BareNewlineScan, ChunkReader, DotReader
from pigeon.proto.smtp.errors import LocalProtocolError
from pigeon.proto.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    Bdat,
    BdatChunkEnd,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfData,
    Helo,
    MailFrom,
    NeedData,
    Quit,
    RcptTo,
    Rset,
    ServerEvent,
    StartTls,
)
from pigeon.proto.smtp.params import ParamError
from pigeon.proto.smtp.sequence import Phase
from pigeon.proto.smtp.reply import (
    C421_FORBIDDEN_COMMAND,
    C500_AUTH_LINE_TOO_LONG,
    C500_LINE_TOO_LONG,
    C500_UNRECOGNIZED,
    C502_NOT_IMPLEMENTED,
    C552_MESSAGE_TOO_BIG,
    Reply,
)

__all__ = ["NEED_DATA", "DEFAULT_OFFERED", "ESMTP_LINE_ALLOWANCE", "Phase", "ServerConnection", "ServerState"]

#: Extra octets allowed on MAIL/RCPT lines after EHLO: RFC 1870 §3 (+26 for SIZE), RFC 3461 §5
#: (+100 MAIL for RET/ENVID, +500 RCPT for NOTIFY/ORCPT), RFC 4954 §5 (+500 MAIL for AUTH=),
#: rounded up to leave room for BODY= and SMTPUTF8.
ESMTP_LINE_ALLOWANCE: Final = 1024
# Rule 4: the commands that get ESMTP_LINE_ALLOWANCE (compared with a slice of the input buffer).
_LONG_VERBS: Final = (bytearray(b"MAIL "), bytearray(b"RCPT "))
REJECTED_LINE_SHOWN: Final = 128  # octets of an offending line kept in CommandRejected (for the log)

#: Extensions whose commands/parameters the core accepts unless told otherwise.
DEFAULT_OFFERED: Final = frozenset(
    {"SIZE", "8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8", "DSN", "AUTH", "STARTTLS", "PIPELINING"}
)


class ServerState(enum.Enum):
    REPLY_PENDING = "reply-pending"  # an event awaits the application's reply
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"  # the next line is a SASL response
    CLOSED = "closed"


class _Greeting:
    """Marker: the connection itself awaits its greeting."""


_GREETING: Final = _Greeting()
_Awaiting = Command | EndOfData | BdatChunkEnd | _Greeting


class ServerConnection:
    def __init__(
        self,
        max_message_size: int,
        hard_line_limit: int = 65536,
        max_command_line: int = 512,
        auth_line_limit: int = 12288,
        *,
        offered: frozenset[str] = DEFAULT_OFFERED,
        postmaster_domain: str = "",
    ) -> None:
        """``max_message_size`` in octets, 0 = unlimited. ``offered``: the EHLO keywords the
        application advertises (upper-case). ``postmaster_domain``: the domain given to a bare
        ``RCPT TO:<Postmaster>`` (RFC 5321 §4.1.1.3); "" leaves the Address domain empty."""
        self.max_message_size = max_message_size
        self.hard_line_limit = hard_line_limit  # default: 64 KiB, Postfix's line_length_limit × 32
        self.max_command_line = max_command_line  # RFC 5321 §4.5.3.1.4
        self.auth_line_limit = auth_line_limit  # RFC 4954 §4: 12288 octets for a SASL line
        self.offered = offered
        self.postmaster_domain = postmaster_domain
        self._in = LineBuffer()  # command and SASL lines; DATA and BDAT read its data in place
        self._out = bytearray()
        self._eof = False
        self._state = ServerState.REPLY_PENDING
        self._awaiting: _Awaiting | None = _GREETING
        self._queued: collections.deque[ServerEvent] = collections.deque()
        self._refused = False
        self._tls_ready = False
        self.tls_active = False
        self.authenticated = False
        self._greeted = False
        self._esmtp = False
        self._reset_transaction()
        self._dot: DotReader | None = None
        self._chunk: ChunkReader | None = None
        self._chunk_event: Bdat | None = None
        self._chunk_reject: tuple[Reply, bytes] | None = None
        self._data_crlf = True  # the DATA line ended with CRLF: its CRLF may start <CRLF>.<CRLF>

    # --- properties ------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def ehlo_done(self) -> bool:
        """True once HELO or EHLO was accepted (2xx) since the start or the last STARTTLS."""
        return self._greeted

    @property
    def extensions_ok(self) -> bool:
        """True when the greeting was EHLO: ESMTP parameters and extensions may be used."""
        return self._esmtp

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    @property
    def rcpt_count(self) -> int:
        return self._rcpts

    @property
    def input_buffered(self) -> int:
        """Octets received and not yet consumed (for the driver's back-pressure)."""
        return len(self._in.data)

    @property
    def phase(self) -> Phase:
        if not self._greeted:
            return Phase.INIT
        if not self._in_txn:
            return Phase.READY
        if self._bdat_started:
            return Phase.BDAT
        return Phase.RCPT if self._rcpts else Phase.MAIL

    # --- input / output --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed octets from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after EOF")
            return
        if not data:
            self._eof = True
        elif self._state is not ServerState.CLOSED:
            self._in.data += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _queue_reply(self, reply: Reply) -> None:
        self._out += reply.to_bytes()
        if reply.code == 421:  # RFC 5321 §3.8: 421 means the server closes the channel
            self._close()

    def _close(self) -> None:
        self._state = ServerState.CLOSED
        self._in.clear()

    def _reset_transaction(self) -> None:
        self._in_txn = False
        self._rcpts = 0
        self._txn_smtputf8 = False
        self._txn_binarymime = False
        self._bdat_started = False
        self._bdat_size = 0
        self._bdat_error: Reply | None = None
        self._bdat_bare = BareNewlineScan()  # rule 9

    # --- the application's side ------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        """Answer the event that awaits a reply (or send an unsolicited 421 at any time)."""
        aw = self._awaiting
        if aw is None:
            if reply.code == 421 and self._state is not ServerState.CLOSED:
                self._queue_reply(reply)
                return
            raise LocalProtocolError(f"no command awaits a reply (state {self._state.value})")
        self._awaiting = None
        self._state = ServerState.COMMAND
        self._queue_reply(reply)
        if reply.code == 421:
            return
        code = reply.code
        ok = 200 <= code < 300
        if isinstance(aw, _Greeting):
            if code == 554:
                self._refused = True  # RFC 5321 §3.1
            elif code != 220:
                raise LocalProtocolError("the greeting must be 220, 421 or 554")
        elif isinstance(aw, (Helo, Ehlo)):
            if ok:
                self._greeted = True
                self._esmtp = isinstance(aw, Ehlo)
                self._reset_transaction()  # RFC 5321 §4.1.4
        elif isinstance(aw, MailFrom):
            if ok:
                self._reset_transaction()
                self._in_txn = True
                self._txn_smtputf8 = aw.params.smtputf8
                self._txn_binarymime = aw.params.body == "BINARYMIME"
        elif isinstance(aw, RcptTo):
            if ok:
                self._rcpts += 1
        elif isinstance(aw, Data):
            if code == 354:
                self._state = ServerState.DATA
                self._dot = DotReader(self.max_message_size, self.hard_line_limit, self._data_crlf)
        elif isinstance(aw, EndOfData):
            self._reset_transaction()
        elif isinstance(aw, BdatChunkEnd):
            if aw.last:
                self._reset_transaction()
            elif not ok and self._bdat_error is None:
                self._bdat_error = reply  # RFC 3030 §2
        elif isinstance(aw, Rset):
            if ok:
                self._reset_transaction()
        elif isinstance(aw, Quit):
            if code == 221:
                self._close()
        elif isinstance(aw, StartTls):
            self._tls_ready = code == 220
        elif isinstance(aw, (Auth, AuthResponse)):
            if code == 334:
                self._state = ServerState.AUTH
            elif code == 235:
                self.authenticated = True

    def discard_data(self, reply: Reply) -> None:
        """Abort the message under way: keep reading and dropping its data; the end event
        (``EndOfData``/``BdatChunkEnd``) then carries ``reply``. In BDAT the error holds for the
        rest of the transaction."""
        if self._state is ServerState.DATA and self._dot is not None:
            self._dot.discard(reply)
        elif (self._in_txn and self._bdat_started) or self._state is ServerState.BDAT:
            if self._bdat_error is None:
                self._bdat_error = reply
        else:
            raise LocalProtocolError("discard_data outside DATA/BDAT")

    def start_tls(self) -> None:
        """After sending 220 to StartTls: drop buffered input and forget the session (RFC 3207 §4.2)."""
        if not self._tls_ready or self._awaiting is not None:
            raise LocalProtocolError("start_tls() only right after a 220 reply to STARTTLS")
        self._tls_ready = False
        self._in.clear()  # CVE-2011-0411: nothing sent in clear may be read as if inside TLS
        self.tls_active = True
        self.authenticated = False
        self._greeted = False
        self._esmtp = False
        self._reset_transaction()

    # --- events ----------------------------------------------------------------------------

    def _emit(self, ev: ServerEvent) -> ServerEvent:
        if not isinstance(ev, (DataChunk, Bdat, CommandRejected, ConnectionClosed)):
            self._awaiting = ev
            self._state = ServerState.REPLY_PENDING
        return ev

    def next_event(self) -> ServerEvent | NeedData:
        if self._queued:
            return self._emit(self._queued.popleft())
        if self._awaiting is not None:
            raise LocalProtocolError(f"send() the reply to {self._awaiting!r} first")
        st = self._state
        if st is ServerState.CLOSED:
            return ConnectionClosed()
        if st is ServerState.DATA:
            return self._next_data()
        if st is ServerState.BDAT:
            return self._next_chunk()
        if st is ServerState.AUTH:
            return self._next_auth()
        return self._next_command()

    def _eof_event(self) -> ServerEvent | NeedData:
        if self._eof:
            self._close()
            return ConnectionClosed()
        return NEED_DATA

    def _read_line(self, limit: int) -> bytes | None:
        """One line (with its LF) of at most ``limit`` octets; b"" when an over-long line ended
        (rule 4: dropped as it arrives, ``linebuffer`` rule 2)."""
        buf = self._in
        if not buf.overlong:
            line = buf.line(limit)
            if line is not None or not buf.overlong:
                return line
        return b"" if buf.drop_line() else None

    def _reject(self, reply: Reply, line: bytes) -> CommandRejected:
        self._queue_reply(reply)
        return CommandRejected(reply, line[:REJECTED_LINE_SHOWN])

    def _command_limit(self) -> int:
        if self._esmtp and self._in.data[:5].upper() in _LONG_VERBS:
            return self.max_command_line + ESMTP_LINE_ALLOWANCE
        return self.max_command_line

    def _next_command(self) -> ServerEvent | NeedData:
        if not self._in.data:  # nothing buffered (half of the calls: the driver reads next)
            return self._eof_event()
        line = self._read_line(self._command_limit())
        if line is None:
            return self._eof_event()
        if line == b"":
            return self._reject(C500_LINE_TOO_LONG, self._in.head)  # RFC 5321 §4.5.3.1.4
        try:
            text, crlf = commands.decode_line(line)
        except ParamError as e:
            return self._reject(e.reply, line)
        verb, arg = commands.split_verb(text)
        if verb in commands.FORBIDDEN:
            return self._reject(C421_FORBIDDEN_COMMAND, line)  # rule 8; a 421 closes
        if verb not in commands.KNOWN_VERBS:
            reply = C502_NOT_IMPLEMENTED if verb in commands.NOT_OFFERED else C500_UNRECOGNIZED
            return self._reject(reply, line)
        try:
            refusal = self._check_sequence(verb)
            cmd = commands.parse_command(
                verb,
                arg,
                esmtp=self._esmtp,
                offered=self.offered,
                max_message_size=self.max_message_size,
                smtputf8=self._txn_smtputf8,
                postmaster_domain=self.postmaster_domain,
            )
        except commands.BdatSyntaxError as e:
            return self._reject(e.reply, line)  # rule 8: a 421; RFC 3030 §2: no chunk to skip
        except ParamError as e:
            return self._reject(e.reply, line)
        if isinstance(cmd, Bdat):
            return self._start_chunk(cmd, None if refusal is None else (refusal, line))
        if isinstance(cmd, Data):
            self._data_crlf = crlf
        return self._emit(cmd)

    def _check_sequence(self, verb: str) -> Reply | None:
        """Raise ParamError if ``verb`` is refused now; BDAT's refusal is returned instead, because
        its size must still be parsed and its chunk read before the reply (RFC 3030 §2)."""
        refusal = self._sequence_refusal(verb)
        if refusal is not None and verb != "BDAT":
            raise ParamError(refusal)
        return refusal

    def _sequence_refusal(self, verb: str) -> Reply | None:
        return sequence.refusal(
            self.phase,
            verb,
            refused=self._refused,
            offered=self.offered,
            tls_active=self.tls_active,
            esmtp=self._esmtp,
            authenticated=self.authenticated,
            binarymime=self._txn_binarymime,
        )

    # --- DATA --------------------------------------------------------------------------------

    def _next_data(self) -> ServerEvent | NeedData:
        dot = self._dot
        if dot is None:  # unreachable: DATA state always has a reader
            raise LocalProtocolError("DATA state without a reader")
        chunk = dot.feed(self._in.data)
        if dot.done:
            self._dot = None
            self._state = ServerState.COMMAND
            end = EndOfData(dot.error, dot.bare_newline)
            if chunk:
                self._queued.append(end)
                return DataChunk(chunk)
            return self._emit(end)
        if chunk:
            return DataChunk(chunk)
        if self._eof:
            self._dot = None
        return self._eof_event()

    # --- BDAT (RFC 3030) ---------------------------------------------------------------------

    def _start_chunk(self, cmd: Bdat, reject: tuple[Reply, bytes] | None) -> ServerEvent | NeedData:
        self._chunk = ChunkReader(cmd.size)
        self._chunk_event = cmd
        self._chunk_reject = reject
        self._state = ServerState.BDAT
        if reject is None:
            self._bdat_started = True
            return self._emit(cmd)
        return self._next_chunk()

    def _next_chunk(self) -> ServerEvent | NeedData:
        reader, cmd = self._chunk, self._chunk_event
        if reader is None or cmd is None:  # unreachable: BDAT state always has a reader
            raise LocalProtocolError("BDAT state without a reader")
        data = reader.feed(self._in.data)
        if data and self._chunk_reject is None:
            if not self._txn_binarymime:
                self._bdat_bare.feed(data)  # rule 9
            self._bdat_size += len(data)
            if self.max_message_size and self._bdat_size > self.max_message_size:
                if self._bdat_error is None:
                    self._bdat_error = C552_MESSAGE_TOO_BIG  # RFC 1870 §6, RFC 3030 §2
            if self._bdat_error is None:
                return DataChunk(data)
        if reader.remaining:
            if self._eof:
                self._chunk = self._chunk_event = None
            return self._eof_event()
        self._chunk = self._chunk_event = None
        self._state = ServerState.COMMAND
        if self._chunk_reject is not None:
            reply, line = self._chunk_reject
            self._chunk_reject = None
            return self._reject(reply, line)
        bare = cmd.last and not self._txn_binarymime and self._bdat_bare.end()
        return self._emit(BdatChunkEnd(cmd.last, self._bdat_error, bare))

    # --- AUTH (RFC 4954) ---------------------------------------------------------------------

    def _next_auth(self) -> ServerEvent | NeedData:
        line = self._read_line(self.auth_line_limit)
        if line is None:
            return self._eof_event()
        self._state = ServerState.COMMAND
        if line == b"":
            return self._reject(C500_AUTH_LINE_TOO_LONG, b"<SASL line>")  # RFC 4954 §4
        text = line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace").strip(" ")
        return self._emit(AuthResponse(text))
