"""Parsers of the message commands: FETCH, STORE, COPY, MOVE (and their UID forms).

Rules:
1. FETCH items follow RFC 3501 §6.4.5 / §9 ``fetch-att``, RFC 3516 (BINARY, BINARY.PEEK,
   BINARY.SIZE) and RFC 7162 (MODSEQ). The macros ALL, FAST and FULL are expanded here
   (RFC 3501 §6.4.5) and may not be combined with other items.
2. Sections: ``part(.part)*`` then optionally HEADER, HEADER.FIELDS (..), HEADER.FIELDS.NOT (..),
   TEXT, or MIME (MIME only after a part number); BINARY takes part numbers only (RFC 3516 §4.1).
   Partial ``<origin.count>``: count must be non-zero (RFC 3501 §9 ``partial``).
3. Modifiers ``(CHANGEDSINCE n [VANISHED])`` (RFC 7162 §3.1.4, §3.2.6): VANISHED needs UID FETCH
   and CHANGEDSINCE, else BAD.
4. STORE: ``[+|-]FLAGS[.SILENT]`` with a flag list or flags separated by spaces, and
   ``(UNCHANGEDSINCE n)`` (RFC 7162 §3.1.3; 0 is allowed there).
"""

from __future__ import annotations

from typing import Final, Literal

from pigeon.proto.imap import args
from pigeon.proto.imap.commands import Copy, Fetch, FetchAtt, Move, Section, Store
from pigeon.proto.imap.reader import Reader

