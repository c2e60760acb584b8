"""Argument terminals shared by the typed command parsers: mailbox names, flags, sequence sets,
mod-sequences, dates.

Rules:
1. A mailbox name is an astring whose octets must be UTF-8; ``INBOX`` in any case is folded to
   ``INBOX`` (RFC 3501 §5.1: "the case-insensitive name INBOX"). Modified UTF-7 is the session's
   to decode (it depends on UTF8=ACCEPT, RFC 6855 §3).
2. A flag is ``\\`` atom or a keyword atom (RFC 3501 §9 ``flag``). System flags are folded to
   their canonical spelling; ``\\Recent`` and unknown ``\\``-flags are refused in STORE/APPEND
   (they are not ``flag`` in the grammar; ``\\Recent`` is read-only, RFC 3501 §2.3.2), but
   ``\\Recent`` is accepted where a search needs it.
3. A sequence set is read as the run of ``0-9 : , * $`` and validated by ``seqset.parse_seqset``.
4. A mod-sequence is 1 … 2^63-1 (RFC 7162 §7 ``mod-sequence-value``); "valzer" allows 0.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from pigeon.proto.imap.dates import parse_date
from pigeon.proto.imap.errors import SeqSetError
from pigeon.proto.imap.reader import ATOM_CHARS, MAX_NUMBER64, Reader
from pigeon.proto.imap.seqset import SeqSet, parse_seqset

SYSTEM_FLAGS: Final = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
_SEQ_CHARS: Final = frozenset(b"0123456789:,*$")


def mailbox(r: Reader) -> str:
    name = r.text_utf8(r.astring("mailbox name"), "mailbox name")
    return "INBOX" if name.upper() == "INBOX" else name


def utf8_astring(r: Reader, what: str = "string") -> str:
    return r.text_utf8(r.astring(what), what)


def flag(r: Reader, allow_recent: bool = False) -> str:
    if r.peek() == 0x5C:  # "\"
        r.pos += 1
        name = "\\" + r.atom("flag")
        up = name.upper()
        if up in SYSTEM_FLAGS:
            return SYSTEM_FLAGS[up]
        if up == "\\RECENT" and allow_recent:
            return "\\Recent"
        raise r.error(f"flag {name[:40]} cannot be set")
    return r.atom("flag")


def flag_list(r: Reader) -> tuple[str, ...]:
    return tuple(r.paren_list(lambda: flag(r)))


def sequence_set(r: Reader, *, allow_saved: bool = True) -> SeqSet:
    text = r.run(_SEQ_CHARS)
    if not text:
        raise r.error("expected a sequence set")
    try:
        return parse_seqset(text.decode("ascii"), allow_saved=allow_saved)
    except SeqSetError as e:
        raise r.error(f"bad sequence set: {e}") from None


def modseq(r: Reader, allow_zero: bool = False) -> int:
    n = r.number(MAX_NUMBER64, "mod-sequence")
    if n == 0 and not allow_zero:
        raise r.error("mod-sequence must not be 0")
    return n


def date(r: Reader) -> dt.date:
    """RFC 3501 §9 ``date``: bare or quoted ``d-Mon-yyyy``."""
    if r.peek() == 0x22:
        text = r.quoted()
    else:
        text = r.run(ATOM_CHARS)
    try:
        return parse_date(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as e:
        raise r.error(f"bad date: {e}") from None


def keyword_word(r: Reader) -> str:
    """An upper-cased atom used as a grammar keyword (command names, options)."""
    return r.atom("keyword").upper()
