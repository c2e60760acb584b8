"""The sans-IO POP3 server core: bytes in, typed command events out (like h11).

Use::

    conn = ServerConnection()
    conn.send(Response(True, "POP3 server ready"))        # the greeting answers the connection
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA: out.write(conn.data_to_send()); conn.receive_data(sock.recv(...)); continue
        if isinstance(ev, ConnectionClosed): break
        if isinstance(ev, CommandRejected): continue       # already answered
        conn.send(response_to(ev))                         # exactly one response per command

Rules:
1. ``next_event`` returns at most one command at a time and parses nothing more until the
   application has ``send``-ed the response to it (RFC 2449 §6.6: pipelined commands are
   answered in order). Calling it before that is a ``LocalProtocolError``.
2. States are RFC 1939's: AUTHORIZATION, TRANSACTION, UPDATE (entered by QUIT in TRANSACTION,
   §6), then CLOSED. Which command is valid where is the table ``ALLOWED``; a command outside
   it gets ``-ERR Command not valid in this state``. ``PASS`` is valid only right after a
   successful ``USER`` (§7); any other command forgets the ``USER``.
3. The core learns what the application decided from the responses it sends: ``+OK`` to USER →
   PASS may follow; ``+OK`` to PASS or to AUTH (or its last response line) → TRANSACTION;
   a ``+ `` continuation to AUTH → the next line is an ``AuthResponse``; ``+OK`` to STLS →
   ``start_tls()`` must be called before anything else is read; any response to QUIT →
   CLOSED; a ``-ERR`` greeting → CLOSED. ``close(response)`` ends the session from the
   application's side (too many errors, shutdown, a throttled login).
4. Command lines are at most ``max_command_line`` octets with CRLF (RFC 2449 §4: 255); SASL
   response lines at most ``max_auth_line``. A longer line is discarded as it arrives, never
   buffered whole, and answered ``-ERR Line too long``; during AUTH it also ends the exchange.
   A line may end in a bare LF (lenient reading; the CR is dropped).
5. ``start_tls`` drops every octet received after the STLS line (CVE-2011-0411 class; RFC 2595
   §4 makes STLS valid only in AUTHORIZATION, and no earlier state survives the upgrade).
   STLS on a connection that already has TLS is refused here.
6. Multi-line responses are allowed only for the commands that have them (RFC 1939 §5-§7,
   RFC 2449 §5): CAPA, LIST and UIDL without argument, RETR, TOP, and a bare AUTH (the
   mechanism listing). Dot-stuffing happens in ``responses``.

What can go wrong: application misuse raises ``LocalProtocolError``; nothing the peer sends raises.
"""

from __future__ import annotations

import enum
from typing import Final

from pigeon.proto.linebuffer import LineBuffer
from pigeon.proto.pop3 import events as ev
from pigeon.proto.pop3.commands import parse_command
from pigeon.proto.pop3.errors import LocalProtocolError
from pigeon.proto.pop3.events import NEED_DATA, NeedData
from pigeon.proto.pop3.responses import (
    ERR_BAD_SEQUENCE,
    ERR_LINE_TOO_LONG,
    ERR_PASS_WITHOUT_USER,
    ERR_TLS_ACTIVE,
    AnyResponse,
    Continuation,
    MultiLine,
    Response,
)

# RFC 2449 §4: "The maximum length of a command is increased from 47 characters ... to 255
# octets, including the terminating CRLF."
MAX_COMMAND_LINE: Final = 255
# A SASL response line carries base64 of authzid NUL authcid NUL password: 256 + 256 + 4096
# (MAX_PATH twice, passwords.MAX_PASSWORD_BYTES) + 2 octets is 6,144 characters in base64;
# 8 KiB leaves room and still bounds the buffer. RFC 5034 §4 sets no number of its own.
MAX_AUTH_LINE: Final = 8192


class Pop3State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class _Greeting:
    """What the first response answers: the connection itself."""


_GREETING: Final = _Greeting()

