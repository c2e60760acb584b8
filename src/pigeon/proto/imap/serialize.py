"""Response writers: the octets of IMAP responses (RFC 3501 §7, RFC 9051 §7).

Rules:
1. ``astring``/``string`` choose the form: an atom when every octet is an ASTRING-CHAR (astring
   only), a quoted string when the value is short and holds no CR, LF, NUL or (unless ``utf8``,
   RFC 6855 §3 / RFC 9051 §9) 8-bit octet, otherwise a literal ``{n}\\r\\n...`` (RFC 3501 §4.3).
   The empty string is ``""``.
2. ``nstring(None)`` is ``NIL``. Strings equal to "NIL" are never written as atoms.
3. Status text and response codes are single-line by construction: CR and LF are replaced by a
   space, so no text — even one that echoes client input — can inject a response line.
4. Every function returns bytes; lines end with CRLF.
5. ``mailbox`` encodes a name in modified UTF-7 unless the client enabled UTF8=ACCEPT.
6. ``fetch_label`` writes a FETCH item's name as the response must repeat it (RFC 3501 §7.4.2):
   ``BODY[HEADER.FIELDS (SUBJECT)]<0>`` — the partial shows only its origin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Final, Literal

from pigeon.proto.imap import mutf7
from pigeon.proto.imap.commands import FetchAtt, Section
from pigeon.proto.imap.dates import format_internaldate
from pigeon.proto.imap.reader import ASTRING_CHARS

__all__ = [
    "CRLF",
    "NIL",
    "QUOTED_MAX",
    "astring",
    "continuation",
    "fetch_label",
    "flag_list",
    "internaldate",
    "literal",
    "mailbox",
    "nstring",
    "plist",
    "quoted",
    "section_label",
    "string",
    "tagged",
    "untagged",
]

CRLF: Final = b"\r\n"
NIL: Final = b"NIL"
#: Longest value written as a quoted string; longer ones become literals. Not an RFC number:
#: quoted strings must be unescaped octet by octet by the client, literals are read in one go.
QUOTED_MAX: Final = 1024
_QUOTE_SAFE_7BIT: Final = frozenset(range(0x01, 0x80)) - {0x0A, 0x0D}


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def quoted(value: str | bytes) -> bytes:
    """``"..."`` with ``\\`` and ``"`` escaped; the caller ensures no CR/LF/NUL (use ``string``)."""
    b = _b(value)
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: str | bytes, *, binary: bool = False) -> bytes:
    """``{n}\\r\\n`` + octets (``~{n}`` for a literal8, RFC 3516 §4.2)."""
    b = _b(value)
    return (b"~" if binary else b"") + b"{%d}\r\n" % len(b) + b


def _quotable(b: bytes, utf8: bool) -> bool:
    if len(b) > QUOTED_MAX:
        return False
    if utf8:
        if any(c in b for c in b"\r\n\x00"):
            return False
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    return all(c in _QUOTE_SAFE_7BIT for c in b)


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """Quoted when safe (rule 1), else a literal."""
    b = _b(value)
    return quoted(b) if _quotable(b, utf8) else literal(b)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """Atom when possible, else like ``string``."""
    b = _b(value)
    if b and b.upper() != NIL and all(c in ASTRING_CHARS for c in b):
        return b
    return string(b, utf8=utf8)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    return NIL if value is None else string(value, utf8=utf8)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name as an astring: UTF-8 when UTF8=ACCEPT is on, else modified UTF-7."""
    return astring(name if utf8 else mutf7.encode(name), utf8=utf8)


def plist(items: Iterable[bytes | str]) -> bytes:
    """``(a b c)`` from already-serialised items (str items are taken as ASCII atoms)."""
    return b"(" + b" ".join(_b(i) for i in items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return plist(flags)


def internaldate(when: float | dt.datetime, offset_minutes: int = 0) -> bytes:
    return format_internaldate(when, offset_minutes).encode("ascii")


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8")


Status = Literal["OK", "NO", "BAD", "PREAUTH", "BYE"]


def _cond(status: str, text: str, code: str | None) -> bytes:
    head = status.encode("ascii")
    if code:
        head += b" [" + _one_line(code) + b"]"
    return head + b" " + _one_line(text or status)


def tagged(tag: str, status: Literal["OK", "NO", "BAD"], text: str, code: str | None = None) -> bytes:
    """``tag OK [CODE] text\\r\\n`` (RFC 3501 §7.1)."""
    return _one_line(tag) + b" " + _cond(status, text, code) + CRLF


def untagged(payload: bytes | str) -> bytes:
    """``* payload\\r\\n``; ``payload`` is already serialised (it may contain literals)."""
    return b"* " + (_b(payload) if isinstance(payload, bytes) else _one_line(payload)) + CRLF


def untagged_status(status: Status, text: str, code: str | None = None) -> bytes:
    """``* OK [CODE] text\\r\\n`` and friends (BYE, PREAUTH, BAD, NO)."""
    return b"* " + _cond(status, text, code) + CRLF


def continuation(text: str = "") -> bytes:
    """``+ text\\r\\n`` (RFC 3501 §7.5); the text may be base64 for SASL challenges."""
    return b"+ " + _one_line(text) + CRLF if text else b"+ \r\n"


def section_label(section: Section) -> bytes:
    parts = [str(p) for p in section.part]
    if section.text is not None:
        parts.append(section.text)
    spec = ".".join(parts).encode("ascii")
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        spec += b" " + plist(astring(f) for f in section.fields)
    return b"[" + spec + b"]"


def fetch_label(att: FetchAtt) -> bytes:
    """The item name as it must appear in the FETCH response (no ``.PEEK``; partial origin only)."""
    if att.section is None:
        return att.name.encode("ascii")
    out = att.name.encode("ascii") + section_label(att.section)
    if att.partial is not None:
        out += b"<%d>" % att.partial[0]
    return out
