"""POP3 commands as typed events: what the sans-IO server core hands to the application.

Rules:
1. Every event is a frozen dataclass with slots: a plain value. ``Pass``, an ``Auth`` initial
   response and an ``AuthResponse`` line carry secrets: their ``repr`` hides them, and they
   must never be logged.
2. Message numbers are as the client sent them (``0`` included); whether one names a message
   of the maildrop is the application's question (RFC 1939 §5: the core knows no maildrop).
3. ``NEED_DATA`` is a sentinel (like h11's): the core needs more input before it can say more.
4. ``CommandRejected`` carries the ``-ERR`` the core already queued; it needs no response.

What can go wrong: nothing here; these are values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, Literal

from pigeon.proto.pop3.responses import Response


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NeedData = Literal[_NeedData.NEED_DATA]
NEED_DATA: Final = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class User:
    name: str  # RFC 1939 §7: the rest of the line


@dataclass(frozen=True, slots=True)
class Pass:
    password: str = field(repr=False)  # RFC 1939 §7: may contain spaces


@dataclass(frozen=True, slots=True)
class Auth:
    """``AUTH [mechanism [initial-response]]`` (RFC 5034 §4). ``mechanism`` is upper-cased and
    empty for a bare ``AUTH`` (the mechanism listing many clients ask for); ``initial`` is
    ``""`` for ``=`` and None when absent."""

    mechanism: str
    initial: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuthResponse:
    line: str = field(repr=False)  # one base64 line, or "*" to cancel (RFC 5034 §4)


@dataclass(frozen=True, slots=True)
class Capa:
    pass


@dataclass(frozen=True, slots=True)
class Stls:
    pass


@dataclass(frozen=True, slots=True)
class Stat:
    pass


@dataclass(frozen=True, slots=True)
class List:
    msg: int | None = None


@dataclass(frozen=True, slots=True)
class Retr:
    msg: int


@dataclass(frozen=True, slots=True)
class Dele:
    msg: int


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Top:
    msg: int
    lines: int


@dataclass(frozen=True, slots=True)
class Uidl:
    msg: int | None = None


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """The core answered this line itself (rule 4); ``verb`` is the upper-cased keyword, or
    ``""`` when there was none."""

    response: Response
    verb: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    pass


Command = User | Pass | Auth | AuthResponse | Capa | Stls | Stat | List | Retr | Dele | Noop | Rset | Quit | Top | Uidl
Event = Command | CommandRejected | ConnectionClosed
