"""Parse one framed IMAP command into its typed value (``commands``).

Use::

    try:
        cmd = parse_command(ev)            # ev: events.Command from ImapServerConnection
    except CharsetError as e:              # before ParseError: it is a subclass
        send(tagged(e.tag, "NO", "...", code="BADCHARSET (US-ASCII UTF-8)"))
    except ParseError as e:
        send(tagged(e.tag or "*", "BAD", e.reason))

Rules:
1. The grammar is RFC 3501 §9 with the extensions Pigeon offers (RFC 9051, 2971 ID, 3502
   MULTIAPPEND, 3516 BINARY, 4315 UIDPLUS, 4731 ESEARCH, 4959 SASL-IR, 5161 ENABLE, 5182 SEARCHRES,
   5258 LIST-EXTENDED, 5819 LIST-STATUS, 6154 SPECIAL-USE, 6851 MOVE, 6855 UTF8, 7162 CONDSTORE/
   QRESYNC, 7888 LITERAL+, 8438 STATUS=SIZE). Command names are case-insensitive.
2. Only FETCH, STORE, COPY, MOVE, SEARCH and EXPUNGE have a UID form (RFC 3501 §6.4.8, RFC 4315,
   RFC 6851); ``UID`` + anything else is an error.
3. Whether a command is allowed in the current state is the session's table, not the parser's.
4. Every syntax error is a ``ParseError`` carrying the tag and a short reason; nothing else
   escapes (no IndexError, UnicodeDecodeError or RecursionError on hostile input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pigeon.proto.imap import args, parse_fetch, parse_mailbox, parse_search
from pigeon.proto.imap.commands import (
    Authenticate,
    Capability,
    Check,
    Close,
    Enable,
    Expunge,
    Id,
    Idle,
    ImapCommand,
    Login,
    Logout,
    Namespace,
    Noop,
    StartTls,
    Unselect,
)
from pigeon.proto.imap.events import Command
from pigeon.proto.imap.reader import ATOM_CHARS, Reader

__all__ = ["ID_MAX_FIELD", "ID_MAX_PAIRS", "ID_MAX_VALUE", "UID_COMMANDS", "parse_command"]

#: RFC 2971 §3.3: at most 30 pairs, field names of at most 30 octets, values of at most 1024.
ID_MAX_PAIRS: Final = 30
ID_MAX_FIELD: Final = 30
ID_MAX_VALUE: Final = 1024
_B64_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_TAG_CHARS: Final = ATOM_CHARS | {ord("]")}


def _no_args(factory: Callable[[str], ImapCommand]) -> Callable[[Reader, str], ImapCommand]:
    def parse(r: Reader, tag: str) -> ImapCommand:
        r.end()
        return factory(tag)

    return parse


def _authenticate(r: Reader, tag: str) -> Authenticate:
    r.sp()
    mech = r.atom("SASL mechanism").upper()
    initial = None
    if r.try_sp():  # RFC 4959 §3: SP (base64 / "=")
        raw = r.run(_B64_CHARS)
        if not raw or (raw != b"=" and (len(raw) % 4 or b"=" in raw.rstrip(b"="))):
            raise r.error("bad SASL initial response")
        initial = raw.decode("ascii")
    r.end()
    return Authenticate(tag, mech, initial)


def _login(r: Reader, tag: str) -> Login:
    r.sp()
    user = args.utf8_astring(r, "user name")
    r.sp()
    password = args.utf8_astring(r, "password")
    r.end()
    return Login(tag, user, password)


def _enable(r: Reader, tag: str) -> Enable:
    caps = []
    r.sp()
    caps.append(r.atom("capability").upper())
    while r.try_sp():
        caps.append(r.atom("capability").upper())
    r.end()
    return Enable(tag, tuple(caps))


def _id(r: Reader, tag: str) -> Id:
    r.sp()
    if r.peek_is(b"NIL"):
        r.pos += 3
        r.end()
        return Id(tag, None)
    r.expect(b"(")
    pairs: list[tuple[str, str | None]] = []
    while r.try_sp():  # liberal: ``ID ( "name" "x" )`` as aioimaplib sends it (issue 18)
        pass
    if r.peek() != 0x29:
        while True:
            field = r.text_utf8(r.string(), "ID field")
            r.sp()
            while r.try_sp():
                pass
            raw = r.nstring()
            value = None if raw is None else r.text_utf8(raw, "ID value")
            if len(field.encode()) > ID_MAX_FIELD or (raw is not None and len(raw) > ID_MAX_VALUE):
                raise r.error("ID field or value too long")  # RFC 2971 §3.3
            pairs.append((field, value))
            if len(pairs) > ID_MAX_PAIRS:
                raise r.error("too many ID pairs")  # RFC 2971 §3.3
            if not r.try_sp():
                break
            while r.try_sp():
                pass
            if r.peek() == 0x29:  # the space before ")"
                break
    r.expect(b")")
    r.end()
    return Id(tag, tuple(pairs))


def _expunge(r: Reader, tag: str, uid: bool) -> Expunge:
    if not uid:
        r.end()
        return Expunge(tag)
    r.sp()
    uids = args.sequence_set(r)
    r.end()
    return Expunge(tag, uids)


_Plain = Callable[[Reader, str], ImapCommand]
_WithUid = Callable[[Reader, str, bool], ImapCommand]

_COMMANDS: Final[dict[str, _Plain]] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(StartTls),
    "NAMESPACE": _no_args(Namespace),
    "IDLE": _no_args(Idle),
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "ID": _id,
    "SELECT": lambda r, tag: parse_mailbox.select(r, tag, readonly=False),
    "EXAMINE": lambda r, tag: parse_mailbox.select(r, tag, readonly=True),
    "CREATE": parse_mailbox.create,
    "DELETE": parse_mailbox.delete,
    "RENAME": parse_mailbox.rename,
    "SUBSCRIBE": parse_mailbox.subscribe,
    "UNSUBSCRIBE": parse_mailbox.unsubscribe,
    "LIST": parse_mailbox.list_,
    "LSUB": parse_mailbox.lsub,
    "STATUS": parse_mailbox.status,
    "APPEND": parse_mailbox.append,
}
UID_COMMANDS: Final[dict[str, _WithUid]] = {
    "FETCH": parse_fetch.fetch,
    "STORE": parse_fetch.store,
    "COPY": parse_fetch.copy,
    "MOVE": parse_fetch.move,
    "SEARCH": parse_search.search,
    "EXPUNGE": _expunge,
}


def parse_command(cmd: Command) -> ImapCommand:
    """The typed command for ``cmd``; ``ParseError`` (or ``CharsetError``) when it is malformed."""
    r = Reader(cmd.fragments, cmd.tag, cmd.spooled)
    tag = r.run(_TAG_CHARS).decode("ascii", "replace")
    if tag != cmd.tag or not tag:
        raise r.error("bad tag")
    if not r.try_sp():
        raise r.error("missing command name")
    name = r.atom("command name").upper()
    if name == "UID":
        r.sp()
        sub = r.atom("command name").upper()
        uid_parse = UID_COMMANDS.get(sub)
        if uid_parse is None:
            raise r.error(f"UID {sub[:20]} is not a command")
        return uid_parse(r, tag, True)
    plain = _COMMANDS.get(name)
    if plain is not None:
        return plain(r, tag)
    with_uid = UID_COMMANDS.get(name)
    if with_uid is not None:
        return with_uid(r, tag, False)
    raise r.error(f"unknown command {name[:20]}")


def is_known(name: str) -> bool:
    """True when ``name`` (upper-cased) is a command this parser knows."""
    return name in _COMMANDS or name in UID_COMMANDS or name == "UID"