# Rule 2: RFC 1939 §4 (AUTHORIZATION: USER, PASS, APOP, QUIT), RFC 2449 §5 (CAPA in every
# state), RFC 5034 §4 (AUTH in AUTHORIZATION), RFC 2595 §4 (STLS in AUTHORIZATION only),
# RFC 1939 §5 (TRANSACTION commands).
ALLOWED: Final[dict[Pop3State, frozenset[str]]] = {
    Pop3State.AUTHORIZATION: frozenset({"USER", "PASS", "AUTH", "CAPA", "STLS", "QUIT"}),
    Pop3State.TRANSACTION: frozenset(
        {"CAPA", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL"}
    ),
    Pop3State.UPDATE: frozenset(),
    Pop3State.CLOSED: frozenset(),
}


def _multiline_allowed(cmd: ev.Command) -> bool:
    """Rule 6."""
    match cmd:
        case ev.Capa() | ev.Retr() | ev.Top():
            return True
        case ev.List(msg=None) | ev.Uidl(msg=None):
            return True
        case ev.Auth(mechanism=""):
            return True
    return False


class ServerConnection:
    def __init__(
        self,
        *,
        max_command_line: int = MAX_COMMAND_LINE,
        max_auth_line: int = MAX_AUTH_LINE,
        tls_active: bool = False,
    ) -> None:
        self.max_command_line = max_command_line
        self.max_auth_line = max_auth_line
        self.tls_active = tls_active
        self._state = Pop3State.AUTHORIZATION
        self._in = LineBuffer()  # rule 4
        self._out = bytearray()
        self._eof = False
        self._awaiting: ev.Command | _Greeting | None = _GREETING
        self._user_given = False
        self._in_auth = False
        self._tls_pending = False

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> Pop3State:
        return self._state

    @property
    def in_auth(self) -> bool:
        """The next line is a SASL response."""
        return self._in_auth

    @property
    def input_buffered(self) -> int:
        return len(self._in.data)

    # -- bytes ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed octets from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        if self._state is Pop3State.CLOSED:
            return
        self._in.data += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- responses -----------------------------------------------------------------------
    def send(self, response: AnyResponse) -> None:
        """The one response to the greeting or to the last command (rules 1, 3, 6)."""
        pending = self._awaiting
        if pending is None:
            raise LocalProtocolError("no command is waiting for a response")
        if isinstance(pending, _Greeting):
            if not isinstance(response, Response):
                raise LocalProtocolError("the greeting is a single +OK or -ERR line")
            self._awaiting = None
            self._out += response.to_bytes()
            if not response.ok:
                self._state = Pop3State.CLOSED
            return
        if isinstance(response, Continuation):
            if not isinstance(pending, ev.Auth | ev.AuthResponse) or (
                isinstance(pending, ev.Auth) and not pending.mechanism
            ):
                raise LocalProtocolError("a continuation answers only AUTH")
            self._in_auth = True
        elif isinstance(response, MultiLine):
            if not _multiline_allowed(pending):
                raise LocalProtocolError(f"{type(pending).__name__} takes a single-line response")
        else:
            self._after(pending, response)
        self._awaiting = None
        self._out += response.to_bytes()

    def _after(self, pending: ev.Command, response: Response) -> None:
        """Rule 3: what a single-line response to ``pending`` changes."""
        match pending:
            case ev.User():
                self._user_given = response.ok
            case ev.Pass() | ev.Auth() | ev.AuthResponse():
                self._in_auth = False
                self._user_given = False
                if response.ok:
                    self._state = Pop3State.TRANSACTION
            case ev.Stls() if response.ok:
                self._tls_pending = True
            case ev.Quit():
                self._state = Pop3State.CLOSED

    def close(self, response: Response | None = None) -> None:
        """End the session from our side, after ``response`` if given (rule 3)."""
        if response is not None:
            self._out += response.to_bytes()
        self._awaiting = None
        self._in_auth = False
        self._state = Pop3State.CLOSED

    def start_tls(self) -> None:
        """Rule 5: after ``+OK`` to STLS, before the handshake."""
        if not self._tls_pending:
            raise LocalProtocolError("start_tls without a positive response to STLS")
        self._tls_pending = False
        self.tls_active = True
        self._in.clear()  # CVE-2011-0411: nothing sent in clear survives the upgrade
        self._user_given = False

    # -- events --------------------------------------------------------------------------
    def next_event(self) -> ev.Event | NeedData:
        if self._state is Pop3State.CLOSED:
            return ev.ConnectionClosed()
        if self._awaiting is not None:
            raise LocalProtocolError("send the response to the last command first")
        if self._tls_pending:
            raise LocalProtocolError("call start_tls after a positive response to STLS")
        limit = self.max_auth_line if self._in_auth else self.max_command_line
        line = self._read_line(limit)
        if line is None:
            if self._eof:
                self._state = Pop3State.CLOSED
                return ev.ConnectionClosed()
            return NEED_DATA
        if isinstance(line, Response):
            self._in_auth = False  # rule 4: an over-long SASL line ends the exchange
            return self._reject(line, "")
        if self._in_auth:
            response = ev.AuthResponse(line.decode("utf-8", "replace").strip(" \t"))
            self._awaiting = response
            return response
        verb, parsed = parse_command(line)
        if verb != "PASS":
            user_given, self._user_given = self._user_given, False
        else:
            user_given = self._user_given
        if isinstance(parsed, Response):
            if verb in ALLOWED[self._state] or not verb:
                return self._reject(parsed, verb)
            if verb in ALLOWED[Pop3State.AUTHORIZATION] | ALLOWED[Pop3State.TRANSACTION]:
                return self._reject(ERR_BAD_SEQUENCE, verb)
            return self._reject(parsed, verb)
        if verb not in ALLOWED[self._state]:
            return self._reject(ERR_BAD_SEQUENCE, verb)
        if isinstance(parsed, ev.Pass) and not user_given:
            return self._reject(ERR_PASS_WITHOUT_USER, verb)
        if isinstance(parsed, ev.Stls) and self.tls_active:
            return self._reject(ERR_TLS_ACTIVE, verb)
        if isinstance(parsed, ev.Quit) and self._state is Pop3State.TRANSACTION:
            self._state = Pop3State.UPDATE  # RFC 1939 §6
        self._awaiting = parsed
        return parsed

    def _reject(self, response: Response, verb: str) -> ev.CommandRejected:
        self._out += response.to_bytes()
        return ev.CommandRejected(response, verb)

    def _read_line(self, limit: int) -> bytes | Response | None:
        """A line without its line end; ``ERR_LINE_TOO_LONG`` once an over-long line is over;
        None when more input is needed (rule 4)."""
        buf = self._in
        if not buf.overlong:
            line = buf.line(limit)
            if line is not None:
                return line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if not buf.overlong:
                return None
        return ERR_LINE_TOO_LONG if buf.drop_line() else None