_NAME_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
SIMPLE_ATTS: Final = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    }
)
_FAST: Final = (FetchAtt("FLAGS"), FetchAtt("INTERNALDATE"), FetchAtt("RFC822.SIZE"))
MACROS: Final = {
    "FAST": _FAST,
    "ALL": _FAST + (FetchAtt("ENVELOPE"),),
    "FULL": _FAST + (FetchAtt("ENVELOPE"), FetchAtt("BODY")),
}
_SECTION_ATTS: Final = frozenset({"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})


def fetch(r: Reader, tag: str, uid: bool) -> Fetch:
    r.sp()
    seq = args.sequence_set(r)
    r.sp()
    items: tuple[FetchAtt, ...]
    if r.peek() == 0x28:
        items = tuple(r.paren_list(lambda: fetch_att(r), allow_empty=False))
    else:
        start = r.pos
        word = r.run(_NAME_CHARS).upper().decode("ascii")
        if word in MACROS and r.peek() != 0x5B:
            items = MACROS[word]
        else:
            r.pos = start
            items = (fetch_att(r),)
    changedsince = None
    vanished = False
    if r.try_sp():
        r.expect(b"(")
        while True:
            word = args.keyword_word(r)
            if word == "CHANGEDSINCE" and changedsince is None:
                r.sp()
                changedsince = args.modseq(r)
            elif word == "VANISHED" and not vanished:
                vanished = True
            else:
                raise r.error(f"unknown or repeated FETCH modifier {word[:40]}")
            if not r.try_sp():
                break
        r.expect(b")")
        if vanished and (not uid or changedsince is None):
            raise r.error("VANISHED needs UID FETCH and CHANGEDSINCE")  # RFC 7162 §3.2.6
    r.end()
    return Fetch(tag, uid, seq, items, changedsince, vanished)


def fetch_att(r: Reader) -> FetchAtt:
    name = r.run(_NAME_CHARS).upper().decode("ascii")
    if not name:
        raise r.error("expected a FETCH item")
    if r.peek() == 0x5B:
        if name not in _SECTION_ATTS:
            raise r.error(f"{name[:40]} takes no section")
        binary = name.startswith("BINARY")
        section = _binary_section(r) if binary else _section(r)
        partial = None
        if r.peek() == 0x3C and name != "BINARY.SIZE":  # "<"
            partial = _partial(r)
        peek = name.endswith(".PEEK")
        return FetchAtt(name[: -len(".PEEK")] if peek else name, section, partial, peek)
    if name not in SIMPLE_ATTS:
        raise r.error(f"unknown FETCH item {name[:40]}")
    return FetchAtt(name)


def _binary_section(r: Reader) -> Section:
    r.expect(b"[")
    parts: list[int] = []
    if r.peek() != 0x5D:
        parts.append(r.nz_number("section part"))
        while r.try_take(b"."):
            parts.append(r.nz_number("section part"))
    r.expect(b"]")
    return Section(tuple(parts))


def _section(r: Reader) -> Section:
    r.expect(b"[")
    parts: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    if r.peek() != 0x5D:
        c = r.peek()
        if c is not None and 0x30 <= c <= 0x39:
            parts.append(r.nz_number("section part"))
            while r.try_take(b"."):
                c = r.peek()
                if c is not None and 0x30 <= c <= 0x39:
                    parts.append(r.nz_number("section part"))
                else:
                    text, fields = _section_text(r, allow_mime=True)
                    break
        else:
            text, fields = _section_text(r, allow_mime=False)
    r.expect(b"]")
    return Section(tuple(parts), text, fields)


SectionText = Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]


def _section_text(r: Reader, allow_mime: bool) -> tuple[SectionText, tuple[str, ...]]:
    word = r.run(_NAME_CHARS).upper().decode("ascii")
    if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        fields = tuple(r.paren_list(lambda: _field_name(r), allow_empty=False))
        return ("HEADER.FIELDS" if word == "HEADER.FIELDS" else "HEADER.FIELDS.NOT"), fields
    if word == "HEADER":
        return "HEADER", ()
    if word == "TEXT":
        return "TEXT", ()
    if word == "MIME" and allow_mime:
        return "MIME", ()
    raise r.error(f"bad section {word[:40]!r}")


def _field_name(r: Reader) -> str:
    name = r.astring("header field name")
    # RFC 5322 §3.6.8 field-name: printable US-ASCII except ":"
    if not name or any(c < 0x21 or c > 0x7E or c == 0x3A for c in name):
        raise r.error("bad header field name")
    return name.decode("ascii")


def _partial(r: Reader) -> tuple[int, int]:
    r.expect(b"<")
    origin = r.number(what="partial origin")
    r.expect(b".")
    count = r.nz_number("partial length")
    r.expect(b">")
    return origin, count


def store(r: Reader, tag: str, uid: bool) -> Store:
    r.sp()
    seq = args.sequence_set(r)
    r.sp()
    unchangedsince = None
    if r.peek() == 0x28:
        r.expect(b"(")
        word = args.keyword_word(r)
        if word != "UNCHANGEDSINCE":
            raise r.error(f"unknown STORE modifier {word[:40]}")
        r.sp()
        unchangedsince = args.modseq(r, allow_zero=True)
        r.expect(b")")
        r.sp()
    mode: Literal["set", "add", "remove"] = "set"
    if r.try_take(b"+"):
        mode = "add"
    elif r.try_take(b"-"):
        mode = "remove"
    att = r.run(_NAME_CHARS).upper()
    if att not in (b"FLAGS", b"FLAGS.SILENT"):
        raise r.error("expected FLAGS, +FLAGS or -FLAGS")
    silent = att == b"FLAGS.SILENT"
    r.sp()
    if r.peek() == 0x28:
        flags = args.flag_list(r)
    else:
        items = [args.flag(r)]
        while r.try_sp():
            items.append(args.flag(r))
        flags = tuple(items)
    r.end()
    return Store(tag, uid, seq, mode, silent, flags, unchangedsince)


def copy(r: Reader, tag: str, uid: bool) -> Copy:
    r.sp()
    seq = args.sequence_set(r)
    r.sp()
    name = args.mailbox(r)
    r.end()
    return Copy(tag, uid, seq, name)


def move(r: Reader, tag: str, uid: bool) -> Move:
    r.sp()
    seq = args.sequence_set(r)
    r.sp()
    name = args.mailbox(r)
    r.end()
    return Move(tag, uid, seq, name)
