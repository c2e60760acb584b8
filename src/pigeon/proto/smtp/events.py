"""SMTP protocol events: what the sans-IO cores hand to the application.

Rules:
1. Every event is a frozen dataclass with slots: a plain value, safe to log (an ``Auth``
   initial response and an ``AuthResponse`` line are SASL payloads and must never be logged).
2. The server core (``server.ServerConnection``) emits the command events (``Helo`` ...
   ``AuthResponse``), the data events (``DataChunk``, ``EndOfData``, ``BdatChunkEnd``),
   ``CommandRejected`` and ``ConnectionClosed``. The client core sends the same command values
   (``client.ClientConnection.send_command``), so one vocabulary serves both roles.
3. ``NEED_DATA`` is a sentinel (like h11's): the core needs more input before it can say more.
4. ``MailParams`` holds the ESMTP parameters of MAIL FROM, already validated: SIZE (RFC 1870),
   BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461, ENVID xtext-decoded),
   AUTH (RFC 4954 §5, xtext-decoded; ``"<>"`` when the client said it does not know).

What can go wrong: nothing here; these are values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from pigeon.core.address import Address
from pigeon.proto.smtp.reply import Reply

BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]
RetType = Literal["FULL", "HDRS"]


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NeedData = Literal[_NeedData.NEED_DATA]
NEED_DATA: Final = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: RetType | None = None
    envid: str | None = None
    auth: str | None = None
    requiretls: bool = False  # RFC 8689 §3


# --- commands (server: received; client: sent) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Helo:
    domain: str


@dataclass(frozen=True, slots=True)
class Ehlo:
    domain: str


@dataclass(frozen=True, slots=True)
class MailFrom:
    sender: Address | None  # None is the null reverse path <> (RFC 5321 §4.5.5)
    params: MailParams = MailParams()


@dataclass(frozen=True, slots=True)
class RcptTo:
    recipient: Address
    notify: tuple[str, ...] = ()  # RFC 3461 §4.1, upper-cased; () when not given
    orcpt: str | None = None  # RFC 3461 §4.2 "rfc822;addr", xtext-decoded
    raw_params: str = ""  # the parameter text after the path, as received (for the log)


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Bdat:
    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    arg: str


@dataclass(frozen=True, slots=True)
class Expn:
    arg: str


@dataclass(frozen=True, slots=True)
class Help:
    arg: str


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    mechanism: str  # upper-cased SASL mechanism name (RFC 4422 §3.1)
    initial: str | None = None  # base64 initial response; "" when the client sent "=" (RFC 4954 §4)

    def __repr__(self) -> str:  # never show a SASL payload (DESIGN.md: never log passwords)
        shown = None if self.initial is None else "<redacted>"
        return f"Auth(mechanism={self.mechanism!r}, initial={shown})"


@dataclass(frozen=True, slots=True)
class AuthResponse:
    line: str  # one SASL continuation line, raw; "*" means the client cancels (RFC 4954 §4)

    def __repr__(self) -> str:
        return "AuthResponse(<redacted>)" if self.line != "*" else "AuthResponse('*')"


# --- data and connection events (server side) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DataChunk:
    data: bytes  # unstuffed message octets, line ends exactly as received


@dataclass(frozen=True, slots=True)
class EndOfData:
    error: Reply | None = None  # set when the core refused the content (size, line length, discard)
    bare_newline: bool = False  # a bare CR or LF was seen in the data (RFC 5321 §2.3.8)


@dataclass(frozen=True, slots=True)
class BdatChunkEnd:
    last: bool
    error: Reply | None = None
    # On the LAST chunk: a bare CR or LF was seen in the transaction's chunks (RFC 5321 §2.3.8).
    bare_newline: bool = False


@dataclass(frozen=True, slots=True)
class CommandRejected:
    reply: Reply  # already queued by the core; the application only counts and logs
    line: bytes  # the offending command line (truncated for over-long lines)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    pass


Command = (
    Helo | Ehlo | MailFrom | RcptTo | Data | Bdat | Rset | Noop | Quit | Vrfy | Expn | Help
    | StartTls | Auth | AuthResponse
)
ServerEvent = Command | DataChunk | EndOfData | BdatChunkEnd | CommandRejected | ConnectionClosed
