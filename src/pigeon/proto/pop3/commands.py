"""One POP3 command line → one command event, or the ``-ERR`` that answers it.

Rules:
1. A command is a keyword of 3-4 characters, case-insensitive, followed by arguments separated
   by single spaces (RFC 1939 §3). Leading and trailing blanks are ignored; several spaces
   between arguments are accepted (clients are lenient writers). Case is folded in ASCII only:
   a keyword with a non-ASCII letter that Unicode upper-cases to ASCII ("quıt", "ſtls") is
   unknown, not QUIT or STLS; the same for AUTH's mechanism name.
2. ``USER`` and ``PASS`` take the rest of the line as their one argument: a password may hold
   spaces (RFC 1939 §7, PASS discussion). Both must be non-empty.
3. A message number is 1 to ``MAX_NUMBER_DIGITS`` decimal digits; ``TOP``'s line count too.
   Anything else, a missing or an extra argument, is ``-ERR Syntax error``.
4. The line must be UTF-8 (user names may be internationalised addresses); otherwise it is
   a syntax error, never an exception.
5. Unknown keywords (APOP included: Pigeon stores no shared secrets) get ``-ERR Unknown
   command``.

What can go wrong: nothing raises; every mistake is a ``Response``.
"""

from __future__ import annotations

from collections.abc import Callable

from pigeon.proto.pop3 import events as ev
from pigeon.proto.pop3.responses import ERR_SYNTAX, ERR_UNKNOWN_COMMAND, Response

# A POP3 message number in the wild is far below 10^9; ten digits is any 32-bit count and
# keeps a client from making us convert a 250-digit integer.
MAX_NUMBER_DIGITS = 10


def _number(text: str) -> int | None:
    if not text or len(text) > MAX_NUMBER_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _no_args(cls: Callable[[], ev.Command]) -> Callable[[list[str], str], ev.Command | Response]:
    def parse(args: list[str], rest: str) -> ev.Command | Response:
        return ERR_SYNTAX if args else cls()

    return parse


def _optional_msg(cls: Callable[[int | None], ev.Command]) -> Callable[[list[str], str], ev.Command | Response]:
    def parse(args: list[str], rest: str) -> ev.Command | Response:
        if not args:
            return cls(None)
        n = _number(args[0]) if len(args) == 1 else None
        return ERR_SYNTAX if n is None else cls(n)

    return parse


def _msg(cls: Callable[[int], ev.Command]) -> Callable[[list[str], str], ev.Command | Response]:
    def parse(args: list[str], rest: str) -> ev.Command | Response:
        n = _number(args[0]) if len(args) == 1 else None
        return ERR_SYNTAX if n is None else cls(n)

    return parse


def _top(args: list[str], rest: str) -> ev.Command | Response:
    if len(args) != 2:
        return ERR_SYNTAX
    msg, lines = _number(args[0]), _number(args[1])
    if msg is None or lines is None:
        return ERR_SYNTAX
    return ev.Top(msg, lines)


def _user(args: list[str], rest: str) -> ev.Command | Response:
    return ev.User(rest) if rest else ERR_SYNTAX


def _pass(args: list[str], rest: str) -> ev.Command | Response:
    return ev.Pass(rest) if rest else ERR_SYNTAX


def _auth(args: list[str], rest: str) -> ev.Command | Response:
    if not args:
        return ev.Auth("")
    if len(args) > 2:
        return ERR_SYNTAX
    mechanism = args[0].upper() if args[0].isascii() else args[0]  # rule 1
    if len(args) == 1:
        return ev.Auth(mechanism)
    initial = args[1]
    return ev.Auth(mechanism, "" if initial == "=" else initial)  # RFC 5034 §4: "=" is empty


_PARSERS: dict[str, Callable[[list[str], str], ev.Command | Response]] = {
    "USER": _user,
    "PASS": _pass,
    "AUTH": _auth,
    "CAPA": _no_args(ev.Capa),
    "STLS": _no_args(ev.Stls),
    "STAT": _no_args(ev.Stat),
    "LIST": _optional_msg(ev.List),
    "RETR": _msg(ev.Retr),
    "DELE": _msg(ev.Dele),
    "NOOP": _no_args(ev.Noop),
    "RSET": _no_args(ev.Rset),
    "QUIT": _no_args(ev.Quit),
    "TOP": _top,
    "UIDL": _optional_msg(ev.Uidl),
}

VERBS = frozenset(_PARSERS)


def split_verb(line: bytes) -> tuple[str, str] | None:
    """(upper-cased keyword, rest of the line) or None when the line is not UTF-8 (rule 4).
    For USER and PASS the rest is kept verbatim after the one space (rule 2)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.lstrip(" \t")
    verb, _, rest = text.partition(" ")
    verb = verb.rstrip(" \t")
    if verb.isascii():  # rule 1: ASCII case only; str.upper() makes "quıt" QUIT and "ſtls" STLS
        verb = verb.upper()
    if verb in ("USER", "PASS"):
        return verb, rest
    return verb, rest.strip(" \t")


def parse_command(line: bytes) -> tuple[str, ev.Command | Response]:
    """``line`` without its CRLF → (keyword, event or the -ERR answering it)."""
    split = split_verb(line)
    if split is None:
        return "", ERR_SYNTAX
    verb, rest = split
    parser = _PARSERS.get(verb)
    if parser is None:
        return verb if verb.isascii() and verb.isalpha() and len(verb) <= 4 else "", ERR_UNKNOWN_COMMAND
    return verb, parser(rest.split(), rest)
